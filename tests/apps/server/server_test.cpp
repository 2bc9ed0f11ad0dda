// End-to-end tests of the echoplex binary: each case starts the real server as a child process
// (ECHOPLEX_BIN, with --backend from ECHOPLEX_BACKEND; meson registers this file once per backend)
// and talks to it over loopback on ephemeral ports. Synchronisation is poll(2) on sockets, pipes
// and a pidfd, always with a deadline; nothing sleeps.
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <optional>
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

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

// errno as text for messages (doctest prints a char* as a pointer).
std::string errno_text(int err) { return err == 0 ? std::string("none") : std::string(std::strerror(err)); }

std::string backend_arg() { return "--backend=" + std::string(backend_name(backend_under_test())); }

// A client connected to host:port that sends `data` and expects it back.
Client echo_client(std::uint16_t port, std::string data = {}, const std::string& host = "127.0.0.1") {
    return Client::verifying(connect_to(port, host), std::move(data));
}

// One more byte-exact round trip on a connected echo client.
void round_trip(Client& c, const std::string& data, std::chrono::milliseconds deadline = 5s) {
    c.append(data);
    const auto r = drive(c, deadline);
    CHECK_MESSAGE(r.all_done, r.describe(), ": ", c.describe());
    CHECK_MESSAGE(c.echoed_all(), c.describe());
}

// Every client got back exactly what it sent.
void check_all_echoed(const std::vector<Client>& clients) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < clients.size(); ++i) {
        if (!clients[i].echoed_all() && ++bad <= 5) {
            MESSAGE("client ", i, ": ", clients[i].describe());
        }
    }
    CHECK_MESSAGE(bad == 0, bad, " of ", clients.size(), " clients were not echoed byte-exact");
}

