// The event loop over each backend: dispatch by interest, the backend called only for a real
// change, fd_limit refused, descriptors closed or reused within a batch, timers bounding the wait,
// deferred work and signals. meson registers it once per backend (ECHOPLEX_BACKEND).
#include "echoplex/io/event_loop.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<EventLoop> new_loop() { return std::make_unique<EventLoop>(new_backend()); }

const char* spelling(Interest interest) {
    switch (interest) {
    case Interest::none: return "none";
    case Interest::read: return "read";
    case Interest::write: return "write";
    case Interest::both: return "both";
    }
    return "?";
}

// What a RecordingBackend was asked, kept outside it: the loop owns the backend.
struct BackendLog {
    struct Change {
        int fd;
        Interest from;
        Interest to;
    };
    std::vector<Change> changes;                                  // every modify, in order
    std::vector<std::optional<std::chrono::milliseconds>> waits;  // every wait's timeout
    int fd_limit = std::numeric_limits<int>::max();               // if below the real backend's
    bool refuse = false;                                          // modify fails, forwarding nothing

    // "none->read read->both": every modify so far; one for a descriptor other than `fd` names it.
    std::string transitions(int fd) const {
        std::string out;
        for (const Change& c : changes) {
            out += out.empty() ? "" : " ";
            out += c.fd == fd ? "" : "fd " + std::to_string(c.fd) + ":";
            out += std::string(spelling(c.from)) + "->" + spelling(c.to);
        }
        return out;
    }
};

// The backend under test behind a recorder: every modify and wait is logged, then forwarded
// unchanged (unless the log says refuse).
class RecordingBackend final : public Backend {
public:
    explicit RecordingBackend(BackendLog& log) : real_(new_backend()), log_(log) {}

    BackendKind kind() const noexcept override { return real_->kind(); }
    int fd_limit() const noexcept override { return std::min(real_->fd_limit(), log_.fd_limit); }
    Result<void> modify(int fd, Interest old_interest, Interest new_interest) override {
        log_.changes.push_back({fd, old_interest, new_interest});
        if (log_.refuse) {
            return Error{"modify", make_error_code(errc::bad_argument), "(refused by the test)"};
        }
        return real_->modify(fd, old_interest, new_interest);
    }
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override {
        log_.waits.push_back(timeout);
        return real_->wait(timeout);
    }

private:
    std::unique_ptr<Backend> real_;
    BackendLog& log_;
};

TEST_CASE("the loop calls the handler for the direction it is interested in") {
    auto loop = new_loop();
    auto pair = connected_pair(Transport::tcp_loopback);
    RecordingHandler handler;
    std::string received;
    handler.readable = [&] { received += read_available(pair.a.get()); };
    handler.writable = [&] { REQUIRE(loop->set_interest(pair.a.get(), Interest::read)); };

    REQUIRE(loop->watch(pair.a.get(), handler, Interest::both));
    CHECK(run_until(*loop, [&] { return handler.writable_calls == 1; }));
    CHECK(loop->interest(pair.a.get()) == Interest::read);

    write_all(pair.b.get(), "hello loop");
    CHECK(run_until(*loop, [&] { return received == "hello loop"; }));
    CHECK(handler.writable_calls == 1);  // write interest went off and stayed off

    loop->unwatch(pair.a.get());
    CHECK_FALSE(loop->watched(pair.a.get()));
    CHECK(loop->interest(pair.a.get()) == Interest::none);
}

