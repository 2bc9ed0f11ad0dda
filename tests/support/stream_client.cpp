// Load clients for the stress suite: implementation.
#include "support/stream_client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "support/clients.hpp"

namespace echoplex::test {
namespace {

constexpr std::size_t write_chunk = 256 * 1024;
constexpr std::size_t read_chunk = 64 * 1024;
constexpr int reads_per_wake = 16;

bool transient(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

void send_some(StreamClient& c) {
    const std::string& pattern = *c.pattern;
    while (c.sent < c.send_limit) {
        const std::size_t at = (c.offset + c.sent) % pattern.size();
        const std::size_t len = std::min({pattern.size() - at, c.send_limit - c.sent, write_chunk});
        const ssize_t n = ::send(c.fd.get(), pattern.data() + at, len, MSG_NOSIGNAL);
        if (n > 0) {
            c.sent += static_cast<std::size_t>(n);
            c.last_send_progress = StreamClient::Clock::now();
            if (static_cast<std::size_t>(n) < len) {
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

// Compares what arrived with the pattern at the same stream offset; remembers the first mismatch.
void check_received(StreamClient& c, const char* data, std::size_t n) {
    const std::string& pattern = *c.pattern;
    std::size_t done = 0;
    while (done < n && !c.mismatch) {
        const std::size_t at = (c.offset + c.received + done) % pattern.size();
        const std::size_t len = std::min(pattern.size() - at, n - done);
        if (std::memcmp(pattern.data() + at, data + done, len) != 0) {
            std::size_t k = 0;
            while (pattern[at + k] == data[done + k]) {
                ++k;
            }
            c.mismatch = c.received + done + k;
        }
        done += len;
    }
}

void receive_some(StreamClient& c) {
    static thread_local std::vector<char> buffer(read_chunk);
    for (int i = 0; i < reads_per_wake; ++i) {
        const ssize_t n = ::recv(c.fd.get(), buffer.data(), buffer.size(), 0);
        if (n > 0) {
            check_received(c, buffer.data(), static_cast<std::size_t>(n));
            c.received += static_cast<std::size_t>(n);
            // More than was sent is an echo of bytes never sent: wrong either way.
            if (c.received > c.sent && !c.mismatch) {
                c.mismatch = c.sent;
            }
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

int checked(int rc, const char* what) {
    if (rc < 0) {
        throw std::system_error(errno, std::system_category(), what);
    }
    return rc;
}

}  // namespace

StreamClient make_stream_client(std::uint16_t port, const std::string& pattern, std::size_t offset,
                                std::size_t send_limit, bool reading,
                                const std::function<void(int)>& before_connect) {
    StreamClient c;
    c.fd = connect_to(port, "127.0.0.1", before_connect);
    c.pattern = &pattern;
    c.offset = offset % pattern.size();
    c.send_limit = send_limit;
    c.reading = reading;
    c.last_send_progress = StreamClient::Clock::now();
    return c;
}

std::size_t pump_once(std::vector<StreamClient>& clients, std::chrono::milliseconds max_wait) {
    static thread_local std::vector<pollfd> fds;
    static thread_local std::vector<std::size_t> index;
    fds.clear();
    index.clear();
    for (std::size_t i = 0; i < clients.size(); ++i) {
        const StreamClient& c = clients[i];
        if (c.closed() || !c.fd) {
            continue;
        }
        short events = c.reading ? POLLIN : 0;
        if (c.sent < c.send_limit) {
            events |= POLLOUT;
        }
        if (events == 0) {
            continue;
        }
        fds.push_back({c.fd.get(), events, 0});
        index.push_back(i);
    }
    if (fds.empty()) {
        return 0;
    }
    const auto wait = std::clamp<std::chrono::milliseconds::rep>(max_wait.count(), 0, 60'000);
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait)) < 0) {
        if (errno == EINTR) {
            return fds.size();
        }
        throw std::system_error(errno, std::system_category(), "poll");
    }
    for (std::size_t k = 0; k < fds.size(); ++k) {
        StreamClient& c = clients[index[k]];
        const short re = fds[k].revents;
        if (re == 0) {
            continue;
        }
        if ((re & (POLLOUT | POLLERR | POLLHUP)) != 0 && c.sent < c.send_limit) {
            send_some(c);
        }
        if (c.reading && (re & (POLLIN | POLLERR | POLLHUP)) != 0 && c.error == 0) {
            receive_some(c);
        }
        if ((re & POLLERR) != 0 && c.error == 0 && !c.eof) {
            int err = 0;
            socklen_t len = sizeof err;
            ::getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                c.error = err;
            }
        }
    }
    return fds.size();
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
