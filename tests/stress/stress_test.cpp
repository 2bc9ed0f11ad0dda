// Stress suite: the real echoplex binary (ECHOPLEX_BIN, --backend from ECHOPLEX_BACKEND; meson
// registers this file once per backend) under slow readers, connection storms, descriptor
// exhaustion, select's FD_SETSIZE, odd chunking, signals under load and slowloris clients. Each
// case ends by checking that the server still answers a fresh client byte-exact and holds no
// more descriptors than right after startup. Loopback and ephemeral ports only; every wait is a
// poll(2) (or pidfd/condition) with a deadline, never a sleep. Under a wrapper (valgrind, see
// tests/meson.build) the sizes shrink and the deadlines grow.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "support/clients.hpp"
#include "support/doctest.hpp"
#include "support/metrics_page.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

// Sizes for a normal or sanitizer build, and smaller ones when the server runs under valgrind.
template <class T>
T scaled(T normal, T wrapped) {
    return server_wrapped() ? wrapped : normal;
}

// The server is built with the same flags as this test, so this says whether it runs under
// AddressSanitizer (GCC defines __SANITIZE_ADDRESS__; older clang only has __has_feature).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool address_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool address_sanitizer = true;
#else
constexpr bool address_sanitizer = false;
#endif
#else
constexpr bool address_sanitizer = false;
#endif

// Deadlines: generous already; four times that under a wrapper.
milliseconds patience(milliseconds normal) { return server_wrapped() ? normal * 4 : normal; }

std::string errno_text(int err) { return err == 0 ? std::string("none") : std::string(std::strerror(err)); }

long ms_since(Clock::time_point start) {
    return static_cast<long>(std::chrono::duration_cast<milliseconds>(Clock::now() - start).count());
}

// The time left until `when`, for a poll_round wait (0 once it has passed).
milliseconds left_until(Clock::time_point when) {
    return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(when - Clock::now()));
}

// Compares without printing megabytes on failure: the first differing offset instead.
std::string first_difference(const std::string& got, const std::string& want) {
    const std::size_t n = std::min(got.size(), want.size());
    const auto at = std::mismatch(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(n), want.begin());
    if (at.first != got.begin() + static_cast<std::ptrdiff_t>(n)) {
        return "first difference at byte " + std::to_string(at.first - got.begin()) + " (got " +
               std::to_string(got.size()) + " bytes, want " + std::to_string(want.size()) + ")";
    }
    if (got.size() != want.size()) {
        return "lengths differ: got " + std::to_string(got.size()) + " bytes, want " + std::to_string(want.size());
    }
    return "";
}

// One more round trip on a client that expects its echo; "" when `data` came back byte-exact
// (and so did everything before it), else what went wrong.
std::string echo_once(Client& client, const std::string& data, milliseconds deadline = 10s) {
    client.append(data);
    const auto r = drive(client, patience(deadline));
    if (!r.all_done || !client.echoed_all()) {
        return r.describe() + ": " + client.describe();
    }
    return "";
}

// Asks for a stats line with SIGUSR1 and waits for it.
std::optional<Stats> stats_now(ServerProcess& server) {
    const std::size_t before = stats_lines(server.stderr_text()).size();
    if (!server.send_signal(SIGUSR1)) {
        return std::nullopt;
    }
    return server.wait_stats_line(before + 1, patience(10s));
}

// The end of every case but the SIGTERM one: the server is alive, answers a fresh client
// byte-exact, and once it has seen every earlier client's close it holds exactly the descriptors
// it held right after startup, plus the probe's.
void check_alive_and_no_leak(ServerProcess& server, int baseline_fds, std::uint64_t seed) {
    REQUIRE_MESSAGE(server.running(), "the server died; stderr: ", server.stderr_text());
    Client probe = Client::verifying(connect_to(server.port()));
    const std::string data = random_bytes(64 * KiB, seed);
    CHECK_MESSAGE(echo_once(probe, data) == "", "a fresh client after the stress");

    // The server closes a client's descriptor when its loop sees that client's FIN or RST. Each
    // probe round trip is one more pass of that loop, so this waits on the server, bounded by a
    // deadline; it does not sleep.
    const auto deadline = Clock::now() + patience(20s);
    int now = server.open_fds();
    int rounds = 0;
    while (now != baseline_fds + 1 && Clock::now() < deadline) {
        REQUIRE(echo_once(probe, "p") == "");
        now = server.open_fds();
        ++rounds;
    }
    MESSAGE("server descriptors: ", baseline_fds, " after startup, ", now, " with the probe connected (after ", rounds,
            " probe round trips)");
    CHECK_MESSAGE(now == baseline_fds + 1, "descriptor leak: ", now, " open with one client, ", baseline_fds,
                  " right after startup");
    const auto stats = stats_now(server);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    CHECK(stats->open == 1);
    CHECK(echo_once(probe, "still here") == "");
    CHECK(server.running());
}

