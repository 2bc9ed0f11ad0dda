// The benchmark's floor: the smallest level-triggered epoll echo loop we could write. One read
// per readiness into a fixed buffer, written straight back; no queues, no timers, no limits.
// When the kernel refuses part of a write, the rest waits in a per-descriptor buffer and the
// descriptor stops reading until it is sent, so the echo stays byte-exact under any load.
#include <netinet/tcp.h>
#include <sys/epoll.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <vector>

#include "common.hpp"

namespace {

struct Unsent {
    std::vector<char> bytes;
    std::size_t sent = 0;
};

std::array<char, 65536> buffer;
std::vector<Unsent> unsent;  // indexed by descriptor

void set_events(int ep, int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

void drop(int ep, int fd) {
    ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    unsent[static_cast<std::size_t>(fd)] = {};
}

// Sends bytes[0, size); returns how many the kernel took, or -1 when the peer is gone.
ssize_t send_some(int fd, const char* bytes, std::size_t size) {
    const ssize_t n = ::send(fd, bytes, size, MSG_NOSIGNAL);
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    return n;
}

void on_readable(int ep, int fd) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got <= 0) {
        if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
            drop(ep, fd);
        }
        return;
    }
    const auto size = static_cast<std::size_t>(got);
    const ssize_t put = send_some(fd, buffer.data(), size);
    if (put < 0) {
        drop(ep, fd);
    } else if (static_cast<std::size_t>(put) < size) {
        Unsent& rest = unsent[static_cast<std::size_t>(fd)];
        rest.bytes.assign(buffer.data() + put, buffer.data() + size);
        rest.sent = 0;
        set_events(ep, fd, EPOLLOUT);
    }
}

void on_writable(int ep, int fd) {
    Unsent& rest = unsent[static_cast<std::size_t>(fd)];
    const ssize_t put = send_some(fd, rest.bytes.data() + rest.sent, rest.bytes.size() - rest.sent);
    if (put < 0) {
        drop(ep, fd);
        return;
    }
    rest.sent += static_cast<std::size_t>(put);
    if (rest.sent == rest.bytes.size()) {
        rest.bytes.clear();
        set_events(ep, fd, EPOLLIN);
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    const int listener = bench::listen_loopback(bench::parse_port(argc, argv), SOCK_NONBLOCK);
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);

    std::array<epoll_event, 256> events;
    for (;;) {
        const int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
        for (int i = 0; i < n; ++i) {
            const int fd = events[static_cast<std::size_t>(i)].data.fd;
            if (fd == listener) {
                for (int client; (client = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
                    const int one = 1;  // as echoplex does: an echo must not wait for Nagle
                    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (static_cast<std::size_t>(client) >= unsent.size()) {
                        unsent.resize(static_cast<std::size_t>(client) + 1);
                    }
                    ev.events = EPOLLIN;
                    ev.data.fd = client;
                    ::epoll_ctl(ep, EPOLL_CTL_ADD, client, &ev);
                }
            } else if (!unsent[static_cast<std::size_t>(fd)].bytes.empty()) {
                on_writable(ep, fd);  // also on EPOLLHUP/EPOLLERR: the send reports it
            } else {
                on_readable(ep, fd);  // likewise, the read reports it
            }
        }
    }
}
