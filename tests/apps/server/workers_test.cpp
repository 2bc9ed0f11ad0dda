// End-to-end tests of --workers: a master and its worker processes, seen from outside (their
// descriptors in /proc, their stats lines, what clients get). Registered once per backend; every
// wait is on a socket, a pipe or the server's output, with a deadline.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "support/clients.hpp"
#include "support/doctest.hpp"
#include "support/child_process.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t KiB = 1024;

// The sockets a process holds: entries of /proc/PID/fd that link to "socket:[...]".
std::size_t sockets_of(pid_t pid) {
    const std::string dir_path = "/proc/" + std::to_string(pid) + "/fd";
    DIR* dir = ::opendir(dir_path.c_str());
    if (dir == nullptr) {
        return 0;
    }
    std::size_t n = 0;
    while (const dirent* entry = ::readdir(dir)) {
        char target[64] = {};
        const std::string link = dir_path + "/" + entry->d_name;
        if (::readlink(link.c_str(), target, sizeof target - 1) > 0 && std::strncmp(target, "socket:", 7) == 0) {
            ++n;
        }
    }
    ::closedir(dir);
    return n;
}

// Each worker's sockets, by pid.
std::map<pid_t, std::size_t> sockets_by_worker(const ServerProcess& server) {
    std::map<pid_t, std::size_t> out;
    for (const pid_t pid : server.worker_pids()) {
        out[pid] = sockets_of(pid);
    }
    return out;
}

// `n` clients, each with one byte-exact round trip done (so a worker has accepted each).
std::vector<Client> connected_clients(std::uint16_t port, std::size_t n) {
    std::vector<Client> clients;
    for (std::size_t i = 0; i < n; ++i) {
        clients.push_back(Client::verifying(connect_to(port), "hello " + std::to_string(i)));
    }
    const auto r = drive(clients, 20s);
    REQUIRE_MESSAGE(r.all_done, r.describe());
    return clients;
}

// Every client gets one more byte-exact round trip.
std::size_t count_echoing(std::vector<Client>& clients, const std::string& data) {
    for (auto& c : clients) {
        if (!c.closed()) {
            c.append(data);
        }
    }
    drive(clients, 20s);
    return static_cast<std::size_t>(std::count_if(clients.begin(), clients.end(), [](const Client& c) { return c.echoed_all(); }));
}

// Closes the clients (open ones would hold a drain for its whole timeout).
void close_all(std::vector<Client>& clients) {
    for (auto& c : clients) {
        c.fd.reset();
    }
}

std::vector<std::string> workers_args(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"--port", "0", "--workers=2", "-v"};
    args.insert(args.end(), more.begin(), more.end());
    return args;
}

// The stats line the master prints after `count` were printed, once more sent SIGUSR1.
Stats stats_after_usr1(ServerProcess& server) {
    const std::size_t before = stats_lines(server.stderr_text()).size();
    REQUIRE(server.send_signal(SIGUSR1));
    const auto stats = server.wait_stats_line(before + 1, 10s);
    REQUIRE_MESSAGE(stats.has_value(), "no stats line after SIGUSR1; stderr: ", server.stderr_text());
    return *stats;
}

