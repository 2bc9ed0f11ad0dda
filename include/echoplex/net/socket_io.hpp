// SocketIo: the socket calls a ReactorStream makes, behind a small interface. It exists so that the
// fuzzer and tests can script the kernel's answers (short reads and writes, would-block, EOF,
// reset) that real sockets produce only by chance; production uses system_socket_io().
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>

namespace echoplex {

// Each call keeps its system call's contract: the result, or -1 with errno set. Implementations
// are not owned by their users and must outlive them.
class SocketIo {
public:
    // recv(2) with no flags.
    virtual ssize_t recv(int fd, void* buffer, std::size_t length) = 0;
    // readv(2): a scatter read, so one call can fill several queue blocks. By default a recv
    // into the first buffer only, which is a legal short read: a scripted socket need not care.
    virtual ssize_t readv(int fd, const iovec* iov, int count) {
        return count > 0 ? recv(fd, iov[0].iov_base, iov[0].iov_len) : 0;
    }
    // sendmsg(2).
    virtual ssize_t sendmsg(int fd, const msghdr* message, int flags) = 0;
    // shutdown(2).
    virtual int shutdown(int fd, int how) = 0;

protected:
    SocketIo() = default;
    SocketIo(const SocketIo&) = default;
    SocketIo& operator=(const SocketIo&) = default;
    ~SocketIo() = default;
};

// The real system calls: one stateless instance for the whole process.
SocketIo& system_socket_io() noexcept;

}  // namespace echoplex
