// --metrics end to end: the server's own /metrics page, scraped over loopback while it serves,
// and checked by promtool (Debian's prometheus package) when it is installed. Registered per
// backend; --metrics is one process only for now, so there is no 2-worker run.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <regex>
#include <string>
#include <vector>

#include "support/child_process.hpp"
#include "support/clients.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

// Sends `request` and returns everything the server sent until it closed.
std::string http(std::uint16_t port, const std::string& request) {
    Client c = Client::storing(connect_to(port), request);
    c.until_eof = true;
    const auto r = drive(c, 10s);
    REQUIRE_MESSAGE(r.all_done, "no close after the response: ", c.describe());
    return c.stored;
}

std::string body_of(const std::string& response) {
    const auto end = response.find("\r\n\r\n");
    return end == std::string::npos ? std::string() : response.substr(end + 4);
}

// The value of an unlabelled sample "name value" in an exposition.
double sample(const std::string& exposition, const std::string& name) {
    const std::regex line("(^|\\n)" + name + " ([0-9.e+]+)\\n");
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_search(exposition, m, line), "no sample ", name, " in:\n", exposition);
    return std::stod(m[2].str());
}

TEST_CASE("--metrics: /metrics counts what the echo port served; scrapes are not counted as clients") {
    ServerProcess server({"--port", "0", "--metrics=127.0.0.1:0"});
    REQUIRE(server.services() == std::vector<std::string>{"echo", "metrics"});
    const std::uint16_t echo = server.port(0);
    const std::uint16_t metrics = server.port(1);
    for (int i = 0; i < 3; ++i) {
        Client c = Client::verifying(connect_to(echo), random_bytes(1000, 90 + static_cast<std::uint64_t>(i)));
        const auto r = drive(c, 10s);
        REQUIRE_MESSAGE(r.all_done, c.describe());
    }
    // The server's view of the three closes may lag the clients': ask until it has them.
    const auto seen = server.ask_stats_until([](const Stats& s) { return s.open == 0; });
    REQUIRE((seen && seen->open == 0));
    const std::string response = http(metrics, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(response.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
    const std::string body = body_of(response);
    CHECK(sample(body, "echoplex_connections_accepted_total") == 3);
    CHECK(sample(body, "echoplex_connections_open") == 0);
    CHECK(sample(body, "echoplex_connections_refused_total") == 0);
    CHECK(sample(body, "echoplex_received_bytes_total") == 3000);
    CHECK(sample(body, "echoplex_sent_bytes_total") == 3000);
    CHECK(sample(body, "process_start_time_seconds") > 1.7e9);
    CHECK(body.find("# TYPE echoplex_connections_accepted_total counter\n") != std::string::npos);
    CHECK(body.find("# TYPE echoplex_connections_open gauge\n") != std::string::npos);
    CHECK(body.find("echoplex_build_info{version=\"") != std::string::npos);
    CHECK(body.find("backend=\"" + std::string(backend_name(backend_under_test())) + "\"} 1\n") != std::string::npos);
    // A second scrape: the first was not a client of the echo port.
    CHECK(sample(body_of(http(metrics, "GET /metrics HTTP/1.0\r\n\r\n")), "echoplex_connections_accepted_total") == 3);

    if (const std::string promtool = resolve_program("promtool"); promtool.find('/') != std::string::npos) {
        const std::string path = "/tmp/echoplex-metrics-" + std::to_string(::getpid()) + ".txt";
        std::FILE* f = std::fopen(path.c_str(), "w");
        REQUIRE(f != nullptr);
        std::fputs(body.c_str(), f);
        std::fclose(f);
        const auto r = run_to_completion("/bin/sh", {"-c", "'" + promtool + "' check metrics < '" + path + "'"}, 60s);
        ::unlink(path.c_str());
        CHECK_MESSAGE(r.status.ok(), "promtool check metrics: ", r.status.describe(), " ", r.out, r.err);
    } else {
        MESSAGE("promtool not installed (Debian: apt-get install prometheus): the format check is skipped");
    }
    REQUIRE(server.send_signal(SIGTERM));
    const auto status = server.wait_exit(15s);
    REQUIRE(status.has_value());
    CHECK(status->ok());
}

TEST_CASE("--metrics answers 404 elsewhere, 400 to garbage, 431 to an oversized head, and closes each time") {
    ServerProcess server({"--port", "0", "--metrics=127.0.0.1:0"});
    const std::uint16_t metrics = server.port(1);
    CHECK(http(metrics, "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
    CHECK(http(metrics, "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0) == 0);
    CHECK(http(metrics, "\x16\x03\x01 hello\r\n\r\n").rfind("HTTP/1.1 400 Bad Request\r\n", 0) == 0);
    const std::string huge = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(20000, 'a');
    CHECK(http(metrics, huge).rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0) == 0);
    // A head in pieces is waited for.
    Client slow = Client::storing(connect_to(metrics), "GET /metr");
    drive(slow, 100ms);
    CHECK(slow.stored.empty());
    slow.append("ics HTTP/1.1\r\n\r\n");
    slow.until_eof = true;
    drive(slow, 10s);
    CHECK(slow.stored.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(server.running());
}

}  // namespace
}  // namespace echoplex::test
