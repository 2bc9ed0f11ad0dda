// The server's /metrics page: its counters in the Prometheus text exposition format 0.0.4, from
// one process or, under --workers, from every worker's last report (a `worker` label each).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "echoplex/io/event_loop.hpp"
#include "echoplex/net/tcp_server.hpp"

namespace echoplex {

// What one serving process counts: per service, and its loop's waits.
struct ProcessCounts {
    std::vector<ServiceStats> services;  // every process of a server has the same, in the same order
    std::uint64_t peak = 0;              // connections open at once over every service
    LoopStats loop;
    std::uint64_t log_lines_dropped = 0;

    // Every service's counts added up, with `peak` as the peak.
    ServerStats total() const;
};

ProcessCounts counts_of(const TcpServer& server, const EventLoop& loop, std::uint64_t log_lines_dropped);

// The counts of one worker slot, whose workers come one after the other: counters add up, `open`
// is the later's, peaks are the higher of the two. `later` may have no services yet (a worker
// that has not reported).
ProcessCounts followed_by(const ProcessCounts& earlier, const ProcessCounts& later);

// The counts of a process that is gone: nothing is open any more.
ProcessCounts closed_out(ProcessCounts counts);

struct MetricsInfo {
    std::string_view version;
    std::string_view backend;
    double start_time_s = 0;  // the process's start, seconds since the epoch
    std::uint64_t log_lines_dropped = 0;  // the rendering process's own (a master's: not its workers')
    // Under --workers: the number of workers and how many were replaced.
    std::optional<std::uint64_t> workers;
    std::uint64_t restarts = 0;
};

// Every metric with its # HELP and # TYPE lines. One process: `sources` has one entry and no
// worker label is written. A master: worker i's counts are labelled worker="i+1".
std::string render_metrics(const std::vector<ProcessCounts>& sources, const MetricsInfo& info);

}  // namespace echoplex