TEST_CASE("the loop counts each backend wait and the events it returned") {
    auto loop = new_loop();
    CHECK(loop->stats().waits == 0);
    REQUIRE(loop->run_once(0ms).has_value());  // nothing watched, nothing ready
    CHECK(loop->stats().waits == 1);
    CHECK(loop->stats().events == 0);
    CHECK(loop->stats().waits_in_bucket[0] == 1);

    auto first = connected_pair(Transport::tcp_loopback);
    auto second = connected_pair(Transport::tcp_loopback);
    RecordingHandler one;
    RecordingHandler two;
    std::string got_one;
    std::string got_two;
    one.readable = [&] { got_one += read_available(first.a.get()); };
    two.readable = [&] { got_two += read_available(second.a.get()); };
    REQUIRE(loop->watch(first.a.get(), one, Interest::read));
    REQUIRE(loop->watch(second.a.get(), two, Interest::read));
    write_all(first.b.get(), "1");
    write_all(second.b.get(), "2");
    CHECK(run_until(*loop, [&] { return got_one == "1" && got_two == "2"; }));
    const LoopStats& stats = loop->stats();
    // Each descriptor was reported at least once, by however many waits the backend took.
    CHECK(stats.events >= 2);
    CHECK(stats.events == static_cast<std::uint64_t>(one.readable_calls + two.readable_calls));
    std::uint64_t bucketed = 0;
    for (const std::uint64_t n : stats.waits_in_bucket) {
        bucketed += n;
    }
    CHECK(bucketed == stats.waits);
    loop->unwatch(first.a.get());
    loop->unwatch(second.a.get());
}

TEST_CASE("watching a descriptor twice with different handlers is refused") {
    auto loop = new_loop();
    auto pair = connected_pair(Transport::unix_stream);
    RecordingHandler first;
    RecordingHandler second;
    REQUIRE(loop->watch(pair.a.get(), first, Interest::read));
    CHECK(loop->watch(pair.a.get(), first, Interest::write));  // same handler: interest change
    CHECK(loop->interest(pair.a.get()) == Interest::write);
    const auto refused = loop->watch(pair.a.get(), second, Interest::read);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == errc::bad_argument);
    CHECK_FALSE(loop->set_interest(pair.b.get(), Interest::read).has_value());  // not watched
}

TEST_CASE("a descriptor closed by an earlier handler in the same batch gets no callback") {
    auto loop = new_loop();
    auto first = connected_pair(Transport::unix_stream);
    auto second = connected_pair(Transport::unix_stream);
    RecordingHandler one;
    RecordingHandler two;
    // Whichever runs first closes the other; the backend has already reported both.
    one.readable = [&] {
        loop->unwatch(second.a.get());
        second.a.reset();
    };
    two.readable = [&] {
        loop->unwatch(first.a.get());
        first.a.reset();
    };
    REQUIRE(loop->watch(first.a.get(), one, Interest::read));
    REQUIRE(loop->watch(second.a.get(), two, Interest::read));
    write_all(first.b.get(), "1");
    write_all(second.b.get(), "2");
    // Both readable before the wait, so one wait reports both in one batch.
    auto calls = loop->run_once(2s);
    REQUIRE(calls.has_value());
    CHECK(one.readable_calls + two.readable_calls == 1);
}

TEST_CASE("a descriptor number reused within a batch gets no stale callback") {
    auto loop = new_loop();
    auto first = connected_pair(Transport::unix_stream);
    auto second = connected_pair(Transport::unix_stream);
    RecordingHandler closer;
    RecordingHandler victim;
    RecordingHandler newcomer;
    auto replacement = connected_pair(Transport::unix_stream);
    int reused_fd = -1;
    // The first handler to run closes the other descriptor and immediately reuses its number.
    auto close_and_reuse = [&](SocketPair& other) {
        const int number = other.a.get();
        loop->unwatch(number);
        other.a.reset();
        REQUIRE(::dup2(replacement.a.get(), number) == number);
        reused_fd = number;
        REQUIRE(loop->watch(number, newcomer, Interest::read));
    };
    closer.readable = [&] {
        if (reused_fd < 0) {
            close_and_reuse(second);
        }
    };
    victim.readable = [&] {
        if (reused_fd < 0) {
            close_and_reuse(first);
        }
    };
    REQUIRE(loop->watch(first.a.get(), closer, Interest::read));
    REQUIRE(loop->watch(second.a.get(), victim, Interest::read));
    write_all(first.b.get(), "1");
    write_all(second.b.get(), "2");
    REQUIRE(loop->run_once(2s).has_value());
    CHECK(closer.readable_calls + victim.readable_calls == 1);
    CHECK(newcomer.readable_calls == 0);  // the ready event belonged to the old socket

    write_all(replacement.b.get(), "new");
    CHECK(run_until(*loop, [&] { return newcomer.readable_calls > 0; }));
    loop->unwatch(reused_fd);
    ::close(reused_fd);
}

