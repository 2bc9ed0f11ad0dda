// Binding a TCP socket to a host and port, apart from any loop: the listener binds its socket with
// it, and a process that supervises workers reserves their ports with it before any loop exists.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

#include "echoplex/io/error.hpp"
#include "echoplex/io/unique_fd.hpp"

namespace echoplex {

struct BindOptions {
    // SO_REUSEPORT: other sockets of this user may bind the same address and port, and the kernel
    // spreads incoming connections over those that listen (by the 4-tuple hash).
    bool reuse_port = false;
    bool listen = true;  // false: bound only, which holds the port without taking connections
    int backlog = 511;
};

// A socket bound (and listening, unless told not to), non-blocking and close-on-exec.
struct BoundSocket {
    UniqueFd fd;
    std::string address;     // "127.0.0.1:50007" or "[::1]:50007", with the port really bound
    std::uint16_t port = 0;  // the port really bound (the kernel's choice for port 0)
};

// Binds the first address `host` resolves to (numeric or a name), with SO_REUSEADDR; an IPv6
// address is IPV6_V6ONLY except the wildcard "::", which is dual-stack (IPv4 clients reach it
// too). A name that does not resolve fails with errc::resolve_failed; every error names the
// endpoint.
Result<BoundSocket> bind_tcp(const std::string& host, std::uint16_t port, const BindOptions& options);

// Binds every address every host resolves to (duplicates once), all or none: on failure the
// sockets already bound are closed. Port 0 is one port: the kernel picks it for the first address
// and the others bind the same.
Result<std::vector<BoundSocket>> bind_tcp_all(const std::vector<std::string>& hosts, std::uint16_t port,
                                              const BindOptions& options);

// Takes over `fd`, a socket bound and listening already (passed by systemd's socket activation):
// checks that it is a listening TCP socket, makes it non-blocking and close-on-exec. On failure
// the descriptor is left open and the error says what it is instead.
Result<BoundSocket> adopt_listening_socket(int fd);

// "host:port" as users type it: IPv6 in brackets.
std::string format_address(const sockaddr* addr);

}  // namespace echoplex
