// The server's /metrics page: its counters in the Prometheus text exposition format 0.0.4.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "echoplex/net/connection.hpp"

namespace echoplex {

struct MetricsInfo {
    std::string_view version;
    std::string_view backend;
    double start_time_s = 0;  // the process's start, seconds since the epoch
    std::uint64_t log_lines_dropped = 0;
};

// Every metric with its # HELP and # TYPE lines.
std::string render_metrics(const ServerStats& stats, const MetricsInfo& info);

}  // namespace echoplex