TEST_CASE("timers fire in deadline order and cancelled ones never fire") {
    auto loop = new_loop();
    std::vector<int> fired;
    // Taken before the timers are added: each deadline counts from its own add_timer call, so a
    // later start would shorten the 30 ms by however long this thread was descheduled.
    const auto start = Clock::now();
    loop->add_timer(30ms, [&] { fired.push_back(3); });
    loop->add_timer(10ms, [&] { fired.push_back(1); });
    const TimerId cancelled = loop->add_timer(20ms, [&] { fired.push_back(99); });
    loop->add_timer(20ms, [&] { fired.push_back(2); });
    TimerId cancelled_by_peer{};
    loop->add_timer(25ms, [&] { loop->cancel_timer(cancelled_by_peer); });
    cancelled_by_peer = loop->add_timer(25ms, [&] { fired.push_back(98); });
    CHECK(loop->cancel_timer(cancelled));
    CHECK_FALSE(loop->cancel_timer(cancelled));
    // No descriptors at all: only the timer deadlines can end these waits.
    CHECK(run_until(*loop, [&] { return fired.size() == 3; }, 100, 1000ms));
    CHECK(fired == std::vector<int>{1, 2, 3});
    CHECK(Clock::now() - start >= 30ms);
    REQUIRE(loop->run_once(40ms).has_value());
    CHECK(fired.size() == 3);
}

TEST_CASE("a timer deadline bounds a blocking wait") {
    auto loop = new_loop();
    bool fired = false;
    loop->add_timer(20ms, [&] { fired = true; });
    // No max_wait: without the timer this would block forever.
    for (int i = 0; i < 100 && !fired; ++i) {
        REQUIRE(loop->run_once().has_value());
    }
    CHECK(fired);
}

TEST_CASE("deferred work runs after the batch, and stop ends run") {
    auto loop = new_loop();
    auto pair = connected_pair(Transport::unix_stream);
    std::vector<std::string> order;
    RecordingHandler handler;
    handler.readable = [&] {
        read_available(pair.a.get());
        order.push_back("callback");
        loop->defer([&] {
            order.push_back("deferred");
            loop->stop();
        });
    };
    REQUIRE(loop->watch(pair.a.get(), handler, Interest::read));
    write_all(pair.b.get(), "go");
    REQUIRE(loop->run().has_value());
    CHECK(order == std::vector<std::string>{"callback", "deferred"});
}

TEST_CASE("a signal wakes a blocked wait and runs as a loop event") {
    auto loop = new_loop();
    int received = 0;
    REQUIRE(loop->on_signal(SIGUSR1, [&](int signo) {
        received = signo;
        loop->stop();
    }));
    // A guard timer ends the test if the signal never arrives; the wait itself has no timeout.
    bool gave_up = false;
    loop->add_timer(10s, [&] {
        gave_up = true;
        loop->stop();
    });
    std::thread sender([] { ::kill(::getpid(), SIGUSR1); });
    REQUIRE(loop->run().has_value());
    sender.join();
    CHECK_FALSE(gave_up);
    CHECK(received == SIGUSR1);
}

