// TimerQueue: one-shot timers on the monotonic clock, a min-heap with lazy cancellation.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <unordered_map>
#include <vector>

namespace echoplex {

using Clock = std::chrono::steady_clock;

// Identifies a timer for cancel(); ids are never reused within one queue.
// Ids start at 1: TimerId{} never names a timer, so it can stand for "none".
enum class TimerId : std::uint64_t {};

class TimerQueue {
public:
    // Schedules `callback` at `deadline` (a past deadline fires on the next run_due).
    TimerId add(Clock::time_point deadline, std::function<void()> callback);

    // Cancels a pending timer; false if it already fired or was cancelled. A timer cancelled
    // from inside another timer's callback in the same run_due does not fire.
    bool cancel(TimerId id);

    // The earliest pending deadline, or nullopt when nothing is pending.
    std::optional<Clock::time_point> next_deadline();

    // Fires, in deadline order (ties in the order they were added), every timer whose deadline is
    // at or before `now`. Timers added by these callbacks wait for the next call, so a timer
    // that re-arms itself with a zero delay cannot trap the loop. Returns how many fired.
    std::size_t run_due(Clock::time_point now);

    std::size_t pending() const noexcept { return callbacks_.size(); }

private:
    struct Entry {
        Clock::time_point deadline;
        std::uint64_t id;
        bool operator>(const Entry& other) const noexcept {
            return deadline != other.deadline ? deadline > other.deadline : id > other.id;
        }
    };
    void drop_cancelled_top();

    std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
    std::unordered_map<std::uint64_t, std::function<void()>> callbacks_;  // pending timers only
    std::uint64_t next_id_ = 1;
};

}  // namespace echoplex
