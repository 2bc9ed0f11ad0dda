// Connection: one client, its input and output queues, and the state machine that applies
// backpressure, half-close, drain and linger for whatever Protocol answers it. The socket calls
// are the Stream's; what to answer is the Protocol's.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "echoplex/io/byte_queue.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/net/protocol.hpp"
#include "echoplex/net/stream.hpp"

namespace echoplex {

// Why a connection closed. Each close is counted under one reason (the metrics' label) and
// logged with its detail ("readv: Connection timed out (ETIMEDOUT)").
enum class CloseReason : std::uint8_t {
    client_closed,   // the client's EOF, and everything owed to it was delivered
    reset,           // the client reset the connection, or vanished while we sent
    idle_timeout,    // silent for longer than the server's idle timeout
    drained,         // graceful shutdown: everything owed delivered, then closed
    drain_timeout,   // graceful shutdown's deadline passed with output still queued
    linger_timeout,  // after our FIN the client never sent its EOF
    finished,        // the protocol was done (daytime's line sent) and everything was delivered
    protocol,        // the protocol closed it (Session::close: a bad PROXY header, say)
    limit,           // a frame over the input limit, or output over the output limit
    error,           // a system call failed
};
inline constexpr std::size_t close_reason_count = 10;
// "client_closed", "reset", ...: the names the metrics use.
std::string_view close_reason_name(CloseReason reason) noexcept;

// Why an accepted connection was closed at once, before any protocol saw it.
enum class RefusalCause : std::uint8_t {
    max_connections,     // the server's connection limit was reached
    out_of_descriptors,  // accept(2) failed with EMFILE or ENFILE
    fd_setsize,          // select cannot watch the descriptor (>= FD_SETSIZE)
    shutting_down,       // accepted while the listeners were closing
};
inline constexpr std::size_t refusal_cause_count = 4;
std::string_view refusal_cause_name(RefusalCause cause) noexcept;

// Counters shared by every connection of a server (or of one of its services).
struct ServerStats {
    std::uint64_t accepted = 0;
    std::uint64_t open = 0;
    std::uint64_t peak = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::uint64_t paused = 0;  // times a connection's reading paused for backpressure
    std::uint64_t proxy_rejected = 0;  // closed for an invalid, missing or late PROXY header
    std::array<std::uint64_t, refusal_cause_count> refused{};  // by RefusalCause
    std::array<std::uint64_t, close_reason_count> closed{};    // by CloseReason

    std::uint64_t refused_total() const noexcept;
    std::uint64_t& refused_by(RefusalCause cause) noexcept { return refused.at(static_cast<std::size_t>(cause)); }
    std::uint64_t& closed_by(CloseReason reason) noexcept { return closed.at(static_cast<std::size_t>(reason)); }
    std::uint64_t refused_by(RefusalCause cause) const noexcept { return refused.at(static_cast<std::size_t>(cause)); }
    std::uint64_t closed_by(CloseReason reason) const noexcept { return closed.at(static_cast<std::size_t>(reason)); }
    // Adds every count, peaks included: a sum of peaks bounds the peak of the sum, and it is
    // all that separate counts (workers, services) can say about it.
    ServerStats& operator+=(const ServerStats& other) noexcept;
};

// Per-connection limits, the same for every protocol.
struct ConnectionLimits {
    std::size_t high_watermark = 256 * 1024;  // queued output that pauses reading
    std::size_t low_watermark = 64 * 1024;    // queued output that resumes it
    // Per readiness event, so one busy client cannot starve the others: the share of each when
    // many are ready at once; when fewer are, each may read more (event_read_budget).
    std::size_t read_budget = 64 * 1024;
    // What the connections ready in one batch may read together before the loop waits again,
    // shared equally: it bounds how long one iteration copies, not how much one client gets.
    std::size_t batch_read_budget = 16 * 1024 * 1024;
    std::size_t write_budget = 256 * 1024;
    // Unconsumed input (a frame not yet complete) beyond which the client is closed.
    std::size_t input_limit = 1024 * 1024;
    // Queued output beyond which the client is closed: for a protocol that keeps sending to a
    // client that does not read (echo cannot get there: its reading pauses at the high watermark).
    std::size_t output_limit = 64 * 1024 * 1024;
    // After our FIN, how long to wait for the client's EOF before closing anyway.
    std::chrono::milliseconds linger_timeout{5000};

