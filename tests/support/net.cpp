// Test helpers implementation.
#include "support/net.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include "support/syscall.hpp"

namespace echoplex::test {

BackendKind backend_under_test() {
    const char* name = std::getenv("ECHOPLEX_BACKEND");
    if (name == nullptr || *name == '\0') {
        return available_backends().front();
    }
    const auto kind = parse_backend_kind(name);
    if (!kind) {
        throw std::invalid_argument(std::string("ECHOPLEX_BACKEND: unknown backend ") + name);
    }
    return *kind;
}

UniqueFd connect_loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    UniqueFd client(checked(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
    // Blocking connect to a listening loopback socket completes at once (the backlog takes it).
    checked(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), "connect");
    const int flags = checked(::fcntl(client.get(), F_GETFL), "fcntl");
    checked(::fcntl(client.get(), F_SETFL, flags | O_NONBLOCK), "fcntl");
    const int one = 1;
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return client;
}

std::unique_ptr<Backend> new_backend() {
    auto backend = make_backend(backend_under_test());
    if (!backend) {
        throw std::runtime_error(backend.error().message());
    }
    return std::move(backend).value();
}

SocketPair connected_pair(Transport transport) {
    if (transport == Transport::unix_stream) {
        int fds[2];
        checked(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), "socketpair");
        return {UniqueFd(fds[0]), UniqueFd(fds[1])};
    }
    UniqueFd listener(checked(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    checked(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), "bind");
    checked(::listen(listener.get(), 1), "listen");
    socklen_t len = sizeof addr;
    checked(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), "getsockname");
    UniqueFd client(checked(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
    // Blocking connect to a listening loopback socket completes at once (the backlog takes it).
    checked(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), "connect");
    UniqueFd server(checked(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC), "accept4"));
    const int flags = checked(::fcntl(client.get(), F_GETFL), "fcntl");
    checked(::fcntl(client.get(), F_SETFL, flags | O_NONBLOCK), "fcntl");
    const int one = 1;
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return {std::move(client), std::move(server)};
}

UniqueFd duplicate_at_or_above(int fd, int lowest) {
    rlimit limit{};
    checked(::getrlimit(RLIMIT_NOFILE, &limit), "getrlimit");
    const auto wanted = static_cast<rlim_t>(lowest) + 1024;
    if (limit.rlim_cur < wanted) {
        rlimit raised = limit;
        raised.rlim_cur = std::min(wanted, limit.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &raised);
        checked(::getrlimit(RLIMIT_NOFILE, &limit), "getrlimit");
    }
    if (limit.rlim_cur <= static_cast<rlim_t>(lowest)) {
        return UniqueFd();
    }
    return UniqueFd(checked(::fcntl(fd, F_DUPFD_CLOEXEC, lowest), "fcntl(F_DUPFD_CLOEXEC)"));
}

void set_linger_zero(int fd) {
    const linger lin{1, 0};
    checked(::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin), "setsockopt(SO_LINGER)");
}

bool run_until(EventLoop& loop, const std::function<bool()>& done, int max_steps, std::chrono::milliseconds step) {
    for (int i = 0; i < max_steps && !done(); ++i) {
        if (auto r = loop.run_once(step); !r) {
            throw std::runtime_error(r.error().message());
        }
    }
    return done();
}

void write_all(int fd, const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
        const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
            fail("send");
        }
        sent += static_cast<std::size_t>(n);
    }
}

void send_some(int fd, const std::string& data, std::size_t& sent) {
    if (sent < data.size()) {
        const ssize_t n = ::send(fd, data.data() + sent, std::min<std::size_t>(data.size() - sent, 65536), MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
        }
    }
}

std::string read_available(int fd, bool* closed) {
    std::string out;
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) {
            if (closed != nullptr && (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))) {
                *closed = true;  // EOF, or a reset
            }
            break;
        }
        out.append(buffer, static_cast<std::size_t>(n));
    }
    return out;
}

}  // namespace echoplex::test
