// UringStream: a Stream over completions (the io_uring backend). While input is wanted and none
// is waiting to be read, the socket has a receive in the kernel (multishot while the client keeps
// up, single once replies wait for it), its bytes landing in the ring's provided buffers; replies
// go out as sendmsg submissions, one in flight at a time. The owner's read() and
// write() never make a system call: they hand over what has completed.
//
// What only a completion stream must get right, and where it is done:
//  - Bytes lent to the kernel by a send stay at the front of the owner's queue, untouched, until
//    that send completes; only then are they consumed (on_sent).
//  - Backpressure: a paused owner drops read interest, and the receive is cancelled rather than
//    re-armed; a receive is armed again only once the owner has taken all received bytes, and
//    then single-shot while a send is in flight. A send the kernel took only part of (the
//    client's window is full) cancels a multishot receive at once, and so does a completion
//    whose bytes the owner leaves unread (its read budget ran out first). So a client that stops
//    reading costs about what arrived before that cancel plus one buffer per resume; the rest
//    stays in the kernel's socket buffers, as over readiness.
//  - A ring run dry (-ENOBUFS) ends the multishot receive: it is re-armed at once, by which time
//    the loop has returned every buffer of the batch.
//  - Buffer size follows the client: small (16 KiB) buffers until a receive fills one, then large
//    (64 KiB, one read budget) ones until a receive brings less than a small buffer holds or the
//    few large buffers are all taken; a multishot receive on small buffers that fills one is
//    cancelled so that the next takes large ones. A buffer at least half full is not copied: it
//    joins the owner's queues itself (ByteQueue::append_lent) and goes back to the ring when its
//    bytes are consumed, after the send that echoed them has completed. Clients that do not read
//    can so hold buffers, but at most the 64 large ones and half of the small ones: then the
//    large ring runs dry (receives fall back to small buffers) and small ones are copied.
//  - close() cancels what is in flight and calls on_closed only after the last completion; a
//    stream destroyed with work in flight cancels it synchronously first. Completions still
//    queued for it afterwards are dropped by the loop (its tag is stale).
#pragma once

#include <sys/socket.h>

#include <array>

#include "echoplex/io/completion.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "echoplex/net/stream.hpp"

namespace echoplex {

class UringStream final : public Stream, private CompletionHandler {
public:
    // `loop` must have a completion ring (loop.completion_ring() != nullptr). `pool` supplies the
    // blocks that hold received bytes until read() hands them over.
    UringStream(EventLoop& loop, UniqueFd socket, BlockPool& pool);
    ~UringStream() override;

    int fd() const noexcept override { return socket_.get(); }
    [[nodiscard]] Result<void> open(StreamEvents& events) override;
    [[nodiscard]] Result<void> set_interest(Interest want) override;
    Interest interest() const noexcept override { return closing_ ? Interest::none : want_; }
    IoResult read(ByteQueue& into, std::size_t budget) override;
    IoResult write(ByteQueue& from, std::size_t budget) override;
    IoResult discard(std::size_t budget) override;
    void shutdown_write() noexcept override;
    void close() noexcept override;
    std::size_t in_flight() const noexcept override;
    bool acts_immediately() const noexcept override { return false; }

private:
    // The operations this stream submits or posts to itself, as its completions name them.
    enum Op : OpCode { receive = 1, send = 2, cancel_receive = 3, cancel_send = 4, still_readable = 5, still_writable = 6 };
    enum class Receive : std::uint8_t { idle, armed, cancelling };

    void on_completion(OpCode op, const CompletionInfo& info) override;
    void on_received(const CompletionInfo& info);
    void on_sent(int result);
    void arm_receive();
    void stop_receive();
    void post(Op op);
    // What read() and discard() report once the received bytes are gone.
    IoResult input_state() const noexcept;
    bool input_over() const noexcept { return input_ended_ || input_error_ != 0; }
    void maybe_finish_close();
    std::uint64_t data(Op op) const noexcept { return op_data::encode(tag_, op); }

    EventLoop& loop_;
    CompletionRing& ring_;
    UniqueFd socket_;
    StreamEvents* events_ = nullptr;
    CompletionTag tag_{};
    bool registered_ = false;
    Interest want_ = Interest::none;
    ByteQueue received_;  // completed receives not yet taken by read()
    Receive receive_ = Receive::idle;
    bool receive_multishot_ = false;  // the receive in the kernel is multishot
    ReceiveBuffer receive_from_ = ReceiveBuffer::small;  // the ring the receive in the kernel takes from
    // The client sends more than a small buffer holds at a time: receive into large buffers
    // until a receive brings less than a small one (or the large ring runs dry).
    bool streaming_ = false;
    bool input_ended_ = false;  // the client's EOF arrived
    int input_error_ = 0;       // errno of a receive that failed
    // The one send in flight: its message and vector live here until it completes.
    bool sending_ = false;
    ByteQueue* sending_from_ = nullptr;
    std::size_t sending_bytes_ = 0;    // what the send in flight offers
    std::size_t sent_unreported_ = 0;  // sent since write() last reported
    int send_error_ = 0;
    msghdr send_message_{};
    // 16 blocks of 16 KiB: the default write budget in one send, in 256 bytes per connection.
    std::array<iovec, 16> send_vector_{};
    std::size_t cancels_in_flight_ = 0;
    bool readable_posted_ = false;
    bool writable_posted_ = false;
    bool closing_ = false;
};

}  // namespace echoplex
