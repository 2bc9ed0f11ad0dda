// Loopback clients for the end-to-end and stress suites, and the one engine that moves their
// bytes: poll(2) rounds over many clients, and loops of rounds with a deadline. Nothing here
// sleeps.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "echoplex/io/unique_fd.hpp"

namespace echoplex::test {

// ---- connecting ----

// Connects a TCP socket to host:port (host "127.0.0.1" or "::1" or any numeric address),
// blocking, then makes it non-blocking, close-on-exec, TCP_NODELAY. `before_connect` may set
// socket options (e.g. SO_RCVBUF) on the fresh socket. Throws std::system_error on failure.
UniqueFd connect_to(std::uint16_t port, const std::string& host = "127.0.0.1",
                    const std::function<void(int)>& before_connect = {});

// A non-blocking TCP socket whose connect(2) to 127.0.0.1:port was started without waiting for
// it (give it to a Client with `connecting` set, or poll for POLLOUT and ask connect_result()).
// Throws std::system_error if the socket cannot be made or connect fails at once with anything
// but EINPROGRESS.
UniqueFd start_connect(std::uint16_t port);
// SO_ERROR of a socket whose non-blocking connect has finished (0: connected).
int connect_result(int fd);

// True if a socket can be bound on [::1]:0 here.
bool ipv6_loopback_available();

// Random bytes, all 256 values, reproducible from `seed`.
std::string random_bytes(std::size_t size, std::uint64_t seed);

// ---- the client ----

// One client connection. Its stream is `bytes`, or with `pattern` set
// pattern[(offset + i) % pattern->size()] (a pattern shared by many clients, so that hundreds of
// megabytes need no buffer per client); it sends the first `send_limit` bytes of it, whenever the
// socket takes them, and reads (unless `reading` is false) whatever comes back into its sink,
// which either stores it or checks it on arrival against what was sent.
struct Client {
    using Clock = std::chrono::steady_clock;

    // What becomes of the bytes that come back: appended to `stored`, or compared on arrival
    // with the stream at the same offset (the client expects its echo; nothing is kept).
    enum class Sink { store, verify };

    // Sends `bytes`, stores what comes back.
    static Client storing(UniqueFd fd, std::string bytes = {});
    // Sends `bytes`, expects them back in order.
    static Client verifying(UniqueFd fd, std::string bytes = {});
    // Sends the first `send_limit` bytes of the pattern from `offset` on, expects them back in
    // order. `pattern` (not empty) is shared, not copied: it must outlive the client.
    static Client verifying(UniqueFd fd, const std::string& pattern, std::size_t offset, std::size_t send_limit);
    static Client verifying(UniqueFd fd, const std::string&& pattern, std::size_t offset, std::size_t send_limit) = delete;

    UniqueFd fd;
    // fd's connect(2) is still in progress (start_connect): nothing is sent or read until it
    // finishes. A failed connect sets `error` and leaves this set (connect_failed()).
    bool connecting = false;

    // The stream.
    std::string bytes;
    const std::string* pattern = nullptr;
    std::size_t offset = 0;
    // Bytes of the stream to send in all. May grow between rounds (the next lockstep request, a
    // trickled byte, the next chunk); with `bytes` as the stream, at most bytes.size().
    std::size_t send_limit = 0;

    // What it does.
    Sink sink = Sink::store;
    bool reading = true;                // false: never reads (a client that does not read its echo)
    bool shutdown_after_send = false;   // shutdown(SHUT_WR) once send_limit bytes are sent (the
                                        // limit must not grow after that)
    bool until_eof = false;             // done() at EOF or a failure, however many bytes came
    std::optional<std::size_t> expect;  // otherwise done() once this many came (default send_limit)

    // Progress.
    std::size_t sent = 0;
    std::size_t received = 0;
    std::string stored;                   // Sink::store: every byte received, in order
    std::optional<std::size_t> mismatch;  // Sink::verify: stream offset of the first wrong byte
                                          // (a byte beyond what was sent is wrong too)
    bool shut_down = false;
    bool eof = false;  // recv returned 0
    int error = 0;     // errno of a failed connect, send or recv (e.g. ECONNRESET)
    Clock::time_point last_send_progress = Clock::now();
    // For the test's lockstep bookkeeping (when the request in flight started); the engine
    // ignores it.
    Clock::time_point request_started{};

    // Appends `more` to `bytes` (the stream; no pattern) and makes all of `bytes` due: the next
    // request on the same connection.
    void append(std::string_view more);

    bool closed() const noexcept { return eof || error != 0; }
    bool connect_failed() const noexcept { return connecting && error != 0; }
    std::size_t expected() const noexcept { return expect.value_or(send_limit); }
    bool done() const noexcept { return until_eof ? closed() : received >= expected(); }
    // Sink::verify: all send_limit bytes were sent and came back byte-exact, without an error.
    bool echoed_all() const noexcept {
        return sink == Sink::verify && sent == send_limit && received == sent && !mismatch && error == 0;
    }
    // Sink::verify: every byte received so far is the next byte of what was sent.
    bool prefix_ok() const noexcept { return sink == Sink::verify && received <= sent && !mismatch; }
    // Sink::verify: the request in flight (the stream up to send_limit) is answered and the
    // connection is healthy.
    bool request_answered() const noexcept {
        return sink == Sink::verify && received == send_limit && !closed() && !mismatch;
    }
    // "sent S of L, received R" and whatever went wrong, for a MESSAGE.
    std::string describe() const;
};

// ---- the engine ----
// poll_round() moves bytes for one round, so that a test can act between rounds (signal the
// server, start the next request, sample /proc); drive() and send_until_stalled() are loops of
// rounds that end on a condition or a deadline.

// One poll(2) round over the clients that are open and have something to do (finish a connect,
// send up to send_limit, or read): waits at most `max_wait` (at most 60 s) for any to be ready,
// then moves bytes both ways on each ready one, a bounded amount per client so that none starves
// the others. Clients without a descriptor, closed, or with nothing to do are skipped. Returns the
// number of clients polled (0: nothing to do; the call returns at once). Throws on a poll failure.
std::size_t poll_round(std::span<Client> clients, std::chrono::milliseconds max_wait);

struct DriveResult {
    bool all_done = false;
    std::size_t done = 0;
    std::size_t total = 0;
    std::chrono::milliseconds elapsed{0};
    std::string describe() const;
};

// Rounds until every client is done() or `deadline` passes. A client that is done, or closed, is
// left alone from then on: its socket is not polled again (a chargen client stops reading once it
// has `expect` bytes). A client that failed (error) counts as done only with until_eof.
DriveResult drive(std::span<Client> clients, std::chrono::milliseconds deadline);
DriveResult drive(Client& client, std::chrono::milliseconds deadline);

// Rounds over `client` until it has sent its send_limit, or has sent nothing for `stall` (true:
// the peer stopped taking bytes), or failed, or `deadline` passed. The stall clock starts at the
// call. With `reading` false this is a client pushing bytes that never reads its echo.
bool send_until_stalled(Client& client, std::chrono::milliseconds stall, std::chrono::milliseconds deadline);

// ---- around the clients ----

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

// Raises this process's soft RLIMIT_NOFILE to at least `soft` (never above the hard limit), so
// that it can hold that many clients, and restores the old value on destruction. ok() is false
// when the hard limit is below `soft`.
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
