// EventLoop: descriptors, timers, signals and deferred work, dispatched from one thread over any
// Backend. The loop never knows which backend runs; the backend never knows what the loop serves.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/completion.hpp"
#include "echoplex/io/error.hpp"
#include "echoplex/io/io_handler.hpp"
#include "echoplex/io/signal_watcher.hpp"
#include "echoplex/io/timer_queue.hpp"

namespace echoplex {

// How the loop spent its waits. A wait is one call into the backend (select, poll, epoll_wait,
// io_uring_enter); its events are the ready descriptors and the completions it returned.
struct LoopStats {
    // Upper bounds of the histogram's buckets of events per wait; one more bucket counts the waits
    // above the last bound.
    static constexpr std::array<std::size_t, 8> bucket_bounds{0, 1, 2, 4, 8, 16, 64, 256};
    std::uint64_t waits = 0;
    std::uint64_t events = 0;
    // waits_in_bucket[i]: waits with more events than bucket_bounds[i - 1] and at most
    // bucket_bounds[i] (not cumulative).
    std::array<std::uint64_t, bucket_bounds.size() + 1> waits_in_bucket{};

    void record(std::size_t events_this_wait) noexcept;
    LoopStats& operator+=(const LoopStats& other) noexcept;
};

class EventLoop {
public:
    explicit EventLoop(std::unique_ptr<Backend> backend);
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;
    ~EventLoop();

    // make_backend(kind) wrapped in a loop.
    static Result<std::unique_ptr<EventLoop>> create(BackendKind kind);

    const Backend& backend() const noexcept { return *backend_; }

    // Starts watching `fd` with `handler` (not owned; must stay alive until unwatch). A descriptor
    // watched inside a batch gets no callback before the next batch, so a number reused by accept
    // never receives events that were meant for the descriptor it replaced. With Interest::none
    // the backend does not hear of `fd` until set_interest gives it an interest.
    // Fails with errc::fd_out_of_range for `fd` outside [0, backend().fd_limit()) (select: at or
    // above FD_SETSIZE), whatever `want` is; errc::bad_argument if `fd` is already watched by
    // another handler; or the backend's error.
    [[nodiscard]] Result<void> watch(int fd, IoHandler& handler, Interest want);

    // Changes the interest of a watched descriptor; calls the backend (modify(fd, old, want)) only
    // when it differs. On failure the interest stays what it was.
    [[nodiscard]] Result<void> set_interest(int fd, Interest want) {
        // Inline for the common case, which is every event of a steady connection: no change.
        if (fd >= 0 && static_cast<std::size_t>(fd) < slots_.size()) {
            const Slot& slot = slots_[static_cast<std::size_t>(fd)];
            if (slot.handler != nullptr && slot.interest == want) {
                return {};
            }
        }
        return change_interest(fd, want);
    }

    // Interest::none for descriptors not watched.
    Interest interest(int fd) const noexcept;
    bool watched(int fd) const noexcept;

    // Forgets `fd` (the backend gets modify(fd, current, none)); call before closing it. Events
    // already collected for it in the current batch are dropped. Unknown descriptors are ignored.
    void unwatch(int fd) noexcept;

    // ---- completions (see completion.hpp) ----
    // Where operations are submitted: nullptr unless the backend completes them (io_uring).
    CompletionRing* completion_ring() noexcept { return ring_; }
    // Registers `handler` (not owned) for completions; the tag goes into every submission's data.
    CompletionTag add_completion_handler(CompletionHandler& handler);
    // Forgets the handler: completions still queued for its tag are dropped (a descriptor they
    // carry closed, a buffer returned). Unknown or stale tags are ignored.
    void remove_completion_handler(CompletionTag tag) noexcept;
    // Delivers on_completion(op, {result, false, {}}) to the handler from the loop at the end of
    // this iteration (posted from there: the next), unless it has been removed by then: how a
    // completion stream reports "still ready" without a system call.
    void post(CompletionTag tag, OpCode op, int result);

    // One-shot timers on the monotonic clock; the nearest deadline bounds the wait.
    TimerId add_timer(Clock::duration delay, std::function<void()> callback);
    TimerId add_timer_at(Clock::time_point deadline, std::function<void()> callback);
    bool cancel_timer(TimerId id);

