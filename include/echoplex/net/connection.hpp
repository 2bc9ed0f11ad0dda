// Connection: one client socket with its read queue and write queue. Reads what the client sends,
// answers through the write queue without ever blocking the loop, and applies backpressure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "echoplex/io/byte_queue.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "echoplex/net/socket_io.hpp"

namespace echoplex {

// Counters shared by every connection of a server.
struct ServerStats {
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;  // over --max-connections, out of descriptors, or beyond fd_limit
    std::uint64_t open = 0;
    std::uint64_t peak = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::uint64_t paused = 0;  // times a connection's reading paused for backpressure
};

// What a connection answers: the bytes received (RFC 862), or the book's stamped reply.
enum class ReplyMode { echo, stamp };

// Per-connection limits, from ServerConfig.
struct ConnectionLimits {
    ReplyMode reply = ReplyMode::echo;
    std::size_t high_watermark = 256 * 1024;
    std::size_t low_watermark = 64 * 1024;
    // Per readiness event, so one busy client cannot starve the others.
    std::size_t read_budget = 64 * 1024;
    std::size_t write_budget = 256 * 1024;
};

class Connection;

// Told when a connection closes, just before its socket is closed (fd() is still valid); the
// owner must keep the object alive until the current batch ends.
class ConnectionOwner {
public:
    virtual void connection_closed(Connection& connection, std::string_view reason) = 0;

protected:
    ~ConnectionOwner() = default;
};

class Connection final : public IoHandler {
public:
    // `io` makes the socket calls: the real ones unless a test or the fuzzer scripts them.
    Connection(EventLoop& loop, UniqueFd socket, std::string peer, const ConnectionLimits& limits,
               BlockPool& pool, ServerStats& stats, ConnectionOwner& owner,
               SocketIo& io = system_socket_io());
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();

    // Starts reading. Fails if the loop cannot watch the descriptor (select: beyond FD_SETSIZE).
    [[nodiscard]] Result<void> start();

    void on_readable() override;
    void on_writable() override;

    // Graceful shutdown: read no more, flush what is queued, then close.
    void drain();
    // Closes the socket now, dropping queued output. Idempotent.
    void close(std::string_view reason);

    int fd() const noexcept { return socket_.get(); }
    const std::string& peer() const noexcept { return peer_; }
    bool closed() const noexcept { return !socket_.valid(); }
    std::size_t queued_bytes() const noexcept { return output_.size(); }
    bool reading_paused() const noexcept { return paused_; }
    // Queue blocks held (0 when idle: buffers are borrowed only while bytes are in flight).
    std::size_t buffer_blocks() const noexcept { return input_.blocks() + output_.blocks(); }
    Clock::time_point last_activity() const noexcept { return last_activity_; }

private:
    // Reads at most read_budget bytes, answering each chunk; false if the connection closed.
    bool read_some();
    // Queue blocks one read may fill (4 × 16 KiB: the default read budget in one call).
    static constexpr std::size_t max_read_blocks = 4;
    void answer_chunk();
    // Moves the bytes read to the end of the write queue: long chunks with their blocks, short
    // ones copied, so that queued memory stays proportional to queued bytes.
    void queue_input();
    // After our FIN: reads and drops input until the client's EOF, then closes.
    void discard_input();
    // Writes at most write_budget bytes; false if the connection closed.
    bool flush();
    // The single place interest is derived from state: read while accepting input and not
    // paused, write exactly while output is queued. Also closes once nothing more can happen.
    void update_interest();

    EventLoop& loop_;
    UniqueFd socket_;
    std::string peer_;
    const ConnectionLimits& limits_;
    ServerStats& stats_;
    ConnectionOwner& owner_;
    SocketIo& io_;
    ByteQueue input_;   // read, not yet answered
    ByteQueue output_;  // answered, not yet taken by the kernel
    Clock::time_point last_activity_;
    bool paused_ = false;       // backpressure: output above the high watermark
    bool peer_done_ = false;    // the client shut down its side (EOF)
    bool draining_ = false;     // server shutdown: no more reading
    bool lingering_ = false;    // all output sent and FIN sent; waiting for the client's EOF
    bool wide_reads_ = false;   // the last read filled everything offered: offer several blocks
};

}  // namespace echoplex
