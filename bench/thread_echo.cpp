// The book's second alternative, for the benchmark: one blocking thread per connection. The main
// thread accepts; each client gets a detached thread that reads up to 64 KiB and writes it all back.
#include <netinet/tcp.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <thread>

#include "common.hpp"

namespace {

void serve(int fd) {
    std::array<char, 65536> buffer;
    for (;;) {
        const ssize_t got = ::read(fd, buffer.data(), buffer.size());
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            break;
        }
        for (ssize_t sent = 0; sent < got;) {
            const ssize_t n = ::send(fd, buffer.data() + sent, static_cast<std::size_t>(got - sent), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0) {
                ::close(fd);
                return;
            }
            sent += n;
        }
    }
    ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    const int listener = bench::listen_loopback(bench::parse_port(argc, argv), 0);
    for (;;) {
        const int client = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) {
            continue;  // EINTR, ECONNABORTED; EMFILE would spin, which the benchmark never reaches
        }
        const int one = 1;
        ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        std::thread(serve, client).detach();
    }
}
