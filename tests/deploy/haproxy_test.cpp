// deploy/haproxy.cfg, run: HAProxy (Debian's haproxy package) in front of three echoplex servers
// with --proxy-protocol, each on its own loopback address (127.0.0.2, .3, .4) and a port the
// kernel picked. The configuration is the deploy file itself, with only its addresses and ports
// replaced and a stats socket added, through which the test waits for HAProxy's health checks
// (real echoes behind a PROXY header) to take servers out and back in. Skipped (77) when haproxy
// is not installed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/doctest.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

std::string env_or_fail(const char* name) {
    const char* value = std::getenv(name);
    REQUIRE_MESSAGE(value != nullptr, name, " is not set (meson sets it)");
    return value;
}

std::string haproxy_binary() {
    for (const char* dir : {"/usr/sbin", "/usr/local/sbin", "/usr/bin"}) {
        const std::string path = std::string(dir) + "/haproxy";
        if (::access(path.c_str(), X_OK) == 0) {
            return path;
        }
    }
    return {};
}

// HAProxy's answer to one stats-socket command.
std::string ask_haproxy(const std::string& socket_path, const std::string& command) {
    const UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    socket_path.copy(address.sun_path, sizeof address.sun_path - 1);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        return {};
    }
    const std::string line = command + "\n";
    if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        return {};
    }
    std::string answer;
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd.get(), buffer, sizeof buffer)) > 0;) {
        answer.append(buffer, static_cast<std::size_t>(n));
    }
    return answer;
}

// The three instances and HAProxy in front of them.
struct Deployment {
    std::filesystem::path dir;
    std::vector<std::string> hosts{"127.0.0.2", "127.0.0.3", "127.0.0.4"};
    std::vector<std::unique_ptr<ServerProcess>> servers;
    std::vector<std::uint16_t> ports;
    std::unique_ptr<ChildProcess> haproxy;
    std::uint16_t front_port = 0;

    std::unique_ptr<ServerProcess> start_server(std::size_t i, std::uint16_t port) {
        return std::make_unique<ServerProcess>(std::vector<std::string>{
            "-H", hosts[i], "-p", std::to_string(port), "--proxy-protocol", "-v"});
    }

    Deployment() {
        char name[] = "/tmp/echoplex-haproxy-XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        dir = name;
        for (std::size_t i = 0; i < hosts.size(); ++i) {
            servers.push_back(start_server(i, 0));
            ports.push_back(servers.back()->port());
        }
        // The frontend listens on a socket the test binds (port 0) and HAProxy inherits (fd@N),
        // so no port is guessed. Not close-on-exec, so made after the servers started; the test's
        // own copy closes at the end of this constructor, before any testecho starts.
        const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(listener >= 0);
        const UniqueFd front(listener);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
        REQUIRE(::listen(listener, 128) == 0);
        socklen_t length = sizeof address;
        REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
        front_port = ntohs(address.sin_port);

        std::ifstream in(env_or_fail("HAPROXY_CFG"));
        REQUIRE(in.good());
        std::stringstream text;
        text << in.rdbuf();
        std::string config = text.str();
        const std::string bind = "    bind 127.0.0.1:50007";
        REQUIRE(config.find(bind) != std::string::npos);
        config.replace(config.find(bind), bind.size(), "    bind fd@" + std::to_string(listener));
        std::string servers_text;
        for (std::size_t i = 0; i < hosts.size(); ++i) {
            servers_text += "    server echoplex" + std::to_string(i + 1) + " " + hosts[i] + ":" +
                            std::to_string(ports[i]) + "\n";
        }
        const std::regex server_lines(R"((    server echoplex\d+ [0-9.]+:50007\n)+)");
        REQUIRE(std::regex_search(config, server_lines));
        config = std::regex_replace(config, server_lines, servers_text);
        config.replace(config.find("global\n"), 7,
                       "global\n    stats socket " + (dir / "haproxy.sock").string() + " level admin\n");
        std::ofstream(dir / "haproxy.cfg") << config;

        haproxy = std::make_unique<ChildProcess>(haproxy_binary(),
                                                 std::vector<std::string>{"-f", (dir / "haproxy.cfg").string(), "-db"});
        REQUIRE(wait_for_status("UP", {0, 1, 2}));
    }
    ~Deployment() {
        haproxy.reset();
        servers.clear();
        std::filesystem::remove_all(dir);
    }

