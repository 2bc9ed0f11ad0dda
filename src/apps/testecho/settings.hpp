// LoadSettings: what one testecho run was asked to do, after parsing and defaults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "echoplex/io/backend.hpp"

namespace echoplex::testecho {

// What the server is expected to answer: the bytes sent, or the book's stamped reply.
enum class ReplyMode { echo, stamp };

// Which way the bytes go: both (echo), up only (to a discard service: nothing may come back), or
// down only (from a chargen service: RFC 864's rotating lines, each one verified).
enum class TrafficMode { echo, discard, chargen };

struct LoadSettings {
    BackendKind backend = available_backends().front();
    std::string host = "127.0.0.1";
    std::vector<std::uint16_t> ports = {50007, 50008};  // the book's select-server pair
    std::size_t connections = 8;                       // the book's 8 echo-clients
    std::size_t idle = 0;                              // extra connections held open and silent
    std::size_t procs = 1;

    // Stop condition: exactly one of them is set once parsing is done.
    std::optional<double> duration_s;
    std::optional<std::uint64_t> requests;  // total over all connections, as redis-benchmark -n

    // Payload: `messages` (sent in turn, e.g. the book's words), or a generated `size`-byte
    // pattern when `messages` is empty.
    std::vector<std::string> messages;
    std::size_t size = 0;

    std::size_t pipeline = 1;     // messages in flight per connection
    double rate = 0;              // messages per second per connection; 0 = as fast as echoes return
    double connect_rate = 0;      // new connections per second; 0 = all at once
    double timeout_s = 5;         // connect, reply and drain deadline
    ReplyMode reply = ReplyMode::echo;
    TrafficMode mode = TrafficMode::echo;
    // Latency percentiles of the reports, ascending, each in (0, 100).
    std::vector<double> percentiles = {50, 90, 99, 99.9};
    double interval_s = 1;        // the time series' step (JSON "intervals", --csv, the live line)
    double warmup_s = 0;          // load before the measured window, left out of its figures
    std::uint64_t reconnect_every = 0;  // messages per connection before it is closed and reopened
    bool allow_interrupt = false;  // an interrupted run may still exit 0
    std::string hdr_out;           // --hdr-out FILE: the latency distribution, HdrHistogram's text
    std::string csv_out;           // --csv FILE: the intervals
    bool json = false;
    bool progress = false;        // a live line on stderr (only when stderr is a terminal)

    // This process's share when --procs splits the load: the first global connection id.
    std::size_t first_id = 0;
    std::size_t first_idle_id = 0;
    std::size_t total_connections = 0;  // over every process (ids and the -n split use it)
    // A --procs child's interrupts: each byte read is one SIGINT/SIGTERM relayed by the parent
    // (EOF, the parent gone, too). -1: watch the signals themselves.
    int interrupt_fd = -1;

    std::size_t payload_size() const noexcept {
        if (messages.empty()) {
            return size;
        }
        std::size_t total = 0;
        for (const auto& m : messages) {
            total += m.size();
        }
        return total / messages.size();
    }
};

}  // namespace echoplex::testecho
