// What the benchmark's own servers share: the command line (`--port N`, default 0) and a bound,
// listening loopback socket announced as `listening on 127.0.0.1:PORT` for bench.py to read.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace bench {

// The port from `--port N` or `--port=N`; 0 (the kernel picks) when absent. Exits 2 on anything else.
inline int parse_port(int argc, char** argv) {
    int port = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        const char* value = nullptr;
        if (arg == "--port" && i + 1 < argc) {
            value = argv[++i];
        } else if (arg.starts_with("--port=")) {
            value = argv[i] + 7;
        } else {
            std::fprintf(stderr, "usage: %s [--port N]\n", argv[0]);
            std::exit(2);
        }
        char* end = nullptr;
        const long parsed = std::strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || parsed < 0 || parsed > 65535) {
            std::fprintf(stderr, "%s: --port: '%s' is not a port number\n", argv[0], value);
            std::exit(2);
        }
        port = static_cast<int>(parsed);
    }
    return port;
}

// Binds 127.0.0.1:port (SO_REUSEADDR), listens with a deep backlog so bench.py's connection
// bursts are not dropped, and prints the bound port. Exits 1 on failure.
inline int listen_loopback(int port, int extra_type_flags) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | extra_type_flags, 0);
    const int one = 1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::listen(fd, 4096) < 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
        std::perror("listen on 127.0.0.1");
        std::exit(1);
    }
    std::printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    std::fflush(stdout);
    return fd;
}

}  // namespace bench
