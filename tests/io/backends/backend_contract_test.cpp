// The backend contract, written once and run unchanged against every backend: meson registers
// this executable once per backend name with ECHOPLEX_BACKEND set (see tests/meson.build).
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <array>
#include <thread>
#include <vector>

#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<Backend> new_backend() {
    auto backend = make_backend(backend_under_test());
    if (!backend) {
        FAIL(backend.error().message());
    }
    return std::move(backend).value();
}

std::unique_ptr<EventLoop> new_loop() { return std::make_unique<EventLoop>(new_backend()); }

// Readiness for exactly the descriptors in `ready`, from one non-blocking wait.
std::vector<Readiness> poll_now(Backend& backend) {
    auto ready = backend.wait(0ms);
    if (!ready) {
        FAIL(ready.error().message());
    }
    return {ready->begin(), ready->end()};
}

const Readiness* find(const std::vector<Readiness>& ready, int fd) {
    for (const auto& r : ready) {
        if (r.fd == fd) {
            return &r;
        }
    }
    return nullptr;
}

TEST_CASE("the backend under test is the one asked for and reports its name") {
    auto backend = new_backend();
    CHECK(backend->kind() == backend_under_test());
    CHECK(parse_backend_kind(backend_name(backend->kind())) == backend->kind());
    MESSAGE("backend: ", backend_name(backend->kind()));
}

TEST_CASE("read and write readiness follow the socket's state") {
    for (const Transport transport : {Transport::unix_stream, Transport::tcp_loopback}) {
        CAPTURE(transport == Transport::unix_stream ? "unix" : "tcp");
        auto backend = new_backend();
        auto pair = connected_pair(transport);
        const int fd = pair.a.get();

        REQUIRE(backend->modify(fd, Interest::none, Interest::read));
        CHECK(find(poll_now(*backend), fd) == nullptr);  // nothing to read yet

        write_all(pair.b.get(), "ping");
        auto ready = backend->wait(2s);
        REQUIRE(ready.has_value());
        REQUIRE(ready->size() == 1);
        CHECK((*ready)[0].fd == fd);
        CHECK((*ready)[0].readable);
        CHECK_FALSE((*ready)[0].writable);  // writable, but nobody asked

        CHECK(read_available(fd) == "ping");
        CHECK(find(poll_now(*backend), fd) == nullptr);  // level-triggered: drained means quiet

        REQUIRE(backend->modify(fd, Interest::read, Interest::write));
        const auto writable = poll_now(*backend);
        REQUIRE(find(writable, fd) != nullptr);
        CHECK(find(writable, fd)->writable);
        CHECK_FALSE(find(writable, fd)->readable);

        write_all(pair.b.get(), "x");
        REQUIRE(backend->modify(fd, Interest::write, Interest::both));
        const auto both = poll_now(*backend);
        REQUIRE(find(both, fd) != nullptr);
        CHECK(find(both, fd)->readable);
        CHECK(find(both, fd)->writable);

        REQUIRE(backend->modify(fd, Interest::both, Interest::both));  // repeating the interest is harmless
        CHECK(poll_now(*backend).size() == 1);
        REQUIRE(backend->modify(fd, Interest::both, Interest::none));
    }
}

TEST_CASE("a full socket is not writable until the peer reads") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::unix_stream);
    const std::string chunk(65536, 'z');
    while (::send(pair.a.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL) > 0) {
    }
    REQUIRE(errno == EAGAIN);
    REQUIRE(backend->modify(pair.a.get(), Interest::none, Interest::write));
    CHECK(poll_now(*backend).empty());
    while (!read_available(pair.b.get()).empty()) {
    }
    auto ready = backend->wait(2s);
    REQUIRE(ready.has_value());
    REQUIRE(ready->size() == 1);
    CHECK((*ready)[0].writable);
}

TEST_CASE("no interest means no report, not even for a hangup") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::tcp_loopback);
    const int fd = pair.a.get();
    REQUIRE(backend->modify(fd, Interest::none, Interest::read));
    REQUIRE(backend->modify(fd, Interest::read, Interest::none));
    write_all(pair.b.get(), "data");
    pair.b.reset();  // FIN after data: readable and hung up
    CHECK(poll_now(*backend).empty());
    auto waited = backend->wait(20ms);
    REQUIRE(waited.has_value());
    CHECK(waited->empty());

    REQUIRE(backend->modify(fd, Interest::none, Interest::read));  // interest back: the state is reported again
    const auto ready = poll_now(*backend);
    REQUIRE(find(ready, fd) != nullptr);
    CHECK(find(ready, fd)->readable);
}

