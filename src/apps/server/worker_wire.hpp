// What a server worker and its master say to each other over the WorkerGroup pipes.
//   master -> worker, one byte each: stop (drain; a second one: exit now), stats (report them).
//   worker -> master, one line each:
//     "ready"                 its listeners are bound and served
//     "error MESSAGE"         it could not start (MESSAGE is the line a single process prints)
//     "stats N N ..."         its counts now: on request and once a second
//     "final N N ..."         its counts as it exits after a stop
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metrics.hpp"

namespace echoplex::worker_wire {

inline constexpr char stop_command = 'T';
inline constexpr char stats_command = 'S';

inline constexpr std::string_view ready_tag = "ready";
inline constexpr std::string_view error_tag = "error";
inline constexpr std::string_view stats_tag = "stats";
inline constexpr std::string_view final_tag = "final";

// "TAG" and the counts as numbers: the process's peak, its dropped log lines, the loop's waits,
// events and buckets, then per service accepted, open, peak, bytes_in, bytes_out, paused,
// proxy_rejected, the refusals by cause and the closes by reason. The services' names are not
// sent: every worker serves the same ones, in the order of `services`.
std::string stats_report(std::string_view tag, const ProcessCounts& counts);
// The counts after a report's tag, named after `services`; nullopt unless exactly as many numbers
// follow as those services need.
std::optional<ProcessCounts> parse_stats(std::string_view numbers, const std::vector<std::string>& services);

// A report line split at its first blank: the tag and the rest.
struct Report {
    std::string_view tag;
    std::string_view rest;
};
Report split_report(std::string_view line) noexcept;

}  // namespace echoplex::worker_wire