    // One event reads at most this many read budgets: a streaming client is not cut into 64 KiB
    // pieces (at 1 MiB with 100 lockstep clients, 64 KiB per event cost the server twice the CPU
    // per message of 256 KiB), and one read still fits the loop's 256 KiB read buffer.
    static constexpr std::size_t max_read_budgets = 4;
    // What one event may read when `batch_events` descriptors (or completions) share the batch:
    // an equal share of batch_read_budget, at least read_budget, at most largest_event_read().
    std::size_t event_read_budget(std::size_t batch_events) const noexcept {
        const std::size_t share = batch_read_budget / (batch_events > 0 ? batch_events : 1);
        return share < read_budget ? read_budget : share > largest_event_read() ? largest_event_read() : share;
    }
    // The most any one event reads.
    std::size_t largest_event_read() const noexcept { return read_budget * max_read_budgets; }
};

// Where a connection is. Transitions, each in one function of Connection:
//   open -> paused (output reached the high watermark) -> open (fell to the low one)
//   open -> peer_closed (EOF)                   open|paused -> finishing (drain or finish())
//   peer_closed -> closing (output delivered)   finishing -> lingering (output delivered, FIN)
//   lingering -> closing (client's EOF or the linger deadline)
//   any -> closing (reset, error, limit, close()) -> closed (the stream's close completed)
enum class ConnectionState : std::uint8_t { open, paused, peer_closed, finishing, lingering, closing, closed };

std::string_view state_name(ConnectionState state) noexcept;

class Connection;

// Told when a connection closes, just before its socket is closed (fd() is still valid); the
// owner must keep the object alive until the current batch ends.
class ConnectionOwner {
public:
    virtual void connection_closed(Connection& connection, std::string_view reason) = 0;

protected:
    ~ConnectionOwner() = default;
};

// What the connections of one service share, held once by their owner (which must keep it
// alive and in place while they live): each connection keeps one reference, not five.
struct ConnectionContext {
    EventLoop& loop;
    const ConnectionLimits& limits;
    BlockPool& pool;
    ServerStats& stats;
    ConnectionOwner& owner;
    std::size_t service = 0;  // for the owner: which of its services the connections belong to
};

class Connection final : public StreamEvents, private Session {
public:
    Connection(const ConnectionContext& context, std::unique_ptr<Stream> stream, ProtocolPtr protocol);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();

    // Starts the stream and opens the protocol. Fails if the stream cannot start (select:
    // beyond FD_SETSIZE); the protocol has then not been opened.
    [[nodiscard]] Result<void> start();

    // Graceful shutdown: read no more, deliver what is queued, then close.
    void drain();
    // Closes now, dropping queued output, counted under `reason` and logged with `detail` (the
    // reason's name if empty). Idempotent. (Session::close is the protocol's way, taking effect
    // at the end of the iteration.)
    void close_now(CloseReason reason, std::string_view detail = {});

    int fd() const noexcept { return stream_->fd(); }
    const ConnectionContext& context() const noexcept { return context_; }
    // The address set_peer gave, else the socket's peer as getpeername(2) tells it ("fd N" once
    // it cannot: after a reset, or for a socket that is not TCP). An owner that logs closes sets
    // the address it accepted, since a reset socket no longer has one.
    std::string peer() const override;
    void set_peer(std::string peer) override;
    ConnectionState state() const noexcept { return state_; }
    bool closed() const noexcept { return state_ == ConnectionState::closing || state_ == ConnectionState::closed; }
    std::size_t queued_bytes() const noexcept override { return output_.size(); }
    bool reading_paused() const noexcept { return state_ == ConnectionState::paused; }
    // What the connection last asked its stream for (none once closed).
    Interest interest() const noexcept { return stream_->interest(); }
    // Queue blocks held (0 when idle: buffers are borrowed only while bytes are in flight).
    std::size_t buffer_blocks() const noexcept { return input_.blocks() + output_.blocks(); }
    Clock::time_point last_activity() const noexcept { return last_activity_; }

