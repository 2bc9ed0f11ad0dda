// End-to-end tests of the echoplex binary: each case starts the real server as a child process
// (ECHOPLEX_BIN, with --backend from ECHOPLEX_BACKEND; meson registers this file once per backend)
// and talks to it over loopback on ephemeral ports. Synchronisation is poll(2) on sockets, pipes
// and a pidfd, always with a deadline; nothing sleeps.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "support/clients.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

// errno as text for messages (doctest prints a char* as a pointer).
std::string errno_text(int err) { return err == 0 ? std::string("none") : std::string(std::strerror(err)); }

std::string backend_arg() { return "--backend=" + std::string(backend_name(backend_under_test())); }

Session make_session(std::uint16_t port, std::string data, const std::string& host = "127.0.0.1") {
    Session s;
    s.fd = connect_to(port, host);
    s.to_send = std::move(data);
    return s;
}

// Compares without letting doctest print megabytes on failure: the first differing offset instead.
std::string first_difference(const std::string& got, const std::string& want) {
    const std::size_t n = std::min(got.size(), want.size());
    for (std::size_t i = 0; i < n; ++i) {
        if (got[i] != want[i]) {
            return "first difference at byte " + std::to_string(i) + " (got " + std::to_string(got.size()) +
                   " bytes, want " + std::to_string(want.size()) + ")";
        }
    }
    if (got.size() != want.size()) {
        return "lengths differ: got " + std::to_string(got.size()) + " bytes, want " + std::to_string(want.size());
    }
    return "";
}

// One byte-exact round trip on an already connected socket.
void round_trip(Session& s, const std::string& data, std::chrono::milliseconds deadline = 5s) {
    s.to_send = data;
    s.sent = 0;
    s.received.clear();
    std::vector<Session> one;
    one.push_back(std::move(s));
    const auto r = drive_sessions(one, deadline);
    s = std::move(one.front());
    CHECK_MESSAGE(r.all_done, r.describe(), " eof=", s.eof, " error=", errno_text(s.error));
    CHECK(first_difference(s.received, data) == "");
}

// Every session got back exactly what it sent.
void check_all_echoed(const std::vector<Session>& sessions) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < sessions.size(); ++i) {
        const auto diff = first_difference(sessions[i].received, sessions[i].to_send);
        if (!diff.empty() || sessions[i].error != 0) {
            if (++bad <= 5) {
                MESSAGE("session ", i, ": ", diff, " sent=", sessions[i].sent, " eof=", sessions[i].eof,
                        " error=", errno_text(sessions[i].error));
            }
        }
    }
    CHECK_MESSAGE(bad == 0, bad, " of ", sessions.size(), " sessions were not echoed byte-exact");
}

// Stops the server with `sig` while `clients` are still connected. Each client behaves like a
// polite one: it reads until the server's EOF, then closes (the server may wait for that close,
// up to its drain deadline). Requires exit 0 and returns the final stats line.
Stats stop_and_get_stats(ServerProcess& server, int sig = SIGTERM, std::vector<UniqueFd*> clients = {}) {
    const std::size_t before = stats_lines(server.stderr_text()).size();
    REQUIRE(server.send_signal(sig));
    for (UniqueFd* client : clients) {
        const auto rest = read_until_eof(client->get(), 10s);
        CHECK_MESSAGE(rest.eof, "a connected client saw no EOF after signal ", sig, "; error=", errno_text(rest.error),
                      " timed_out=", rest.timed_out);
        CHECK(rest.data.empty());
        client->reset();
    }
    const auto status = server.wait_exit(15s);
    REQUIRE_MESSAGE(status.has_value(), "the server did not exit within 15 s of signal ", sig);
    CHECK_MESSAGE(status->ok(), status->describe(), "; stderr: ", server.stderr_text());
    const auto stats = server.wait_stats_line(before + 1, 5s);
    REQUIRE_MESSAGE(stats.has_value(), "no final stats line; stderr: ", server.stderr_text());
    return *stats;
}

