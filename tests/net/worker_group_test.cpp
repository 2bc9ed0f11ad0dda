// WorkerGroup: real forks of this test process. Each worker is a lambda that ends in _exit; the
// group's run() is the only wait, ended by the workers' exits or stop().
#include "echoplex/net/worker_group.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/doctest.hpp"

namespace echoplex {
namespace {

using namespace std::chrono_literals;

void write_line(int fd, const std::string& line) {
    const std::string text = line + "\n";
    REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}

TEST_CASE("every worker runs once with its own index; its lines arrive in order, then its exit status") {
    WorkerGroupOptions options;
    options.workers = 3;
    WorkerGroup group(options, [](const WorkerChannel& channel) {
        for (int k = 0; k < 200; ++k) {
            write_line(channel.report_fd, std::to_string(channel.index) + " " + std::to_string(k));
        }
        return 10 + static_cast<int>(channel.index);
    });
    std::vector<std::vector<std::string>> lines(3);
    std::vector<int> statuses(3, -1);
    std::vector<pid_t> started(3, -1);
    WorkerGroup::Handlers h;
    h.on_started = [&](std::size_t i, pid_t pid) { started[i] = pid; };
    h.on_line = [&](std::size_t i, std::string_view line) { lines[i].emplace_back(line); };
    h.on_exit = [&](std::size_t i, pid_t pid, int status, std::optional<std::chrono::milliseconds> restart_in) {
        CHECK(pid == started[i]);
        CHECK_FALSE(restart_in.has_value());
        statuses[i] = status;
    };
    REQUIRE(group.start(h));
    CHECK(group.running() == 3);
    REQUIRE(group.run(h));
    CHECK(group.running() == 0);
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(started[i] > 0);
        REQUIRE(lines[i].size() == 200);
        for (int k = 0; k < 200; ++k) {
            CHECK(lines[i][static_cast<std::size_t>(k)] == std::to_string(i) + " " + std::to_string(k));
        }
        REQUIRE(WIFEXITED(statuses[i]));
        CHECK(WEXITSTATUS(statuses[i]) == 10 + static_cast<int>(i));
    }
}

TEST_CASE("a signal reaches the master's on_signal once; workers ignore it and get the relayed command bytes in order") {
    WorkerGroupOptions options;
    options.workers = 2;
    options.signals = {SIGUSR2};
    WorkerGroup group(options, [](const WorkerChannel& channel) {
        for (;;) {
            char c = 0;
            const ssize_t n = ::read(channel.control_fd, &c, 1);
            if (n <= 0 || c == 'q') {
                return n == 1 ? 0 : 3;
            }
            write_line(channel.report_fd, std::string("got ") + c);
        }
    });
    int signals = 0;
    std::vector<std::vector<std::string>> lines(2);
    std::vector<int> statuses(2, -1);
    WorkerGroup::Handlers h;
    h.on_signal = [&](int signo) {
        CHECK(signo == SIGUSR2);
        ++signals;
        for (std::size_t i = 0; i < group.size(); ++i) {
            REQUIRE(::kill(group.pid(i), SIGUSR2) == 0);  // the signal itself: ignored by workers
        }
        group.broadcast('a');
        group.broadcast('b');
        group.broadcast('q');
    };
    h.on_line = [&](std::size_t i, std::string_view line) { lines[i].emplace_back(line); };
    h.on_exit = [&](std::size_t i, pid_t, int status, auto) { statuses[i] = status; };
    REQUIRE(group.start(h));
    // Raised while the master has it blocked: it waits for run(), which hands it on.
    group.after(0ms, [] { ::raise(SIGUSR2); });
    REQUIRE(group.run(h));
    CHECK(signals == 1);
    for (std::size_t i = 0; i < 2; ++i) {
        CAPTURE(i);
        CHECK(lines[i] == std::vector<std::string>{"got a", "got b"});
        REQUIRE_MESSAGE(WIFEXITED(statuses[i]), "a worker was killed by the signal it should ignore");
        CHECK(WEXITSTATUS(statuses[i]) == 0);
    }
}

TEST_CASE("a worker that keeps dying is replaced after a pause that doubles up to the maximum; stop() ends it") {
    WorkerGroupOptions options;
    options.workers = 1;
    options.restart = true;
    options.first_restart_delay = 20ms;
    options.max_restart_delay = 80ms;
    options.stable_after = 60s;
    WorkerGroup group(options, [](const WorkerChannel&) { return 3; });
    std::size_t starts = 0;
    std::vector<std::optional<std::chrono::milliseconds>> pauses;
    WorkerGroup::Handlers h;
    h.on_started = [&](std::size_t, pid_t) { ++starts; };
    h.on_exit = [&](std::size_t, pid_t, int status, std::optional<std::chrono::milliseconds> restart_in) {
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 3);
        pauses.push_back(restart_in);
    };
    REQUIRE(group.start(h));
    group.after(400ms, [&] { group.stop(); });
    REQUIRE(group.run(h));
    MESSAGE(starts, " starts in 400 ms");
    // The pauses add up to at least 20+40+80+80+80+80 = 380 ms for 7 starts: a crash loop that
    // spun would start hundreds.
    CHECK(starts >= 3);
    CHECK(starts <= 8);
    REQUIRE(pauses.size() == starts);
    const std::vector<long> expected = {20, 40, 80, 80, 80, 80, 80, 80};
    for (std::size_t k = 0; k + 1 < pauses.size(); ++k) {
        CAPTURE(k);
        REQUIRE(pauses[k].has_value());
        CHECK(pauses[k]->count() == expected[k]);
    }
    // The last exit came after stop(), or its pending restart was cancelled by it.
    CHECK(group.running() == 0);
}

TEST_CASE("a worker whose master is gone reads EOF on its control pipe") {
    pid_t pid = -1;
    {
        WorkerGroupOptions options;
        options.workers = 1;
        WorkerGroup group(options, [](const WorkerChannel& channel) {
            char c = 0;
            return ::read(channel.control_fd, &c, 1) == 0 ? 7 : 1;
        });
        REQUIRE(group.start({}));
        pid = group.pid(0);
        REQUIRE(pid > 0);
    }  // the group is destroyed without run(): its pipes close
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 7);
}

TEST_CASE("usable_cpus counts this process's CPUs") {
    const std::size_t n = usable_cpus();
    CHECK(n >= 1);
    CHECK(n <= static_cast<std::size_t>(::sysconf(_SC_NPROCESSORS_CONF)));
}

}  // namespace
}  // namespace echoplex
