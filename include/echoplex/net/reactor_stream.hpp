// ReactorStream: a Stream over readiness. The loop (any of select, poll, epoll) reports the
// socket ready and the stream makes the non-blocking system call there and then.
#pragma once

#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "echoplex/net/socket_io.hpp"
#include "echoplex/net/stream.hpp"

namespace echoplex {

// `Calls` makes the socket calls: SystemSocketCalls (ReactorStream), or ScriptedSocketCalls for
// the tests and the fuzzer (ScriptedReactorStream).
template <class Calls>
class BasicReactorStream final : public Stream, private IoHandler {
public:
    BasicReactorStream(EventLoop& loop, UniqueFd socket, Calls calls = {});
    ~BasicReactorStream() override;

    int fd() const noexcept override { return socket_.get(); }
    [[nodiscard]] Result<void> open(StreamEvents& events) override;
    [[nodiscard]] Result<void> set_interest(Interest want) override;
    Interest interest() const noexcept override { return loop_.interest(socket_.get()); }
    // Into an empty queue, the bytes stay in the loop's read scratch (ByteQueue::append_borrowed):
    // the caller calls own_borrowed() on `into` before the loop's next read.
    IoResult read(ByteQueue& into, std::size_t budget) override;
    IoResult write(ByteQueue& from, std::size_t budget) override;
    IoResult discard(std::size_t budget) override;
    void shutdown_write() noexcept override;
    void close() noexcept override;
    std::size_t in_flight() const noexcept override { return 0; }
    bool acts_immediately() const noexcept override { return true; }

private:
    IoResult read_borrowed(ByteQueue& into, std::size_t budget);
    void on_readable() override { events_->on_readable(); }
    void on_writable() override { events_->on_writable(); }

    // Queue blocks one read may fill (4 x 16 KiB: the default read budget in one call).
    static constexpr std::size_t max_read_blocks = 4;

    // In this order, so that a production stream takes 40 bytes (one per connection).
    EventLoop& loop_;
    StreamEvents* events_ = nullptr;
    UniqueFd socket_;
    bool wide_reads_ = false;  // the last read filled everything offered: offer several blocks
    [[no_unique_address]] Calls calls_;
};

using ReactorStream = BasicReactorStream<SystemSocketCalls>;
using ScriptedReactorStream = BasicReactorStream<ScriptedSocketCalls>;
extern template class BasicReactorStream<SystemSocketCalls>;
extern template class BasicReactorStream<ScriptedSocketCalls>;

}  // namespace echoplex