std::vector<std::string> lines_of(const std::string& text) { return split_lines(text); }

// ---------------------------------------------------------------------------------------------

TEST_CASE("startup line: one line on stdout naming the backend and the really bound ports") {
    ServerProcess server({"--port", "0,0"});
    MESSAGE(server.startup_line());
    static const std::regex shape(
        R"(echoplex: listening on 127\.0\.0\.1:[1-9][0-9]* \(echo\), 127\.0\.0\.1:[1-9][0-9]* \(echo\); backend (epoll|poll|select))");
    CHECK(std::regex_match(server.startup_line(), shape));
    CHECK(server.announced_backend() == backend_name(backend_under_test()));
    REQUIRE(server.ports().size() == 2);
    CHECK(server.ports()[0] != server.ports()[1]);
    for (const auto port : server.ports()) {
        Session s;
        s.fd = connect_to(port);
        round_trip(s, "ping " + std::to_string(port));
    }
    CHECK(lines_of(server.stdout_text()).size() == 1);  // nothing else on stdout
}

TEST_CASE("echo is byte-exact from 1 B to 8 MiB on both ports, reading while writing") {
    ServerProcess server({"--port", "0", "--port", "0"});
    REQUIRE(server.ports().size() == 2);
    std::uint64_t seed = 1;
    for (const std::size_t size : {std::size_t{1}, std::size_t{1000}, 64 * KiB, MiB, 8 * MiB}) {
        CAPTURE(size);
        std::vector<Session> sessions;
        for (const auto port : server.ports()) {
            sessions.push_back(make_session(port, random_bytes(size, seed++)));
        }
        const auto r = drive_sessions(sessions, 20s);
        CHECK_MESSAGE(r.all_done, r.describe());
        check_all_echoed(sessions);
    }
    CHECK(server.running());
}

TEST_CASE("200 concurrent clients are each echoed byte-exact") {
    ServerProcess server({"--port", "0"});
    std::vector<Session> sessions;
    sessions.reserve(200);
    for (int i = 0; i < 200; ++i) {
        sessions.push_back(make_session(server.port(), random_bytes(16 * KiB, 1000 + static_cast<std::uint64_t>(i))));
    }
    const auto r = drive_sessions(sessions, 20s);
    CHECK_MESSAGE(r.all_done, r.describe());
    check_all_echoed(sessions);
    MESSAGE(r.describe());
}

TEST_CASE("a client that never reads is paused (backpressure) while others are served, memory stays bounded") {
    ServerProcess server({"--port", "0"});
    {
        Session warm;
        warm.fd = connect_to(server.port());
        round_trip(warm, random_bytes(64 * KiB, 7));
    }
    const long rss_before = server.rss_kib();
    REQUIRE(rss_before > 0);

    // The non-reader pushes until nothing moves for 2 s: the server has stopped reading it.
    const std::string pattern = random_bytes(MiB, 8);
    const std::size_t attempt = 32 * MiB;
    UniqueFd hog = connect_to(server.port());
    const auto push = push_without_reading(hog.get(), pattern, attempt, 2s, 30s);
    MESSAGE("non-reader pushed ", push.sent, " of ", attempt, " bytes; stalled=", push.stalled,
            " error=", errno_text(push.error));
    CHECK(push.error == 0);
    CHECK_MESSAGE(push.stalled, "backpressure never engaged: the server kept reading a client that never reads");
    CHECK(push.sent < attempt);

    // Meanwhile 20 other clients each get their round trip, all within 10 s.
    std::vector<Session> others;
    for (int i = 0; i < 20; ++i) {
        others.push_back(make_session(server.port(), random_bytes(4 * KiB, 100 + static_cast<std::uint64_t>(i))));
    }
    const auto r = drive_sessions(others, 10s);
    MESSAGE("others: ", r.describe());
    CHECK_MESSAGE(r.all_done, r.describe());
    check_all_echoed(others);

    const long rss_after = server.rss_kib();
    MESSAGE("server VmRSS before ", rss_before, " KiB, with the paused non-reader ", rss_after, " KiB");
    CHECK(rss_after - rss_before < static_cast<long>(32 * MiB / KiB));

    // The server says so too: a paused connection.
    REQUIRE(server.send_signal(SIGUSR1));
    const auto stats = server.wait_stats_line(1, 5s);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    CHECK(stats->paused >= 1);

    // Once the non-reader reads, reading resumes and it gets back everything it sent, in order.
    std::string expected;
    expected.reserve(push.sent);
    while (expected.size() < push.sent) {
        expected.append(pattern, 0, std::min(pattern.size(), push.sent - expected.size()));
    }
    std::vector<Session> drain;
    drain.emplace_back();
    drain.back().fd = std::move(hog);
    drain.back().expect = push.sent;
    const auto d = drive_sessions(drain, 20s);
    MESSAGE("the non-reader read back ", drain.back().received.size(), " bytes: ", d.describe());
    CHECK_MESSAGE(d.all_done, d.describe(), " received=", drain.back().received.size(), " of ", push.sent);
    CHECK(first_difference(drain.back().received, expected) == "");
    CHECK(server.running());
}

