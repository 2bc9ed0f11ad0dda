// Loopback clients for the end-to-end suites: implementation.
#include "support/clients.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <stdexcept>
#include <system_error>

namespace echoplex::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

[[noreturn]] void fail(const char* what, int err = errno) {
    throw std::system_error(err, std::system_category(), what);
}

int checked(int rc, const char* what) {
    if (rc < 0) {
        fail(what);
    }
    return rc;
}

// Milliseconds left until `deadline`, clamped to [0, INT_MAX] for poll(2).
int ms_left(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
        return 0;
    }
    return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

void set_nonblocking(int fd) {
    const int flags = checked(::fcntl(fd, F_GETFL), "fcntl(F_GETFL)");
    checked(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl(F_SETFL)");
}

}  // namespace

UniqueFd connect_to(std::uint16_t port, const std::string& host, const std::function<void(int)>& before_connect) {
    sockaddr_storage storage{};
    socklen_t len = 0;
    int family = AF_INET;
    if (host.find(':') != std::string::npos) {
        family = AF_INET6;
        auto* a6 = reinterpret_cast<sockaddr_in6*>(&storage);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        if (::inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) != 1) {
            throw std::invalid_argument("connect_to: bad IPv6 address " + host);
        }
        len = sizeof(sockaddr_in6);
    } else {
        auto* a4 = reinterpret_cast<sockaddr_in*>(&storage);
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        if (::inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) {
            throw std::invalid_argument("connect_to: bad IPv4 address " + host);
        }
        len = sizeof(sockaddr_in);
    }
    UniqueFd fd(checked(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
    if (before_connect) {
        before_connect(fd.get());
    }
    int rc;
    while ((rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&storage), len)) < 0 && errno == EINTR) {
    }
    if (rc < 0) {
        fail(("connect " + host + ":" + std::to_string(port)).c_str());
    }
    set_nonblocking(fd.get());
    const int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

bool ipv6_loopback_available() {
    UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        return false;
    }
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_loopback;
    return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

std::string random_bytes(std::size_t size, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::string out(size, '\0');
    std::size_t i = 0;
    while (i < size) {
        std::uint64_t word = rng();
        for (int k = 0; k < 8 && i < size; ++k, ++i) {
            out[i] = static_cast<char>(word & 0xFF);
            word >>= 8;
        }
    }
    return out;
}

bool Session::done() const {
    if (until_eof) {
        return eof || error != 0;
    }
    return received.size() >= expected();
}

std::string DriveResult::describe() const {
    return std::to_string(done) + "/" + std::to_string(total) + " sessions done after " +
           std::to_string(elapsed.count()) + " ms";
}

