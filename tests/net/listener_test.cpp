// Listener on every backend: the port really bound, bursts of connections with their peers, names
// that do not resolve, EMFILE refused without spinning (in a child process with a lowered
// descriptor limit), and the back-off after accept failures that leave a connection queued.
#include "echoplex/net/listener.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

using std::chrono::milliseconds;
using namespace std::chrono_literals;

// Plain throwing helpers: they also run in child processes, where doctest's macros must not.
[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::system_category(), what); }

std::unique_ptr<EventLoop> make_loop() {
    auto created = EventLoop::create(backend_under_test());
    if (!created) {
        throw std::runtime_error(created.error().message());
    }
    return std::move(created).value();
}

// What the callbacks of one listener saw.
struct Seen {
    std::vector<UniqueFd> sockets;
    std::vector<std::string> peers;
    std::vector<Error> exhausted;
};

std::unique_ptr<Listener> open_listener(EventLoop& loop, Seen& seen, const std::string& host = "127.0.0.1",
                                        int backlog = 128) {
    auto opened = Listener::open(
        loop, host, 0, backlog,
        [&seen](UniqueFd socket, std::string peer) {
            seen.sockets.push_back(std::move(socket));
            seen.peers.push_back(std::move(peer));
        },
        [&seen](const Error& error) { seen.exhausted.push_back(error); });
    if (!opened) {
        throw std::runtime_error(opened.error().message());
    }
    auto listener = std::move(opened).value();
    if (auto started = listener->start(); !started) {
        throw std::runtime_error(started.error().message());
    }
    return listener;
}

std::uint16_t port_of(const Listener& listener) {
    const std::string& address = listener.address();
    return static_cast<std::uint16_t>(std::stoul(address.substr(address.rfind(':') + 1)));
}

UniqueFd tcp_socket() {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        fail("socket");
    }
    return fd;
}

// A blocking connect to 127.0.0.1:port completes as soon as the listener's backlog holds the
// connection, before any accept; the socket is non-blocking afterwards.
void connect_loopback(int fd, std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        fail("connect");
    }
    if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        fail("fcntl");
    }
}

UniqueFd connect_client(std::uint16_t port) {
    UniqueFd fd = tcp_socket();
    connect_loopback(fd.get(), port);
    return fd;
}

// The client's own address, as the listener reports it for the peer.
std::string local_address(int fd) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
        fail("getsockname");
    }
    return format_address(reinterpret_cast<const sockaddr*>(&addr));
}

// Waits at most `limit` for the other end to close `fd`: true on EOF or a reset.
bool closed_by_peer(int fd, milliseconds limit) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) {
        return false;
    }
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

// Of `rounds` iterations waiting up to `step` each, how many ran a callback.
int busy_iterations(EventLoop& loop, int rounds, milliseconds step) {
    int busy = 0;
    for (int i = 0; i < rounds; ++i) {
        auto calls = loop.run_once(step);
        if (!calls) {
            throw std::runtime_error(calls.error().message());
        }
        busy += *calls > 0 ? 1 : 0;
    }
    return busy;
}

// Runs `body` in a child process forked before it creates any loop and returns its report: empty
// when it passed, else what failed. The parent reads the report through a pipe, for at most
// `limit`, then reaps the child (killing it if it overran).
std::string run_in_child(const std::function<std::string()>& body, std::chrono::seconds limit = 30s) {
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    UniqueFd read_end(ends[0]);
    UniqueFd write_end(ends[1]);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        read_end.reset();
        std::string report;
        try {
            report = body();
        } catch (const std::exception& e) {
            report = std::string("exception: ") + e.what();
        }
        for (std::size_t sent = 0; sent < report.size();) {
            const ssize_t n = ::write(write_end.get(), report.data() + sent, report.size() - sent);
            if (n <= 0) {
                break;
            }
            sent += static_cast<std::size_t>(n);
        }
        ::_exit(report.empty() ? 0 : 1);  // no doctest summary, no atexit work of the parent's
    }
    write_end.reset();
    std::string report;
    const auto deadline = Clock::now() + limit;
    for (;;) {
        const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now());
        if (left <= 0ms) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            return report + " [the child did not finish within " + std::to_string(limit.count()) + " s]";
        }
        pollfd p{read_end.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
            continue;  // timeout or EINTR: the deadline decides
        }
        char buffer[512];
        const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
        if (n > 0) {
            report.append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            break;  // EOF: the child has exited
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status)) {
        return report + " [the child was killed by signal " + std::to_string(WTERMSIG(status)) + "]";
    }
    if (WEXITSTATUS(status) != 0 && report.empty()) {
        return "the child exited with status " + std::to_string(WEXITSTATUS(status));
    }
    return report;
}