// Stops the server with `sig` while `clients` are still connected. Each client behaves like a
// polite one: it reads until the server's EOF, then closes (the server may wait for that close,
// up to its drain deadline). Requires exit 0 and returns the final stats line.
Stats stop_and_get_stats(ServerProcess& server, int sig = SIGTERM, std::vector<Client*> clients = {}) {
    const std::size_t before = stats_lines(server.stderr_text()).size();
    REQUIRE(server.send_signal(sig));
    for (Client* client : clients) {
        const std::size_t received = client->received;
        client->until_eof = true;
        const auto r = drive(*client, 10s);
        CHECK_MESSAGE(client->eof, "a connected client saw no EOF after signal ", sig, ": ", r.describe(), ", ",
                      client->describe());
        CHECK(client->received == received);  // no byte after the signal
        client->fd.reset();
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
    const std::size_t workers = workers_under_test();
    const std::regex shape(
        R"(echoplex: listening on 127\.0\.0\.1:[1-9][0-9]* \(echo\), 127\.0\.0\.1:[1-9][0-9]* \(echo\))" +
        (workers > 1 ? "; " + std::to_string(workers) + " workers" : std::string()) + "; backend (epoll|poll|select|io_uring)");
    CHECK(std::regex_match(server.startup_line(), shape));
    CHECK(server.announced_workers() == workers);
    CHECK(server.announced_backend() == backend_name(backend_under_test()));
    REQUIRE(server.ports().size() == 2);
    CHECK(server.ports()[0] != server.ports()[1]);
    for (const auto port : server.ports()) {
        Client c = echo_client(port);
        round_trip(c, "ping " + std::to_string(port));
    }
    CHECK(lines_of(server.stdout_text()).size() == 1);  // nothing else on stdout
}

TEST_CASE("echo is byte-exact from 1 B to 8 MiB on both ports, reading while writing") {
    ServerProcess server({"--port", "0", "--port", "0"});
    REQUIRE(server.ports().size() == 2);
    std::uint64_t seed = 1;
    for (const std::size_t size : {std::size_t{1}, std::size_t{1000}, 64 * KiB, MiB, 8 * MiB}) {
        CAPTURE(size);
        std::vector<Client> clients;
        for (const auto port : server.ports()) {
            clients.push_back(echo_client(port, random_bytes(size, seed++)));
        }
        const auto r = drive(clients, 20s);
        CHECK_MESSAGE(r.all_done, r.describe());
        check_all_echoed(clients);
    }
    CHECK(server.running());
}

TEST_CASE("a client that never reads is paused (backpressure) while others are served, memory stays bounded") {
    ServerProcess server({"--port", "0"});
    {
        Client warm = echo_client(server.port());
        round_trip(warm, random_bytes(64 * KiB, 7));
    }
    const long rss_before = server.rss_kib();
    REQUIRE(rss_before > 0);

    // The non-reader pushes until nothing moves for 2 s: the server has stopped reading it.
    const std::string pattern = random_bytes(MiB, 8);
    const std::size_t attempt = 32 * MiB;
    Client hog = Client::verifying(connect_to(server.port()), pattern, 0, attempt);
    hog.reading = false;
    const bool stalled = send_until_stalled(hog, 2s, 30s);
    MESSAGE("non-reader pushed ", hog.sent, " of ", attempt, " bytes; stalled=", stalled,
            " error=", errno_text(hog.error));
    CHECK(hog.error == 0);
    CHECK_MESSAGE(stalled, "backpressure never engaged: the server kept reading a client that never reads");
    CHECK(hog.sent < attempt);

    // Meanwhile 20 other clients each get their round trip, all within 10 s.
    std::vector<Client> others;
    for (int i = 0; i < 20; ++i) {
        others.push_back(echo_client(server.port(), random_bytes(4 * KiB, 100 + static_cast<std::uint64_t>(i))));
    }
    const auto r = drive(others, 10s);
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
    hog.send_limit = hog.sent;  // no more to send
    hog.reading = true;
    const auto d = drive(hog, 20s);
    MESSAGE("the non-reader read back ", hog.received, " bytes: ", d.describe());
    CHECK_MESSAGE(d.all_done, d.describe(), ": ", hog.describe());
    CHECK_MESSAGE(hog.echoed_all(), hog.describe());
    CHECK(server.running());
}

TEST_CASE("half-close: data sent before shutdown(SHUT_WR) all comes back, then EOF") {
    ServerProcess server({"--port", "0"});
    for (const std::size_t size : {std::size_t{0}, std::size_t{5}, 300 * KiB, 3 * MiB}) {
        CAPTURE(size);
        Client c = echo_client(server.port(), random_bytes(size, 20 + size));
        c.shutdown_after_send = true;
        c.until_eof = true;
        const auto r = drive(c, 20s);
        CHECK_MESSAGE(r.all_done, r.describe());
        CHECK_MESSAGE(c.eof, "no EOF after the echo; error=", errno_text(c.error));
        CHECK(c.error == 0);
        CHECK_MESSAGE(c.echoed_all(), c.describe());
    }
    CHECK(server.running());
}

TEST_CASE("--reply=stamp answers each chunk with 'Echo=>DATA at ' and a 24-character ctime") {
    ServerProcess server({"--port", "0", "--reply=stamp"});
    static const std::regex ctime_shape(
        R"((Sun|Mon|Tue|Wed|Thu|Fri|Sat) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123][0-9] [012][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4})");
    Client c = Client::storing(connect_to(server.port()));
    for (const std::string message : {"Hello network world", "again"}) {
        CAPTURE(message);
        const std::string prefix = "Echo=>" + message + " at ";
        const std::size_t from = c.received;
        c.append(message);
        c.expect = from + prefix.size() + 24;
        const auto r = drive(c, 5s);
        const std::string reply = c.stored.substr(from);
        CHECK_MESSAGE(r.all_done, r.describe(), " got [", reply, "]");
        // The second reply starts right after the first's 24 characters: no trailing newline.
        REQUIRE(reply.size() >= prefix.size() + 24);
        CHECK(reply.substr(0, prefix.size()) == prefix);
        const std::string stamp = reply.substr(prefix.size(), 24);
        CHECK_MESSAGE(std::regex_match(stamp, ctime_shape), "timestamp [", stamp, "]");
        CHECK(reply.size() == prefix.size() + 24);
    }
}

TEST_CASE("--port PORT/SERVICE: each port serves its own service, and the startup line names them") {
    ServerProcess server({"-p", "0", "-p", "0/discard,0/chargen", "-p", "0/daytime", "-p", "0/stamp"});
    CHECK(server.services() == std::vector<std::string>{"echo", "discard", "chargen", "daytime", "stamp"});
    CHECK(server.startup_line().find("(discard)") != std::string::npos);
    std::vector<Client> clients;
    // echo: the bytes back.
    clients.push_back(Client::storing(connect_to(server.port(0)), random_bytes(100000, 11)));
    // discard: 100 KB in, nothing back; our FIN, then the server's.
    clients.push_back(Client::storing(connect_to(server.port(1)), random_bytes(100000, 12)));
    clients[1].shutdown_after_send = true;
    clients[1].until_eof = true;
    // chargen: the first 20 lines (as BSD inetd's: the first starts with the space), whatever we send.
    clients.push_back(Client::storing(connect_to(server.port(2)), "anything\n"));
    clients[2].expect = 20 * 74;
    // daytime: one line, then EOF.
    clients.push_back(Client::storing(connect_to(server.port(3))));
    clients[3].until_eof = true;
    const auto r = drive(clients, 10s);
    CHECK_MESSAGE(r.all_done, r.describe());
    CHECK(clients[0].stored == clients[0].bytes);
    CHECK(clients[1].stored.empty());
    CHECK(clients[1].eof);
    REQUIRE(clients[2].stored.size() >= 20 * 74);
    CHECK(clients[2].stored.substr(0, 74) ==
          " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n");
    CHECK(clients[2].stored.substr(74, 74) ==
          "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n");
    static const std::regex daytime(R"([A-Z][a-z]+day, [A-Z][a-z]+ [0-9]{2}, [0-9]{4} [0-9:]{8}-[A-Za-z0-9+-]+\r\n)");
    CHECK_MESSAGE(std::regex_match(clients[3].stored, daytime), "[", clients[3].stored, "]");
    CHECK(clients[3].eof);
}

TEST_CASE("--max-connections=2: two clients are served, a third is closed without data and counted") {
    ServerProcess server({"--port", "0", "--max-connections=2"});
    // The limit is per worker, and the kernel spreads connections over the workers by a hash of
    // their addresses: with W workers, the first refusal comes after 2 to 2W admitted clients.
    const std::size_t workers = workers_under_test();
    std::vector<Client> admitted;
    std::optional<Client> refused;
    for (std::size_t i = 0; i <= 2 * workers && !refused; ++i) {
        Client c = Client::verifying(connect_to(server.port()), "hello " + std::to_string(i));
        c.until_eof = false;
        drive(c, 5s);
        if (c.echoed_all()) {
            admitted.push_back(std::move(c));
            continue;
        }
        refused = std::move(c);
    }
    MESSAGE(admitted.size(), " clients admitted before one was refused (", workers, " worker(s))");
    REQUIRE_MESSAGE(refused.has_value(), "no client of ", 2 * workers + 1, " was refused");
    CHECK(admitted.size() >= 2);
    CHECK(admitted.size() <= 2 * workers);
    refused->until_eof = true;
    const auto closed = drive(*refused, 5s);
    CHECK_MESSAGE(closed.all_done, "the refused connection was neither closed nor reset within 5 s");
    CHECK(refused->received == 0);
    CHECK_MESSAGE((refused->eof || refused->error == ECONNRESET), "error=", errno_text(refused->error));

    // The admitted clients are unaffected.
    for (std::size_t i = 0; i < admitted.size(); ++i) {
        round_trip(admitted[i], random_bytes(32 * KiB, 40 + i));
    }

    // A freed slot admits a new client once the server has seen the close. Retrying connects
    // could all land before the client's FIN reaches the server (a loaded machine); instead ask
    // the server (SIGUSR1) until it reports one connection fewer open, then a newcomer must be
    // served (with workers, one that lands on the worker with the free slot: a few tries).
    const std::size_t open_before = admitted.size();
    admitted.front().fd.reset();
    const auto seen = server.ask_stats_until([&](const Stats& s) { return s.open == open_before - 1; });
    REQUIRE_MESSAGE((seen && seen->open == open_before - 1), "the server never saw the first client close");
    bool served = false;
    for (std::size_t attempt = 0; attempt < (workers == 1 ? 1U : 64U) && !served; ++attempt) {
        Client c = Client::storing(connect_to(server.port()), "knock");
        drive(c, 5s);
        served = c.stored == "knock";
    }  // each newcomer closes here: left open, it would hold the SIGTERM drain below
    CHECK_MESSAGE(served, "the freed slot did not admit a new client");

    std::vector<Client*> still;
    for (std::size_t i = 1; i < admitted.size(); ++i) {
        still.push_back(&admitted[i]);
    }
    const Stats stats = stop_and_get_stats(server, SIGTERM, still);
    CHECK(stats.refused >= 1);
    CHECK(stats.accepted >= 3);
    CHECK(stats.peak <= 2 * workers);
}

TEST_CASE("SIGTERM drains queued output to a client that was not reading, then exits 0 with balanced stats") {
    ServerProcess server({"--port", "0"});
    // Small client buffers so that the server, not the kernel, ends up holding the output.
    const auto small_buffers = [](int fd) {
        const int size = 32 * 1024;
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    };
    // At least 4 MiB, and on until nothing moves for 1.5 s: the server then holds queued output
    // for this connection and has paused reading it (kernel buffers alone can absorb 4 MiB).
    const std::string data = random_bytes(24 * MiB, 50);
    Client client = Client::verifying(connect_to(server.port(), "127.0.0.1", small_buffers), data, 0, 4 * MiB);
    client.reading = false;
    bool stalled = send_until_stalled(client, 1500ms, 20s);
    if (!stalled && client.error == 0) {
        client.send_limit = data.size();
        stalled = send_until_stalled(client, 1500ms, 20s);
    }
    MESSAGE("pushed ", client.sent, " bytes before SIGTERM; stalled=", stalled);
    REQUIRE(client.error == 0);
    REQUIRE(client.sent > 0);
    CHECK_MESSAGE(stalled, "the server never stopped reading a client that does not read");

    REQUIRE(server.send_signal(SIGTERM));
    client.send_limit = client.sent;  // nothing more to send: read until the server's EOF
    client.reading = true;
    client.until_eof = true;
    const auto got = drive(client, 15s);
    MESSAGE("received ", client.received, " bytes; eof=", client.eof, " error=", errno_text(client.error));
    CHECK_MESSAGE(got.all_done, "the connection was not closed within 15 s of SIGTERM");
    CHECK_MESSAGE(client.eof, "the drained connection ended with ", errno_text(client.error), " instead of EOF");
    CHECK(client.received > 0);
    CHECK(client.received <= client.sent);
    CHECK_MESSAGE(client.prefix_ok(), client.describe());
    client.fd.reset();  // like any client after EOF: the server may be waiting for this close

    const auto status = server.wait_exit(15s);
    REQUIRE_MESSAGE(status.has_value(), "the server did not exit within 15 s of SIGTERM");
    CHECK_MESSAGE(status->ok(), status->describe(), "; stderr: ", server.stderr_text());
    const auto stats = server.wait_stats_line(1, 5s);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line at exit; stderr: ", server.stderr_text());
    MESSAGE("bytes_in=", stats->bytes_in, " bytes_out=", stats->bytes_out, " paused=", stats->paused);
    CHECK(stats->bytes_in == stats->bytes_out);
    CHECK(stats->bytes_in <= client.sent);
    if (client.eof) {
        CHECK(client.received == stats->bytes_out);
    }
    if (stalled) {
        CHECK(stats->paused >= 1);
    }
}

TEST_CASE("SIGINT stops the server too: exit 0 and a final stats line") {
    ServerProcess server({"--port", "0"});
    Client c = echo_client(server.port());
    round_trip(c, random_bytes(10000, 60));
    const Stats stats = stop_and_get_stats(server, SIGINT, {&c});
    CHECK(stats.accepted == 1);
    CHECK(stats.bytes_in == 10000);
    CHECK(stats.bytes_out == 10000);
    CHECK(count_stats_prefixed_lines(server.stderr_text()) == 1);
}

TEST_CASE("SIGUSR1 prints a stats line and the server keeps serving") {
    ServerProcess server({"--port", "0"});
    Client c = echo_client(server.port());
    round_trip(c, random_bytes(1000, 70));

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

    round_trip(c, random_bytes(2000, 71));
    Client other = echo_client(server.port());
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

TEST_CASE("SIGHUP is logged and ignored: the server keeps serving its clients") {
    ServerProcess server({"--port", "0"});
    Client c = echo_client(server.port());
    round_trip(c, "before the hangup");
    REQUIRE(server.send_signal(SIGHUP));
    REQUIRE_MESSAGE(server.wait_stderr([](const std::string& err) {
        return err.find("echoplex: SIGHUP received: nothing to reload; still serving") != std::string::npos;
    }, 5s), "stderr: ", server.stderr_text());
    round_trip(c, "after the hangup");
    Client fresh = echo_client(server.port());
    round_trip(fresh, "a new client");
    CHECK(server.running());
    const Stats stats = stop_and_get_stats(server, SIGTERM, {&c, &fresh});
    CHECK(stats.accepted == 2);
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
        // The version, the commit when built from git, the build type, the compiler, the backends.
        static const std::regex shape(
            R"(echoplex [0-9]+\.[0-9]+\.[0-9]+ \((git [0-9a-f]+(-dirty)?, )?[a-z]+(, NDEBUG)?, (gcc|clang) [0-9.]+\) \[backends: [a-z_, ]+\])");
        CHECK_MESSAGE((lines.size() == 1 && std::regex_match(lines[0], shape)), "stdout: [", r.out, "]");
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
    std::vector<Client> clients;
    clients.push_back(echo_client(server.port(), random_bytes(300 * KiB, 80), "::1"));
    const auto r = drive(clients, 10s);
    CHECK_MESSAGE(r.all_done, r.describe());
    check_all_echoed(clients);
}

TEST_CASE("--host repeats: every address listens, and port 0 is one port for all of them") {
    ServerProcess server({"--host", "127.0.0.2", "--host", "127.0.0.3", "--port", "0", "--port", "0/discard"});
    MESSAGE(server.startup_line());
    REQUIRE(server.ports().size() == 4);
    CHECK(server.hosts() == std::vector<std::string>{"127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"});
    CHECK(server.ports()[0] == server.ports()[1]);  // the echo port, on both addresses
    CHECK(server.ports()[2] == server.ports()[3]);  // the discard port
    CHECK(server.ports()[0] != server.ports()[2]);
    CHECK(server.services() == std::vector<std::string>{"echo", "echo", "discard", "discard"});
    for (const char* host : {"127.0.0.2", "127.0.0.3"}) {
        Client c = echo_client(server.port(0), {}, host);
        round_trip(c, std::string("hello at ") + host);
    }
    // Not on an address it was not given.
    CHECK_THROWS(connect_to(server.port(0), "127.0.0.4"));
}

TEST_CASE("--host :: is one dual-stack socket: IPv4 and IPv6 clients are both served") {
    if (!ipv6_loopback_available()) {
        MESSAGE("skipped: ::1 is not available on this machine");
        return;
    }
    ServerProcess server({"--host", "::", "--port", "0"});
    MESSAGE(server.startup_line());
    REQUIRE(server.ports().size() == 1);
    CHECK(server.hosts()[0] == "::");
    for (const char* host : {"127.0.0.1", "::1"}) {
        Client c = echo_client(server.port(), {}, host);
        round_trip(c, std::string("hello over ") + host);
    }
}

}  // namespace
}  // namespace echoplex::test