TEST_CASE("half-close: data sent before shutdown(SHUT_WR) all comes back, then EOF") {
    ServerProcess server({"--port", "0"});
    for (const std::size_t size : {std::size_t{0}, std::size_t{5}, 300 * KiB, 3 * MiB}) {
        CAPTURE(size);
        std::vector<Session> sessions;
        sessions.push_back(make_session(server.port(), random_bytes(size, 20 + size)));
        sessions.back().shutdown_after_send = true;
        sessions.back().until_eof = true;
        const auto r = drive_sessions(sessions, 20s);
        const Session& s = sessions.back();
        CHECK_MESSAGE(r.all_done, r.describe());
        CHECK_MESSAGE(s.eof, "no EOF after the echo; error=", errno_text(s.error));
        CHECK(s.error == 0);
        CHECK(first_difference(s.received, s.to_send) == "");
    }
    CHECK(server.running());
}

TEST_CASE("a storm of 500 reset connections: the server keeps serving and releases every descriptor") {
    ServerProcess server({"--port", "0"});
    Session probe;
    probe.fd = connect_to(server.port());
    round_trip(probe, "probe");
    const int baseline = server.open_fds();
    REQUIRE(baseline > 0);

    const std::string small = random_bytes(KiB, 30);
    const std::string big = random_bytes(128 * KiB, 31);
    int connections = 0;
    for (int batch = 0; batch < 10; ++batch) {
        // Three kinds, mixed: reset right after sending; reset after the echo came back;
        // reset with a large echo the client never read.
        std::vector<Session> echoed;
        std::vector<UniqueFd> unread;
        for (int i = 0; i < 50; ++i, ++connections) {
            UniqueFd fd = connect_to(server.port());
            switch (i % 3) {
            case 0: {
                const auto push = push_without_reading(fd.get(), small, small.size(), 2s, 5s);
                CHECK(push.sent == small.size());
                set_linger_zero(fd.get());
                fd.reset();  // RST
                break;
            }
            case 1: {
                Session s;
                s.fd = std::move(fd);
                s.to_send = small;
                echoed.push_back(std::move(s));
                break;
            }
            default: {
                push_without_reading(fd.get(), big, big.size(), 1s, 5s);
                unread.push_back(std::move(fd));
                break;
            }
            }
        }
        const auto r = drive_sessions(echoed, 10s);
        CHECK_MESSAGE(r.all_done, "batch ", batch, ": ", r.describe());
        for (auto& s : echoed) {
            set_linger_zero(s.fd.get());
            s.fd.reset();
        }
        for (auto& fd : unread) {
            set_linger_zero(fd.get());
            fd.reset();
        }
    }
    CHECK(connections == 500);
    REQUIRE_MESSAGE(server.running(), "the server died during the reset storm; stderr: ", server.stderr_text());

    Session fresh;
    fresh.fd = connect_to(server.port());
    round_trip(fresh, random_bytes(64 * KiB, 32));
    fresh.fd.reset();  // a clean close; the probe loop below waits for the server to notice it too

    // Each probe round trip waits on the server's loop; by the time it answers, it has seen the
    // resets before it. Bounded by time, not by sleeping.
    int now = server.open_fds();
    const auto deadline = Clock::now() + 10s;
    while (now != baseline && Clock::now() < deadline) {
        round_trip(probe, "p");
        now = server.open_fds();
    }
    MESSAGE("server descriptors: ", baseline, " before the storm, ", now, " after");
    CHECK_MESSAGE(now == baseline, "open descriptors: ", now, " after the storm, ", baseline, " before");
    round_trip(probe, "still here");
}

