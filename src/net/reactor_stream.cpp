// ReactorStream implementation: the socket calls of a connection over readiness.
#include "echoplex/net/reactor_stream.hpp"

#include <sys/socket.h>

#include <array>
#include <cassert>

namespace echoplex {
namespace {

// Adds one call's result to a loop's total and budget; false once the loop must stop (the call
// did not do all it was asked), with the total taking that call's status.
bool add_step(IoResult& total, std::size_t& budget, const IoResult& step) noexcept {
    total.bytes += step.bytes;
    budget -= std::min(budget, step.bytes);
    if (step.status == IoStatus::ok) {
        return true;
    }
    total.status = step.status;
    total.error = step.error;
    return false;
}

}  // namespace

ReactorStream::ReactorStream(EventLoop& loop, UniqueFd socket, SocketIo& io)
    : loop_(loop), socket_(std::move(socket)), io_(io) {}

ReactorStream::~ReactorStream() {
    if (socket_) {
        loop_.unwatch(socket_.get());
    }
}

Result<void> ReactorStream::open(StreamEvents& events) {
    events_ = &events;
    return loop_.watch(socket_.get(), *this, Interest::read);
}

Result<void> ReactorStream::set_interest(Interest want) { return loop_.set_interest(socket_.get(), want); }

IoResult ReactorStream::read(ByteQueue& into, std::size_t budget) {
    // One scatter read of up to the whole budget once the client is streaming (the last read
    // filled all it was offered): a large message costs a quarter of the system calls of
    // block-sized reads. Otherwise the tail block and one spare: a message that fills exactly a
    // block (16 KiB) still ends in a short read, which proves the socket drained, so no second
    // read is made only to be told EAGAIN. An unused spare goes straight back to the pool.
    std::array<iovec, max_read_blocks> space;  // not zeroed: prepare fills the entries readv reads
    const std::size_t count = into.prepare(space.data(), wide_reads_ ? space.size() : 2, budget);
    std::size_t offered = 0;
    for (std::size_t i = 0; i < count; ++i) {
        offered += space[i].iov_len;
    }
    IoResult result = retry_eintr([&] { return io_.readv(fd(), space.data(), static_cast<int>(count)); });
    wide_reads_ = result.bytes == offered;
    if (result.bytes > 0) {
        into.commit(result.bytes);
        if (result.bytes < offered) {
            result.status = IoStatus::would_block;  // a short read drained the socket
        }
    }
    into.release_unused_tail();
    return result;
}

IoResult ReactorStream::write(ByteQueue& from, std::size_t budget) {
    IoResult total;
    while (!from.empty() && budget > 0) {
        std::array<iovec, 64> iov;  // not zeroed: peek fills the `count` entries sendmsg reads
        msghdr msg{};
        msg.msg_iov = iov.data();
        msg.msg_iovlen = from.peek(iov.data(), iov.size(), budget);
        // sendmsg rather than writev for MSG_NOSIGNAL: a vanished client must never raise SIGPIPE.
        const IoResult step = retry_eintr([&] { return io_.sendmsg(fd(), &msg, MSG_NOSIGNAL); });
        from.consume(step.bytes);
        if (!add_step(total, budget, step)) {
            break;
        }
    }
    return total;
}

IoResult ReactorStream::discard(std::size_t budget) {
    IoResult total;
    std::array<char, 16384> sink;
    while (budget > 0) {
        const IoResult step = retry_eintr([&] { return io_.recv(fd(), sink.data(), sink.size()); });
        if (!add_step(total, budget, step)) {
            break;
        }
    }
    return total;
}

void ReactorStream::shutdown_write() noexcept { io_.shutdown(fd(), SHUT_WR); }

void ReactorStream::close() noexcept {
    if (!socket_) {
        return;
    }
    // Nothing is in flight over readiness: the close completes at once.
    loop_.unwatch(socket_.get());
    if (events_ != nullptr) {
        events_->on_closed();
    }
    socket_.reset();
}

}  // namespace echoplex