namespace echoplex::test {
namespace {

TEST_CASE("--idle-timeout closes a silent client while an active one keeps being served") {
    ServerProcess server({"--port", "0", "--idle-timeout=300ms"});
    Client silent = Client::storing(connect_to(server.port()));
    Client active = echo_client(server.port());
    const auto start = std::chrono::steady_clock::now();
    // The active client talks more often than the timeout, for longer than the timeout.
    while (std::chrono::steady_clock::now() - start < 900ms) {
        round_trip(active, "still here");
    }
    silent.until_eof = true;
    const auto closed = drive(silent, 5s);
    CHECK(closed.all_done);
    CHECK(silent.eof);
    CHECK(silent.stored.empty());
    round_trip(active, "and still served");
    CHECK(server.running());
}

// $TESTECHO_BIN, which meson sets for this suite too.
std::string testecho_binary() {
    const char* path = std::getenv("TESTECHO_BIN");
    REQUIRE_MESSAGE(path != nullptr, "TESTECHO_BIN is not set (meson test sets it)");
    return path;
}

// argv for execv(2): pointers into `argv`, which must outlive them, and the closing null.
std::vector<char*> exec_args(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const std::string& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    return args;
}

// Runs `argv` in a child whose io_uring_setup(2) fails with `err`, as a container runtime's seccomp
// filter makes it fail; returns the exit code (or -1) and everything it wrote to stderr.
std::pair<int, std::string> run_with_io_uring_refused(const std::vector<std::string>& argv, int err) {
    int pipe_fds[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    std::vector<char*> args = exec_args(argv);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // Only async-signal-safe calls from here to exec.
        sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<unsigned>(offsetof(seccomp_data, nr))),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
        ::dup2(pipe_fds[1], STDERR_FILENO);
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
            ::_exit(126);
        }
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    std::string err_text;
    char buffer[4096];
    for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) {
        err_text.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(pipe_fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, err_text};
}

TEST_CASE("a stderr nobody reads never stalls the server: -v logging every connection, clients are served, SIGTERM exits 0") {
    // The server's stderr is a pipe this test holds and never reads (64 KiB, filled by the -v
    // lines of the first few hundred connections; 608 stay under select's 960), its stdout one
    // it reads the startup line from.
    int err_pipe[2];
    int out_pipe[2];
    REQUIRE(::pipe2(err_pipe, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(out_pipe, O_CLOEXEC) == 0);
    const UniqueFd err_read(err_pipe[0]);
    const UniqueFd out_read(out_pipe[0]);
    std::vector<std::string> argv = {server_binary(), backend_arg(), "-v", "--port", "0"};
    if (workers_under_test() > 1) {
        argv.push_back("--workers=" + std::to_string(workers_under_test()));
    }
    std::vector<char*> args = exec_args(argv);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(out_pipe[1], STDOUT_FILENO);
        ::dup2(err_pipe[1], STDERR_FILENO);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    const UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    REQUIRE(pidfd);
    std::string startup;
    for (int reads = 0; reads < 100 && startup.find('\n') == std::string::npos; ++reads) {
        pollfd p{out_read.get(), POLLIN, 0};
        REQUIRE(::poll(&p, 1, 10000) == 1);
        char buf[512];
        const ssize_t n = ::read(out_read.get(), buf, sizeof buf);
        REQUIRE(n > 0);
        startup.append(buf, static_cast<std::size_t>(n));
    }
    static const std::regex port_re(R"(127\.0\.0\.1:(\d+))");
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_search(startup, m, port_re), startup);

    const auto load = run_to_completion(testecho_binary(), {"-p", m[1].str(), "-c", "8", "--idle", "600", "-d", "2s",
                                                            "--json", "-q", "--timeout", "10s"}, 60s);
    CHECK_MESSAGE(load.status.ok(), load.status.describe(), " ", load.err);
    static const std::regex messages_re(R"("messages":(\d+))");
    std::smatch mm;
    REQUIRE_MESSAGE(std::regex_search(load.out, mm, messages_re), load.out);
    MESSAGE(mm[1].str(), " messages echoed with stderr unread");
    CHECK(std::stoull(mm[1].str()) > 100);
    CHECK(load.out.find("\"verified\":true") != std::string::npos);

    REQUIRE(::kill(pid, SIGTERM) == 0);
    pollfd p{pidfd.get(), POLLIN, 0};
    CHECK_MESSAGE(::poll(&p, 1, 15000) == 1, "the server did not exit within 15 s of SIGTERM with stderr unread");
    int status = 0;
    if (::waitpid(pid, &status, p.revents != 0 ? 0 : WNOHANG) != pid) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
    }
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("io_uring refused by the kernel (seccomp: EPERM, ENOSYS): server (with and without workers) and testecho exit 1 with one line saying why") {
    if (backend_under_test() != BackendKind::io_uring) {
        MESSAGE("skipped: only for --backend=io_uring (this run: ", backend_name(backend_under_test()), ")");
        return;
    }
    for (const int err : {EPERM, ENOSYS}) {
        CAPTURE(err);
        // The server with workers too: each worker fails, and the master says so once.
        const std::vector<std::vector<std::string>> commands = {
            {server_binary(), "--backend=io_uring", "-p", "1"},
            {server_binary(), "--backend=io_uring", "-p", "0", "--workers=2"},
            {testecho_binary(), "--backend=io_uring", "-p", "1"}};
        for (const auto& command : commands) {
            CAPTURE(command.back());
            const auto [code, text] = run_with_io_uring_refused(command, err);
            MESSAGE(text);
            CHECK(code == 1);
            const auto lines = split_lines(text);
            REQUIRE(lines.size() == 1);
            CHECK(lines[0].find("cannot start the io_uring backend: io_uring_setup") != std::string::npos);
            CHECK(lines[0].find(err == EPERM ? "(EPERM)" : "(ENOSYS)") != std::string::npos);
            CHECK(lines[0].find("seccomp") != std::string::npos);  // says what may be refusing it
            CHECK(lines[0].find("choose another with --backend (epoll") != std::string::npos);
        }
    }
}

}  // namespace
}  // namespace echoplex::test