TEST_CASE("--reply=stamp answers each chunk with 'Echo=>DATA at ' and a 24-character ctime") {
    ServerProcess server({"--port", "0", "--reply=stamp"});
    static const std::regex ctime_shape(
        R"((Sun|Mon|Tue|Wed|Thu|Fri|Sat) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123][0-9] [012][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4})");
    Session s;
    s.fd = connect_to(server.port());
    for (const std::string message : {"Hello network world", "again"}) {
        CAPTURE(message);
        const std::string prefix = "Echo=>" + message + " at ";
        s.to_send = message;
        s.sent = 0;
        s.received.clear();
        s.expect = prefix.size() + 24;
        std::vector<Session> one;
        one.push_back(std::move(s));
        const auto r = drive_sessions(one, 5s);
        s = std::move(one.front());
        CHECK_MESSAGE(r.all_done, r.describe(), " got [", s.received, "]");
        // The second reply starts right after the first's 24 characters: no trailing newline.
        REQUIRE(s.received.size() >= prefix.size() + 24);
        CHECK(s.received.substr(0, prefix.size()) == prefix);
        const std::string stamp = s.received.substr(prefix.size(), 24);
        CHECK_MESSAGE(std::regex_match(stamp, ctime_shape), "timestamp [", stamp, "]");
        CHECK(s.received.size() == prefix.size() + 24);
    }
}

TEST_CASE("--port PORT/SERVICE: each port serves its own service, and the startup line names them") {
    ServerProcess server({"-p", "0", "-p", "0/discard,0/chargen", "-p", "0/daytime", "-p", "0/stamp"});
    CHECK(server.services() == std::vector<std::string>{"echo", "discard", "chargen", "daytime", "stamp"});
    CHECK(server.startup_line().find("(discard)") != std::string::npos);
    std::vector<Session> sessions(4);
    // echo: the bytes back.
    sessions[0].fd = connect_to(server.port(0));
    sessions[0].to_send = random_bytes(100000, 11);
    // discard: 100 KB in, nothing back; our FIN, then the server's.
    sessions[1].fd = connect_to(server.port(1));
    sessions[1].to_send = random_bytes(100000, 12);
    sessions[1].shutdown_after_send = true;
    sessions[1].until_eof = true;
    // chargen: the first 20 lines (as BSD inetd's: the first starts with the space), whatever we send.
    sessions[2].fd = connect_to(server.port(2));
    sessions[2].to_send = "anything\n";
    sessions[2].expect = 20 * 74;
    // daytime: one line, then EOF.
    sessions[3].fd = connect_to(server.port(3));
    sessions[3].until_eof = true;
    const auto r = drive_sessions(sessions, 10s);
    CHECK_MESSAGE(r.all_done, r.describe());
    CHECK(sessions[0].received == sessions[0].to_send);
    CHECK(sessions[1].received.empty());
    CHECK(sessions[1].eof);
    REQUIRE(sessions[2].received.size() >= 20 * 74);
    CHECK(sessions[2].received.substr(0, 74) ==
          " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n");
    CHECK(sessions[2].received.substr(74, 74) ==
          "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n");
    static const std::regex daytime(R"([A-Z][a-z]+day, [A-Z][a-z]+ [0-9]{2}, [0-9]{4} [0-9:]{8}-[A-Za-z0-9+-]+\r\n)");
    CHECK_MESSAGE(std::regex_match(sessions[3].received, daytime), "[", sessions[3].received, "]");
    CHECK(sessions[3].eof);
}

