// ScriptedRing: the completion half of io_uring as the fuzz target plays it. A Backend that is
// also a CompletionRing, for a real EventLoop to run a UringStream over: it records what is
// submitted (receives, single or multishot; sends, with a copy of their message and bytes;
// cancels), and each wait collects the completions the input chooses, in the order it chooses:
// a receive's bytes (from the client's stream) or its end, a send taken in full or in part or
// failed, a cancel found, raced or too late. What the kernel guarantees is kept (a multishot
// receive completes until one completion without `more`; a cancel takes effect in the wait after
// its submission; a cancelled operation completes with -ECANCELED), and what the stream must
// keep is checked as it happens: one receive and one send at most, a send's memory untouched until
// its completion is delivered, every completion finished once, no submission after the close.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/completion.hpp"
#include "fuzz_support.hpp"

namespace echoplex::fuzz {

// The client at the far end of the ring's socket, and what it has been answered so far.
struct RingClient {
    explicit RingClient(std::uint8_t seed) noexcept : stream(seed), reply(stream) {}
    RingClient(const RingClient&) = delete;
    RingClient& operator=(const RingClient&) = delete;

    ClientStream stream;
    Reply reply;                  // what the connection owes back (filled as it reads)
    std::uint64_t delivered = 0;  // bytes receive completions carried, from the stream's start
    std::uint64_t sent = 0;       // bytes send completions took, each matched against `reply`
    bool eof = false;             // a receive completed with 0: later ones do too
    bool reset = false;           // the connection is gone: later receives and sends fail
    // The fatal answers given. The connection may learn of them in another order than they
    // were given (a receive's error waits behind its bytes), so each is kept.
    bool recv_reset = false;
    bool recv_error = false;
    bool send_failed = false;  // EPIPE or ECONNRESET
    bool send_error = false;   // another errno
    bool failed() const noexcept { return recv_reset || recv_error || send_failed || send_error; }
};

class ScriptedRing final : public Backend, public CompletionRing, private BufferLender {
public:
    // scripted: the input chooses; settling (the input is over): sends complete in full, cancels
    // and cancelled operations complete, receives wait; final_eof: receives complete with EOF too.
    enum class Phase : std::uint8_t { scripted, settling, final_eof };

    ScriptedRing(Input& input, RingClient& client, std::size_t write_budget) noexcept
        : input_(input), client_(client), write_budget_(write_budget) {}

    // ---- the harness's controls ----
    Phase phase = Phase::scripted;
    void set_socket(int fd) noexcept { fd_ = fd; }
    // How many completions the next scripted wait collects (fewer if the input or the
    // operations run out), each chosen by the input.
    void set_batch(std::size_t count) noexcept { batch_ = count; }
    // The stream's close completed (on_closed): nothing may be submitted from now on.
    void stream_closed() noexcept { closed_ = true; }
    // The stream was destroyed: what is left completes into a stale tag, to be dropped.
    void stream_destroyed() noexcept { destroyed_ = true; }

    // ---- what the harness checks ----
    std::size_t outstanding() const noexcept { return ops_.size(); }
    bool receive_armed() const noexcept;
    bool send_in_flight() const noexcept;
    // Nothing submitted is still to complete, and no completion collected is still to be
    // delivered but the one being delivered now: what on_closed requires.
    bool all_completed() const noexcept;
    // Every receive and send still in the kernel was stopped by cancel_now.
    bool all_stopped() const noexcept;
    // Every completion of the last wait was finished exactly once.
    void check_finished() const;
    // Receive buffers the stream kept (keep_received) and has not given back yet.
    std::size_t kept_buffers() const noexcept { return kept_.size(); }
    // At most this many are kept at once; then keep_received refuses, as the real ring's limit does.
    static constexpr std::size_t keep_limit = 4;
    // Bytes of receive completions delivered to the stream (described), from the start.
    std::uint64_t bytes_delivered() const noexcept { return bytes_delivered_; }
    void set_write_budget(std::size_t budget) noexcept { write_budget_ = budget; }