// Lowers the soft RLIMIT_NOFILE so that exactly `room` more descriptors can be opened: each free
// number below the highest open descriptor is taken by a /dev/null held in `fillers`, and the
// limit is set `room` above the highest. Descriptors already open stay usable.
void leave_room(rlim_t room, std::vector<UniqueFd>& fillers) {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) < 0) {
        fail("getrlimit");
    }
    const int scan = static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 16));
    int highest = -1;
    for (int fd = 0; fd < scan; ++fd) {
        if (::fcntl(fd, F_GETFD) != -1) {
            highest = fd;
        }
    }
    for (int fd = 0; fd < highest; ++fd) {
        if (::fcntl(fd, F_GETFD) == -1) {
            fillers.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));  // takes the lowest free: fd
        }
    }
    limit.rlim_cur = static_cast<rlim_t>(highest) + 1 + room;
    if (::setrlimit(RLIMIT_NOFILE, &limit) < 0) {
        fail("setrlimit");
    }
}

std::string describe(const std::vector<Clock::time_point>& times) {
    std::string out;
    for (std::size_t i = 1; i < times.size(); ++i) {
        out += " +" + std::to_string(std::chrono::duration_cast<milliseconds>(times[i] - times[i - 1]).count()) + "ms";
    }
    return out;
}

TEST_CASE("a listener on port 0 reports the port the kernel chose") {
    auto loop = make_loop();
    Seen seen;
    auto listener = open_listener(*loop, seen);
    const std::string& address = listener->address();
    CHECK(address.rfind("127.0.0.1:", 0) == 0);
    sockaddr_in bound{};
    socklen_t len = sizeof bound;
    REQUIRE(::getsockname(listener->fd(), reinterpret_cast<sockaddr*>(&bound), &len) == 0);
    CHECK(ntohs(bound.sin_port) != 0);
    CHECK(address == "127.0.0.1:" + std::to_string(ntohs(bound.sin_port)));

    // Where ::1 exists, the address is bracketed.
    if (UniqueFd probe(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0)); probe) {
        sockaddr_in6 any6{};
        any6.sin6_family = AF_INET6;
        any6.sin6_addr = in6addr_loopback;
        if (::bind(probe.get(), reinterpret_cast<sockaddr*>(&any6), sizeof any6) == 0) {
            auto v6 = open_listener(*loop, seen, "::1");
            CHECK(v6->address().rfind("[::1]:", 0) == 0);
            CHECK(v6->address() != "[::1]:0");
        }
    }
}

