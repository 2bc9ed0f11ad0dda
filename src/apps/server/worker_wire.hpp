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

#include "echoplex/net/connection.hpp"

namespace echoplex::worker_wire {

inline constexpr char stop_command = 'T';
inline constexpr char stats_command = 'S';

inline constexpr std::string_view ready_tag = "ready";
inline constexpr std::string_view error_tag = "error";
inline constexpr std::string_view stats_tag = "stats";
inline constexpr std::string_view final_tag = "final";

// "TAG accepted refused open peak bytes_in bytes_out paused proxy_rejected".
std::string stats_report(std::string_view tag, const ServerStats& stats);
// The counts after a report's tag; nullopt unless exactly eight numbers follow it.
std::optional<ServerStats> parse_stats(std::string_view numbers);

// A report line split at its first blank: the tag and the rest.
struct Report {
    std::string_view tag;
    std::string_view rest;
};
Report split_report(std::string_view line) noexcept;

}  // namespace echoplex::worker_wire
