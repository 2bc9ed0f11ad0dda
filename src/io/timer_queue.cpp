// TimerQueue implementation.
#include "echoplex/io/timer_queue.hpp"

namespace echoplex {

TimerId TimerQueue::add(Clock::time_point deadline, std::function<void()> callback) {
    const std::uint64_t id = next_id_++;
    heap_.push(Entry{deadline, id});
    callbacks_.emplace(id, std::move(callback));
    return TimerId{id};
}

bool TimerQueue::cancel(TimerId id) {
    // The heap entry stays until it reaches the top; it is skipped there (lazy deletion).
    return callbacks_.erase(static_cast<std::uint64_t>(id)) != 0;
}

void TimerQueue::drop_cancelled_top() {
    while (!heap_.empty() && !callbacks_.contains(heap_.top().id)) {
        heap_.pop();
    }
}

std::optional<Clock::time_point> TimerQueue::next_deadline() {
    drop_cancelled_top();
    if (heap_.empty()) {
        return std::nullopt;
    }
    return heap_.top().deadline;
}

std::size_t TimerQueue::run_due(Clock::time_point now) {
    std::vector<std::uint64_t> due;
    for (drop_cancelled_top(); !heap_.empty() && heap_.top().deadline <= now; drop_cancelled_top()) {
        due.push_back(heap_.top().id);
        heap_.pop();
    }
    std::size_t fired = 0;
    for (const std::uint64_t id : due) {
        auto it = callbacks_.find(id);
        if (it == callbacks_.end()) {
            continue;  // cancelled by an earlier callback of this run
        }
        auto callback = std::move(it->second);
        callbacks_.erase(it);
        callback();
        ++fired;
    }
    return fired;
}

}  // namespace echoplex
