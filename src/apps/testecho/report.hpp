// RunResult and its presentations: the human summary on stdout (modelled on redis-benchmark's
// summary block), the --json object, and the line that carries a result from a --procs child
// to its parent.
//
// --json prints exactly one object and nothing else on stdout. Field names (stable):
//   settings        object: backend, host, ports [..], connections, idle, procs,
//                   duration_s (null with -n), requests (null with -d), size (bytes per message,
//                   the average when several words are sent), message (null unless given as
//                   text; null too when it is not UTF-8, then message_hex has its bytes),
//                   pipeline, rate (per connection, 0 = unlimited), connect_rate (0 = unlimited),
//                   timeout_s, reply ("echo" | "stamp"), mode ("echo" | "discard" | "chargen"),
//                   percentiles [..], interval_s, warmup_s, reconnect_every (0 = never)
//   messages        echoes received complete and verified (discard: messages written; chargen:
//                   lines received and verified)
//   bytes_sent      bytes written
//   bytes_received  bytes read (stamped replies count their stamps)
//   duration_s      the measured window: from the first active connect (or the warm-up's end)
//                   to the last connection finishing
//   rps             messages / duration_s
//   mib_per_s       payload MiB per second (echoed, written or received, by mode)
//   gbit_per_s      the same in 10^9 bits per second, as iperf3 counts
//   latency_ms      {count, avg, min, pNN for each --percentiles (p99.9 is p99_9), max}: per
//                   message, from the intended send time (the scheduled time under --rate) to
//                   the last byte of its echo; every figure null when there are no samples
//                   (discard and chargen have none)
//   latency_distribution  [[percentile, ms], ...]: the --hdr-out steps, for plotting
//   connect_ms      the same fields, for TCP connects (idle connections and reconnects included)
//   connections     {established, failed, idle_held}: idle_held counts idle connections still
//                   open at the end
//   errors          {connect, mismatch, closed, timeout}
//   first_error     null, or "conn N offset M: what" for the first error seen
//   interrupted     true when SIGINT/SIGTERM ended the run early (exit 1 without --allow-interrupt)
//   verified        true when errors are all zero
//   intervals       [{t, messages, bytes, errors, open, latency_ms: {p50, p99, max}}, ...]: one per
//                   --interval of the measured window (t: seconds from its start to the
//                   interval's end); they add up to the totals
//   per_connection  {count, min, p50, max, jain, slowest: [{id, messages}, ...]}: messages per
//                   active connection and Jain's fairness index
//   addresses       per port: {resolved: [..], used}
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

// One step of the time series: what happened between the previous interval's end and this one's.
struct IntervalStats {
    double t = 0;  // seconds from the start of the measured window to this interval's end
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;   // payload bytes (RunResult::payload)
    std::uint64_t errors = 0;
    std::uint64_t open = 0;    // connections established at its end
    std::string latency;       // Histogram::serialize() of its messages' latencies

    Histogram latency_histogram() const;
};

// Messages completed on one active connection (its id), over every reconnect.
struct ConnectionCount {
    std::size_t id = 0;
    std::uint64_t messages = 0;
    bool operator==(const ConnectionCount&) const = default;
};

// Per-connection messages at a glance: the spread, and Jain's fairness index
// (sum x)^2 / (n * sum x^2), 1 when every connection did the same, 1/n when one did everything.
struct Fairness {
    std::uint64_t min = 0;
    std::uint64_t p50 = 0;
    std::uint64_t max = 0;
    double jain = 0;
    std::vector<ConnectionCount> slowest;  // up to three, fewest messages first
};
Fairness fairness_of(std::vector<ConnectionCount> counts);

struct RunResult {
    std::uint64_t messages = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes_received = 0;
    // Payload bytes that count for throughput: echoed and verified (echo, stamps not counted),
    // written (discard), received and verified (chargen).
    std::uint64_t payload = 0;
    std::uint64_t established = 0;
    std::uint64_t idle_held = 0;
    double duration_s = 0;
    Histogram latency;
    Histogram connect;
    ErrorCounts errors;
    std::string first_error;
    std::vector<PortAddresses> addresses;  // per port, in --port order
    bool interrupted = false;  // ended early by SIGINT/SIGTERM
    std::vector<IntervalStats> intervals;
    std::vector<ConnectionCount> per_connection;  // by id

    bool verified() const noexcept { return errors.total() == 0; }

    // Sums another process's result: totals add, histograms merge, the duration is the longest,
    // the first error is kept, intervals add up step by step, connections join.
    void merge(const RunResult& other);

    // Remembers `what` as first_error if it is the first.
    void note_error(std::string what);
};

// The human report: settings, totals, verification, throughput, latency and connect tables.
std::string human_report(const LoadSettings& settings, const RunResult& result);

// HdrHistogram's percentile distribution text (as wrk2 and outputPercentileDistribution print
// it), values in milliseconds: the header, one line per percentile step (5 steps per halving of
// the distance to 100%), and the #[Mean ..], #[Max ..], #[Buckets ..] footer.
std::string hdr_distribution(const Histogram& latency);

// The intervals as CSV: t,messages,bytes,errors,open,p50_ms,p99_ms,max_ms (empty cells when an
// interval has no latency samples).
std::string csv_intervals(const RunResult& result);

// One JSON object and a newline (field names above).
std::string json_report(const LoadSettings& settings, const RunResult& result);

// One line (no '\n' inside) carrying every field of `result`, for a --procs child's pipe.
std::string serialize_result(const RunResult& result);
// Parses serialize_result's line; nullopt when malformed.
std::optional<RunResult> parse_result(std::string_view line);

// JSON string literal for `text` (quotes included), escaping as RFC 8259 requires.
std::string json_string(std::string_view text);

}  // namespace echoplex::testecho