    // StreamEvents: called by the stream (tests may call them to script a kernel's answers).
    void on_readable() override;
    void on_writable() override;
    void on_closed() override;

private:

    // Session
    void send(std::string_view bytes) override;
    void send(ByteQueue& bytes) override;
    bool output_full() const noexcept override;
    void want_output_space(bool on) override;
    void hold_input(bool on) override;
    void finish() override;
    void close(std::string_view reason) override;
    EventLoop& loop() noexcept override { return context_.loop; }

    // Reads at most limits_.event_read_budget(...) bytes, handing each piece to the protocol.
    void read_input();
    // After our FIN: reads and drops input until the client's EOF, then closes.
    void discard_input();
    // Writes at most write_budget bytes; false if the connection closed.
    bool flush();
    // Writes `bytes` before they are queued (nothing is queued, the stream writes immediately),
    // from inside a protocol's call: a failure asks for the close at the end of the event.
    void write_now(ByteQueue& bytes);
    // Counts what a write sent; false if it failed, the close made now, or asked for at the end
    // of the event when `in_protocol` (a protocol's call is on the stack).
    bool count_sent(const IoResult& sent, bool in_protocol);
    // Gives the stream `want` unless it already has it.
    void ask(Interest want);
    // The end of every event: a close asked for in the meantime, else write what is queued
    // (unless `write` is false: the event already spent its write budget) and derive the
    // interest from the state.
    void settle(bool write = true);
    // Runs settle() at the end of this iteration, for sends made outside our own callbacks.
    void settle_later();
    // The single place interest is derived from state: read while open and not held, write
    // while output is queued or the protocol wants space. Also makes the end-of-output moves.
    void update_interest();
    // open -> paused at the high watermark, paused -> open at the low one.
    void follow_watermarks();
    void on_output_delivered();
    // Why a graceful close happens, in words: "client closed", "finished" or "drained".
    std::string_view finish_detail() const noexcept;
    // Records why a close is asked for.
    void set_close_detail(std::string detail);
    std::string_view close_detail() const noexcept { return extra_ ? std::string_view(extra_->close_detail) : std::string_view{}; }
    bool reading() const noexcept { return state_ == ConnectionState::open && !input_held_; }

    // What few connections need, or need only at their end: allocated the first time, so an
    // open connection carries one pointer for all of it.
    struct Extra {
        std::string close_detail;              // why a close was asked for, in words (logged by the owner)
        std::string peer;                      // set_peer's address
        std::shared_ptr<Connection*> self;     // for settle_later: expires with the connection
        TimerId linger_timer{};                // after our FIN (TimerId{}: none)
    };
    // The linger timer if one is set, else TimerId{}.
    TimerId linger_timer() const noexcept { return extra_ ? extra_->linger_timer : TimerId{}; }
    Extra& extra();

    const ConnectionContext& context_;
    std::unique_ptr<Stream> stream_;
    ProtocolPtr protocol_;
    ByteQueue input_;   // received, not yet consumed by the protocol
    ByteQueue output_;  // answered, not yet taken by the kernel
    Clock::time_point last_activity_;
    std::unique_ptr<Extra> extra_;
    CloseReason close_reason_ = CloseReason::error;
    CloseReason finish_reason_ = CloseReason::client_closed;  // drained, finished or client_closed
    ConnectionState state_ = ConnectionState::open;
    Interest asked_ = Interest::none;  // what the stream was last given
    bool acts_immediately_;            // the stream is readiness: see Stream::acts_immediately
    bool write_blocked_ = false;       // this event wrote on the spot and the kernel took less
    bool opened_ = false;          // the protocol's on_open ran: on_close is owed
    bool in_callback_ = false;     // inside one of our events: settle() follows anyway
    bool settle_pending_ = false;  // settle_later queued and not yet run
    bool close_pending_ = false;
    bool want_space_ = false;
    bool input_held_ = false;
};

}  // namespace echoplex