namespace {

constexpr std::size_t kWriteChunk = 256 * 1024;
constexpr std::size_t kReadChunk = 64 * 1024;

// A session that can make no more progress: done, failed, or closed early.
bool finished(const Session& s) { return s.done() || s.error != 0 || s.eof; }

void read_some(Session& s) {
    static thread_local std::vector<char> buffer(kReadChunk);
    // Bounded per wake-up so that one fast peer cannot starve the others.
    for (int i = 0; i < 16; ++i) {
        const ssize_t n = ::recv(s.fd.get(), buffer.data(), buffer.size(), 0);
        if (n > 0) {
            s.received.append(buffer.data(), static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            s.eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s.error = errno;
        }
        return;
    }
}

void write_some(Session& s) {
    while (s.sent < s.to_send.size()) {
        const std::size_t len = std::min(kWriteChunk, s.to_send.size() - s.sent);
        const ssize_t n = ::send(s.fd.get(), s.to_send.data() + s.sent, len, MSG_NOSIGNAL);
        if (n > 0) {
            s.sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s.error = errno;
        }
        break;
    }
    if (s.sent == s.to_send.size() && s.shutdown_after_send && !s.shut_down && s.error == 0) {
        ::shutdown(s.fd.get(), SHUT_WR);
        s.shut_down = true;
    }
}

}  // namespace

DriveResult drive_sessions(std::vector<Session>& sessions, milliseconds deadline_in) {
    const auto start = Clock::now();
    const auto deadline = start + deadline_in;
    std::vector<pollfd> fds;
    std::vector<std::size_t> index;
    // An empty payload with shutdown requested is shut down at once.
    for (auto& s : sessions) {
        if (s.to_send.empty()) {
            write_some(s);
        }
    }
    for (;;) {
        fds.clear();
        index.clear();
        for (std::size_t i = 0; i < sessions.size(); ++i) {
            const Session& s = sessions[i];
            if (finished(s)) {
                continue;
            }
            short events = POLLIN;
            if (s.sent < s.to_send.size()) {
                events |= POLLOUT;
            }
            fds.push_back({s.fd.get(), events, 0});
            index.push_back(i);
        }
        if (fds.empty() || Clock::now() >= deadline) {
            break;
        }
        const int rc = ::poll(fds.data(), fds.size(), ms_left(deadline));
        if (rc < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail("poll");
        }
        for (std::size_t k = 0; k < fds.size(); ++k) {
            Session& s = sessions[index[k]];
            const short re = fds[k].revents;
            if ((re & POLLOUT) != 0) {
                write_some(s);
            }
            if ((re & (POLLIN | POLLHUP | POLLERR)) != 0) {
                read_some(s);
            }
            if ((re & POLLERR) != 0 && s.error == 0 && !s.eof) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(s.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    s.error = err;
                }
            }
        }
    }
    DriveResult result;
    result.total = sessions.size();
    result.done = static_cast<std::size_t>(std::count_if(sessions.begin(), sessions.end(), [](const Session& s) {
        return s.done() && (s.until_eof || s.error == 0);
    }));
    result.all_done = result.done == result.total;
    result.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    return result;
}

PushResult push_without_reading(int fd, const std::string& pattern, std::size_t limit, milliseconds stall,
                                milliseconds deadline_in, std::size_t start_offset) {
    PushResult result;
    const auto deadline = Clock::now() + deadline_in;
    auto last_progress = Clock::now();
    while (result.sent < limit) {
        // Write while the socket takes it.
        bool progressed = false;
        for (;;) {
            if (result.sent >= limit) {
                break;
            }
            const std::size_t offset = (start_offset + result.sent) % pattern.size();
            const std::size_t len = std::min({pattern.size() - offset, limit - result.sent, kWriteChunk});
            const ssize_t n = ::send(fd, pattern.data() + offset, len, MSG_NOSIGNAL);
            if (n > 0) {
                result.sent += static_cast<std::size_t>(n);
                progressed = true;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                break;
            }
            result.error = errno;
            return result;
        }
        const auto now = Clock::now();
        if (progressed) {
            last_progress = now;
        }
        if (result.sent >= limit || now >= deadline) {
            break;
        }
        const auto stall_at = last_progress + stall;
        if (now >= stall_at) {
            result.stalled = true;
            break;
        }
        pollfd p{fd, POLLOUT, 0};
        const int rc = ::poll(&p, 1, ms_left(std::min(stall_at, deadline)));
        if (rc < 0 && errno != EINTR) {
            fail("poll");
        }
    }
    return result;
}

ReadResult read_until_eof(int fd, milliseconds deadline_in) {
    ReadResult result;
    const auto deadline = Clock::now() + deadline_in;
    std::vector<char> buffer(kReadChunk);
    for (;;) {
        const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (n > 0) {
            result.data.append(buffer.data(), static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            result.eof = true;
            return result;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            result.error = errno;
            return result;
        }
        if (Clock::now() >= deadline) {
            result.timed_out = true;
            return result;
        }
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms_left(deadline)) < 0 && errno != EINTR) {
            fail("poll");
        }
    }
}

}  // namespace echoplex::test
