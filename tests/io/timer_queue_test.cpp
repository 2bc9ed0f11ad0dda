// TimerQueue: ordering, cancellation and the no-starvation rule, on a synthetic clock.
#include "echoplex/io/timer_queue.hpp"

#include <vector>

#include "support/doctest.hpp"

namespace echoplex {
namespace {

using namespace std::chrono_literals;
const Clock::time_point t0 = Clock::time_point{} + 1h;

TEST_CASE("due timers fire in deadline order, ties in insertion order") {
    TimerQueue q;
    std::vector<int> fired;
    q.add(t0 + 3ms, [&] { fired.push_back(3); });
    q.add(t0 + 1ms, [&] { fired.push_back(1); });
    q.add(t0 + 2ms, [&] { fired.push_back(20); });
    q.add(t0 + 2ms, [&] { fired.push_back(21); });
    CHECK(q.next_deadline() == t0 + 1ms);
    CHECK(q.run_due(t0) == 0);
    CHECK(q.run_due(t0 + 2ms) == 3);
    CHECK(fired == std::vector<int>{1, 20, 21});
    CHECK(q.next_deadline() == t0 + 3ms);
    CHECK(q.run_due(t0 + 10ms) == 1);
    CHECK(q.pending() == 0);
    CHECK_FALSE(q.next_deadline().has_value());
}

TEST_CASE("cancelled timers never fire and do not bound the wait") {
    TimerQueue q;
    bool fired = false;
    const TimerId early = q.add(t0 + 1ms, [&] { fired = true; });
    q.add(t0 + 5ms, [] {});
    CHECK(q.cancel(early));
    CHECK_FALSE(q.cancel(early));
    CHECK(q.next_deadline() == t0 + 5ms);
    CHECK(q.run_due(t0 + 10ms) == 1);
    CHECK_FALSE(fired);
}

TEST_CASE("a timer cancelled by an earlier callback of the same run does not fire") {
    TimerQueue q;
    bool second_fired = false;
    TimerId second{};
    q.add(t0, [&] { q.cancel(second); });
    second = q.add(t0, [&] { second_fired = true; });
    CHECK(q.run_due(t0) == 1);
    CHECK_FALSE(second_fired);
}

TEST_CASE("a timer re-armed from its callback waits for the next run") {
    TimerQueue q;
    int fired = 0;
    std::function<void()> rearm = [&] {
        ++fired;
        q.add(t0, rearm);
    };
    q.add(t0, rearm);
    CHECK(q.run_due(t0) == 1);
    CHECK(q.run_due(t0) == 1);
    CHECK(fired == 2);
}

}  // namespace
}  // namespace echoplex
