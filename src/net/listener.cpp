// Listener implementation.
#include "echoplex/net/listener.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

#include <fmt/format.h>

namespace echoplex {
namespace {

// Accepts per readiness event: enough to empty a burst, few enough that clients already
// connected are not kept waiting by a connection storm.
constexpr int accepts_per_event = 64;

// The endpoint as the user gave it, for error messages: port 0 ("any port") is left out, an IPv6
// literal goes in brackets only when a port follows it.
std::string describe_endpoint(const std::string& host, std::uint16_t port) {
    if (port == 0) {
        return host;
    }
    return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

}  // namespace

std::string format_address(const sockaddr* addr) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        return fmt::format("[{}]:{}", host, ntohs(in6->sin6_port));
    }
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(addr);
    ::inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
    return fmt::format("{}:{}", host, ntohs(in4->sin_port));
}

Result<std::unique_ptr<Listener>> Listener::open(EventLoop& loop, const std::string& host, std::uint16_t port,
                                                 int backlog, AcceptFn on_accept, ExhaustedFn on_exhausted) {
    const std::string where = describe_endpoint(host, port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string service = std::to_string(port);
    if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
        if (rc == EAI_SYSTEM) {
            // The resolver itself could not run (EMFILE opening /etc/hosts, ...): errno says why.
            Error e = Error::from_errno("getaddrinfo");
            e.context = where;
            return e;
        }
        return Error{"getaddrinfo", make_error_code(errc::resolve_failed), fmt::format("{}: {}", where, ::gai_strerror(rc))};
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> results(found, ::freeaddrinfo);
    const addrinfo* ai = results.get();

    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    auto fail = [&](const char* call) {
        Error e = Error::from_errno(call);
        e.context = "(listening on " + where + ")";
        return e;
    };
    if (!fd) {
        return fail("socket");
    }
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) {
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
        return fail("bind");
    }
    if (::listen(fd.get(), backlog) < 0) {
        return fail("listen");
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) < 0) {
        return fail("getsockname");
    }
    auto listener = std::unique_ptr<Listener>(new Listener(loop, std::move(fd), std::move(on_accept), std::move(on_exhausted)));
    listener->address_ = format_address(reinterpret_cast<const sockaddr*>(&bound));
    return listener;
}

Listener::Listener(EventLoop& loop, UniqueFd socket, AcceptFn on_accept, ExhaustedFn on_exhausted)
    : loop_(loop),
      socket_(std::move(socket)),
      spare_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
      on_accept_(std::move(on_accept)),
      on_exhausted_(std::move(on_exhausted)) {}

Listener::~Listener() { close(); }

Result<void> Listener::start() { return loop_.watch(socket_.get(), *this, Interest::read); }

void Listener::close() noexcept {
    if (socket_) {
        loop_.unwatch(socket_.get());
        socket_.reset();
    }
}

void Listener::on_readable() {
    for (int i = 0; i < accepts_per_event && socket_; ++i) {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        UniqueFd client(::accept4(socket_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (client) {
            const int one = 1;
            // Echo replies are small and latency-bound; Nagle would hold them back.
            ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            on_accept_(std::move(client), format_address(reinterpret_cast<const sockaddr*>(&peer)));
            continue;
        }
        const int err = errno;
        if (err == EINTR || err == ECONNABORTED || err == EPROTO) {
            continue;  // that connection is gone; others may be queued
        }
        if (err == EMFILE || err == ENFILE) {
            // accept4 checks for a free descriptor before looking at the queue, so EMFILE does
            // not mean a connection is waiting: stop when the spare finds none.
            if (!refuse_with_spare_fd()) {
                break;
            }
            on_exhausted_(Error::from_errno("accept4", err));
            continue;
        }
        // EAGAIN: the queue is empty. Anything else (ENOBUFS, ENOMEM) is retried on the next event.
        break;
    }
}

bool Listener::refuse_with_spare_fd() {
    if (!spare_) {
        return false;
    }
    spare_.reset();
    UniqueFd refused(::accept4(socket_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    const bool took_one = refused.valid();
    refused.reset();
    spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return took_one;
}

}  // namespace echoplex
