// run_load: one process's share of a testecho run, driven by one EventLoop: the idle connections
// first, then the active ones (paced by --connect-rate), the stop condition, the drain, and
// timeouts.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "echoplex/io/error.hpp"
#include "echoplex/io/event_loop.hpp"
#include "load_client.hpp"
#include "report.hpp"
#include "settings.hpp"

namespace echoplex::testecho {

// Called at the end of every --interval of the measured window with the result so far, the
// interval just closed (also the last of so_far.intervals) and the seconds since the window began.
using ProgressFn = std::function<void(const RunResult& so_far, const IntervalStats& last, double elapsed_s)>;

// Resolves `host` (a name or a numeric address) once per port, to every address the resolver
// gives, in its order, duplicates dropped.
[[nodiscard]] Result<std::vector<Target>> resolve_targets(const std::string& host, const std::vector<std::uint16_t>& ports);

// Runs `settings` (connections first_id.. of total_connections) on `loop` until every connection
// has finished. SIGINT/SIGTERM end the load early as the stop condition would. Fails only when
// the targets cannot be resolved or the loop fails; every per-connection problem is in the result.
[[nodiscard]] Result<RunResult> run_load(EventLoop& loop, const LoadSettings& settings, const ProgressFn& progress);
// The same on targets already resolved (one per settings.ports entry); the result's `addresses`
// say what each resolved to and which address was used.
[[nodiscard]] Result<RunResult> run_load(EventLoop& loop, const LoadSettings& settings, std::vector<Target>& targets,
                                         const ProgressFn& progress);

}  // namespace echoplex::testecho
