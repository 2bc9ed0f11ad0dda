// The socket calls a ReactorStream makes. Production makes them straight (SystemSocketCalls);
// the fuzzer and tests script the kernel's answers (short reads and writes, would-block, EOF,
// reset) that real sockets produce only by chance, through the SocketIo interface
// (ScriptedSocketCalls). The choice is a type, so a production stream carries no pointer for
// it and makes no virtual call per system call.
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
    // send(2): one buffer. By default a sendmsg of that one buffer: a scripted socket need not care.
    virtual ssize_t send(int fd, const void* buffer, std::size_t length, int flags) {
        iovec piece{const_cast<void*>(buffer), length};
        msghdr message{};
        message.msg_iov = &piece;
        message.msg_iovlen = 1;
        return sendmsg(fd, &message, flags);
    }
    // shutdown(2).
    virtual int shutdown(int fd, int how) = 0;

protected:
    SocketIo() = default;
    SocketIo(const SocketIo&) = default;
    SocketIo& operator=(const SocketIo&) = default;
    ~SocketIo() = default;
};

// The real system calls: one stateless instance for the whole process.
// The system calls themselves.
struct SystemSocketCalls {
    ssize_t recv(int fd, void* buffer, std::size_t length) const noexcept { return ::recv(fd, buffer, length, 0); }
    ssize_t readv(int fd, const iovec* iov, int count) const noexcept { return ::readv(fd, iov, count); }
    ssize_t sendmsg(int fd, const msghdr* message, int flags) const noexcept { return ::sendmsg(fd, message, flags); }
    ssize_t send(int fd, const void* buffer, std::size_t length, int flags) const noexcept {
        return ::send(fd, buffer, length, flags);
    }
    int shutdown(int fd, int how) const noexcept { return ::shutdown(fd, how); }
};

// Whatever a SocketIo (not owned) answers.
struct ScriptedSocketCalls {
    SocketIo* io;
    ssize_t recv(int fd, void* buffer, std::size_t length) const { return io->recv(fd, buffer, length); }
    ssize_t readv(int fd, const iovec* iov, int count) const { return io->readv(fd, iov, count); }
    ssize_t sendmsg(int fd, const msghdr* message, int flags) const { return io->sendmsg(fd, message, flags); }
    ssize_t send(int fd, const void* buffer, std::size_t length, int flags) const {
        return io->send(fd, buffer, length, flags);
    }
    int shutdown(int fd, int how) const { return io->shutdown(fd, how); }
};

}  // namespace echoplex
