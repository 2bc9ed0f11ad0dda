// RunResult and its presentations: the human summary on stdout (modelled on redis-benchmark's
// summary block), the --json object, and the line that carries a result from a --procs child
// to its parent.
//
// --json prints exactly one object and nothing else on stdout. Field names (stable):
//   settings        object: backend, host, ports [..], connections, idle, procs,
//                   duration_s (null with -n), requests (null with -d), size (bytes per message,
//                   the average when several words are sent), message (null unless given as text),
//                   pipeline, rate (per connection, 0 = unlimited), connect_rate (0 = unlimited),
//                   timeout_s, reply ("echo" | "stamp")
//   messages        echoes received complete and verified
//   bytes_sent      payload bytes written
//   bytes_received  bytes read (stamped replies count their stamps)
//   duration_s      from the first active connect to the last connection finishing
//   rps             messages / duration_s
//   mib_per_s       payload MiB echoed per second
//   latency_ms      {count, avg, min, p50, p90, p99, p99_9, max}: per message, from the intended
//                   send time (the scheduled time under --rate) to the last byte of its echo
//   connect_ms      same fields, for TCP connects (idle connections included)
//   connections     {established, failed, idle_held}: idle_held counts idle connections still
//                   open at the end
//   errors          {connect, mismatch, closed, timeout}
//   first_error     null, or "conn N offset M: what" for the first error seen
//   verified        true when errors are all zero (then the exit status is 0)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "histogram.hpp"
#include "settings.hpp"

namespace echoplex::testecho {

struct ErrorCounts {
    std::uint64_t connect = 0;   // connect(2) failed, timed out, or the descriptor could not be watched
    std::uint64_t mismatch = 0;  // a byte came back that was not the one sent (or came unasked)
    std::uint64_t closed = 0;    // the server closed or reset a connection that still expected data
    std::uint64_t timeout = 0;   // an echo did not arrive within --timeout
    std::uint64_t total() const noexcept { return connect + mismatch + closed + timeout; }
};

// What one port's host resolved to, in the resolver's order, and the address connected to
// (empty if no connection was made).
struct PortAddresses {
    std::vector<std::string> resolved;
    std::string used;
    bool operator==(const PortAddresses&) const = default;
};

struct RunResult {
    std::uint64_t messages = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t payload_received = 0;  // data bytes verified (without stamps)
    std::uint64_t established = 0;
    std::uint64_t idle_held = 0;
    double duration_s = 0;
    Histogram latency;
    Histogram connect;
    ErrorCounts errors;
    std::string first_error;
    std::vector<PortAddresses> addresses;  // per port, in --port order

    bool verified() const noexcept { return errors.total() == 0; }

    // Sums another process's result: totals add, histograms merge, the duration is the longest,
    // the first error is kept.
    void merge(const RunResult& other);

    // Remembers `what` as first_error if it is the first.
    void note_error(std::string what);
};

// The human report: settings, totals, verification, throughput, latency and connect tables.
std::string human_report(const LoadSettings& settings, const RunResult& result);

// One JSON object and a newline (field names above).
std::string json_report(const LoadSettings& settings, const RunResult& result);

// One line (no '\n' inside) carrying every field of `result`, for a --procs child's pipe.
std::string serialize_result(const RunResult& result);
// Parses serialize_result's line; nullopt when malformed.
std::optional<RunResult> parse_result(std::string_view line);

// JSON string literal for `text` (quotes included), escaping as RFC 8259 requires.
std::string json_string(std::string_view text);

}  // namespace echoplex::testecho