TEST_CASE("SIGINT and SIGTERM are delivered through the loop, and dispositions are restored") {
    struct sigaction before {};
    REQUIRE(::sigaction(SIGTERM, nullptr, &before) == 0);
    {
        auto loop = new_loop();
        std::vector<int> seen;
        REQUIRE(loop->on_signal(SIGINT, [&](int s) { seen.push_back(s); }));
        REQUIRE(loop->on_signal(SIGTERM, [&](int s) { seen.push_back(s); }));
        ::raise(SIGTERM);
        ::raise(SIGINT);
        CHECK(run_until(*loop, [&] { return seen.size() == 2; }));
        CHECK(seen == std::vector<int>{SIGTERM, SIGINT});
    }
    struct sigaction after {};
    REQUIRE(::sigaction(SIGTERM, nullptr, &after) == 0);
    CHECK(reinterpret_cast<void*>(after.sa_handler) == reinterpret_cast<void*>(before.sa_handler));
}

TEST_CASE("set_interest calls the backend only when the mask changes, with the old and the new mask") {
    BackendLog log;
    EventLoop loop(std::make_unique<RecordingBackend>(log));
    auto pair = connected_pair(Transport::unix_stream);
    const int fd = pair.a.get();
    RecordingHandler handler;

    REQUIRE(loop.watch(fd, handler, Interest::read));
    CHECK(log.transitions(fd) == "none->read");
    REQUIRE(loop.set_interest(fd, Interest::read));     // the same mask: no call
    REQUIRE(loop.watch(fd, handler, Interest::read));   // the same handler and mask: no call
    CHECK(log.transitions(fd) == "none->read");

    REQUIRE(loop.set_interest(fd, Interest::both));
    REQUIRE(loop.watch(fd, handler, Interest::write));  // the same handler: a change
    REQUIRE(loop.set_interest(fd, Interest::none));
    REQUIRE(loop.set_interest(fd, Interest::none));
    REQUIRE(loop.set_interest(fd, Interest::write));
    CHECK(log.transitions(fd) == "none->read read->both both->write write->none none->write");
    // The backend really holds what it was told: the socket is writable, so write is reported.
    CHECK(run_until(loop, [&] { return handler.writable_calls > 0; }));
    CHECK(handler.readable_calls == 0);

    loop.unwatch(fd);
    loop.unwatch(fd);  // already forgotten: no call
    CHECK(log.transitions(fd) == "none->read read->both both->write write->none none->write write->none");

    // Watched with none, the descriptor is not in the backend's set: neither watch nor unwatch
    // calls it; the first real interest adds it.
    log.changes.clear();
    REQUIRE(loop.watch(fd, handler, Interest::none));
    loop.unwatch(fd);
    CHECK(log.transitions(fd).empty());
    REQUIRE(loop.watch(fd, handler, Interest::none));
    REQUIRE(loop.set_interest(fd, Interest::read));
    loop.unwatch(fd);
    CHECK(log.transitions(fd) == "none->read read->none");
}

TEST_CASE("a change the backend refuses leaves the loop's interest as it was") {
    BackendLog log;
    EventLoop loop(std::make_unique<RecordingBackend>(log));
    auto pair = connected_pair(Transport::unix_stream);
    RecordingHandler handler;
    REQUIRE(loop.watch(pair.a.get(), handler, Interest::read));

    log.refuse = true;
    CHECK_FALSE(loop.set_interest(pair.a.get(), Interest::both).has_value());
    CHECK(loop.interest(pair.a.get()) == Interest::read);
    CHECK_FALSE(loop.watch(pair.b.get(), handler, Interest::read).has_value());
    CHECK_FALSE(loop.watched(pair.b.get()));

    log.refuse = false;
    REQUIRE(loop.set_interest(pair.a.get(), Interest::both));  // the old mask is still read
    CHECK(loop.interest(pair.a.get()) == Interest::both);
    const std::string b = "fd " + std::to_string(pair.b.get()) + ":";
    CHECK(log.transitions(pair.a.get()) == "none->read read->both " + b + "none->read read->both");
    loop.unwatch(pair.a.get());
}