TEST_CASE("--max-connections=2: two clients are served, a third is closed without data and counted") {
    ServerProcess server({"--port", "0", "--max-connections=2"});
    Session a;
    a.fd = connect_to(server.port());
    Session b;
    b.fd = connect_to(server.port());
    round_trip(a, "first");
    round_trip(b, "second");

    UniqueFd third = connect_to(server.port());
    write_all(third.get(), "let me in");
    const auto refused = read_until_eof(third.get(), 5s);
    CHECK_MESSAGE(!refused.timed_out, "the third connection was neither closed nor reset within 5 s");
    CHECK(refused.data.empty());
    CHECK_MESSAGE((refused.eof || refused.error == ECONNRESET), "error=", errno_text(refused.error));

    // The two admitted clients are unaffected.
    round_trip(a, random_bytes(32 * KiB, 40));
    round_trip(b, random_bytes(32 * KiB, 41));

    // A freed slot admits a new client once the server has seen the close. Retrying connects
    // could all land before the client's FIN reaches the server (a loaded machine); instead ask
    // the server (SIGUSR1) until it reports one connection open, then a newcomer must be served.
    a.fd.reset();
    bool freed = false;
    for (std::size_t asked = 1; asked <= 200 && !freed; ++asked) {
        REQUIRE(server.send_signal(SIGUSR1));
        const auto seen = server.wait_stats_line(asked, 5s);
        REQUIRE(seen.has_value());
        freed = seen->open == 1;
    }
    REQUIRE_MESSAGE(freed, "the server never saw the first client close");
    Session c;
    c.fd = connect_to(server.port());
    c.to_send = "knock";
    std::vector<Session> one;
    one.push_back(std::move(c));
    drive_sessions(one, 5s);
    CHECK_MESSAGE(one.front().received == "knock", "the freed slot did not admit a new client");

    const Stats stats = stop_and_get_stats(server, SIGTERM, {&b.fd});
    CHECK(stats.refused >= 1);
    CHECK(stats.accepted >= 3);
    CHECK(stats.peak <= 2);
}

TEST_CASE("SIGTERM drains queued output to a client that was not reading, then exits 0 with balanced stats") {
    ServerProcess server({"--port", "0"});
    // Small client buffers so that the server, not the kernel, ends up holding the output.
    UniqueFd client = connect_to(server.port(), "127.0.0.1", [](int fd) {
        const int size = 32 * 1024;
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    });
    // At least 4 MiB, and on until nothing moves for 1.5 s: the server then holds queued output
    // for this connection and has paused reading it (kernel buffers alone can absorb 4 MiB).
    const std::string data = random_bytes(24 * MiB, 50);
    auto push = push_without_reading(client.get(), data, 4 * MiB, 1500ms, 20s);
    if (!push.stalled && push.error == 0) {
        const auto more = push_without_reading(client.get(), data, data.size() - push.sent, 1500ms, 20s, push.sent);
        push.sent += more.sent;
        push.stalled = more.stalled;
        push.error = more.error;
    }
    MESSAGE("pushed ", push.sent, " bytes before SIGTERM; stalled=", push.stalled);
    REQUIRE(push.error == 0);
    REQUIRE(push.sent > 0);
    CHECK_MESSAGE(push.stalled, "the server never stopped reading a client that does not read");

    REQUIRE(server.send_signal(SIGTERM));
    const auto got = read_until_eof(client.get(), 15s);
    MESSAGE("received ", got.data.size(), " bytes; eof=", got.eof, " error=", errno_text(got.error));
    CHECK_MESSAGE(!got.timed_out, "the connection was not closed within 15 s of SIGTERM");
    CHECK_MESSAGE(got.eof, "the drained connection ended with ", errno_text(got.error), " instead of EOF");
    CHECK_FALSE(got.data.empty());
    CHECK(got.data.size() <= push.sent);
    CHECK(first_difference(got.data, data.substr(0, got.data.size())) == "");
    client.reset();  // like any client after EOF: the server may be waiting for this close

    const auto status = server.wait_exit(15s);
    REQUIRE_MESSAGE(status.has_value(), "the server did not exit within 15 s of SIGTERM");
    CHECK_MESSAGE(status->ok(), status->describe(), "; stderr: ", server.stderr_text());
    const auto stats = server.wait_stats_line(1, 5s);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line at exit; stderr: ", server.stderr_text());
    MESSAGE("bytes_in=", stats->bytes_in, " bytes_out=", stats->bytes_out, " paused=", stats->paused);
    CHECK(stats->bytes_in == stats->bytes_out);
    CHECK(stats->bytes_in <= push.sent);
    if (got.eof) {
        CHECK(got.data.size() == stats->bytes_out);
    }
    if (push.stalled) {
        CHECK(stats->paused >= 1);
    }
}