    // Delivers `signo` as a loop event: `callback(signo)` runs from the loop, never in signal
    // context. Works the same on every backend (a self-pipe, see SignalWatcher). The first call
    // creates the process's SignalWatcher, so only one loop per process may take signals.
    [[nodiscard]] Result<void> on_signal(int signo, std::function<void(int)> callback);

    // Runs `work` at the end of the current iteration, after every callback of its batch: the
    // place to free objects whose callbacks may still be on the stack. Called between iterations,
    // the next run_once runs it without blocking.
    void defer(std::function<void()> work);

    // One iteration: wait for at most `max_wait` (nullopt: until something happens; an earlier
    // timer deadline or deferred work shortens it), dispatch ready descriptors, run due timers and
    // deferred work. Returns the number of callbacks run. Fails only when the backend's wait fails.
    [[nodiscard]] Result<std::size_t> run_once(std::optional<std::chrono::milliseconds> max_wait = std::nullopt);

    // run_once until stop(). Returns the backend's error if a wait fails.
    [[nodiscard]] Result<void> run();

    // Makes run() return after the current iteration. Safe from any loop callback.
    void stop() noexcept { stop_requested_ = true; }

    const LoopStats& stats() const noexcept { return stats_; }

    // The time at the start of the current iteration's dispatch (cheaper than Clock::now()).
    Clock::time_point now() const noexcept { return now_; }

    // Descriptors ready and operations completed in the current iteration's batch: how many
    // share it, so that a connection alone in it may read more than its fair share.
    std::size_t batch_events() const noexcept { return batch_events_; }

    // Memory for one read at a time, reused by every read of this loop (allocated on first use,
    // read_scratch_size bytes): whatever is read into it must be consumed or copied before the
    // next read, which a readiness stream's caller does (ByteQueue::append_borrowed).
    static constexpr std::size_t read_scratch_size = 256 * 1024;
    std::span<char> read_scratch() {
        if (!read_scratch_) {
            allocate_read_scratch();
        }
        return {read_scratch_.get(), read_scratch_size};
    }

private:
    // 16 bytes, one per descriptor number: 56 bits of batch count outlast any process.
    struct Slot {
        IoHandler* handler = nullptr;
        std::uint64_t watched_in_batch : 56 = 0;
        Interest interest : 8 = Interest::none;  // what the backend was last given for this fd
    };
    class SignalHandler;
    struct HandlerSlot {
        CompletionHandler* handler = nullptr;
        std::uint32_t generation = 0;
    };
    struct Posted {
        CompletionTag tag;
        OpCode op;
        int result;
    };

    Result<void> change_interest(int fd, Interest want);
    void allocate_read_scratch();
    Slot* live_slot(int fd) noexcept;  // a slot that may receive this batch's events, or nullptr
    std::size_t dispatch(std::span<const Readiness> ready);
    std::size_t run_deferred();
    std::size_t complete(std::span<const Completion> done);
    std::size_t run_posted();
    CompletionHandler* live_handler(CompletionTag tag) noexcept;
    std::optional<std::chrono::milliseconds> wait_bound(std::optional<std::chrono::milliseconds> max_wait);

    std::unique_ptr<Backend> backend_;
    // Indexed by fd: the one per-descriptor table. The backend keeps no copy of the interests;
    // modify() is told the old interest from here and the new one.
    std::vector<Slot> slots_;
    CompletionRing* ring_ = nullptr;
    std::vector<HandlerSlot> handlers_;
    std::vector<std::uint32_t> free_handler_slots_;
    std::vector<Posted> posted_;
    TimerQueue timers_;
    std::vector<std::function<void()>> deferred_;
    std::unique_ptr<SignalWatcher> signals_;
    std::unique_ptr<SignalHandler> signal_handler_;
    std::map<int, std::function<void(int)>> signal_callbacks_;
    std::uint64_t batch_ = 0;
    std::size_t batch_events_ = 0;
    std::unique_ptr<char[]> read_scratch_;
    LoopStats stats_;
    bool stop_requested_ = false;
    Clock::time_point now_ = Clock::now();
};

}  // namespace echoplex
