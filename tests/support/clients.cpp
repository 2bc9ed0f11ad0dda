// Loopback clients and their engine: implementation.
#include "support/clients.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <system_error>

#include "support/syscall.hpp"

namespace echoplex::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

void set_nonblocking(int fd) {
    const int flags = checked(::fcntl(fd, F_GETFL), "fcntl(F_GETFL)");
    checked(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl(F_SETFL)");
}

}  // namespace

// ---- connecting ----

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

UniqueFd start_connect(std::uint16_t port) {
    UniqueFd fd(checked(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), "socket"));
    const int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0 && errno != EINPROGRESS) {
        throw std::system_error(errno, std::system_category(), "connect 127.0.0.1:" + std::to_string(port));
    }
    return fd;
}

int connect_result(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        return errno;
    }
    return err;
}

// ---- the client ----

Client Client::storing(UniqueFd fd, std::string bytes) {
    Client c;
    c.fd = std::move(fd);
    c.bytes = std::move(bytes);
    c.send_limit = c.bytes.size();
    return c;
}

Client Client::verifying(UniqueFd fd, std::string bytes) {
    Client c = storing(std::move(fd), std::move(bytes));
    c.sink = Sink::verify;
    return c;
}

Client Client::verifying(UniqueFd fd, const std::string& pattern, std::size_t offset, std::size_t send_limit) {
    if (pattern.empty()) {
        throw std::invalid_argument("Client: empty pattern");
    }
    Client c;
    c.fd = std::move(fd);
    c.pattern = &pattern;
    c.offset = offset % pattern.size();
    c.send_limit = send_limit;
    c.sink = Sink::verify;
    return c;
}

void Client::append(std::string_view more) {
    if (pattern != nullptr) {
        throw std::logic_error("Client::append on a pattern stream");
    }
    bytes.append(more);
    send_limit = bytes.size();
}

std::string Client::describe() const {
    std::string text = "sent " + std::to_string(sent) + " of " + std::to_string(send_limit) + ", received " +
                       std::to_string(received);
    if (mismatch) {
        text += ", wrong byte at stream offset " + std::to_string(*mismatch);
    }
    if (connecting) {
        text += ", still connecting";
    }
    if (eof) {
        text += ", EOF";
    }
    if (error != 0) {
        text += std::string(", error ") + std::strerror(error);
    }
    return text;
}

std::string DriveResult::describe() const {
    return std::to_string(done) + "/" + std::to_string(total) + " clients done after " +
           std::to_string(elapsed.count()) + " ms";
}

// ---- the engine ----

namespace {

constexpr std::size_t write_chunk = 256 * 1024;
constexpr std::size_t read_chunk = 64 * 1024;
constexpr int reads_per_wake = 16;  // per client and round: one fast peer cannot starve the others

bool transient(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// Milliseconds left until `deadline`, clamped at 0.
milliseconds left_until(Clock::time_point deadline) {
    return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
}

// The stream from offset `at` on, as far as it is contiguous in memory, at most `max` bytes.
std::string_view stream_at(const Client& c, std::size_t at, std::size_t max) {
    if (c.pattern == nullptr) {
        return std::string_view(c.bytes).substr(at, max);
    }
    const std::string& p = *c.pattern;
    const std::size_t i = (c.offset + at) % p.size();
    return std::string_view(p).substr(i, max);
}

void shut_down_if_sent(Client& c) {
    if (c.shutdown_after_send && !c.shut_down && !c.connecting && c.error == 0 && c.sent == c.send_limit) {
        ::shutdown(c.fd.get(), SHUT_WR);
        c.shut_down = true;
    }
}

// MSG_DONTWAIT here and in receive_some: a socket that a test made blocking (a writer thread
// blocked in send on it) never blocks the engine.
void send_some(Client& c) {
    while (c.sent < c.send_limit) {
        const std::string_view piece = stream_at(c, c.sent, std::min(c.send_limit - c.sent, write_chunk));
        const ssize_t n = ::send(c.fd.get(), piece.data(), piece.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c.sent += static_cast<std::size_t>(n);
            c.last_send_progress = Clock::now();
            if (static_cast<std::size_t>(n) < piece.size()) {
                return;  // the socket buffer is full
            }
            continue;
        }
        if (n < 0 && !transient(errno)) {
            c.error = errno;
        }
        return;
    }
}

// Compares what arrived with the stream at the same offset; remembers the first wrong byte.
void verify(Client& c, const char* data, std::size_t n) {
    std::size_t done = 0;
    while (done < n && !c.mismatch) {
        const std::size_t at = c.received + done;
        if (at >= c.sent) {
            c.mismatch = at;  // an echo of bytes never sent
            return;
        }
        const std::string_view want = stream_at(c, at, std::min(n - done, c.sent - at));
        const std::string_view got(data + done, want.size());
        if (got != want) {  // memcmp; the byte-by-byte search only once something is wrong
            c.mismatch = at + static_cast<std::size_t>(std::mismatch(want.begin(), want.end(), got.begin()).first -
                                                       want.begin());
            return;
        }
        done += want.size();
    }
}

void receive_some(Client& c) {
    static thread_local std::vector<char> buffer(read_chunk);
    for (int i = 0; i < reads_per_wake; ++i) {
        const ssize_t n = ::recv(c.fd.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n > 0) {
            const auto got = static_cast<std::size_t>(n);
            if (c.sink == Client::Sink::verify) {
                verify(c, buffer.data(), got);
            } else {
                c.stored.append(buffer.data(), got);
            }
            c.received += got;
            continue;
        }
        if (n == 0) {
            c.eof = true;
        } else if (!transient(errno)) {
            c.error = errno;
        }
        return;
    }
}

// poll_round(), and with `leave_done` drive()'s round, which skips clients that are done.
std::size_t run_round(std::span<Client> clients, milliseconds max_wait, bool leave_done) {
    static thread_local std::vector<pollfd> fds;
    static thread_local std::vector<Client*> polled;
    fds.clear();
    polled.clear();
    for (Client& c : clients) {
        if (!c.fd || c.closed() || (leave_done && c.done())) {
            continue;
        }
        if (c.pattern == nullptr && c.send_limit > c.bytes.size()) {
            throw std::logic_error("Client: send_limit beyond its bytes");
        }
        shut_down_if_sent(c);  // also a client with nothing to send
        short events = POLLOUT;  // a connect in progress is done when the socket is writable
        if (!c.connecting) {
            events = static_cast<short>((c.reading ? POLLIN : 0) | (c.sent < c.send_limit ? POLLOUT : 0));
        }
        if (events == 0) {
            continue;
        }
        fds.push_back({c.fd.get(), events, 0});
        polled.push_back(&c);
    }
    if (fds.empty()) {
        return 0;
    }
    const auto wait = std::clamp<milliseconds::rep>(max_wait.count(), 0, 60'000);
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait)) < 0) {
        if (errno == EINTR) {
            return fds.size();
        }
        fail("poll");
    }
    for (std::size_t k = 0; k < fds.size(); ++k) {
        Client& c = *polled[k];
        const short re = fds[k].revents;
        if (re == 0) {
            continue;
        }
        if (c.connecting) {
            if (const int err = connect_result(c.fd.get()); err != 0) {
                c.error = err;
                continue;
            }
            c.connecting = false;
        }
        if ((re & (POLLOUT | POLLERR | POLLHUP)) != 0 && c.sent < c.send_limit) {
            send_some(c);
            shut_down_if_sent(c);
        }
        if (c.reading && (re & (POLLIN | POLLERR | POLLHUP)) != 0 && c.error == 0) {
            receive_some(c);
        }
        if ((re & POLLERR) != 0 && c.error == 0 && !c.eof) {
            if (const int err = connect_result(c.fd.get()); err != 0) {
                c.error = err;
            }
        }
    }
    return fds.size();
}

}  // namespace