TEST_CASE("SIGINT stops the server too: exit 0 and a final stats line") {
    ServerProcess server({"--port", "0"});
    Session s;
    s.fd = connect_to(server.port());
    round_trip(s, random_bytes(10000, 60));
    const Stats stats = stop_and_get_stats(server, SIGINT, {&s.fd});
    CHECK(stats.accepted == 1);
    CHECK(stats.bytes_in == 10000);
    CHECK(stats.bytes_out == 10000);
    CHECK(count_stats_prefixed_lines(server.stderr_text()) == 1);
}

TEST_CASE("SIGUSR1 prints a stats line and the server keeps serving") {
    ServerProcess server({"--port", "0"});
    Session s;
    s.fd = connect_to(server.port());
    round_trip(s, random_bytes(1000, 70));

    REQUIRE(server.send_signal(SIGUSR1));
    const auto first = server.wait_stats_line(1, 5s);
    REQUIRE_MESSAGE(first.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    CHECK(count_stats_prefixed_lines(server.stderr_text()) == 1);  // every stats line is well-formed
    CHECK(first->accepted == 1);
    CHECK(first->open == 1);
    CHECK(first->peak >= 1);
    CHECK(first->refused == 0);
    CHECK(first->bytes_in == 1000);
    CHECK(first->bytes_out == 1000);
    CHECK(server.running());

    round_trip(s, random_bytes(2000, 71));
    Session other;
    other.fd = connect_to(server.port());
    round_trip(other, random_bytes(3000, 72));

    REQUIRE(server.send_signal(SIGUSR1));
    const auto second = server.wait_stats_line(2, 5s);
    REQUIRE_MESSAGE(second.has_value(), "no second stats line after SIGUSR1; stderr: ", server.stderr_text());
    CHECK(second->accepted == 2);
    CHECK(second->open == 2);
    CHECK(second->bytes_in == 6000);
    CHECK(second->bytes_out == 6000);
    CHECK(server.running());
}

TEST_CASE("usage errors: exactly one stderr line starting 'echoplex: ' and exit code 2") {
    const std::vector<std::vector<std::string>> cases = {
        {backend_arg(), "--bogus"},
        {"--backend=kqueue"},
        {backend_arg(), "--port=70000"},
        {backend_arg(), "--reply=shout"},
        {backend_arg(), "--max-connections=lots"},
        {backend_arg(), "--port=50007,50007"},
        {backend_arg(), "--port=50009/qotd"},
    };
    for (const auto& args : cases) {
        std::string shown;
        for (const auto& a : args) {
            shown += a + " ";
        }
        CAPTURE(shown);
        const auto r = run_server_to_completion(args);
        CHECK_MESSAGE(r.status.exited, r.status.describe());
        CHECK(r.status.code == 2);
        const auto lines = lines_of(r.err);
        CHECK_MESSAGE(lines.size() == 1, "stderr: [", r.err, "]");
        CHECK_MESSAGE(r.err.rfind("echoplex: ", 0) == 0, "stderr: [", r.err, "]");
        CHECK((!r.err.empty() && r.err.back() == '\n'));
        CHECK(r.out.find("listening") == std::string::npos);
    }
}

TEST_CASE("--help and --version print to stdout and exit 0") {
    for (const std::string flag : {"--help", "-h"}) {
        CAPTURE(flag);
        const auto r = run_server_to_completion({flag});
        CHECK_MESSAGE(r.status.ok(), r.status.describe());
        CHECK_MESSAGE(r.out.find("Usage") != std::string::npos, "stdout: [", r.out, "]");
        CHECK(r.err.empty());
    }
    for (const std::string flag : {"--version", "-V"}) {
        CAPTURE(flag);
        const auto r = run_server_to_completion({flag});
        CHECK_MESSAGE(r.status.ok(), r.status.describe());
        const auto lines = lines_of(r.out);
        CHECK_MESSAGE(lines.size() == 1, "stdout: [", r.out, "]");
        CHECK(r.out.find("echoplex") != std::string::npos);
        CHECK(r.err.empty());
    }
}

TEST_CASE("a port already in use: one stderr line with the address and 'Address already in use', exit 1") {
    UniqueFd taken(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(taken.valid());
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(taken.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(taken.get(), 1) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(taken.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    const std::string port = std::to_string(ntohs(addr.sin_port));

    const auto r = run_server_to_completion({backend_arg(), "--port", "0", "--port", port});
    CHECK_MESSAGE(r.status.exited, r.status.describe());
    CHECK(r.status.code == 1);
    const auto lines = lines_of(r.err);
    REQUIRE_MESSAGE(lines.size() == 1, "stderr: [", r.err, "]");
    CHECK(lines[0].rfind("echoplex: ", 0) == 0);
    CHECK_MESSAGE(lines[0].find("127.0.0.1:" + port) != std::string::npos, lines[0]);
    CHECK_MESSAGE(lines[0].find("Address already in use") != std::string::npos, lines[0]);
    CHECK(r.out.find("listening") == std::string::npos);
}

TEST_CASE("IPv6 loopback: --host ::1 is announced as [::1]:PORT and echoes") {
    if (!ipv6_loopback_available()) {
        MESSAGE("skipped: ::1 is not available on this machine");
        return;
    }
    ServerProcess server({"--host", "::1", "--port", "0"});
    MESSAGE(server.startup_line());
    CHECK(server.startup_line().find("[::1]:" + std::to_string(server.port())) != std::string::npos);
    REQUIRE(server.hosts().size() == 1);
    CHECK(server.hosts()[0] == "::1");
    std::vector<Session> sessions;
    sessions.push_back(make_session(server.port(), random_bytes(300 * KiB, 80), "::1"));
    const auto r = drive_sessions(sessions, 10s);
    CHECK_MESSAGE(r.all_done, r.describe());
    check_all_echoed(sessions);
}

}  // namespace
}  // namespace echoplex::test

namespace echoplex::test {
namespace {

TEST_CASE("--idle-timeout closes a silent client while an active one keeps being served") {
    ServerProcess server({"--port", "0", "--idle-timeout=300ms"});
    UniqueFd silent = connect_to(server.port());
    Session active;
    active.fd = connect_to(server.port());
    const auto start = std::chrono::steady_clock::now();
    // The active client talks more often than the timeout, for longer than the timeout.
    while (std::chrono::steady_clock::now() - start < 900ms) {
        round_trip(active, "still here");
    }
    const auto closed = read_until_eof(silent.get(), 5s);
    CHECK_FALSE(closed.timed_out);
    CHECK(closed.eof);
    CHECK(closed.data.empty());
    round_trip(active, "and still served");
    CHECK(server.running());
}

}  // namespace
}  // namespace echoplex::test
