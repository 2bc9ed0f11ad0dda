// --metrics end to end: the server's own /metrics page, scraped over loopback while it serves,
// and checked by promtool (Debian's prometheus package) when it is installed. Registered per
// backend; the --workers case starts its own master, so there is no separate 2-worker run.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "support/child_process.hpp"
#include "support/clients.hpp"
#include "support/doctest.hpp"
#include "support/metrics_page.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

std::string metric_family_check(const std::string& body) {
    if (const auto problems = promtool_problems(body)) {
        return *problems;
    }
    MESSAGE("promtool not installed (Debian: apt-get install prometheus): the format check is skipped");
    return {};
}

// Asks for stats lines until `until` holds for one (bounded), failing the test otherwise.
void await_stats(ServerProcess& server, const std::function<bool(const Stats&)>& until) {
    const auto seen = server.ask_stats_until(until);
    REQUIRE_MESSAGE((seen && until(*seen)), "the server's stats never got there; stderr: ", server.stderr_text());
}

// SIGTERM: the server drains and exits 0.
void stop_cleanly(ServerProcess& server) {
    REQUIRE(server.send_signal(SIGTERM));
    const auto status = server.wait_exit(15s);
    REQUIRE(status.has_value());
    CHECK(status->ok());
}

// The value of one sample, failing the test when the page has no such line.
double sample(const std::string& exposition, const std::string& series) {
    const auto value = sample_of(exposition, series);
    REQUIRE_MESSAGE(value.has_value(), "no sample ", series, " in:\n", exposition);
    return *value;
}