TEST_CASE("modify with old and new interests adds, changes, removes and re-adds a descriptor") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::unix_stream);
    const int fd = pair.a.get();
    write_all(pair.b.get(), "pending");  // readable and writable from here on

    REQUIRE(backend->modify(fd, Interest::none, Interest::read));  // add
    auto ready = poll_now(*backend);
    REQUIRE(ready.size() == 1);
    CHECK(ready[0].fd == fd);
    CHECK(ready[0].readable);
    CHECK_FALSE(ready[0].writable);

    REQUIRE(backend->modify(fd, Interest::read, Interest::both));  // change: write comes on
    ready = poll_now(*backend);
    REQUIRE(ready.size() == 1);
    CHECK(ready[0].readable);
    CHECK(ready[0].writable);

    REQUIRE(backend->modify(fd, Interest::both, Interest::write));  // change: read goes off
    ready = poll_now(*backend);
    REQUIRE(ready.size() == 1);
    CHECK_FALSE(ready[0].readable);
    CHECK(ready[0].writable);

    REQUIRE(backend->modify(fd, Interest::write, Interest::none));  // remove
    CHECK(poll_now(*backend).empty());

    REQUIRE(backend->modify(fd, Interest::none, Interest::read));  // re-add
    ready = poll_now(*backend);
    REQUIRE(ready.size() == 1);
    CHECK(ready[0].fd == fd);
    CHECK(ready[0].readable);
    CHECK_FALSE(ready[0].writable);
    REQUIRE(backend->modify(fd, Interest::read, Interest::none));
}

TEST_CASE("an old interest that contradicts the backend's set is refused and changes nothing") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::unix_stream);
    const int fd = pair.a.get();
    write_all(pair.b.get(), "x");
    // poll and select see the mismatch in their own arguments; epoll's kernel does (ENOENT, EEXIST).
    const auto refused = [](const Result<void>& result) {
        if (result.has_value()) {
            return false;
        }
        const std::error_code code = result.error().code;
        return code == errc::bad_argument || code == std::errc::no_such_file_or_directory ||
               code == std::errc::file_exists;
    };
    CHECK(refused(backend->modify(fd, Interest::read, Interest::none)));  // never added
    CHECK(refused(backend->modify(fd, Interest::read, Interest::both)));
    CHECK(poll_now(*backend).empty());

    REQUIRE(backend->modify(fd, Interest::none, Interest::read));
    CHECK(refused(backend->modify(fd, Interest::none, Interest::write)));  // already in the set
    const auto ready = poll_now(*backend);
    REQUIRE(ready.size() == 1);
    CHECK(ready[0].readable);
    CHECK_FALSE(ready[0].writable);  // still read only
    REQUIRE(backend->modify(fd, Interest::read, Interest::none));
}

TEST_CASE("removed then closed: the descriptor is forgotten") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::unix_stream);
    auto other = connected_pair(Transport::unix_stream);
    const int closed_fd = pair.a.get();
    REQUIRE(backend->modify(closed_fd, Interest::none, Interest::read));
    REQUIRE(backend->modify(other.a.get(), Interest::none, Interest::read));
    write_all(pair.b.get(), "late");
    REQUIRE(backend->modify(closed_fd, Interest::read, Interest::none));
    pair.a.reset();
    CHECK(backend->modify(closed_fd, Interest::none, Interest::none));  // not in the set: no-op
    CHECK(poll_now(*backend).empty());
    write_all(other.b.get(), "still here");
    const auto ready = poll_now(*backend);
    REQUIRE(ready.size() == 1);
    CHECK(ready[0].fd == other.a.get());
}

TEST_CASE("peer close is reported as readable and read returns 0") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::tcp_loopback);
    REQUIRE(backend->modify(pair.a.get(), Interest::none, Interest::read));
    pair.b.reset();
    auto ready = backend->wait(2s);
    REQUIRE(ready.has_value());
    REQUIRE(ready->size() == 1);
    CHECK((*ready)[0].readable);
    char byte;
    CHECK(::recv(pair.a.get(), &byte, 1, 0) == 0);
}

