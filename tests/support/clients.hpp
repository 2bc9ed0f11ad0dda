// Loopback clients for the end-to-end suites: connecting, random payloads, and conversations
// driven by poll(2) with deadlines. Nothing here sleeps.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "echoplex/io/unique_fd.hpp"

namespace echoplex::test {

// Connects a TCP socket to host:port (host "127.0.0.1" or "::1" or any numeric address),
// blocking, then makes it non-blocking, close-on-exec, TCP_NODELAY. `before_connect` may set
// socket options (e.g. SO_RCVBUF) on the fresh socket. Throws std::system_error on failure.
UniqueFd connect_to(std::uint16_t port, const std::string& host = "127.0.0.1",
                    const std::function<void(int)>& before_connect = {});

// True if a socket can be bound on [::1]:0 here.
bool ipv6_loopback_available();

// Random bytes, all 256 values, reproducible from `seed`.
std::string random_bytes(std::size_t size, std::uint64_t seed);

// One client conversation driven by drive_sessions(): writes `to_send` (in chunks, whenever the
// socket is writable) while reading whatever comes back.
struct Session {
    UniqueFd fd;
    std::string to_send;
    std::size_t sent = 0;
    std::string received;
    // Done once `expect` bytes were received (default: to_send.size()); or, with until_eof, once
    // EOF (or a reset) was seen.
    std::optional<std::size_t> expect;
    bool until_eof = false;
    // shutdown(SHUT_WR) once everything was sent.
    bool shutdown_after_send = false;
    bool shut_down = false;

    bool eof = false;   // read returned 0
    int error = 0;      // errno of a failed read/write (e.g. ECONNRESET), 0 if none

    std::size_t expected() const { return expect.value_or(to_send.size()); }
    bool done() const;
};

struct DriveResult {
    bool all_done = false;
    std::size_t done = 0;
    std::size_t total = 0;
    std::chrono::milliseconds elapsed{0};
    std::string describe() const;
};

// Drives all sessions concurrently with one poll() loop until every one is done or `deadline`
// passes. A session whose socket fails (error set) counts as done only with until_eof.
DriveResult drive_sessions(std::vector<Session>& sessions, std::chrono::milliseconds deadline);

// Writes from a repeating pattern to `fd` without ever reading, until `limit` bytes were sent or
// no byte could be sent for `stall`, or `deadline` passed. Returns the bytes sent (stops early on
// a write error, reported through `error`).
struct PushResult {
    std::size_t sent = 0;
    bool stalled = false;  // stopped because nothing moved for `stall`
    int error = 0;
};
PushResult push_without_reading(int fd, const std::string& pattern, std::size_t limit,
                                std::chrono::milliseconds stall, std::chrono::milliseconds deadline,
                                std::size_t start_offset = 0);

// Reads until EOF, a read error, or `deadline`. `eof`/`error` say which happened.
struct ReadResult {
    std::string data;
    bool eof = false;
    int error = 0;
    bool timed_out = false;
};
ReadResult read_until_eof(int fd, std::chrono::milliseconds deadline);

}  // namespace echoplex::test