TEST_CASE("a burst of connections reaches on_accept, each with its peer's address") {
    auto loop = make_loop();
    Seen seen;
    auto listener = open_listener(*loop, seen);
    // More than one readiness event accepts (64), fewer than the backlog (128): every connect
    // completes before the loop runs.
    constexpr std::size_t burst = 100;
    std::vector<UniqueFd> clients;
    std::set<std::string> expected;
    for (std::size_t i = 0; i < burst; ++i) {
        clients.push_back(connect_client(port_of(*listener)));
        expected.insert(local_address(clients.back().get()));
    }
    REQUIRE(run_until(*loop, [&] { return seen.sockets.size() == burst; }, 500));
    CHECK(std::set<std::string>(seen.peers.begin(), seen.peers.end()) == expected);
    CHECK(seen.peers.size() == burst);
    CHECK(seen.exhausted.empty());
    for (const auto& socket : seen.sockets) {
        CHECK((::fcntl(socket.get(), F_GETFL) & O_NONBLOCK) != 0);
        CHECK((::fcntl(socket.get(), F_GETFD) & FD_CLOEXEC) != 0);
    }
    // Everything accepted: the listener is quiet.
    CHECK(busy_iterations(*loop, 5, 1ms) == 0);
}

TEST_CASE("a name that does not resolve is errc::resolve_failed with the resolver's reason") {
    auto loop = make_loop();
    auto opened = Listener::open(*loop, "nosuch.invalid", 0, 16, [](UniqueFd, std::string) {}, [](const Error&) {});
    REQUIRE_FALSE(opened.has_value());
    const Error& error = opened.error();
    CHECK(error.code == errc::resolve_failed);
    const std::string message = error.message();
    MESSAGE(message);
    CHECK(message.rfind("getaddrinfo nosuch.invalid: ", 0) == 0);
    CHECK(message.size() > std::string("getaddrinfo nosuch.invalid: ").size());
    CHECK(message.find(":0") == std::string::npos);
    CHECK(message.find("nvalid argument") == std::string::npos);
    CHECK(message.find("cannot resolve address") == std::string::npos);  // the resolver said why
}

