// SocketIo over the real system calls.
#include "echoplex/net/socket_io.hpp"

namespace echoplex {
namespace {

class SystemSocketIo final : public SocketIo {
public:
    ssize_t recv(int fd, void* buffer, std::size_t length) override { return ::recv(fd, buffer, length, 0); }
    ssize_t readv(int fd, const iovec* iov, int count) override { return ::readv(fd, iov, count); }
    ssize_t sendmsg(int fd, const msghdr* message, int flags) override { return ::sendmsg(fd, message, flags); }
    int shutdown(int fd, int how) override { return ::shutdown(fd, how); }
};

}  // namespace

SocketIo& system_socket_io() noexcept {
    static SystemSocketIo io;
    return io;
}

}  // namespace echoplex
