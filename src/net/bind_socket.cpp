// bind_tcp implementation.
#include "echoplex/net/bind_socket.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>

#include <fmt/format.h>

namespace echoplex {
namespace {

// The endpoint as the user gave it, for error messages: port 0 ("any port") is left out, an IPv6
// literal goes in brackets only when a port follows it.
std::string describe_endpoint(const std::string& host, std::uint16_t port) {
    if (port == 0) {
        return host;
    }
    return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

std::uint16_t port_of(const sockaddr* addr) {
    if (addr->sa_family == AF_INET6) {
        return ntohs(reinterpret_cast<const sockaddr_in6*>(addr)->sin6_port);
    }
    return ntohs(reinterpret_cast<const sockaddr_in*>(addr)->sin_port);
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

Result<BoundSocket> bind_tcp(const std::string& host, std::uint16_t port, const BindOptions& options) {
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
    if (options.reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        return fail("setsockopt(SO_REUSEPORT)");
    }
    if (ai->ai_family == AF_INET6) {
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
        return fail("bind");
    }
    if (options.listen && ::listen(fd.get(), options.backlog) < 0) {
        return fail("listen");
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) < 0) {
        return fail("getsockname");
    }
    const auto* addr = reinterpret_cast<const sockaddr*>(&bound);
    return BoundSocket{std::move(fd), format_address(addr), port_of(addr)};
}

}  // namespace echoplex
