// The event loop over each backend: dispatch by interest, descriptors closed or reused within a
// batch, timers, deferred work and signals. meson registers it once per backend (ECHOPLEX_BACKEND).
#include "echoplex/io/event_loop.hpp"

#include <signal.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<EventLoop> new_loop() { return std::make_unique<EventLoop>(new_backend()); }

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
    loop->add_timer(30ms, [&] { fired.push_back(3); });
    loop->add_timer(10ms, [&] { fired.push_back(1); });
    const TimerId cancelled = loop->add_timer(20ms, [&] { fired.push_back(99); });
    loop->add_timer(20ms, [&] { fired.push_back(2); });
    TimerId cancelled_by_peer{};
    loop->add_timer(25ms, [&] { loop->cancel_timer(cancelled_by_peer); });
    cancelled_by_peer = loop->add_timer(25ms, [&] { fired.push_back(98); });
    CHECK(loop->cancel_timer(cancelled));
    CHECK_FALSE(loop->cancel_timer(cancelled));
    const auto start = Clock::now();
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

}  // namespace
}  // namespace echoplex::test
