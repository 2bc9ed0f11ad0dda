// Stream: one connected socket as the connection sees it, whatever drives it. The readiness
// implementation (ReactorStream) makes the system calls when the loop reports the socket ready;
// a completion implementation (io_uring) would own its submissions and report what completed.
// The connection is written against this interface only, so it never assumes readiness.
#pragma once

#include <cstddef>
#include <memory>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/byte_queue.hpp"
#include "echoplex/io/error.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "echoplex/net/io_result.hpp"

namespace echoplex {

// What a stream tells its owner. Called from the loop, never from inside a Stream call.
class StreamEvents {
public:
    // Input may be waiting: read() will not block.
    virtual void on_readable() = 0;
    // Output may be taken: write() will not block.
    virtual void on_writable() = 0;
    // The close asked for with Stream::close() is complete: nothing is in flight, no buffer is
    // still lent to the kernel. The descriptor is closed right after this returns, so its number
    // still names this stream here.
    virtual void on_closed() = 0;

protected:
    ~StreamEvents() = default;
};

class Stream {
public:
    Stream() = default;
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    virtual ~Stream() = default;

    // The socket's descriptor (-1 once closed).
    virtual int fd() const noexcept = 0;

    // Starts delivering events to `events` (not owned), with input wanted. Fails if the loop
    // cannot watch the socket (select: beyond FD_SETSIZE); the stream is then never started.
    [[nodiscard]] virtual Result<void> open(StreamEvents& events) = 0;

    // Which events the owner wants next. Derived by the owner from its state after every event.
    [[nodiscard]] virtual Result<void> set_interest(Interest want) = 0;
    // The interest last set (none before open and after close).
    virtual Interest interest() const noexcept = 0;

    // Appends at most `budget` bytes of input to `into`. status ok: more may be waiting;
    // would_block: nothing more for now (bytes may still be > 0); end, reset, failed as named.
    virtual IoResult read(ByteQueue& into, std::size_t budget) = 0;

    // Sends at most `budget` bytes from the front of `from` and consumes what was taken.
    // ok: all of it or the budget went; would_block: the kernel took less (bytes may be > 0).
    virtual IoResult write(ByteQueue& from, std::size_t budget) = 0;
    // True if every call is done when it returns (readiness: the system call is made there and
    // then): write() is finished with `from`, so any queue may be written from, a protocol's
    // input too, and set_interest() with the interest already set changes nothing. A completion
    // stream keeps `from` until its send completes (it must always be given the same queue), and
    // set_interest() re-arms or reports what the last completions left.
    virtual bool acts_immediately() const noexcept = 0;

    // Reads and drops at most `budget` bytes of input (a lingering close).
    virtual IoResult discard(std::size_t budget) = 0;

    // Sends FIN after everything already written.
    virtual void shutdown_write() noexcept = 0;

    // Two-phase close: cancels whatever is in flight and stops events; StreamEvents::on_closed
    // runs once nothing is in flight, then the descriptor is closed. A readiness stream has
    // nothing in flight, so on_closed runs before close() returns. Idempotent.
    virtual void close() noexcept = 0;

    // Operations submitted to the kernel and not yet completed (always 0 for readiness).
    virtual std::size_t in_flight() const noexcept = 0;
};

class EventLoop;

// The stream for a connected socket on `loop`: a UringStream when the loop completes operations
// (io_uring), a ReactorStream otherwise. `pool` holds what a completion stream has received.
std::unique_ptr<Stream> make_socket_stream(EventLoop& loop, UniqueFd socket, BlockPool& pool);

}  // namespace echoplex