TEST_CASE("peer reset is reported to readers and writers") {
    for (const Interest want : {Interest::read, Interest::write}) {
        CAPTURE(static_cast<int>(want));
        auto backend = new_backend();
        auto pair = connected_pair(Transport::tcp_loopback);
        if (want == Interest::write) {
            // Make the socket unwritable first, so only the reset can report it.
            const std::string chunk(1 << 20, 'r');
            while (::send(pair.a.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL) > 0) {
            }
        }
        REQUIRE(backend->modify(pair.a.get(), Interest::none, want));
        set_linger_zero(pair.b.get());
        pair.b.reset();  // RST
        auto ready = backend->wait(2s);
        REQUIRE(ready.has_value());
        REQUIRE(ready->size() == 1);
        CHECK((*ready)[0].readable == (want == Interest::read));
        CHECK((*ready)[0].writable == (want == Interest::write));
        char byte = 0;
        const ssize_t n = want == Interest::read ? ::recv(pair.a.get(), &byte, 1, 0)
                                                 : ::send(pair.a.get(), &byte, 1, MSG_NOSIGNAL);
        const int err = errno;  // before any CHECK, which may log and clobber errno
        CHECK(n < 0);
        CHECK((err == ECONNRESET || err == EPIPE));
    }
}

TEST_CASE("a wait with a timeout and nothing ready returns empty on time") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::unix_stream);
    REQUIRE(backend->modify(pair.a.get(), Interest::none, Interest::read));
    const auto start = Clock::now();
    auto ready = backend->wait(50ms);
    const auto elapsed = Clock::now() - start;
    REQUIRE(ready.has_value());
    CHECK(ready->empty());
    CHECK(elapsed >= 45ms);  // select/poll/epoll may round to the clock tick, never return early
    CHECK(elapsed < 10s);    // a correctness bound (it did return), not a speed target
}

TEST_CASE("a thousand watched sockets with three ready report exactly those three") {
    auto backend = new_backend();
    std::vector<SocketPair> pairs;
    for (int i = 0; i < 500; ++i) {
        pairs.push_back(connected_pair(Transport::unix_stream));
        REQUIRE(backend->modify(pairs.back().a.get(), Interest::none, Interest::read));
        REQUIRE(backend->modify(pairs.back().b.get(), Interest::none, Interest::read));
    }
    const std::array<std::size_t, 3> chosen = {7, 250, 499};
    for (const std::size_t i : chosen) {
        write_all(pairs[i].b.get(), "!");
    }
    auto ready = backend->wait(2s);
    REQUIRE(ready.has_value());
    std::vector<int> fds;
    for (const auto& r : *ready) {
        CHECK(r.readable);
        fds.push_back(r.fd);
    }
    std::sort(fds.begin(), fds.end());
    std::vector<int> expected;
    for (const std::size_t i : chosen) {
        expected.push_back(pairs[i].a.get());
    }
    std::sort(expected.begin(), expected.end());
    CHECK(fds == expected);
}

TEST_CASE("descriptors are accepted below fd_limit and refused at or above it") {
    auto backend = new_backend();
    auto pair = connected_pair(Transport::unix_stream);
    CHECK(backend->modify(-1, Interest::none, Interest::read).error().code == errc::fd_out_of_range);

    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    const rlim_t wanted = 2048;
    if (limit.rlim_cur < wanted) {
        rlimit raised = limit;
        raised.rlim_cur = std::min<rlim_t>(wanted, limit.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &raised);
        REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    }
    if (limit.rlim_cur <= static_cast<rlim_t>(FD_SETSIZE)) {
        MESSAGE("skipped: RLIMIT_NOFILE cannot be raised above FD_SETSIZE (", limit.rlim_cur, ")");
        return;
    }
    // A descriptor numbered at FD_SETSIZE: the first that select cannot take.
    UniqueFd high(::fcntl(pair.a.get(), F_DUPFD_CLOEXEC, FD_SETSIZE));
    REQUIRE(high.get() >= FD_SETSIZE);
    auto watched = backend->modify(high.get(), Interest::none, Interest::read);
    if (high.get() >= backend->fd_limit()) {
        REQUIRE_FALSE(watched.has_value());
        CHECK(watched.error().code == errc::fd_out_of_range);
        CHECK(watched.error().message().find("out of range") != std::string::npos);
    } else {
        REQUIRE(watched.has_value());
        write_all(pair.b.get(), "high");
        const auto ready = poll_now(*backend);
        REQUIRE(find(ready, high.get()) != nullptr);
        REQUIRE(backend->modify(high.get(), Interest::read, Interest::none));
    }
}

// ---- the event loop over the backend -------------------------------------------------------

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