// The loop's histogram of events per wait is one: cumulative buckets that never fall, +Inf and
// _count equal, _sum at least the events the clients caused.
void check_loop_histogram(const std::string& body, const std::string& worker_label, double at_least_events) {
    const std::string open = worker_label.empty() ? "{" : "{" + worker_label + ",";
    double previous = 0;
    for (const char* le : {"0", "1", "2", "4", "8", "16", "64", "256", "+Inf"}) {
        const double bucket = sample(body, "echoplex_loop_events_per_wait_bucket" + open + "le=\"" + le + "\"}");
        CHECK(bucket >= previous);
        previous = bucket;
    }
    const std::string labels = worker_label.empty() ? "" : "{" + worker_label + "}";
    CHECK(sample(body, "echoplex_loop_events_per_wait_count" + labels) == previous);
    CHECK(previous > 0);
    CHECK(sample(body, "echoplex_loop_events_per_wait_sum" + labels) >= at_least_events);
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
    const std::string response = http_exchange(metrics, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(response.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
    const std::string body = http_body(response);
    const std::string echo_label = "{service=\"echo\"}";
    CHECK(sample(body, "echoplex_connections_accepted_total" + echo_label) == 3);
    CHECK(sample(body, "echoplex_connections_open" + echo_label) == 0);
    // One client after another, but the server may see a close after the next connect.
    CHECK(sample(body, "echoplex_connections_peak" + echo_label) >= 1);
    CHECK(sample(body, "echoplex_connections_peak" + echo_label) <= 3);
    CHECK(sum_of(body, "echoplex_connections_refused_total").sum == 0);
    CHECK(sum_of(body, "echoplex_connections_refused_total").count == 5);  // every cause, zeros too
    CHECK(sample(body, "echoplex_connections_closed_total{service=\"echo\",reason=\"client_closed\"}") == 3);
    CHECK(sum_of(body, "echoplex_connections_closed_total").sum == 3);
    CHECK(sample(body, "echoplex_received_bytes_total" + echo_label) == 3000);
    CHECK(sample(body, "echoplex_sent_bytes_total" + echo_label) == 3000);
    CHECK(sample(body, "echoplex_log_lines_dropped_total") == 0);
    // Each client was at least two events: its bytes, then its EOF (accepts may come in one).
    check_loop_histogram(body, "", 6);
    CHECK(sample(body, "process_start_time_seconds") > 1.7e9);
    CHECK(body.find("# TYPE echoplex_connections_accepted_total counter\n") != std::string::npos);
    CHECK(body.find("# TYPE echoplex_connections_open gauge\n") != std::string::npos);
    CHECK(body.find("# TYPE echoplex_loop_events_per_wait histogram\n") != std::string::npos);
    CHECK(body.find("echoplex_build_info{version=\"") != std::string::npos);
    CHECK(body.find("backend=\"" + std::string(backend_name(backend_under_test())) + "\"} 1\n") != std::string::npos);
    // No worker label and no worker families in one process.
    CHECK(body.find("worker=") == std::string::npos);
    CHECK_FALSE(sample_of(body, "echoplex_workers").has_value());
    // A second scrape: the first was not a client of the echo port.
    CHECK(sample(scrape(metrics), "echoplex_connections_accepted_total" + echo_label) == 3);
    CHECK(metric_family_check(body) == "");
    stop_cleanly(server);
}

TEST_CASE("--metrics per service: refusals by cause and closes by reason land on the service that had them") {
    ServerProcess server({"--port", "0", "--port", "0/discard", "--metrics=127.0.0.1:0", "--max-connections=1",
                          "--idle-timeout=200ms"});
    REQUIRE(server.services() == std::vector<std::string>{"echo", "discard", "metrics"});
    const std::uint16_t echo = server.port(0);
    const std::uint16_t discard = server.port(1);
    const std::uint16_t metrics = server.port(2);
    {  // echoed, then closed by the client
        Client c = Client::verifying(connect_to(echo), random_bytes(500, 95));
        REQUIRE_MESSAGE(drive(c, 10s).all_done, c.describe());
    }
    await_stats(server, [](const Stats& s) { return s.open == 0 && s.accepted == 1; });
    // A discard client holds the one connection allowed; an echo client is refused meanwhile.
    const UniqueFd holder = connect_to(discard);
    write_all(holder.get(), std::string(700, 'd'));  // nothing comes back from discard
    await_stats(server, [](const Stats& s) { return s.open == 1 && s.bytes_in == 1200; });
    Client refused = Client::storing(connect_to(echo));
    refused.until_eof = true;
    drive(refused, 10s);
    CHECK((refused.eof || refused.error == ECONNRESET));
    // The holder says nothing more: the idle timeout closes it.
    await_stats(server, [](const Stats& s) { return s.open == 0 && s.refused == 1; });
    const std::string body = scrape(metrics);
    CHECK(sample(body, "echoplex_connections_accepted_total{service=\"echo\"}") == 1);
    CHECK(sample(body, "echoplex_connections_accepted_total{service=\"discard\"}") == 1);
    CHECK(sample(body, "echoplex_connections_refused_total{service=\"echo\",cause=\"max_connections\"}") == 1);
    CHECK(sum_of(body, "echoplex_connections_refused_total", {"service=\"discard\""}).sum == 0);
    CHECK(sample(body, "echoplex_connections_closed_total{service=\"echo\",reason=\"client_closed\"}") == 1);
    CHECK(sample(body, "echoplex_connections_closed_total{service=\"discard\",reason=\"idle_timeout\"}") == 1);
    CHECK(sum_of(body, "echoplex_connections_closed_total").sum == 2);
    CHECK(sample(body, "echoplex_received_bytes_total{service=\"echo\"}") == 500);
    CHECK(sample(body, "echoplex_sent_bytes_total{service=\"echo\"}") == 500);
    CHECK(sample(body, "echoplex_received_bytes_total{service=\"discard\"}") == 700);
    CHECK(sample(body, "echoplex_sent_bytes_total{service=\"discard\"}") == 0);
    CHECK(metric_family_check(body) == "");
}

TEST_CASE("--metrics with --workers: the master serves every worker's counts, labelled, and counts restarts") {
    ServerProcess server({"--port", "0", "--workers=2", "--metrics=127.0.0.1:0"});
    REQUIRE(server.services() == std::vector<std::string>{"echo", "metrics"});
    const std::uint16_t echo = server.port(0);
    const std::uint16_t metrics = server.port(1);
    std::vector<Client> clients;
    for (int i = 0; i < 40; ++i) {
        clients.push_back(Client::verifying(connect_to(echo), random_bytes(1000, 200 + static_cast<std::uint64_t>(i))));
    }
    const auto r = drive(clients, 20s);
    REQUIRE_MESSAGE(r.all_done, r.describe());
    clients.clear();
    // SIGUSR1 makes every worker report now; the page shows those reports.
    await_stats(server, [](const Stats& s) { return s.open == 0 && s.accepted == 40; });
    std::string body = scrape(metrics);
    CHECK(sample(body, "echoplex_workers") == 2);
    CHECK(sample(body, "echoplex_worker_restarts_total") == 0);
    const auto accepted = sum_of(body, "echoplex_connections_accepted_total", {"service=\"echo\""});
    CHECK(accepted.count == 2);  // one series per worker
    CHECK(accepted.sum == 40);
    CHECK(sample_of(body, "echoplex_connections_accepted_total{service=\"echo\",worker=\"1\"}").has_value());
    CHECK(sample_of(body, "echoplex_connections_accepted_total{service=\"echo\",worker=\"2\"}").has_value());
    CHECK(sum_of(body, "echoplex_connections_closed_total", {"reason=\"client_closed\""}).sum == 40);
    CHECK(sum_of(body, "echoplex_received_bytes_total").sum == 40000);
    CHECK(sum_of(body, "echoplex_sent_bytes_total").sum == 40000);
    CHECK(sample(body, "echoplex_log_lines_dropped_total{worker=\"master\"}") == 0);
    // Each worker's own loop: its clients' bytes and EOFs are its events (split by the kernel's
    // hash, so only the sum is known).
    check_loop_histogram(body, "worker=\"1\"", 0);
    check_loop_histogram(body, "worker=\"2\"", 0);
    CHECK(sum_of(body, "echoplex_loop_events_per_wait_sum").sum >= 2 * 40);
    CHECK(metric_family_check(body) == "");

    // A worker killed keeps what it reported (counters never fall) and counts as a restart.
    const auto pids = server.worker_pids();
    REQUIRE(pids.size() == 2);
    REQUIRE(::kill(pids[0], SIGKILL) == 0);
    REQUIRE(server.wait_stderr([](const std::string& err) { return err.find("starting another") != std::string::npos; }, 10s));
    body = scrape(metrics);
    CHECK(sample(body, "echoplex_worker_restarts_total") == 1);
    CHECK(sum_of(body, "echoplex_connections_accepted_total").sum == 40);
    CHECK(sum_of(body, "echoplex_connections_open").sum == 0);
    CHECK(metric_family_check(body) == "");
    stop_cleanly(server);
}

TEST_CASE("--metrics answers 404 elsewhere, 400 to garbage, 431 to an oversized head, and closes each time") {
    ServerProcess server({"--port", "0", "--metrics=127.0.0.1:0"});
    const std::uint16_t metrics = server.port(1);
    CHECK(http_exchange(metrics, "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
    CHECK(http_exchange(metrics, "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0) == 0);
    CHECK(http_exchange(metrics, "\x16\x03\x01 hello\r\n\r\n").rfind("HTTP/1.1 400 Bad Request\r\n", 0) == 0);
    const std::string huge = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(20000, 'a');
    const std::string refused = http_exchange(metrics, huge);  // read whole: beyond the input limit too
    CHECK_MESSAGE(refused.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0) == 0, refused);
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