std::size_t poll_round(std::span<Client> clients, milliseconds max_wait) {
    return run_round(clients, max_wait, /*leave_done=*/false);
}

DriveResult drive(std::span<Client> clients, milliseconds deadline_in) {
    const auto start = Clock::now();
    const auto deadline = start + deadline_in;
    while (run_round(clients, left_until(deadline), /*leave_done=*/true) != 0 && Clock::now() < deadline) {
    }
    DriveResult result;
    result.total = clients.size();
    result.done = static_cast<std::size_t>(std::count_if(clients.begin(), clients.end(), [](const Client& c) {
        return c.done() && (c.until_eof || c.error == 0);
    }));
    result.all_done = result.done == result.total;
    result.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    return result;
}

DriveResult drive(Client& client, milliseconds deadline) { return drive(std::span<Client>(&client, 1), deadline); }

bool send_until_stalled(Client& client, milliseconds stall, milliseconds deadline_in) {
    const auto deadline = Clock::now() + deadline_in;
    client.last_send_progress = Clock::now();
    for (;;) {
        if (client.sent >= client.send_limit || client.closed()) {
            return false;
        }
        const auto now = Clock::now();
        const auto stall_at = client.last_send_progress + stall;
        if (now >= stall_at) {
            return true;
        }
        if (now >= deadline) {
            return false;
        }
        run_round(std::span<Client>(&client, 1), left_until(std::min(stall_at, deadline)), /*leave_done=*/false);
    }
}

// ---- around the clients ----

void LatencyLog::add(std::chrono::steady_clock::duration d) {
    samples_.push_back(std::chrono::duration<double, std::milli>(d).count());
}

double LatencyLog::percentile_ms(double p) const {
    if (samples_.empty()) {
        return 0;
    }
    std::vector<double> sorted = samples_;
    std::sort(sorted.begin(), sorted.end());
    const auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(rank, sorted.size() - 1)];
}

std::string LatencyLog::describe() const {
    char text[160];
    std::snprintf(text, sizeof text, "%zu exchanges: p50 %.3f ms, p99 %.3f ms, max %.3f ms", count(),
                  percentile_ms(50), percentile_ms(99), max_ms());
    return text;
}

NofileLimit::NofileLimit(std::size_t soft) {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) < 0) {
        return;
    }
    old_soft_ = static_cast<std::size_t>(lim.rlim_cur);
    hard_ = static_cast<std::size_t>(lim.rlim_max);
    if (lim.rlim_max != RLIM_INFINITY && hard_ < soft) {
        return;
    }
    if (old_soft_ >= soft) {
        ok_ = true;  // already enough
        return;
    }
    lim.rlim_cur = static_cast<rlim_t>(soft);
    ok_ = ::setrlimit(RLIMIT_NOFILE, &lim) == 0;
    changed_ = ok_;
}

NofileLimit::~NofileLimit() {
    if (!changed_) {
        return;
    }
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
        lim.rlim_cur = static_cast<rlim_t>(old_soft_);
        ::setrlimit(RLIMIT_NOFILE, &lim);
    }
}

}  // namespace echoplex::test