    // Each server's check status as HAProxy reports it ("UP", "DOWN", "UP 1/2", ...).
    std::vector<std::string> statuses() {
        std::vector<std::string> out(hosts.size());
        std::istringstream csv(ask_haproxy((dir / "haproxy.sock").string(), "show stat"));
        for (std::string line; std::getline(csv, line);) {
            std::vector<std::string> fields;
            std::istringstream cells(line);
            for (std::string cell; std::getline(cells, cell, ',');) {
                fields.push_back(cell);
            }
            if (fields.size() > 17 && fields[0] == "echoplex" && fields[1].rfind("echoplex", 0) == 0 &&
                fields[1] != "echoplex") {
                const std::size_t i = std::stoul(fields[1].substr(8)) - 1;
                if (i < out.size()) {
                    out[i] = fields[17];
                }
            }
        }
        return out;
    }
    // Waits (bounded, polling HAProxy) until every server in `which` has `status`.
    bool wait_for_status(const std::string& status, const std::vector<std::size_t>& which) {
        for (int i = 0; i < 300; ++i) {
            const auto now = statuses();
            bool all = true;
            for (const std::size_t s : which) {
                all = all && now[s] == status;
            }
            if (all) {
                return true;
            }
            std::this_thread::sleep_for(20ms);  // HAProxy's checks run every 500 ms: nothing to await
        }
        MESSAGE("HAProxy reports ", statuses()[0], ", ", statuses()[1], ", ", statuses()[2]);
        return false;
    }

    // A 20-second testecho run of 12 clients through HAProxy, started once every server holds
    // some of them (each has logged a forwarded client).
    std::unique_ptr<ChildProcess> start_long_run() {
        auto run = std::make_unique<ChildProcess>(
            env_or_fail("TESTECHO_BIN"),
            std::vector<std::string>{"-p", std::to_string(front_port), "-c", "12", "-s", "1000", "-d", "20s", "--json", "-q"});
        for (auto& server : servers) {
            REQUIRE(server->wait_stderr([](const std::string& err) { return err.find(" forwards ") != std::string::npos; }, 10s));
        }
        return run;
    }
    // Ends it early (SIGINT) if it still runs; returns its JSON report, read to the end.
    std::string finish_long_run(ChildProcess& run) {
        if (run.running()) {
            REQUIRE(run.send_signal(SIGINT));
        }
        REQUIRE(run.wait_exit(30s).has_value());
        REQUIRE(run.wait_output_eof(10s));
        return run.stdout_text();
    }

    RunResult testecho(const std::vector<std::string>& extra) {
        std::vector<std::string> args{"-p", std::to_string(front_port), "-c", "12", "-s", "1000"};
        args.insert(args.end(), extra.begin(), extra.end());
        return run_to_completion(env_or_fail("TESTECHO_BIN"), args, 60s);
    }
};

// Without haproxy the whole suite reports itself skipped (exit 77, as meson counts it).
bool skip_without_haproxy() {
    if (haproxy_binary().empty()) {
        std::puts("skipped: haproxy is not installed (Debian: apt-get install haproxy; scripts/test.sh installs it)");
        std::fflush(stdout);
        std::exit(77);
    }
    return false;
}

