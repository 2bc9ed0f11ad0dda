// Load clients for the stress suite: byte streams cut from one shared random pattern (so hundreds
// of megabytes need no buffer per client), checked on arrival against the same pattern, and
// moved by one poll(2) round at a time so a test can act between rounds (signal the server,
// start a request, sample /proc). Nothing sleeps: every wait is a poll with a deadline.
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

// One client connection sending pattern[(offset + i) % pattern.size()] for i in [0, send_limit)
// and expecting the same bytes back, in order.
struct StreamClient {
    using Clock = std::chrono::steady_clock;

    UniqueFd fd;
    const std::string* pattern = nullptr;
    std::size_t offset = 0;      // where in the pattern this client's stream starts
    std::size_t send_limit = 0;  // bytes to send in all; may grow (lockstep requests, trickles)
    bool reading = true;         // false: never reads (a client that does not read its echo)

    std::size_t sent = 0;
    std::size_t received = 0;
    std::optional<std::size_t> mismatch;  // stream offset of the first byte that came back wrong
    bool eof = false;                     // recv returned 0
    int error = 0;                        // errno of a failed send/recv (e.g. ECONNRESET)
    Clock::time_point last_send_progress = Clock::now();

    // For lockstep use: when the request in flight (the bytes up to send_limit) was started.
    Clock::time_point request_started{};

    bool closed() const noexcept { return eof || error != 0; }
    // Everything sent came back and nothing was wrong.
    bool echoed_all() const noexcept { return received == sent && !mismatch && error == 0; }
    // Every byte received so far is the next byte of what was sent.
    bool prefix_ok() const noexcept { return received <= sent && !mismatch; }
    // A lockstep request is answered (and the connection is healthy).
    bool request_answered() const noexcept { return received == send_limit && !closed() && !mismatch; }
};

// A client connected to 127.0.0.1:port (blocking connect, then non-blocking, TCP_NODELAY);
// `before_connect` may set socket options on the fresh socket.
StreamClient make_stream_client(std::uint16_t port, const std::string& pattern, std::size_t offset,
                                std::size_t send_limit, bool reading = true,
                                const std::function<void(int)>& before_connect = {});

// One poll(2) round over every client that is not closed and has something to do (read, or send
// up to send_limit): waits at most `max_wait`, then moves bytes both ways for each ready client,
// with a bounded amount per client so that none starves the others. Returns the number of
// clients that were polled (0: nothing left to do; the call then returns at once).
std::size_t pump_once(std::vector<StreamClient>& clients, std::chrono::milliseconds max_wait);

// A TCP socket whose connect(2) to 127.0.0.1:port was started without waiting for it:
// poll for POLLOUT, then connect_result() says how it ended. Throws std::system_error if the
// socket cannot be made or connect fails at once with anything but EINPROGRESS.
UniqueFd start_connect(std::uint16_t port);
// SO_ERROR of a socket whose non-blocking connect has finished (0: connected).
int connect_result(int fd);

// Latencies of completed exchanges, summarised for a MESSAGE.
class LatencyLog {
public:
    void add(std::chrono::steady_clock::duration d);
    std::size_t count() const noexcept { return samples_.size(); }
    // In milliseconds; 0 when empty. p in [0, 100].
    double percentile_ms(double p) const;
    double max_ms() const { return percentile_ms(100); }
    std::string describe() const;

private:
    std::vector<double> samples_;  // milliseconds
};

// Raises this process's soft RLIMIT_NOFILE to at least `soft` (never above the hard limit) and
// restores the old value on destruction. ok() is false when the hard limit is below `soft`.
class NofileLimit {
public:
    explicit NofileLimit(std::size_t soft);
    NofileLimit(const NofileLimit&) = delete;
    NofileLimit& operator=(const NofileLimit&) = delete;
    ~NofileLimit();
    bool ok() const noexcept { return ok_; }
    std::size_t hard() const noexcept { return hard_; }

private:
    bool ok_ = false;
    bool changed_ = false;
    std::size_t old_soft_ = 0;
    std::size_t hard_ = 0;
};

}  // namespace echoplex::test
