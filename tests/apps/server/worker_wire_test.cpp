// What a worker reports to its master: every count survives the line, a line with a number too
// many or too few is refused, and a worker slot's counts add up across the workers that held it.
#include "worker_wire.hpp"

#include <string>
#include <vector>

#include "metrics.hpp"
#include "support/doctest.hpp"

namespace echoplex {
namespace {

// Counts in which every field differs from every other, so a field read into the wrong place
// shows.
ProcessCounts distinct_counts() {
    ProcessCounts c;
    std::uint64_t next = 1;
    for (const char* name : {"echo", "discard"}) {
        ServiceStats s{name, {}};
        for (auto* field : {&s.stats.accepted, &s.stats.open, &s.stats.peak, &s.stats.bytes_in, &s.stats.bytes_out,
                            &s.stats.paused, &s.stats.proxy_rejected}) {
            *field = next++;
        }
        for (auto& n : s.stats.refused) {
            n = next++;
        }
        for (auto& n : s.stats.closed) {
            n = next++;
        }
        c.services.push_back(s);
    }
    c.peak = next++;
    c.log_lines_dropped = next++;
    c.loop.waits = next++;
    c.loop.events = 12345678901234ULL;
    for (auto& n : c.loop.waits_in_bucket) {
        n = next++;
    }
    return c;
}

void check_same(const ProcessCounts& a, const ProcessCounts& b) {
    REQUIRE(a.services.size() == b.services.size());
    for (std::size_t i = 0; i < a.services.size(); ++i) {
        const ServerStats& x = a.services[i].stats;
        const ServerStats& y = b.services[i].stats;
        CHECK(a.services[i].service == b.services[i].service);
        CHECK(x.accepted == y.accepted);
        CHECK(x.open == y.open);
        CHECK(x.peak == y.peak);
        CHECK(x.bytes_in == y.bytes_in);
        CHECK(x.bytes_out == y.bytes_out);
        CHECK(x.paused == y.paused);
        CHECK(x.proxy_rejected == y.proxy_rejected);
        CHECK(x.refused == y.refused);
        CHECK(x.closed == y.closed);
    }
    CHECK(a.peak == b.peak);
    CHECK(a.log_lines_dropped == b.log_lines_dropped);
    CHECK(a.loop.waits == b.loop.waits);
    CHECK(a.loop.events == b.loop.events);
    CHECK(a.loop.waits_in_bucket == b.loop.waits_in_bucket);
}

TEST_CASE("a stats report carries every count of every service, and is read back under the services' names") {
    const ProcessCounts sent = distinct_counts();
    const std::string line = worker_wire::stats_report(worker_wire::stats_tag, sent);
    const auto [tag, rest] = worker_wire::split_report(line);
    CHECK(tag == worker_wire::stats_tag);
    const auto read = worker_wire::parse_stats(rest, {"echo", "discard"});
    REQUIRE(read.has_value());
    check_same(*read, sent);
}

TEST_CASE("a report with a number too many or too few, or a stray character, is refused") {
    const std::string line = worker_wire::stats_report(worker_wire::final_tag, distinct_counts());
    const std::string rest(worker_wire::split_report(line).rest);
    CHECK_FALSE(worker_wire::parse_stats(rest, {"echo"}).has_value());                       // too many
    CHECK_FALSE(worker_wire::parse_stats(rest, {"echo", "discard", "daytime"}).has_value());  // too few
    CHECK_FALSE(worker_wire::parse_stats(rest + " 7", {"echo", "discard"}).has_value());
    CHECK_FALSE(worker_wire::parse_stats(rest + "x", {"echo", "discard"}).has_value());
    CHECK_FALSE(worker_wire::parse_stats(rest.substr(1), {"echo", "discard"}).has_value());  // no leading blank
    CHECK_FALSE(worker_wire::parse_stats("", {"echo"}).has_value());
}

// One echo service's counts, and a loop that waited once for `events`.
ProcessCounts one_service(std::uint64_t accepted, std::uint64_t open, std::uint64_t peak, std::uint64_t closed,
                          std::size_t events) {
    ProcessCounts c;
    c.services.push_back({"echo", {}});
    ServerStats& s = c.services[0].stats;
    s.accepted = accepted;
    s.open = open;
    s.peak = peak;
    s.closed_by(CloseReason::client_closed) = closed;
    c.peak = peak;
    c.loop.record(events);
    return c;
}

TEST_CASE("a worker slot: counters add up over the workers that held it, open is the latest's, peaks the higher") {
    const ProcessCounts first = one_service(10, 4, 7, 6, 3);
    // The first worker dies: its connections are gone.
    const ProcessCounts retired = followed_by(ProcessCounts{}, closed_out(first));
    CHECK(retired.services[0].stats.open == 0);
    CHECK(retired.services[0].stats.accepted == 10);
    const ProcessCounts second = one_service(3, 2, 2, 1, 0);
    const ProcessCounts slot = followed_by(retired, second);
    const ServerStats& s = slot.services[0].stats;
    CHECK(s.accepted == 13);
    CHECK(s.open == 2);
    CHECK(s.peak == 7);
    CHECK(s.closed_by(CloseReason::client_closed) == 7);
    CHECK(slot.peak == 7);
    CHECK(slot.loop.waits == 2);
    CHECK(slot.loop.events == 3);
    // Before the replacement reports, the slot is what it was.
    check_same(followed_by(retired, ProcessCounts{}), retired);
    CHECK(slot.total().accepted == 13);
    CHECK(slot.total().peak == 7);
}

TEST_CASE("the loop's histogram puts each wait in the first bucket whose bound holds its events") {
    LoopStats loop;
    for (const std::size_t events : {0U, 1U, 2U, 3U, 4U, 5U, 256U, 257U, 100000U}) {
        loop.record(events);
    }
    // Bounds 0, 1, 2, 4, 8, 16, 64, 256, then above.
    CHECK(loop.waits_in_bucket == std::array<std::uint64_t, 9>{1, 1, 1, 2, 1, 0, 0, 1, 2});
    CHECK(loop.waits == 9);
    CHECK(loop.events == 0 + 1 + 2 + 3 + 4 + 5 + 256 + 257 + 100000);
}

}  // namespace
}  // namespace echoplex