TEST_CASE("EMFILE: queued connections are refused with the spare descriptor and the loop goes quiet") {
    const std::string report = run_in_child([]() -> std::string {
        auto loop = make_loop();
        Seen seen;
        auto listener = open_listener(*loop, seen);
        constexpr std::size_t room = 2;  // descriptors left for accepted connections
        constexpr std::size_t first_wave = 6;
        constexpr std::size_t second_wave = 3;
        // Every client socket exists before the limit drops; connect(2) needs no new descriptor.
        std::vector<UniqueFd> clients;
        for (std::size_t i = 0; i < first_wave + second_wave; ++i) {
            clients.push_back(tcp_socket());
        }
        std::vector<UniqueFd> fillers;
        leave_room(room, fillers);

        for (std::size_t i = 0; i < first_wave; ++i) {
            connect_loopback(clients[i].get(), port_of(*listener));
        }
        if (!run_until(*loop, [&] { return seen.exhausted.size() == first_wave - room; }, 300)) {
            return "first wave: " + std::to_string(seen.sockets.size()) + " accepted, " +
                   std::to_string(seen.exhausted.size()) + " refused";
        }
        if (seen.sockets.size() != room) {
            return "accepted " + std::to_string(seen.sockets.size()) + ", expected " + std::to_string(room);
        }
        for (const Error& error : seen.exhausted) {
            if (error.code != std::errc::too_many_files_open) {
                return "on_exhausted was told " + error.message();
            }
        }
        const std::set<std::string> served(seen.peers.begin(), seen.peers.end());
        for (std::size_t i = 0; i < first_wave; ++i) {
            const bool was_served = served.count(local_address(clients[i].get())) == 1;
            // A served client stays open; a refused one sees the server close (EOF or reset).
            if (closed_by_peer(clients[i].get(), was_served ? 0ms : 5000ms) == was_served) {
                return "client " + std::to_string(i) + (was_served ? " was served but closed" : " was not closed");
            }
        }
        // The queue is empty: while no client connects, no iteration runs a callback.
        if (const int busy = busy_iterations(*loop, 20, 5ms); busy != 0) {
            return "after the first wave, " + std::to_string(busy) + " of 20 idle iterations ran callbacks";
        }

        // Still exhausted: later clients are refused the same way (the spare was reopened).
        for (std::size_t i = first_wave; i < clients.size(); ++i) {
            connect_loopback(clients[i].get(), port_of(*listener));
        }
        if (!run_until(*loop, [&] { return seen.exhausted.size() == first_wave - room + second_wave; }, 300)) {
            return "second wave: " + std::to_string(seen.exhausted.size()) + " refused in all";
        }
        for (std::size_t i = first_wave; i < clients.size(); ++i) {
            if (!closed_by_peer(clients[i].get(), 5000ms)) {
                return "second-wave client " + std::to_string(i) + " was not closed";
            }
        }
        if (const int busy = busy_iterations(*loop, 20, 5ms); busy != 0) {
            return "after the second wave, " + std::to_string(busy) + " of 20 idle iterations ran callbacks";
        }
        if (listener->backing_off()) {
            return "the listener backed off although the spare refused every connection";
        }
        return {};
    });
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("ENFILE with the spare gone: the listener backs off, reopens the spare on the timer, then refuses") {
    const std::string report = run_in_child([]() -> std::string {
        auto loop = make_loop();
        Seen seen;
        auto listener = open_listener(*loop, seen);
        UniqueFd client = tcp_socket();
        std::vector<UniqueFd> fillers;
        leave_room(0, fillers);

        // The system-wide table is full: accept fails with ENFILE, and whatever descriptor is
        // freed meanwhile (the spare, when the listener closes it) is taken by "another process".
        bool table_full = true;
        std::vector<UniqueFd> taken;
        std::vector<Clock::time_point> attempts;
        listener->set_accept_call([&](int fd, sockaddr* addr, socklen_t* len, int flags) {
            attempts.push_back(Clock::now());
            if (!table_full) {
                return ::accept4(fd, addr, len, flags);
            }
            for (int grabbed; (grabbed = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) {
                taken.emplace_back(grabbed);
            }
            errno = ENFILE;
            return -1;
        });
        connect_loopback(client.get(), port_of(*listener));

        // First event: accept fails, the spare is closed for the refusal, its slot is taken, the
        // refusal fails and the spare cannot be reopened.
        if (!run_until(*loop, [&] { return !attempts.empty(); }, 300)) {
            return "the listener never tried to accept";
        }
        if (attempts.size() != 2 || taken.size() != 1) {
            return std::to_string(attempts.size()) + " accept calls and " + std::to_string(taken.size()) +
                   " descriptors taken in the first event, expected 2 and 1";
        }
        if (!listener->backing_off() || loop->watched(listener->fd())) {
            return "after ENFILE the listener is still watched";
        }
        // Three more rounds: each after its timer (10, 20, 40 ms), none in between although the
        // connection is still queued and the spare still gone.
        if (!run_until(*loop, [&] { return attempts.size() >= 5; }, 300)) {
            return "the listener stopped retrying:" + describe(attempts);
        }
        const milliseconds minimum[] = {10ms, 20ms, 40ms};
        for (std::size_t i = 0; i < 3; ++i) {
            if (attempts[i + 2] - attempts[i + 1] < minimum[i]) {
                return "a retry came before its back-off ended:" + describe(attempts);
            }
        }
        if (!seen.exhausted.empty() || closed_by_peer(client.get(), 0ms)) {
            return "the connection was refused without a spare";
        }

        // The table has room again: the timer reopens the spare, and the refusal goes through.
        table_full = false;
        taken.clear();
        if (!run_until(*loop, [&] { return seen.exhausted.size() == 1; }, 300)) {
            return "the connection was never refused:" + describe(attempts);
        }
        if (seen.exhausted.front().code != std::errc::too_many_files_open) {
            return "on_exhausted was told " + seen.exhausted.front().message();
        }
        if (!closed_by_peer(client.get(), 5000ms)) {
            return "the refused client was not closed";
        }
        if (listener->backing_off() || loop->interest(listener->fd()) != Interest::read) {
            return "after the timer the listener is not watched for reading";
        }
        if (const int busy = busy_iterations(*loop, 20, 5ms); busy != 0) {
            return std::to_string(busy) + " of 20 idle iterations ran callbacks";
        }
        return {};
    });
    CHECK_MESSAGE(report.empty(), report);
}

TEST_CASE("ENOBUFS/ENOMEM: the listener stops being watched, doubles its pause, and starts over after an accept") {
    auto loop = make_loop();
    Seen seen;
    auto listener = open_listener(*loop, seen);
    int failures_left = 0;
    int failure_errno = ENOBUFS;
    std::vector<Clock::time_point> attempts;
    listener->set_accept_call([&](int fd, sockaddr* addr, socklen_t* len, int flags) {
        attempts.push_back(Clock::now());
        if (failures_left > 0) {
            --failures_left;
            errno = failure_errno;
            return -1;
        }
        return ::accept4(fd, addr, len, flags);
    });

    // Five failures in a row, then the connection is accepted.
    failures_left = 5;
    std::vector<UniqueFd> clients;
    clients.push_back(connect_client(port_of(*listener)));
    REQUIRE(run_until(*loop, [&] { return !attempts.empty(); }));
    CHECK(attempts.size() == 1);
    CHECK(listener->backing_off());
    CHECK_FALSE(loop->watched(listener->fd()));
    REQUIRE(run_until(*loop, [&] { return seen.sockets.size() == 1; }, 1000));
    {
        const std::string timeline = describe(attempts);
        INFO("attempts:", timeline);
        REQUIRE(attempts.size() >= 6);
        milliseconds pause = Listener::first_backoff;
        for (std::size_t i = 1; i < 6; ++i, pause *= 2) {
            CHECK(attempts[i] - attempts[i - 1] >= pause);  // no retry before the timer
        }
    }
    CHECK_FALSE(listener->backing_off());
    CHECK(loop->interest(listener->fd()) == Interest::read);
    CHECK(seen.exhausted.empty());  // nothing was refused: the connection waited

    // The accept reset the pause: the next failure waits first_backoff again, not 320 ms.
    failures_left = 1;
    failure_errno = ENOMEM;
    attempts.clear();
    clients.push_back(connect_client(port_of(*listener)));
    REQUIRE(run_until(*loop, [&] { return !attempts.empty(); }));
    CHECK_FALSE(loop->watched(listener->fd()));
    REQUIRE(run_until(*loop, [&] { return seen.sockets.size() == 2; }, 1000));
    REQUIRE(attempts.size() >= 2);
    CHECK(attempts[1] - attempts[0] >= Listener::first_backoff);
    CHECK(attempts[1] - attempts[0] < Listener::first_backoff * 32);
    CHECK(seen.peers.back() == local_address(clients.back().get()));
}

TEST_CASE("close() and the destructor cancel a pending back-off") {
    auto loop = make_loop();
    Seen seen;
    auto listener = open_listener(*loop, seen);
    listener->set_accept_call([](int, sockaddr*, socklen_t*, int) {
        errno = ENOBUFS;
        return -1;
    });
    UniqueFd client = connect_client(port_of(*listener));
    REQUIRE(run_until(*loop, [&] { return listener->backing_off(); }));
    listener->close();
    CHECK_FALSE(listener->backing_off());
    CHECK(listener->fd() == -1);
    // Past the pause: the cancelled timer never runs (run_once would count it).
    CHECK(busy_iterations(*loop, 3, Listener::first_backoff * 2) == 0);

    auto second = open_listener(*loop, seen);
    second->set_accept_call([](int, sockaddr*, socklen_t*, int) {
        errno = ENOMEM;
        return -1;
    });
    UniqueFd other = connect_client(port_of(*second));
    REQUIRE(run_until(*loop, [&] { return second->backing_off(); }));
    second.reset();  // a timer left behind would call into freed memory
    CHECK(busy_iterations(*loop, 3, Listener::first_backoff * 2) == 0);
}

}  // namespace
}  // namespace echoplex::test