int startup_fds(const ServerProcess& server) {
    const int fds = server.open_fds();
    REQUIRE(fds > 0);
    return fds;
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("slow readers at scale: clients that never read are paused, the others keep a low latency, RSS stays bounded") {
    ServerProcess server({"--port", "0"});
    const int baseline_fds = startup_fds(server);
    const long baseline_rss = server.rss_kib();
    REQUIRE(baseline_rss > 0);

    const std::size_t slow_count = scaled<std::size_t>(50, 20);
    const std::size_t good_count = scaled<std::size_t>(50, 20);
    const std::size_t slow_bytes = 8 * MiB;
    const std::size_t requests_each = scaled<std::size_t>(40, 20);
    // Each non-reader costs the server at most its high watermark of queued output (256 KiB by
    // default) plus one read budget (64 KiB) read before the pause takes effect; 64 KiB more for
    // the connection itself, its blocks' rounding and allocator slack. 4 MiB on top covers the
    // well-behaved clients (a few blocks each), the block pool's free list and the connection
    // table. Under valgrind its shadow memory comes on top (three times the bound); under
    // AddressSanitizer its shadow, redzones and quarantine of freed memory (twice the bound).
    // io_uring adds a fixed cost that is not per connection: its provided-buffer rings, which
    // lend more buffers as receives outrun them, up to io_uring_buffer_ring_bytes (20 MiB).
    const long per_slow_kib = 256 + 64 + 64;
    const long rss_factor = server_wrapped() ? 3 : address_sanitizer ? 2 : 1;
    const long ring_kib = backend_under_test() == BackendKind::io_uring ? io_uring_buffer_ring_bytes / 1024 : 0;
    const long rss_bound_kib = (static_cast<long>(slow_count) * per_slow_kib + 4 * 1024 + ring_kib) * rss_factor;

    const std::string pattern = random_bytes(MiB, 101);
    std::mt19937_64 rng(102);
    std::vector<Client> clients;
    clients.reserve(slow_count + good_count);
    // Small buffers on the non-readers' side (set before connecting, which also turns off the
    // kernel's receive-buffer autotuning) so that 8 MiB is far more than the kernel can absorb:
    // the server's watermarks, not the socket buffers, must hold the rest back.
    auto small_buffers = [](int fd) {
        const int size = 64 * 1024;
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    };
    for (std::size_t i = 0; i < slow_count; ++i) {
        clients.push_back(
            Client::verifying(connect_to(server.port(), "127.0.0.1", small_buffers), pattern, i * 4099, slow_bytes));
        clients.back().reading = false;
    }
    std::vector<std::size_t> answered(good_count, 0);
    LatencyLog latency;
    for (std::size_t i = 0; i < good_count; ++i) {
        clients.push_back(Client::verifying(connect_to(server.port()), pattern, 7 + i * 8191, 0));
    }
    auto next_request = [&](Client& c) {
        c.send_limit += 1 + rng() % (8 * KiB);
        c.request_started = Clock::now();
    };
    for (std::size_t i = 0; i < good_count; ++i) {
        next_request(clients[slow_count + i]);
    }

    // A non-reader is settled once it sent everything or nothing moved for 1.5 s: the server
    // stopped reading it. The well-behaved clients keep going until every non-reader settled.
    const auto stall = 1500ms;
    const auto start = Clock::now();
    const auto deadline = start + patience(90s);
    long max_rss = baseline_rss;
    auto last_sample = start;
    std::size_t settled = 0;
    std::size_t good_done = 0;
    while (Clock::now() < deadline) {
        poll_round(clients, 20ms);
        const auto now = Clock::now();
        settled = 0;
        for (std::size_t i = 0; i < slow_count; ++i) {
            const Client& c = clients[i];
            if (c.closed() || c.sent == c.send_limit || now - c.last_send_progress >= stall) {
                ++settled;
            }
        }
        good_done = 0;
        for (std::size_t i = 0; i < good_count; ++i) {
            Client& c = clients[slow_count + i];
            if (c.closed() || c.mismatch) {
                ++good_done;  // failed: reported below
                continue;
            }
            if (c.request_answered() && c.request_started != Clock::time_point{}) {
                latency.add(now - c.request_started);
                c.request_started = {};
                ++answered[i];
            }
            if (c.request_started == Clock::time_point{}) {
                if (answered[i] < requests_each || settled < slow_count) {
                    next_request(c);
                } else {
                    ++good_done;
                }
            }
        }
        if (now - last_sample >= 50ms) {
            max_rss = std::max(max_rss, server.rss_kib());
            last_sample = now;
        }
        if (settled == slow_count && good_done == good_count) {
            break;
        }
    }
    max_rss = std::max(max_rss, server.rss_kib());
    const long elapsed = ms_since(start);

    std::size_t slow_sent = 0;
    std::size_t slow_min = slow_bytes;
    std::size_t slow_stalled = 0;
    for (std::size_t i = 0; i < slow_count; ++i) {
        const Client& c = clients[i];
        CHECK_MESSAGE(c.error == 0, "non-reader ", i, ": ", errno_text(c.error));
        slow_sent += c.sent;
        slow_min = std::min(slow_min, c.sent);
        slow_stalled += c.sent < c.send_limit ? 1 : 0;
    }
    MESSAGE(server.announced_backend(), ": ", slow_count, " non-readers pushed ", slow_sent / MiB, " MiB in all (least ",
            slow_min / KiB, " KiB), ", slow_stalled, " held back by the server; ", elapsed, " ms");
    MESSAGE("well-behaved: ", latency.describe());
    CHECK_MESSAGE(settled == slow_count, "only ", settled, " of ", slow_count, " non-readers settled within the deadline");
    std::size_t good_failed = 0;
    for (std::size_t i = 0; i < good_count; ++i) {
        const Client& c = clients[slow_count + i];
        if (c.closed() || c.mismatch || answered[i] < requests_each) {
            if (++good_failed <= 5) {
                MESSAGE("well-behaved ", i, ": answered ", answered[i], " eof=", c.eof, " error=", errno_text(c.error),
                        " mismatch at ", c.mismatch.value_or(0), " (", c.mismatch.has_value(), ")");
            }
        }
    }
    CHECK_MESSAGE(good_failed == 0, good_failed, " of ", good_count, " well-behaved clients failed");
    // Not a speed test: only a bound that a stuck loop (a non-reader hogging it) would break.
    CHECK_MESSAGE(latency.max_ms() < static_cast<double>(patience(5s).count()),
                  "a well-behaved exchange took ", latency.max_ms(), " ms");

    MESSAGE("server VmRSS: ", baseline_rss, " KiB after startup, at most ", max_rss, " KiB during the run (+",
            max_rss - baseline_rss, " KiB; bound ", rss_bound_kib, " KiB = ", slow_count, " x ", per_slow_kib,
            " KiB + 4 MiB", ring_kib > 0 ? " + " + std::to_string(ring_kib / 1024) + " MiB buffer ring" : std::string(), rss_factor > 1 ? ", x" + std::to_string(rss_factor) + " for valgrind or ASan" : std::string(), ")");
    CHECK(max_rss - baseline_rss < rss_bound_kib);

    const auto stats = stats_now(server);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    MESSAGE("stats: open=", stats->open, " paused=", stats->paused, " bytes_in=", stats->bytes_in,
            " bytes_out=", stats->bytes_out);
    CHECK(stats->open == slow_count + good_count);
    // Each non-reader made the server pause it: with the client's 64 KiB receive buffer, what
    // the server can hand to the kernel for it is bounded by the send buffer's maximum (4 MiB by
    // default, net.ipv4.tcp_wmem), well under 8 MiB minus the high watermark.
    CHECK(stats->paused >= slow_count);

    clients.clear();  // closes with unread data: the kernel resets those connections
    check_alive_and_no_leak(server, baseline_fds, 103);
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("connection storms: connect-close, connect-send-reset and half-close echoes, thousands, interleaved") {
    ServerProcess server({"--port", "0"});
    const int baseline_fds = startup_fds(server);

    enum class Kind { close_at_once, send_then_reset, half_close_echo };

    const std::size_t total = scaled<std::size_t>(5000, 600);
    // Connections the server may not have accepted yet are bounded by this window (well below
    // the listen backlog of 511): a half-close echo completes only after the server accepted
    // every connection before it, so new ones start only within `window` of the oldest
    // unfinished echo.
    const std::size_t window = 192;
    const std::string pattern = random_bytes(64 * KiB, 201);
    std::mt19937_64 rng(202);

    // Connection i is conns[i], of kinds[i]. Each one's descriptor is closed when it has
    // finished; every connection before `first_open` has, so a round polls [first_open, started).
    std::vector<Client> conns;
    std::vector<Kind> kinds;
    conns.reserve(total);
    kinds.reserve(total);
    std::size_t started = 0;
    std::size_t first_open = 0;
    std::size_t counts[3] = {0, 0, 0};
    std::size_t echo_ok = 0;
    std::size_t echo_bad = 0;
    std::size_t connect_failed = 0;
    std::size_t peak_in_flight = 0;
    auto open_in_flight = [&] {
        return static_cast<std::size_t>(std::count_if(conns.begin() + static_cast<std::ptrdiff_t>(first_open),
                                                      conns.end(), [](const Client& c) { return c.fd.valid(); }));
    };
    const auto start = Clock::now();
    const auto deadline = start + patience(60s);

    while (first_open < total && Clock::now() < deadline) {
        std::size_t oldest_echo = started;
        for (std::size_t i = first_open; i < started; ++i) {
            if (kinds[i] == Kind::half_close_echo && conns[i].fd) {
                oldest_echo = i;
                break;
            }
        }
        while (started < total && started < oldest_echo + window) {
            const auto kind = static_cast<Kind>(rng() % 3);
            ++counts[static_cast<int>(kind)];
            std::size_t size = 0;
            std::size_t at = 0;
            if (kind != Kind::close_at_once) {
                size = 1 + rng() % (kind == Kind::half_close_echo ? 32 * KiB : 8 * KiB);
                at = rng() % (pattern.size() - size);
            }
            Client c = Client::verifying(start_connect(server.port()), pattern, at, size);
            c.connecting = true;
            const bool echo = kind == Kind::half_close_echo;
            c.reading = echo;  // the others never read
            c.shutdown_after_send = echo;
            c.until_eof = echo;
            conns.push_back(std::move(c));
            kinds.push_back(kind);
            ++started;
        }
        peak_in_flight = std::max(peak_in_flight, open_in_flight());

        poll_round(std::span(conns).subspan(first_open), left_until(deadline));
        for (std::size_t i = first_open; i < started; ++i) {
            Client& c = conns[i];
            if (!c.fd) {
                continue;
            }
            if (c.connect_failed()) {
                if (++connect_failed <= 5) {
                    MESSAGE("connect #", i, ": ", errno_text(c.error));
                }
                c.fd.reset();
                continue;
            }
            if (c.connecting) {
                continue;
            }
            switch (kinds[i]) {
            case Kind::close_at_once:
                c.fd.reset();  // FIN, possibly before the server even accepted
                break;
            case Kind::send_then_reset:
                if (c.sent > 0 || c.error != 0) {  // the first bytes are out: now the reset
                    set_linger_zero(c.fd.get());
                    c.fd.reset();
                }
                break;
            case Kind::half_close_echo:
                if (c.closed()) {
                    if (c.eof && c.echoed_all()) {
                        ++echo_ok;
                    } else if (++echo_bad <= 5) {
                        MESSAGE("half-close echo #", i, ": ", c.describe());
                    }
                    c.fd.reset();
                }
                break;
            }
        }
        while (first_open < started && !conns[first_open].fd) {
            ++first_open;
        }
    }
    const long elapsed = ms_since(start);
    MESSAGE(server.announced_backend(), ": ", started, " connections in ", elapsed, " ms (", counts[0],
            " connect-close, ", counts[1], " send-reset, ", counts[2], " half-close echoes; at most ", peak_in_flight,
            " in flight)");
    const std::size_t still_open = open_in_flight();
    CHECK_MESSAGE(still_open == 0, still_open, " connections still open at the deadline");
    CHECK(started == total);
    CHECK(connect_failed == 0);
    CHECK(echo_bad == 0);
    CHECK(echo_ok == counts[2]);

    const auto stats = stats_now(server);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    MESSAGE("stats: accepted=", stats->accepted, " refused=", stats->refused, " open=", stats->open, " peak=", stats->peak);
    CHECK(stats->refused == 0);
    CHECK(stats->accepted >= counts[2]);
    CHECK(stats->accepted <= total);
    check_alive_and_no_leak(server, baseline_fds, 203);
}

// ---------------------------------------------------------------------------------------------

// Drives clients[first..], each sending its short greeting and expecting it back; returns, per
// client, whether the server echoed it (true) or closed the connection without a byte (false; the
// client's descriptor is closed). A client with neither outcome within the deadline fails the test.
std::vector<bool> classify_clients(std::vector<Client>& clients, std::size_t first) {
    const std::span<Client> batch = std::span(clients).subspan(first);
    drive(batch, patience(15s));
    std::vector<bool> served;
    std::size_t undecided = 0;
    for (std::size_t k = 0; k < batch.size(); ++k) {
        Client& c = batch[k];
        const bool echoed = c.echoed_all() && !c.eof;
        const bool refused = c.received == 0 && (c.eof || c.error == ECONNRESET);
        if (!echoed && !refused && ++undecided <= 5) {
            MESSAGE("client ", first + k, ": neither echoed nor closed: ", c.describe());
        }
        served.push_back(echoed);
        if (!echoed) {
            c.fd.reset();
        }
    }
    CHECK_MESSAGE(undecided == 0, undecided, " clients were neither served nor refused");
    return served;
}

// A client that greets with "hello I" and expects its echo.
Client greeter(std::uint16_t port, std::size_t i) {
    return Client::verifying(connect_to(port), "hello " + std::to_string(i));
}

TEST_CASE("descriptor exhaustion: beyond RLIMIT_NOFILE clients are refused, the loop does not spin, service resumes") {
    const rlim_t limit = 64;
    ServerOptions options;
    options.limits.push_back({RLIMIT_NOFILE, limit, limit});
    ServerProcess server({"--port", "0", "--metrics=127.0.0.1:0"}, options);
    const int baseline_fds = startup_fds(server);
    // Descriptors below the limit that are taken before any client comes (inherited ones above
    // it, or valgrind's, take no room).
    const auto numbers = server.fd_numbers();
    const auto taken = static_cast<std::size_t>(
        std::count_if(numbers.begin(), numbers.end(), [&](int fd) { return static_cast<rlim_t>(fd) < limit; }));

    // With workers each has its own descriptor table under the same limit, and the kernel spreads
    // clients by a hash: 100 per worker fill every worker (fewer than 56 of 200 on one of two
    // has a chance below 1e-9).
    const std::size_t workers = workers_under_test();
    const std::size_t count = workers == 1 ? 80 : 100 * workers;  // more than fit in 64 descriptors each
    std::vector<Client> clients;
    for (std::size_t i = 0; i < count; ++i) {
        clients.push_back(greeter(server.port(), i));
    }
    const auto served = classify_clients(clients, 0);
    const auto served_count = static_cast<std::size_t>(std::count(served.begin(), served.end(), true));
    std::size_t refused_count = count - served_count;
    MESSAGE(server.announced_backend(), ": RLIMIT_NOFILE ", limit, " (", workers, " worker(s)), ", taken, " descriptors below it at startup: ",
            served_count, " of ", count, " clients served, ", refused_count, " refused");
    CHECK(served_count >= 1);
    CHECK(refused_count >= count - workers * static_cast<std::size_t>(limit));
    CHECK(served_count <= workers * (static_cast<std::size_t>(limit) - taken));

    // While the server is out of descriptors, more clients knock; each must be refused at once
    // (accept on the reserved descriptor, close) instead of staying queued behind a listener that
    // is readable forever. Over ~2 s of waiting, the server must use a fraction of one CPU: a
    // bound against spinning on EMFILE, not a speed test.
    const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
    const long cpu_before = server.cpu_ticks();
    REQUIRE(cpu_before >= 0);
    const auto hold_start = Clock::now();
    std::vector<Client> knockers;
    for (int i = 0; i < 10; ++i) {
        knockers.push_back(Client::storing(connect_to(server.port())));
        knockers.back().until_eof = true;
    }
    // Wait on the served clients: nothing may arrive on them (no data, no close) while held.
    // (Without a served client there is nothing to wait on: the checks above failed already.)
    const auto hold_end = hold_start + 2s;
    std::size_t disturbed = 0;
    while (Clock::now() < hold_end && disturbed == 0 && poll_round(clients, left_until(hold_end)) != 0) {
        disturbed = static_cast<std::size_t>(std::count_if(clients.begin(), clients.end(), [](const Client& c) {
            return c.fd && (c.received != c.sent || c.closed());
        }));
    }
    const long cpu_after = server.cpu_ticks();
    const double held_s = std::chrono::duration<double>(Clock::now() - hold_start).count();
    const double elapsed_ticks = held_s * static_cast<double>(ticks_per_second);
    MESSAGE("server CPU while exhausted: ", cpu_after - cpu_before, " ticks in ", held_s, " s (",
            static_cast<long>(elapsed_ticks), " ticks elapsed, ", ticks_per_second, " per second)");
    CHECK_MESSAGE(disturbed == 0, disturbed, " held clients saw data or a close while they were idle");
    CHECK_MESSAGE(static_cast<double>(cpu_after - cpu_before) < 0.25 * elapsed_ticks,
                  "the server used ", cpu_after - cpu_before, " ticks of CPU in ", held_s, " s: busy loop?");
    for (std::size_t i = 0; i < knockers.size(); ++i) {
        const auto r = drive(knockers[i], patience(10s));
        CHECK_MESSAGE((knockers[i].eof || knockers[i].error == ECONNRESET), "knocker ", i, " was not refused: ",
                      r.describe(), ", ", knockers[i].describe());
        CHECK(knockers[i].stored.empty());
    }
    refused_count += knockers.size();
    knockers.clear();

    const auto stats = stats_now(server);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    MESSAGE("stats: accepted=", stats->accepted, " refused=", stats->refused, " open=", stats->open);
    if (server_wrapped()) {
        // valgrind keeps the top of the descriptor range for itself: an accept(2) that lands
        // there is closed by valgrind and reported to the server as EMFILE, so the server never
        // sees (or counts) that connection; the spare-descriptor refusal after it is counted.
        CHECK(stats->refused >= 1);
        CHECK(stats->refused <= refused_count);
    } else {
        CHECK(stats->refused == refused_count);
    }
    CHECK(stats->open == served_count);
    CHECK(stats->accepted == served_count);

    // The held clients still echo, then leave; a newcomer is served again. Each attempt waits for
    // the server's answer (an echo or a refusal); the attempts are bounded by a deadline, not by
    // a count: on a loaded machine the kernel may deliver the leavers' FINs to the server only
    // milliseconds after newer connections, and a refusal takes far less than that.
    for (std::size_t i = 0; i < clients.size(); ++i) {
        if (clients[i].fd) {
            CHECK(echo_once(clients[i], "again " + std::to_string(i)) == "");
        }
    }
    clients.clear();
    bool admitted = false;
    int attempts = 0;
    const auto admit_deadline = Clock::now() + patience(20s);
    while (!admitted && Clock::now() < admit_deadline) {
        Client newcomer = Client::verifying(connect_to(server.port()));
        admitted = echo_once(newcomer, random_bytes(32 * KiB, 301)) == "";
        ++attempts;
    }
    CHECK_MESSAGE(admitted, "no client was served after the others left (", attempts, " attempts)");
    // Every refusal was for want of descriptors, and the page says so by cause.
    const std::string page = scrape(server.port(1));
    const double out_of_descriptors =
        sum_of(page, "echoplex_connections_refused_total", {"cause=\"out_of_descriptors\""}).sum;
    MESSAGE("/metrics: refused for want of descriptors: ", out_of_descriptors);
    CHECK(out_of_descriptors >= static_cast<double>(stats->refused));
    CHECK(sum_of(page, "echoplex_connections_refused_total").sum == out_of_descriptors);
    check_alive_and_no_leak(server, baseline_fds, 302);
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("select beyond FD_SETSIZE: connections on descriptors >= 1024 are refused, the others keep echoing") {
    if (backend_under_test() != BackendKind::select) {
        MESSAGE("skipped: only for --backend=select (this run: ", backend_name(backend_under_test()), ")");
        return;
    }
    const std::size_t count = 1100;
    const rlim_t server_limit = 1400;
    NofileLimit own(count + 300);  // this process holds every client too
    if (!own.ok() || own.hard() < server_limit) {
        MESSAGE("skipped: RLIMIT_NOFILE hard limit ", own.hard(), " is below ", server_limit);
        return;
    }
    ServerOptions options;
    options.limits.push_back({RLIMIT_NOFILE, server_limit, server_limit});
    // More than select's default --max-connections (FD_SETSIZE - 64), so that FD_SETSIZE itself
    // is what refuses.
    ServerProcess server({"--port", "0", "--metrics=127.0.0.1:0", "--max-connections=2000"}, options);
    const int baseline_fds = startup_fds(server);

    // In batches, so the listen backlog never overflows: each batch is classified (echoed or
    // closed) before the next connects.
    std::vector<Client> clients;
    std::vector<bool> served;
    while (clients.size() < count) {
        const std::size_t first = clients.size();
        for (std::size_t i = 0; i < 100 && clients.size() < count; ++i) {
            clients.push_back(greeter(server.port(), clients.size()));
        }
        const auto batch = classify_clients(clients, first);
        served.insert(served.end(), batch.begin(), batch.end());
    }
    const auto served_count = static_cast<std::size_t>(std::count(served.begin(), served.end(), true));
    const std::size_t refused_count = count - served_count;
    MESSAGE(count, " clients: ", served_count, " served, ", refused_count, " refused (", baseline_fds,
            " server descriptors at startup)");
    // Descriptors 0..1023 hold stdio, the listener and the loop's own, then clients.
    CHECK(served_count <= 1024 - 3);
    CHECK(served_count >= 1024 - 3 - 64);
    CHECK(refused_count >= count - (1024 - 3));
    // Refused ones are the last: once full, every newcomer gets a descriptor >= 1024.
    const auto first_refused = std::find(served.begin(), served.end(), false) - served.begin();
    CHECK(std::count(served.begin() + first_refused, served.end(), true) == 0);

    // The served ones still echo byte-exact, all at once.
    std::vector<Client> held;
    for (std::size_t i = 0; i < clients.size(); ++i) {
        if (clients[i].fd) {
            clients[i].append(random_bytes(1 + i % (4 * KiB), 400 + i));
            held.push_back(std::move(clients[i]));
        }
    }
    const auto r = drive(held, patience(30s));
    CHECK_MESSAGE(r.all_done, r.describe());
    const auto bad = std::count_if(held.begin(), held.end(), [](const Client& c) { return !c.echoed_all(); });
    CHECK_MESSAGE(bad == 0, bad, " of ", held.size(), " served clients did not get their echo byte-exact");

    const auto stats = stats_now(server);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    MESSAGE("stats: accepted=", stats->accepted, " refused=", stats->refused, " open=", stats->open);
    CHECK(stats->refused == refused_count);
    CHECK(stats->open == served_count);
    held.clear();
    clients.clear();
    // Each refusal is counted under select's cause. (Scraped once the clients are gone: until
    // then the scrape's own connection would get a descriptor >= FD_SETSIZE.)
    const auto gone = server.ask_stats_until([](const Stats& s) { return s.open == 0; });
    REQUIRE((gone && gone->open == 0));
    const std::string page = scrape(server.port(1));
    CHECK(sum_of(page, "echoplex_connections_refused_total", {"cause=\"fd_setsize\""}).sum ==
          static_cast<double>(refused_count));
    CHECK(sum_of(page, "echoplex_connections_refused_total").sum == static_cast<double>(refused_count));
    check_alive_and_no_leak(server, baseline_fds, 401);
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("chunking: random chunk sizes and pauses come back byte-exact; so does one 64 MiB write") {
    ServerProcess server({"--port", "0"});
    const int baseline_fds = startup_fds(server);

    SUBCASE("random chunks from 1 byte, random pauses") {
        const std::uint64_t seed = 501;  // change to explore; the same seed replays the same schedule
        const std::size_t clients = 4;
        const std::size_t size = scaled<std::size_t>(2 * MiB, 256 * KiB);
        struct Schedule {
            std::mt19937_64 rng;  // one per client: its schedule does not depend on the others'
            std::size_t next_chunk = 0;  // drawn once the chunk before it is out; 0: none drawn yet
            Clock::time_point resume_at{};
            std::size_t chunks = 0;
            std::size_t pauses = 0;
        };
        std::vector<Schedule> schedules(clients);
        std::vector<Client> chunkers;
        for (std::size_t i = 0; i < clients; ++i) {
            schedules[i].rng.seed(seed * 100 + i);
            chunkers.push_back(Client::verifying(connect_to(server.port()), random_bytes(size, seed * 100 + i)));
            chunkers.back().send_limit = 0;  // due chunk by chunk
        }
        // Each chunk is what the client offers to one send(2): its send_limit grows by one chunk
        // once the one before is out. Chunk sizes spread over every power of two from 1 byte to
        // 64 KiB; after one chunk in eight, the client pauses for 1..20 ms before the next.
        auto draw_chunk = [size](Schedule& s, const Client& c) {
            const std::size_t span = std::size_t{1} << (s.rng() % 17);
            ++s.chunks;
            return std::min<std::size_t>(1 + s.rng() % span, size - c.send_limit);
        };
        for (std::size_t i = 0; i < clients; ++i) {
            chunkers[i].send_limit = draw_chunk(schedules[i], chunkers[i]);
        }
        const auto start = Clock::now();
        const auto deadline = start + patience(60s);
        for (;;) {
            const auto now = Clock::now();
            bool all_done = true;
            auto wake = deadline;
            for (std::size_t i = 0; i < clients; ++i) {
                Client& c = chunkers[i];
                Schedule& s = schedules[i];
                const bool finished = c.received >= size || c.closed();
                all_done = all_done && finished;
                if (finished || c.sent < c.send_limit || c.send_limit == size) {
                    continue;
                }
                if (s.next_chunk == 0) {
                    s.next_chunk = draw_chunk(s, c);
                    if (s.rng() % 8 == 0) {
                        s.resume_at = now + milliseconds(1 + s.rng() % 20);
                        ++s.pauses;
                    }
                }
                if (now >= s.resume_at) {
                    c.send_limit += s.next_chunk;
                    s.next_chunk = 0;
                } else {
                    wake = std::min(wake, s.resume_at);
                }
            }
            if (all_done || now >= deadline) {
                break;
            }
            poll_round(chunkers, left_until(wake));
        }
        for (std::size_t i = 0; i < clients; ++i) {
            const Client& c = chunkers[i];
            MESSAGE("client ", i, " (seed ", seed, "): ", size, " bytes in ", schedules[i].chunks, " chunks with ",
                    schedules[i].pauses, " pauses");
            CHECK_MESSAGE((c.echoed_all() && c.received == size), "client ", i, ": ", c.describe());
        }
        MESSAGE(server.announced_backend(), ": chunked echo took ", ms_since(start), " ms");
    }

    SUBCASE("one 64 MiB write while reading concurrently") {
        const std::size_t size = scaled<std::size_t>(64 * MiB, 16 * MiB);
        const std::string data = random_bytes(size, 510);
        UniqueFd fd = connect_to(server.port());
        // The writer thread makes a single blocking send(2) of the whole buffer (repeated only
        // if the kernel returns early); SO_SNDTIMEO keeps it from blocking forever if the server
        // stops reading, and the reader shuts the socket down at its deadline.
        const int flags = ::fcntl(fd.get(), F_GETFL);
        REQUIRE(::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) == 0);
        const timeval send_timeout{static_cast<time_t>(patience(60s).count() / 1000), 0};
        REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout) == 0);
        std::atomic<std::size_t> written{0};
        std::atomic<int> write_calls{0};
        std::atomic<int> write_error{0};
        const int raw = fd.get();
        std::thread writer([&] {
            std::size_t done = 0;
            while (done < data.size()) {
                write_calls.fetch_add(1);
                const ssize_t n = ::send(raw, data.data() + done, data.size() - done, MSG_NOSIGNAL);
                if (n > 0) {
                    done += static_cast<std::size_t>(n);
                    written.store(done);
                    continue;
                }
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                write_error.store(n < 0 ? errno : EPIPE);
                return;
            }
        });
        // The reading side: a client of the same socket that sends nothing and keeps what comes
        // back (the engine never blocks on the blocking socket).
        Client reader = Client::storing(std::move(fd));
        reader.expect = size;
        reader.stored.reserve(size);
        const auto start = Clock::now();
        const auto r = drive(reader, patience(60s));
        if (reader.received < size) {
            ::shutdown(raw, SHUT_RDWR);  // wakes the writer if it is still blocked
        }
        writer.join();
        MESSAGE(server.announced_backend(), ": ", size / MiB, " MiB written in ", write_calls.load(),
                " send call(s), echoed in ", ms_since(start), " ms");
        CHECK(write_error.load() == 0);
        CHECK(written.load() == size);
        CHECK_MESSAGE(first_difference(reader.stored, data) == "", r.describe(), ": ", reader.describe());
    }
    check_alive_and_no_leak(server, baseline_fds, 520);
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("signals under load: SIGUSR1 during traffic prints statistics and disturbs nothing") {
    ServerProcess server({"--port", "0"});
    const int baseline_fds = startup_fds(server);
    const std::size_t count = 20;
    const std::size_t each = scaled<std::size_t>(4 * MiB, 512 * KiB);
    const std::string pattern = random_bytes(MiB, 601);
    // Eight phases, each sending another eighth of every client's stream. A SIGUSR1 goes once
    // the phase's first bytes are on their way; the phase's echo and that signal's statistics
    // line are both awaited before the next phase (signals of one kind sent before the first is
    // delivered merge into one, signal(7), so each waits for its line). However fast the server
    // echoes, every signal lands while the connections carry traffic.
    constexpr std::size_t phases = 8;
    std::vector<Client> clients;
    for (std::size_t i = 0; i < count; ++i) {
        clients.push_back(Client::verifying(connect_to(server.port()), pattern, i * 65537, each / phases));
        clients.back().expect = each;
    }
    std::size_t signals = 0;
    const auto deadline = Clock::now() + patience(60s);
    const auto start = Clock::now();
    for (std::size_t phase = 1; phase <= phases && Clock::now() < deadline; ++phase) {
        const std::size_t upto = each * phase / phases;
        for (auto& c : clients) {
            c.send_limit = upto;
        }
        poll_round(clients, 10ms);
        REQUIRE(server.send_signal(SIGUSR1));
        ++signals;
        for (;;) {
            bool echoed = true;
            bool failed = false;
            for (const auto& c : clients) {
                echoed = echoed && c.received == upto;
                failed = failed || c.closed() || c.mismatch.has_value();
            }
            if ((echoed && count_stats_prefixed_lines(server.stderr_text()) == signals) || failed ||
                Clock::now() >= deadline) {
                break;
            }
            poll_round(clients, 100ms);
        }
    }
    MESSAGE(server.announced_backend(), ": ", count, " x ", each / KiB, " KiB echoed in ", ms_since(start), " ms with ",
            signals, " SIGUSR1 during the traffic");
    for (std::size_t i = 0; i < count; ++i) {
        const auto& c = clients[i];
        CHECK_MESSAGE((c.echoed_all() && c.received == each && !c.closed()), "client ", i, ": received ", c.received,
                      " of ", each, ", eof=", c.eof, " error=", errno_text(c.error), " mismatch=", c.mismatch.has_value());
    }
    CHECK(signals == phases);  // fewer: a phase failed or the deadline passed
    const auto last = server.wait_stats_line(signals, patience(10s));
    REQUIRE_MESSAGE(last.has_value(), "fewer than ", signals, " stats lines; stderr: ", server.stderr_text());
    const auto lines = stats_lines(server.stderr_text());
    CHECK(lines.size() == signals);
    CHECK(count_stats_prefixed_lines(server.stderr_text()) == lines.size());  // all well-formed
    for (std::size_t i = 1; i < lines.size(); ++i) {
        CHECK(lines[i].bytes_in >= lines[i - 1].bytes_in);
        CHECK(lines[i].bytes_out >= lines[i - 1].bytes_out);
        CHECK(lines[i].bytes_out <= lines[i].bytes_in);
    }
    for (const auto& s : lines) {
        CHECK(s.open == count);
        CHECK(s.accepted == count);
    }
    clients.clear();
    check_alive_and_no_leak(server, baseline_fds, 602);
}

TEST_CASE("signals under load: SIGTERM during heavy traffic drains every byte read to the clients and exits 0") {
    ServerProcess server({"--port", "0", "--drain-timeout=30s"});
    const std::size_t count = 20;
    const std::string pattern = random_bytes(MiB, 701);
    // Clients with small receive buffers: they read all the time, but slower than they write,
    // so at the signal the server holds queued output for them that it must still deliver.
    auto small_receive_buffer = [](int fd) {
        const int size = 32 * 1024;
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    };
    std::vector<Client> clients;
    for (std::size_t i = 0; i < count; ++i) {
        // Far more than will be sent: the clients push until the server's EOF.
        clients.push_back(Client::verifying(connect_to(server.port(), "127.0.0.1", small_receive_buffer), pattern,
                                            i * 40009, std::size_t{1} << 40));
    }
    const std::size_t before_signal = count * scaled<std::size_t>(2 * MiB, 256 * KiB);
    const auto start = Clock::now();
    const auto deadline = start + patience(60s);
    bool signalled = false;
    std::size_t received_at_signal = 0;
    while (Clock::now() < deadline) {
        std::size_t received = 0;
        bool all_closed = true;
        for (auto& c : clients) {
            received += c.received;
            if (c.closed() && c.fd) {
                c.fd.reset();  // like any client after the server's EOF: close (the server lingers until then)
            }
            all_closed = all_closed && c.closed();
        }
        if (!signalled && received >= before_signal) {
            REQUIRE(server.send_signal(SIGTERM));
            signalled = true;
            received_at_signal = received;
        }
        if (all_closed) {
            break;
        }
        poll_round(clients, 100ms);
    }
    REQUIRE_MESSAGE(signalled, "the traffic never reached ", before_signal, " bytes");
    std::size_t sent = 0;
    std::size_t received = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const auto& c = clients[i];
        sent += c.sent;
        received += c.received;
        CHECK_MESSAGE(c.eof, "client ", i, " saw no EOF: error=", errno_text(c.error));
        CHECK_MESSAGE(c.prefix_ok(), "client ", i, ": what came back is not a prefix of what was sent (mismatch at ",
                      c.mismatch.value_or(0), ")");
    }
    MESSAGE(server.announced_backend(), ": ", received_at_signal / KiB, " KiB echoed before SIGTERM; in all ", sent / KiB,
            " KiB sent, ", received / KiB, " KiB received; ", ms_since(start), " ms");

    const auto status = server.wait_exit(patience(30s));
    REQUIRE_MESSAGE(status.has_value(), "the server did not exit after SIGTERM and its clients' closes");
    CHECK_MESSAGE(status->ok(), status->describe(), "; stderr: ", server.stderr_text());
    const auto stats = server.wait_stats_line(1, patience(10s));
    REQUIRE_MESSAGE(stats.has_value(), "no final stats line; stderr: ", server.stderr_text());
    MESSAGE("final stats: accepted=", stats->accepted, " bytes_in=", stats->bytes_in, " bytes_out=", stats->bytes_out,
            " paused=", stats->paused);
    CHECK(stats->bytes_in == stats->bytes_out);
    CHECK(stats->bytes_out == received);  // every byte the server read reached its client
    CHECK(stats->accepted == count);
    CHECK(stats->open == 0);
    CHECK(server.stderr_text().find("drain timeout") == std::string::npos);
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("idle timeout: slowloris clients trickling slower than --idle-timeout are closed, active ones are not") {
    const auto timeout = scaled<milliseconds>(1000ms, 2000ms);
    ServerProcess server({"--port", "0", "--idle-timeout=" + std::to_string(timeout.count()) + "ms"});
    const int baseline_fds = startup_fds(server);
    const std::size_t slow_count = 100;
    const std::size_t active_count = 10;
    const auto trickle_every = timeout * 2;
    const std::string pattern = random_bytes(64 * KiB, 801);
    std::mt19937_64 rng(802);

    std::vector<Client> clients;
    std::vector<Clock::time_point> next_trickle;
    const auto start = Clock::now();
    for (std::size_t i = 0; i < slow_count; ++i) {
        clients.push_back(Client::verifying(connect_to(server.port()), pattern, i * 97, 0));
        // First bytes staggered over half a timeout (so each trickles before it could be idle),
        // meeting the server's sweeps at every phase; then one byte every two timeouts.
        next_trickle.push_back(start + timeout * static_cast<long>(i) / static_cast<long>(2 * slow_count));
    }
    LatencyLog latency;
    for (std::size_t i = 0; i < active_count; ++i) {
        clients.push_back(Client::verifying(connect_to(server.port()), pattern, 5000 + i * 331, 0));
    }
    auto next_request = [&](Client& c) {
        c.send_limit += 1 + rng() % 512;
        c.request_started = Clock::now();
    };
    for (std::size_t i = 0; i < active_count; ++i) {
        next_request(clients[slow_count + i]);
    }

    // Until every slowloris client was closed, and the active ones have talked for at least three
    // timeouts.
    const auto deadline = start + patience(30s);
    std::size_t trickles = 0;
    std::size_t slow_closed = 0;
    while (Clock::now() < deadline) {
        const auto now = Clock::now();
        slow_closed = 0;
        auto wake = now + 50ms;
        for (std::size_t i = 0; i < slow_count; ++i) {
            Client& c = clients[i];
            if (c.closed()) {
                ++slow_closed;
                continue;
            }
            if (now >= next_trickle[i] && c.sent == c.send_limit) {
                c.send_limit += 1;  // one byte; poll_round sends it
                ++trickles;
                next_trickle[i] = now + trickle_every;
            }
            wake = std::min(wake, next_trickle[i]);
        }
        for (std::size_t i = 0; i < active_count; ++i) {
            Client& c = clients[slow_count + i];
            if (c.request_answered()) {
                latency.add(now - c.request_started);
                next_request(c);
            }
        }
        if (slow_closed == slow_count && now - start >= timeout * 3) {
            break;
        }
        poll_round(clients, std::chrono::duration_cast<milliseconds>(wake - now) + 1ms);
    }
    MESSAGE(server.announced_backend(), ": ", slow_closed, " of ", slow_count, " slowloris clients closed by the server after ",
            trickles, " trickled bytes, ", ms_since(start), " ms; active: ", latency.describe());
    CHECK(slow_closed == slow_count);
    for (std::size_t i = 0; i < slow_count; ++i) {
        const auto& c = clients[i];
        CHECK_MESSAGE((c.eof || c.error == ECONNRESET || c.error == EPIPE), "slowloris ", i, ": error=", errno_text(c.error));
        CHECK(c.prefix_ok());
    }
    for (std::size_t i = 0; i < active_count; ++i) {
        const auto& c = clients[slow_count + i];
        CHECK_MESSAGE((!c.closed() && !c.mismatch), "active client ", i, ": eof=", c.eof, " error=", errno_text(c.error),
                      " mismatch=", c.mismatch.has_value());
    }
    CHECK(latency.count() >= active_count);

    const auto stats = stats_now(server);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    CHECK(stats->open == active_count);
    clients.clear();
    check_alive_and_no_leak(server, baseline_fds, 803);
}

}  // namespace
}  // namespace echoplex::test
