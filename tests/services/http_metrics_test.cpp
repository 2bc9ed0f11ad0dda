// HttpMetrics::respond: the answer to each kind of request head, without a socket.
#include "echoplex/services/http_metrics.hpp"

#include <string>

#include "support/doctest.hpp"

namespace echoplex::services {
namespace {

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

TEST_CASE("GET /metrics is 200 with the exposition format's content type and the rendered body") {
    const HttpMetrics http([] { return std::string("up 1\n"); });
    const std::string r = http.respond("GET /metrics HTTP/1.1\r\nHost: localhost:9100\r\nAccept: */*");
    CHECK(status_line(r) == "HTTP/1.1 200 OK");
    CHECK(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos);
    CHECK(r.find("Content-Length: 5\r\n") != std::string::npos);
    CHECK(r.find("Connection: close\r\n") != std::string::npos);
    CHECK(r.ends_with("\r\n\r\nup 1\n"));
    CHECK(status_line(http.respond("GET /metrics?x=1 HTTP/1.0")) == "HTTP/1.1 200 OK");
    const std::string head = http.respond("HEAD /metrics HTTP/1.1");
    CHECK(status_line(head) == "HTTP/1.1 200 OK");
    CHECK(head.find("Content-Length: 5\r\n") != std::string::npos);
    CHECK(head.ends_with("\r\n\r\n"));  // no body
}

TEST_CASE("other paths are 404, other methods 405, anything else 400") {
    const HttpMetrics http([] { return std::string(); });
    CHECK(status_line(http.respond("GET / HTTP/1.1")) == "HTTP/1.1 404 Not Found");
    CHECK(status_line(http.respond("GET /metricsx HTTP/1.1")) == "HTTP/1.1 404 Not Found");
    CHECK(status_line(http.respond("POST /metrics HTTP/1.1")) == "HTTP/1.1 405 Method Not Allowed");
    for (const char* bad : {"", "GET", "GET /metrics", "GET /metrics HTTP/2.0", "GET  /metrics HTTP/1.1",
                            "\x16\x03\x01\x02\x00", "GET /metrics HTTP/1.1 extra"}) {
        CAPTURE(bad);
        CHECK(status_line(http.respond(bad)) == "HTTP/1.1 400 Bad Request");
    }
}

}  // namespace
}  // namespace echoplex::services