    // ---- Backend ----
    BackendKind kind() const noexcept override { return BackendKind::io_uring; }
    int fd_limit() const noexcept override;
    Result<void> modify(int fd, Interest old_interest, Interest new_interest) override;
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override;
    CompletionRing* completion_ring() noexcept override { return this; }
    std::span<const Completion> completions() const noexcept override { return completions_; }
    CompletionInfo describe(const Completion& completion) const noexcept override;
    void finished(const Completion& completion, bool delivered) noexcept override;

    // ---- CompletionRing ----
    void accept_multishot(int listen_fd, std::uint64_t data) override;
    void receive(int fd, bool multishot, ReceiveBuffer from, std::uint64_t data) override;
    void send_message(int fd, const msghdr* message, int flags, std::uint64_t data) override;
    void cancel(std::uint64_t target, std::uint64_t data) override;
    void cancel_now(int fd) noexcept override;
    bool keep_received() noexcept override;
    BufferLender& buffer_lender() noexcept override { return *this; }

    // The most one receive completion carries (the real rings' larger buffer size).
    static constexpr std::size_t buffer_size = io_uring_large_buffer_size;

private:
    enum class Kind : std::uint8_t { receive, send, cancel };
    struct Op {
        Kind kind = Kind::receive;
        std::uint64_t serial = 0;  // submission order, from 1
        std::uint64_t data = 0;
        bool multishot = false;
        std::size_t capacity = 0;     // a receive: its buffers' size
        bool cancel_pending = false;  // a cancel names it and has not reached the kernel yet
        bool doomed = false;          // a cancel found it: it completes with -ECANCELED next
        bool must_end = false;        // it raced a cancel: its next completion is its last
        bool stopped = false;         // cancel_now stopped it: its memory is the caller's again
        // A send: where its message was, the message, its vector and its bytes at submission.
        const msghdr* message = nullptr;
        msghdr header{};
        std::vector<iovec> vector;
        std::vector<char> bytes;
        // A cancel: the operation it names (0: none was in flight), and its result once the
        // kernel has seen it.
        std::uint64_t target = 0;
        bool seen = false;
        int result = 0;
    };
    // One collected completion, beside completions_: its meaning and its buffer.
    struct Collected {
        Kind kind = Kind::receive;
        bool more = false;
        std::vector<char> buffer;  // a receive's bytes: lent until finished
        Op send;                   // a send: as submitted, to compare when it is delivered
        bool described = false;
        bool finished = false;
        bool kept = false;  // its buffer moved to kept_
    };
    void give_back(const char* buffer) noexcept override;

    void submitted(std::uint64_t data);
    Op* find(std::uint64_t serial) noexcept;
    void collect(std::size_t index);
    void collect_receive(std::size_t index);
    void collect_send(std::size_t index);
    void collect_cancel(std::size_t index);
    void see_cancel(Op& cancel);
    void push(const Op& op, int result, bool more, std::vector<char> buffer);
    bool settles(const Op& op) const noexcept;
    void check_unchanged(const Op& send) const;
    std::size_t index_of(const Completion& completion) const noexcept;

    Input& input_;
    RingClient& client_;
    std::size_t write_budget_;
    int fd_ = -1;
    std::size_t batch_ = 0;
    bool closed_ = false;
    bool destroyed_ = false;
    bool have_tag_ = false;
    CompletionTag tag_{};  // every submission's: there is one stream
    std::uint64_t serial_ = 0;
    std::vector<Op> ops_;  // submitted, not yet completed for the last time
    std::vector<Completion> completions_;
    mutable std::vector<Collected> collected_;
    std::size_t next_finish_ = 0;  // the completion the loop finishes next
    mutable std::uint64_t bytes_delivered_ = 0;
    // Kept receive buffers, until given back: a vector's bytes stay where they are when it moves.
    std::vector<std::vector<char>> kept_;
};

}  // namespace echoplex::fuzz
