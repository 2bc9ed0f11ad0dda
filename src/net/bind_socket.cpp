// bind_tcp implementation.
#include "echoplex/net/bind_socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "echoplex/io/fmt.hpp"

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

namespace {

// getaddrinfo for a passive TCP socket on host:port, every address.
Result<std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>> resolve(const std::string& host, std::uint16_t port,
                                                                      const std::string& where) {
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
    return std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>(found, ::freeaddrinfo);
}

// The IPv6 wildcard "::": bound dual-stack (IPV6_V6ONLY off), so IPv4 clients reach it too.
bool ipv6_wildcard(const sockaddr* addr) {
    if (addr->sa_family != AF_INET6) {
        return false;
    }
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    return IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
}

Result<BoundSocket> bind_one(const sockaddr* addr, socklen_t length, std::uint16_t port, const BindOptions& options) {
    sockaddr_storage target{};
    std::memcpy(&target, addr, length);
    if (target.ss_family == AF_INET6) {
        reinterpret_cast<sockaddr_in6*>(&target)->sin6_port = htons(port);
    } else {
        reinterpret_cast<sockaddr_in*>(&target)->sin_port = htons(port);
    }
    const std::string where = format_address(reinterpret_cast<const sockaddr*>(&target));
    UniqueFd fd(::socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    auto fail = [&](const char* call) {
        Error e = Error::from_errno(call);
        e.context = "(listening on " + (port == 0 ? where.substr(0, where.rfind(':')) : where) + ")";
        return e;
    };
    if (!fd) {
        return fail("socket");
    }
    const int one = 1;
    const int zero = 0;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (options.reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        return fail("setsockopt(SO_REUSEPORT)");
    }
    if (target.ss_family == AF_INET6) {
        const bool dual = ipv6_wildcard(reinterpret_cast<const sockaddr*>(&target));
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, dual ? &zero : &one, sizeof one);
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&target), length) < 0) {
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
    const auto* got = reinterpret_cast<const sockaddr*>(&bound);
    return BoundSocket{std::move(fd), format_address(got), port_of(got)};
}

}  // namespace

Result<BoundSocket> bind_tcp(const std::string& host, std::uint16_t port, const BindOptions& options) {
    auto found = resolve(host, port, describe_endpoint(host, port));
    if (!found) {
        return std::move(found).error();
    }
    const addrinfo* ai = found->get();
    return bind_one(ai->ai_addr, ai->ai_addrlen, port, options);
}

Result<std::vector<BoundSocket>> bind_tcp_all(const std::vector<std::string>& hosts, std::uint16_t port,
                                              const BindOptions& options) {
    std::vector<BoundSocket> out;
    std::vector<std::string> seen;
    for (const std::string& host : hosts) {
        auto found = resolve(host, port, describe_endpoint(host, port));
        if (!found) {
            return std::move(found).error();  // `out` closes what was bound
        }
        for (const addrinfo* ai = found->get(); ai != nullptr; ai = ai->ai_next) {
            const std::string text = format_address(ai->ai_addr);
            if (std::find(seen.begin(), seen.end(), text) != seen.end()) {
                continue;  // a name and its address both given, or a resolver's duplicate
            }
            seen.push_back(text);
            // Port 0 asks for one free port: the kernel's choice for the first address, then the
            // same port everywhere else.
            auto bound = bind_one(ai->ai_addr, ai->ai_addrlen, out.empty() ? port : out.front().port, options);
            if (!bound) {
                return std::move(bound).error();
            }
            out.push_back(std::move(bound).value());
        }
    }
    return out;
}

Result<BoundSocket> adopt_listening_socket(int fd) {
    const std::string which = fmt::format("(passed descriptor {})", fd);
    auto fail = [&](const char* call, int err) {
        Error e = Error::from_errno(call, err);
        e.context = which;
        return e;
    };
    int type = 0;
    int listening = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        return fail("getsockopt(SO_TYPE)", errno);
    }
    len = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) {
        return fail("getsockopt(SO_ACCEPTCONN)", errno);
    }
    sockaddr_storage bound{};
    len = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) < 0) {
        return fail("getsockname", errno);
    }
    if (type != SOCK_STREAM || listening == 0 || (bound.ss_family != AF_INET && bound.ss_family != AF_INET6)) {
        return Error{"adopt", make_error_code(errc::bad_argument),
                     fmt::format("{}: not a listening TCP socket (give ListenStream= sockets)", which)};
    }
    if (!set_nonblocking(fd) || ::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return fail("fcntl", errno);
    }
    const auto* addr = reinterpret_cast<const sockaddr*>(&bound);
    return BoundSocket{UniqueFd(fd), format_address(addr), port_of(addr)};
}

}  // namespace echoplex