void stop_cleanly(ServerProcess& server) {
    REQUIRE(server.send_signal(SIGTERM));
    const auto status = server.wait_exit(20s);
    REQUIRE_MESSAGE(status.has_value(), "the master did not exit within 20 s of SIGTERM");
    CHECK_MESSAGE(status->ok(), status->describe(), "; stderr: ", server.stderr_text());
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("--workers=2: one port announced once, 200 connections land on both workers and each counts its own") {
    ServerProcess server(workers_args());
    MESSAGE(server.startup_line());
    CHECK(server.announced_workers() == 2);
    REQUIRE(server.ports().size() == 1);
    const auto idle = sockets_by_worker(server);
    REQUIRE(idle.size() == 2);

    auto clients = connected_clients(server.port(), 200);
    const auto busy = sockets_by_worker(server);
    REQUIRE(busy.size() == 2);
    std::size_t total = 0;
    for (const auto& entry : busy) {
        // Not a structured binding: clang 14 cannot capture one in doctest's message lambdas.
        const pid_t pid = entry.first;
        const std::size_t n = entry.second;
        const std::size_t clients_here = n - idle.at(pid);
        MESSAGE("worker pid ", pid, ": ", clients_here, " client sockets");
        CHECK_MESSAGE(clients_here > 0, "worker ", pid, " got none of the 200 connections");
        total += clients_here;
    }
    CHECK(total == 200);

    // The master's line sums the workers; -v adds one line per worker with its own count.
    const Stats sum = stats_after_usr1(server);
    CHECK(sum.open == 200);
    CHECK(sum.accepted == 200);
    CHECK(sum.workers == 2U);
    CHECK(sum.restarts == 0U);
    CHECK(count_echoing(clients, std::string(4 * KiB, 'x')) == 200);
    std::size_t per_worker_open = 0;
    const std::regex per_worker(R"(echoplex: worker [12] \(pid (\d+)\) stats: accepted=\d+ refused=\d+ open=(\d+) .*)");
    std::map<pid_t, std::size_t> reported;
    for (const auto& line : split_lines(server.stderr_text())) {
        if (std::smatch m; std::regex_match(line, m, per_worker)) {
            reported[static_cast<pid_t>(std::stol(m[1].str()))] = std::stoul(m[2].str());
        }
    }
    for (const auto& entry : busy) {
        // Not a structured binding: clang 14 cannot capture one in doctest's message lambdas.
        const pid_t pid = entry.first;
        const std::size_t n = entry.second;
        CHECK_MESSAGE(reported.count(pid) == 1, "no stats line for worker pid ", pid);
        per_worker_open += reported[pid];
        CHECK(reported[pid] == n - idle.at(pid));
    }
    CHECK(per_worker_open == 200);
    close_all(clients);
    stop_cleanly(server);
}

TEST_CASE("SIGKILL of one worker resets only its clients; another worker takes its place and new clients are served") {
    ServerProcess server(workers_args());
    const auto idle = sockets_by_worker(server);
    auto clients = connected_clients(server.port(), 100);
    const auto busy = sockets_by_worker(server);
    REQUIRE(busy.size() == 2);
    const pid_t victim = busy.begin()->first;
    const std::size_t victims_clients = busy.begin()->second - idle.at(victim);
    MESSAGE("killing worker pid ", victim, ", which holds ", victims_clients, " of 100 clients");
    REQUIRE(::kill(victim, SIGKILL) == 0);

    // Its clients see a reset (or EOF); the others echo on.
    const std::size_t echoing = count_echoing(clients, "after the kill");
    const auto cut = static_cast<std::size_t>(std::count_if(clients.begin(), clients.end(), [](const Client& c) { return c.closed(); }));
    MESSAGE(echoing, " clients still echo, ", cut, " were cut off");
    CHECK(cut == victims_clients);
    CHECK(echoing == 100 - victims_clients);

    // The master says why and starts another worker.
    // The master says why and starts another worker: a third "started" line (-v logs the first
    // two), printed once the new worker is forked and the dead one reaped.
    const std::regex started(R"(echoplex: worker [12] started \(pid \d+\))");
    const bool replaced = server.wait_stderr(
        [&](const std::string& err) {
            const auto lines = split_lines(err);
            return err.find("(pid " + std::to_string(victim) + ") was killed by SIGKILL; starting another") != std::string::npos &&
                   std::count_if(lines.begin(), lines.end(), [&](const std::string& l) { return std::regex_match(l, started); }) == 3;
        },
        10s);
    REQUIRE_MESSAGE(replaced, "stderr: ", server.stderr_text());
    const auto now = server.worker_pids();
    REQUIRE(now.size() == 2);
    CHECK(std::find(now.begin(), now.end(), victim) == now.end());

    auto fresh = connected_clients(server.port(), 50);
    CHECK(count_echoing(fresh, std::string(16 * KiB, 'y')) == 50);
    const Stats stats = stats_after_usr1(server);
    CHECK(stats.restarts == 1U);
    close_all(clients);
    close_all(fresh);
    stop_cleanly(server);
}

TEST_CASE("SIGTERM drains every worker: the echo of every byte read is delivered, then all exit and the master exits 0") {
    ServerProcess server(workers_args());
    const auto idle = sockets_by_worker(server);
    // Clients that send 256 KiB each without reading: output queues on both workers.
    std::vector<Client> clients;
    const std::string pattern = random_bytes(256 * KiB, 7);
    for (std::size_t i = 0; i < 24; ++i) {
        Client c = Client::verifying(connect_to(server.port()), pattern, 0, pattern.size());
        c.reading = false;
        clients.push_back(std::move(c));
    }
    for (auto& c : clients) {
        send_until_stalled(c, 200ms, 10s);
    }
    // A client's bytes can sit in the kernel before its worker accepts it: ask the master until
    // every client is open in some worker.
    const auto seen = server.ask_stats_until([&](const Stats& s) { return s.open == clients.size(); });
    REQUIRE_MESSAGE((seen && seen->open == clients.size()), "the workers never held all ", clients.size(), " clients");
    const auto busy = sockets_by_worker(server);
    for (const auto& entry : busy) {
        // Not a structured binding: clang 14 cannot capture one in doctest's message lambdas.
        const pid_t pid = entry.first;
        const std::size_t n = entry.second;
        CHECK_MESSAGE(n > idle.at(pid), "worker ", pid, " holds none of the clients");
    }
    const std::size_t before = stats_lines(server.stderr_text()).size();
    REQUIRE(server.send_signal(SIGTERM));
    for (auto& c : clients) {
        c.send_limit = c.sent;  // nothing more to send: read until the server's EOF
        c.reading = true;
        c.until_eof = true;
    }
    const auto r = drive(clients, 20s);
    CHECK_MESSAGE(r.all_done, r.describe());
    std::size_t received = 0;
    for (const auto& c : clients) {
        CHECK_MESSAGE(c.eof, c.describe());
        CHECK_MESSAGE(c.prefix_ok(), c.describe());
        received += c.received;
    }
    close_all(clients);  // like any client after EOF: the server may be waiting for this close
    const auto status = server.wait_exit(20s);
    REQUIRE(status.has_value());
    CHECK_MESSAGE(status->ok(), status->describe(), "; stderr: ", server.stderr_text());
    const auto stats = server.wait_stats_line(before + 1, 5s);
    REQUIRE(stats.has_value());
    CHECK(stats->bytes_in == stats->bytes_out);
    CHECK(stats->bytes_out == received);
    CHECK(stats->open == 0);
    CHECK(server.stderr_text().find("drain timeout") == std::string::npos);
}

TEST_CASE("a second SIGTERM makes every worker exit at once, and the master exits 1") {
    ServerProcess server(workers_args({"--drain-timeout=30"}));
    // A client that never reads holds its worker's drain for the whole drain timeout.
    Client stuck = Client::verifying(connect_to(server.port()), random_bytes(4 * 1024 * KiB, 9));
    stuck.reading = false;
    send_until_stalled(stuck, 200ms, 10s);
    REQUIRE(server.send_signal(SIGTERM));
    REQUIRE(server.wait_stderr([](const std::string& err) { return err.find("SIGTERM received: draining 2 workers") != std::string::npos; }, 5s));
    REQUIRE(server.send_signal(SIGTERM));
    const auto status = server.wait_exit(10s);
    REQUIRE_MESSAGE(status.has_value(), "the master did not exit within 10 s of the second SIGTERM");
    CHECK(status->exited);
    CHECK(status->code == 1);
    CHECK(server.stderr_text().find("SIGTERM again") != std::string::npos);
}

TEST_CASE("--workers: bad values are usage errors; auto takes one per CPU") {
    for (const std::string bad : {"0", "-1", "two", "1025"}) {
        CAPTURE(bad);
        const auto r = run_server_to_completion({"--workers=" + bad});
        CHECK(r.status.code == 2);
        CHECK(split_lines(r.err).size() == 1);
        CHECK(r.err.find("--workers") != std::string::npos);
    }
    const auto help = run_server_to_completion({"--help"});
    CHECK(help.out.find("--workers=N|auto") != std::string::npos);
    CHECK(help.out.find("clients served at once by each worker") != std::string::npos);
}

}  // namespace
}  // namespace echoplex::test
