// UringStream implementation: a connection's socket driven by completions.
#include "echoplex/net/uring_stream.hpp"

#include <sys/socket.h>

#include <cassert>
#include <utility>

namespace echoplex {
namespace {

// Results that mean "nothing happened, ask again" rather than an error of the socket. The ring
// waits for a non-blocking socket itself, so EAGAIN should not reach us; if a kernel lets it, the
// operation is submitted again rather than the connection closed.
constexpr bool retryable(int result) noexcept { return result == -EAGAIN || result == -EINTR; }

}  // namespace

UringStream::UringStream(EventLoop& loop, UniqueFd socket, BlockPool& pool)
    : loop_(loop), ring_(*loop.completion_ring()), socket_(std::move(socket)), received_(pool) {
    pool.set_lender(ring_.buffer_lender());  // large receive buffers travel in the pool's queues
}

UringStream::~UringStream() {
    if (!registered_) {
        return;
    }
    if (in_flight() > 0 && socket_) {
        // Destroyed without a completed close (the server is being torn down): the kernel must
        // stop using the owner's send bytes before they are freed.
        ring_.cancel_now(socket_.get());
    }
    loop_.remove_completion_handler(tag_);
}

Result<void> UringStream::open(StreamEvents& events) {
    events_ = &events;
    tag_ = loop_.add_completion_handler(*this);
    registered_ = true;
    return set_interest(Interest::read);
}

std::size_t UringStream::in_flight() const noexcept {
    return (receive_ != Receive::idle ? 1U : 0U) + (sending_ ? 1U : 0U) + cancels_in_flight_;
}

Result<void> UringStream::set_interest(Interest want) {
    want_ = want;
    if (closing_) {
        return {};
    }
    if (wants_read(want)) {
        if (receive_ == Receive::idle && !input_over() && received_.empty()) {
            arm_receive();
        }
        // Bytes (or the end) that arrived while input was not wanted: no completion will say so again.
        if (!received_.empty() || input_over()) {
            post(still_readable);
        }
    } else if (receive_ == Receive::armed) {
        stop_receive();
    }
    if (wants_write(want) && !sending_) {
        post(still_writable);  // nothing in flight: room for output now
    }
    return {};
}

void UringStream::arm_receive() {
    // Multishot while the client keeps up. Once a reply waits for it to read, one buffer at a
    // time: a multishot receive drains the socket as fast as the client fills it, so a client
    // that stops reading would have the kernel's socket buffers emptied into ours on every resume.
    receive_multishot_ = !sending_;
    receive_from_ = streaming_ ? ReceiveBuffer::large : ReceiveBuffer::small;
    ring_.receive(socket_.get(), receive_multishot_, receive_from_, data(receive));
    receive_ = Receive::armed;
}

void UringStream::stop_receive() {
    ring_.cancel(data(receive), data(cancel_receive));
    ++cancels_in_flight_;
    receive_ = Receive::cancelling;
}

void UringStream::post(Op op) {
    bool& posted = op == still_readable ? readable_posted_ : writable_posted_;
    if (!posted) {
        posted = true;
        loop_.post(tag_, op, 0);
    }
}

void UringStream::on_completion(OpCode op, const CompletionInfo& info) {
    switch (op) {
    case receive:
        on_received(info);
        return;
    case send:
        on_sent(info.result);
        return;
    case cancel_receive:
    case cancel_send:
        --cancels_in_flight_;
        maybe_finish_close();
        return;
    case still_readable:
        readable_posted_ = false;
        if (!closing_ && wants_read(want_) && (!received_.empty() || input_over())) {
            events_->on_readable();
        }
        return;
    case still_writable:
        writable_posted_ = false;
        if (!closing_ && wants_write(want_) && !sending_) {
            events_->on_writable();
        }
        return;
    default:
        return;
    }
}

void UringStream::on_received(const CompletionInfo& info) {
    if (info.result > 0) {
        if (info.bytes.size() >= buffer_bytes(receive_from_) / 2 && ring_.keep_received()) {
            // At least half full: the buffer itself joins the queue, to be given back to the ring
            // once its bytes are consumed (for an echo, when the send of them has completed).
            received_.append_lent(info.bytes);
        } else {
            received_.append({info.bytes.data(), info.bytes.size()});  // the loop recycles the buffer next
        }
        if (info.bytes.size() == buffer_bytes(receive_from_)) {
            streaming_ = true;  // a full buffer: more is likely waiting
        } else if (info.bytes.size() < buffer_bytes(ReceiveBuffer::small)) {
            streaming_ = false;
        }
    } else if (info.result == -ENOBUFS && receive_from_ == ReceiveBuffer::large) {
        streaming_ = false;  // the large buffers are all in use: back to the small ones
    } else if (info.result == 0) {
        input_ended_ = true;
    } else if (!retryable(info.result) && info.result != -ENOBUFS && info.result != -ECANCELED) {
        input_error_ = -info.result;
    }
    if (!info.more) {
        receive_ = Receive::idle;
        // Ended by a dry buffer ring (or a cancel raced by a renewed interest), or a single
        // receive done: ask again once the owner has taken what came (set_interest does then).
        // The buffers of this batch are back in the ring before the submission reaches the kernel.
        if (!closing_ && wants_read(want_) && !input_over() && received_.empty()) {
            arm_receive();
        }
    }
    if (closing_) {
        maybe_finish_close();
        return;
    }
    if (wants_read(want_) && (!received_.empty() || input_over())) {
        events_->on_readable();
    }
    if (!closing_ && receive_ == Receive::armed && receive_multishot_ &&
        (!received_.empty() || (streaming_ && receive_from_ == ReceiveBuffer::small))) {
        // The owner's read budget ran out before these bytes did: left armed, the multishot
        // receive would go on filling received_ faster than the owner takes it. Or the client
        // streams, and this receive goes on cutting it into small buffers. Stop it; the next is
        // armed once the owner has taken everything (set_interest).
        stop_receive();
    }
}

void UringStream::on_sent(int result) {
    sending_ = false;
    if (result > 0) {
        const auto taken = static_cast<std::size_t>(result);
        sending_from_->consume(taken);  // only now may those bytes (and their blocks) go
        sent_unreported_ += taken;
        if (taken < sending_bytes_ && receive_ == Receive::armed && receive_multishot_) {
            // The client's window is full: it is not reading as fast as it sends. Stop the
            // multishot receive; the next is single-shot (see arm_receive).
            stop_receive();
        }
    } else if (result < 0 && result != -ECANCELED && !retryable(result)) {
        send_error_ = -result;
    }
    if (closing_) {
        maybe_finish_close();
        return;
    }
    if (wants_write(want_) || send_error_ != 0) {
        events_->on_writable();
    }
}

IoResult UringStream::input_state() const noexcept {
    if (input_error_ != 0) {
        return classify_io(-1, input_error_);
    }
    if (input_ended_) {
        return {0, IoStatus::end, 0};
    }
    return {0, IoStatus::would_block, 0};
}

IoResult UringStream::read(ByteQueue& into, std::size_t budget) {
    const std::size_t moved = into.splice_from(received_, budget);  // whole blocks change hands: no copy
    if (!received_.empty()) {
        return {moved, IoStatus::ok, 0};  // the budget ran out first
    }
    IoResult state = input_state();
    state.bytes = moved;
    return state;
}

IoResult UringStream::write(ByteQueue& from, std::size_t budget) {
    IoResult result{std::exchange(sent_unreported_, 0), IoStatus::ok, 0};
    if (send_error_ != 0) {
        const IoResult failed = classify_io(-1, send_error_);
        result.status = failed.status;
        result.error = failed.error;
        return result;
    }
    if (sending_) {
        result.status = IoStatus::would_block;
        return result;
    }
    if (from.empty() || budget == 0 || closing_) {
        return result;
    }
    send_message_ = msghdr{};
    send_message_.msg_iov = send_vector_.data();
    send_message_.msg_iovlen = from.peek(send_vector_.data(), send_vector_.size(), budget);
    // MSG_NOSIGNAL: a vanished client must never raise SIGPIPE.
    ring_.send_message(socket_.get(), &send_message_, MSG_NOSIGNAL, data(send));
    sending_ = true;
    sending_bytes_ = 0;
    for (std::size_t i = 0; i < send_message_.msg_iovlen; ++i) {
        sending_bytes_ += send_vector_[i].iov_len;
    }
    sending_from_ = &from;
    result.status = IoStatus::would_block;  // taken when it completes
    return result;
}

IoResult UringStream::discard(std::size_t budget) {
    (void)budget;  // already in user space: dropping costs nothing
    received_.clear();
    return input_state();
}

void UringStream::shutdown_write() noexcept {
    // The owner calls this once its output is delivered, so no send is in flight to overtake.
    ::shutdown(socket_.get(), SHUT_WR);
}

void UringStream::close() noexcept {
    if (closing_ || !socket_) {
        return;
    }
    closing_ = true;
    if (!registered_) {
        socket_.reset();  // never opened: nothing submitted, nobody to tell
        return;
    }
    if (receive_ == Receive::armed) {
        stop_receive();
    }
    if (sending_) {
        ring_.cancel(data(send), data(cancel_send));
        ++cancels_in_flight_;
    }
    maybe_finish_close();
}

void UringStream::maybe_finish_close() {
    if (!closing_ || in_flight() > 0 || !socket_) {
        return;
    }
    received_.clear();
    // Removed first: anything still posted for this stream is dropped, and the owner may free
    // it from on_closed on.
    loop_.remove_completion_handler(tag_);
    registered_ = false;
    events_->on_closed();
    socket_.reset();
}

}  // namespace echoplex
