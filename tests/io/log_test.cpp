// The log: its line formats, and that a stderr nobody reads never blocks the caller. stderr is
// pointed at a pipe the test holds for each case (and put back after it).
#include "echoplex/io/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <regex>
#include <string>

#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/log_pump.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex {
namespace {

// stderr is the write end of a pipe for the object's lifetime; read() takes what came.
class CapturedStderr {
public:
    CapturedStderr() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        read_end_ = fds[0];
        saved_ = ::dup(2);
        REQUIRE(::dup2(fds[1], 2) == 2);
        ::close(fds[1]);
        ::fcntl(read_end_, F_SETFL, O_NONBLOCK);
        log::reopen();
    }
    ~CapturedStderr() {
        log::flush(std::chrono::milliseconds(0));
        ::dup2(saved_, 2);
        ::close(saved_);
        ::close(read_end_);
        log::reopen();
        log::set_format(log::Format::plain);
        log::set_context("");
        log::set_level(log::Level::info);
    }
    CapturedStderr(const CapturedStderr&) = delete;
    CapturedStderr& operator=(const CapturedStderr&) = delete;

    std::string read() {
        std::string out;
        char buf[65536];
        for (ssize_t n; (n = ::read(read_end_, buf, sizeof buf)) > 0;) {
            out.append(buf, static_cast<std::size_t>(n));
        }
        return out;
    }
    int read_fd() const noexcept { return read_end_; }

private:
    int read_end_ = -1;
    int saved_ = -1;
};

TEST_CASE("formats: plain, timestamped (RFC 3339, UTC, milliseconds, level) and journal (priority prefix)") {
    CapturedStderr err;
    log::set_program("prog");
    log::set_format(log::Format::plain);
    log::info("hello {}", 1);
    CHECK(err.read() == "prog: hello 1\n");

    log::set_format(log::Format::timestamped);
    log::warn("careful");
    log::set_context("worker 2");
    log::error("broken");
    const std::string stamped = err.read();
    MESSAGE(stamped);
    static const std::regex shape(
        R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z prog warn: careful
\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z prog worker 2 error: broken
)");
    CHECK(std::regex_match(stamped, shape));

    log::set_format(log::Format::journal);
    log::info("started");
    log::set_context("");
    log::set_level(log::Level::debug);
    log::debug("details");
    log::error("failed");
    CHECK(err.read() == "<6>worker 2: started\n<7>details\n<3>failed\n");
    log::set_program("echoplex");
}

TEST_CASE("the level filters: below it nothing is formatted or written") {
    CapturedStderr err;
    log::set_level(log::Level::warn);
    log::info("not shown");
    log::debug("not shown");
    log::warn("shown");
    CHECK(err.read() == "echoplex: shown\n");
}

TEST_CASE("a stderr nobody reads never blocks: lines queue up to the bound, the rest are counted, and a line says so") {
    CapturedStderr err;
    const std::uint64_t dropped_before = log::dropped();
    const std::string filler(200, 'x');
    // 20,000 lines of 200 bytes: 4 MB against a 64 KiB pipe and a 1 MiB queue. Each call must
    // return at once; a blocking write would hang the test here.
    for (int i = 0; i < 20000; ++i) {
        log::info("{} {}", i, filler);
    }
    const std::uint64_t dropped = log::dropped() - dropped_before;
    MESSAGE(dropped, " lines dropped");
    CHECK(dropped > 10000);
    CHECK(dropped < 20000);
    // The reader comes back: the queue drains in order (each write drains first), then a line
    // tells how many were lost.
    std::string seen = err.read();
    for (int round = 0; round < 1000 && seen.find(" dropped") == std::string::npos; ++round) {
        log::write_queued(2);  // stands for the loop's LogPump
        log::info("after");
        seen += err.read();
    }
    CHECK(seen.rfind("echoplex: 0 " + filler + "\n", 0) == 0);  // the first line first
    const auto notice = seen.find("echoplex: " + std::to_string(dropped) + " log line(s) dropped: stderr was not taking them\n");
    CHECK_MESSAGE(notice != std::string::npos, seen.substr(seen.size() > 300 ? seen.size() - 300 : 0));
}

TEST_CASE("LogPump writes what was queued once stderr is writable, from the loop, in order") {
    CapturedStderr err;
    auto loop = EventLoop::create(test::backend_under_test());
    REQUIRE(loop.has_value());
    const LogPump pump(**loop);
    const std::string filler(1000, 'y');
    for (int i = 0; i < 300; ++i) {  // 300 KB: more than the pipe holds
        log::info("{} {}", i, filler);
    }
    std::string seen;
    const bool all = test::run_until(**loop, [&] {
        seen += err.read();
        return seen.find("echoplex: 299 ") != std::string::npos;
    }, 2000, std::chrono::milliseconds(5));
    CHECK(all);
    std::size_t at = 0;
    for (int i = 0; i < 300; ++i) {
        const auto next = seen.find("echoplex: " + std::to_string(i) + " ", at);
        REQUIRE_MESSAGE(next == at, "line ", i, " out of order or missing");
        at = seen.find('\n', next) + 1;
    }
}

TEST_CASE("stderr_is_journal: only when JOURNAL_STREAM names stderr's device and inode") {
    struct stat st {};
    REQUIRE(::fstat(2, &st) == 0);
    ::setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)).c_str(), 1);
    CHECK(log::stderr_is_journal());
    ::setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1)).c_str(), 1);
    CHECK_FALSE(log::stderr_is_journal());
    ::unsetenv("JOURNAL_STREAM");
    CHECK_FALSE(log::stderr_is_journal());
}

}  // namespace
}  // namespace echoplex
