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

template <class Calls>
BasicReactorStream<Calls>::BasicReactorStream(EventLoop& loop, UniqueFd socket, Calls calls)
    : loop_(loop), socket_(std::move(socket)), calls_(calls) {}

template <class Calls>
BasicReactorStream<Calls>::~BasicReactorStream() {
    if (socket_) {
        loop_.unwatch(socket_.get());
    }
}

template <class Calls>
Result<void> BasicReactorStream<Calls>::open(StreamEvents& events) {
    events_ = &events;
    return loop_.watch(socket_.get(), *this, Interest::read);
}

template <class Calls>
Result<void> BasicReactorStream<Calls>::set_interest(Interest want) { return loop_.set_interest(socket_.get(), want); }

template <class Calls>
IoResult BasicReactorStream<Calls>::read(ByteQueue& into, std::size_t budget) {
    if (into.empty()) {
        return read_borrowed(into, budget);
    }
    // Behind input a protocol kept (a partial frame): into the queue's own blocks. One scatter
    // read of up to the whole budget once the client is streaming (the last read filled all it
    // was offered); otherwise the tail block and one spare, so that a read which fills the tail
    // still ends short, proving the socket drained. An unused spare goes back to the pool.
    std::array<iovec, max_read_blocks> space;  // not zeroed: prepare fills the entries readv reads
    const std::size_t count = into.prepare(space.data(), wide_reads_ ? space.size() : 2, budget);
    std::size_t offered = 0;
    for (std::size_t i = 0; i < count; ++i) {
        offered += space[i].iov_len;
    }
    IoResult result = retry_eintr([&] { return calls_.readv(fd(), space.data(), static_cast<int>(count)); });
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

template <class Calls>
IoResult BasicReactorStream<Calls>::read_borrowed(ByteQueue& into, std::size_t budget) {
    // Into the loop's scratch, lent to the queue until the caller owns what its protocol left:
    // an echo that the kernel takes at once never touches a block. Offered the whole budget, so
    // a message shorter than it ends in a short read, which proves the socket drained.
    const std::span<char> scratch = loop_.read_scratch();
    iovec space{scratch.data(), std::min(budget, scratch.size())};
    IoResult result = retry_eintr([&] { return calls_.readv(fd(), &space, 1); });
    wide_reads_ = result.bytes == space.iov_len;
    if (result.bytes > 0) {
        into.append_borrowed({scratch.data(), result.bytes});
        if (result.bytes < space.iov_len) {
            result.status = IoStatus::would_block;
        }
    }
    return result;
}

template <class Calls>
IoResult BasicReactorStream<Calls>::write(ByteQueue& from, std::size_t budget) {
    IoResult total;
    if (const std::span<const char> front = from.front(); front.size() == from.size() && front.size() <= budget) {
        // One piece that fits the budget (a reply read in one go): one send(2), no message to
        // build and no queue to walk. MSG_NOSIGNAL: a vanished client must never raise SIGPIPE.
        if (front.empty()) {
            return total;
        }
        total = retry_eintr([&] { return calls_.send(fd(), front.data(), front.size(), MSG_NOSIGNAL); });
        from.consume(total.bytes);
        if (total.status == IoStatus::ok && total.bytes < front.size()) {
            total.status = IoStatus::would_block;
        }
        return total;
    }
    while (!from.empty() && budget > 0) {
        std::array<iovec, 64> iov;  // not zeroed: peek fills the `count` entries sendmsg reads
        msghdr msg{};
        msg.msg_iov = iov.data();
        if (const std::span<const char> front = from.front(); front.size() == from.size()) {
            // One piece (a reply read in one go): no walk over the queue.
            iov[0] = iovec{const_cast<char*>(front.data()), std::min(front.size(), budget)};
            msg.msg_iovlen = 1;
        } else {
            msg.msg_iovlen = from.peek(iov.data(), iov.size(), budget);
        }
        // sendmsg rather than writev for MSG_NOSIGNAL: a vanished client must never raise SIGPIPE.
        const IoResult step = retry_eintr([&] { return calls_.sendmsg(fd(), &msg, MSG_NOSIGNAL); });
        from.consume(step.bytes);
        if (!add_step(total, budget, step)) {
            break;
        }
    }
    return total;
}

template <class Calls>
IoResult BasicReactorStream<Calls>::discard(std::size_t budget) {
    IoResult total;
    std::array<char, 16384> sink;
    while (budget > 0) {
        const IoResult step = retry_eintr([&] { return calls_.recv(fd(), sink.data(), sink.size()); });
        if (!add_step(total, budget, step)) {
            break;
        }
    }
    return total;
}

template <class Calls>
void BasicReactorStream<Calls>::shutdown_write() noexcept { calls_.shutdown(fd(), SHUT_WR); }

template <class Calls>
void BasicReactorStream<Calls>::close() noexcept {
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

template class BasicReactorStream<SystemSocketCalls>;
template class BasicReactorStream<ScriptedSocketCalls>;

}  // namespace echoplex