TEST_CASE("testecho through HAProxy verifies every byte, and each server logs the real clients") {
    if (skip_without_haproxy()) {
        return;
    }
    Deployment d;
    const RunResult run = d.testecho({"-d", "1s"});
    INFO(run.out, run.err);
    CHECK(run.status.ok());
    CHECK(run.out.find("verified: OK") != std::string::npos);
    for (auto& server : d.servers) {
        REQUIRE(server->send_signal(SIGUSR1));
        const auto stats = server->wait_stats_line(1, 5s);
        REQUIRE(stats.has_value());
        CHECK(stats->accepted > 0);  // leastconn spread the 12 clients over all three
        CHECK(stats->proxy_rejected == std::optional<std::uint64_t>(0));  // health checks' LOCAL included
        // The client logged is testecho's address, not HAProxy's connection to the server.
        CHECK(server->stderr_text().find(" forwards 127.0.0.1:") != std::string::npos);
    }
}

TEST_CASE("a server killed mid-run fails only its own clients; HAProxy takes it out, then back once restarted") {
    if (skip_without_haproxy()) {
        return;
    }
    Deployment d;
    const auto long_run = d.start_long_run();  // every server holds some of its clients
    REQUIRE(d.servers[1]->send_signal(SIGKILL));
    REQUIRE(d.servers[1]->wait_exit(5s).has_value());
    const std::string killed_log = d.servers[1]->stderr_text();
    // What it held when killed, as far as its log tells: connections opened and not closed. A
    // connection still in its accept queue is not in the log, so this is a floor, not a bound.
    const auto count = [&](const std::string& needle) {
        std::size_t n = 0;
        for (std::size_t at = 0; (at = killed_log.find(needle, at)) != std::string::npos; ++at) {
            ++n;
        }
        return n;
    };
    const std::size_t held = count("echoplex: connection from ") - count("echoplex: closed ");
    REQUIRE(d.wait_for_status("DOWN", {1}));
    // A fresh run goes to the two left and has no error.
    const RunResult after = d.testecho({"-d", "500ms"});
    INFO(after.out, after.err);
    CHECK(after.status.ok());
    // The long run lost at most the connections the killed server held, and no byte was wrong.
    const std::string json = d.finish_long_run(*long_run);
    INFO(json, long_run->stderr_text());
    std::smatch errors;
    REQUIRE(std::regex_search(json, errors, std::regex(R"re("errors":\{"connect":(\d+),"mismatch":(\d+),"closed":(\d+),"timeout":(\d+)\})re")));
    CHECK(errors[2].str() == "0");
    const auto lost = std::stoul(errors[1].str()) + std::stoul(errors[3].str()) + std::stoul(errors[4].str());
    MESSAGE("the long run lost ", lost, " of its 12 connections; the killed server's log shows ", held, " open");
    CHECK(lost >= 1);
    // leastconn spreads the 12 over three servers (about 4 each): the two left keep theirs.
    CHECK(lost <= 6);
    // Restarted on its address and port, it is checked and taken back.
    d.servers[1] = d.start_server(1, d.ports[1]);
    CHECK(d.wait_for_status("UP", {0, 1, 2}));
}

TEST_CASE("a server stopped with SIGTERM drains its clients and exits 0 while new ones go to the others") {
    if (skip_without_haproxy()) {
        return;
    }
    Deployment d;
    const auto long_run = d.start_long_run();
    REQUIRE(d.servers[2]->send_signal(SIGTERM));
    const auto stopped = d.servers[2]->wait_exit(10s);
    REQUIRE(stopped.has_value());
    CHECK(stopped->ok());  // drained within the drain timeout: exit 0
    const std::string log = d.servers[2]->stderr_text();
    INFO(log);
    CHECK(log.find("draining") != std::string::npos);
    // Its clients were let go by the drain (closed as drained, or reset by HAProxy once our FIN
    // reached it), none cut off at the drain timeout.
    CHECK(log.find(": drain timeout") == std::string::npos);
    REQUIRE(d.wait_for_status("DOWN", {2}));
    const RunResult after = d.testecho({"-d", "500ms"});
    INFO(after.out, after.err);
    CHECK(after.status.ok());
    const std::string json = d.finish_long_run(*long_run);
    INFO(json, long_run->stderr_text());
    CHECK(json.find(R"("mismatch":0)") != std::string::npos);  // every reply it got was whole
}

}  // namespace
}  // namespace echoplex::test