TEST_CASE("the loop refuses a descriptor outside [0, fd_limit) with fd_out_of_range, whatever the interest") {
    auto pair = connected_pair(Transport::unix_stream);
    const int fd = pair.a.get();
    {
        BackendLog log;
        log.fd_limit = fd;  // fd is the first descriptor this backend cannot take
        EventLoop loop(std::make_unique<RecordingBackend>(log));
        RecordingHandler handler;
        for (const Interest want : {Interest::none, Interest::read, Interest::write, Interest::both}) {
            CAPTURE(spelling(want));
            for (const int refused_fd : {fd, -1}) {
                CAPTURE(refused_fd);
                const auto refused = loop.watch(refused_fd, handler, want);
                REQUIRE_FALSE(refused.has_value());
                CHECK(refused.error().code == errc::fd_out_of_range);
                CHECK_FALSE(loop.watched(refused_fd));
            }
        }
        CHECK(log.changes.empty());  // refused before the backend was asked
        log.fd_limit = fd + 1;       // one more, and it fits
        REQUIRE(loop.watch(fd, handler, Interest::none));
        CHECK(loop.watched(fd));
        loop.unwatch(fd);
    }

    // The real limit: only select has one that a descriptor can reach.
    auto loop = new_loop();
    const int limit = loop->backend().fd_limit();
    if (limit == std::numeric_limits<int>::max()) {
        MESSAGE("no real limit to reach: ", backend_name(loop->backend().kind()), " takes any descriptor");
        return;
    }
    const UniqueFd high = duplicate_at_or_above(fd, limit);
    if (!high) {
        MESSAGE("skipped: RLIMIT_NOFILE cannot be raised above ", limit);
        return;
    }
    RecordingHandler handler;
    const auto refused = loop->watch(high.get(), handler, Interest::none);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == errc::fd_out_of_range);
    CHECK(refused.error().message().find("out of range") != std::string::npos);
    CHECK_FALSE(loop->watched(high.get()));
}

TEST_CASE("run_once's timeout is bounded by the nearest timer, or by max_wait when that is nearer") {
    BackendLog log;
    EventLoop loop(std::make_unique<RecordingBackend>(log));
    // A readable descriptor that is never drained ends every wait at once: only the timeout each
    // wait was given is under test, and no test waits 30 s for it.
    auto pair = connected_pair(Transport::unix_stream);
    RecordingHandler handler;
    REQUIRE(loop.watch(pair.a.get(), handler, Interest::read));
    write_all(pair.b.get(), "never read");
    // The last wait's timeout in milliseconds; -1 for a wait without one.
    const auto last_wait_ms = [&]() -> std::int64_t {
        return log.waits.empty() || !log.waits.back() ? -1 : log.waits.back()->count();
    };

    REQUIRE(loop.run_once());  // no timers, no max_wait: the wait may block
    CHECK(last_wait_ms() == -1);

    const TimerId nearest = loop.add_timer(30s, [] {});
    const TimerId later = loop.add_timer(60s, [] {});
    REQUIRE(loop.run_once(10min));
    // At most the 30 s left; the lower bound leaves a slow machine a second between the calls.
    CHECK(last_wait_ms() <= 30'000);
    CHECK(last_wait_ms() > 29'000);

    REQUIRE(loop.run_once());  // no max_wait: the timer alone bounds the wait
    CHECK(last_wait_ms() <= 30'000);
    CHECK(last_wait_ms() > 29'000);

    REQUIRE(loop.run_once(5ms));  // max_wait nearer than any timer
    CHECK(last_wait_ms() == 5);

    CHECK(loop.cancel_timer(nearest));  // the next one bounds the wait now
    REQUIRE(loop.run_once(10min));
    CHECK(last_wait_ms() <= 60'000);
    CHECK(last_wait_ms() > 59'000);

    CHECK(loop.cancel_timer(later));
    REQUIRE(loop.run_once());
    CHECK(last_wait_ms() == -1);
    CHECK(handler.readable_calls == 6);  // every wait did end at once, on the descriptor
    CHECK(log.waits.size() == 6);
    loop.unwatch(pair.a.get());
}

}  // namespace
}  // namespace echoplex::test
