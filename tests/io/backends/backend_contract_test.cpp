// The backend contract, written once and run unchanged against every backend: meson registers
// this executable once per backend name with ECHOPLEX_BACKEND set (see tests/meson.build).
#include <sys/select.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <vector>

#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

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

TEST_CASE("removing the highest descriptor leaves the lower ones reported") {
    auto backend = new_backend();
    auto low = connected_pair(Transport::unix_stream);
    auto high = connected_pair(Transport::unix_stream);
    REQUIRE(low.a.get() < high.a.get());
    REQUIRE(backend->modify(low.a.get(), Interest::none, Interest::read));
    REQUIRE(backend->modify(high.a.get(), Interest::none, Interest::read));
    write_all(low.b.get(), "low");
    write_all(high.b.get(), "high");
    REQUIRE(backend->modify(high.a.get(), Interest::read, Interest::none));  // select: max_fd walks down
    const auto ready = poll_now(*backend);
    REQUIRE(ready.size() == 1);
    CHECK(ready[0].fd == low.a.get());
    CHECK(ready[0].readable);
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

    // A descriptor numbered at FD_SETSIZE: the first that select cannot take.
    const UniqueFd high = duplicate_at_or_above(pair.a.get(), FD_SETSIZE);
    if (!high) {
        MESSAGE("skipped: RLIMIT_NOFILE cannot be raised above FD_SETSIZE");
        return;
    }
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

}  // namespace
}  // namespace echoplex::test
