// The /metrics helpers.
#include "support/metrics_page.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "support/child_process.hpp"
#include "support/clients.hpp"
#include "support/doctest.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {

std::string http_exchange(std::uint16_t port, const std::string& request) {
    Client c = Client::storing(connect_to(port), request);
    c.until_eof = true;
    const auto r = drive(c, std::chrono::seconds(10));
    REQUIRE_MESSAGE(r.all_done, "no close after the response: ", c.describe());
    return c.stored;
}

std::string http_body(const std::string& response) {
    const auto end = response.find("\r\n\r\n");
    return end == std::string::npos ? std::string() : response.substr(end + 4);
}

std::string scrape(std::uint16_t port) {
    const std::string response = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    REQUIRE_MESSAGE(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0, "scrape answered: ", response.substr(0, 200));
    return http_body(response);
}

std::optional<double> sample_of(const std::string& exposition, const std::string& series) {
    std::istringstream lines(exposition);
    for (std::string line; std::getline(lines, line);) {
        if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
            return std::stod(line.substr(series.size() + 1));
        }
    }
    return std::nullopt;
}

SampleSum sum_of(const std::string& exposition, const std::string& name, const std::vector<std::string>& labels) {
    SampleSum out;
    std::istringstream lines(exposition);
    for (std::string line; std::getline(lines, line);) {
        if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0 || line.size() == name.size()) {
            continue;
        }
        const char after = line[name.size()];
        if (after != ' ' && after != '{') {
            continue;  // another metric whose name starts with this one
        }
        const auto value_at = line.rfind(' ');
        const std::string labels_part = line.substr(name.size(), value_at - name.size());
        bool all = true;
        for (const std::string& label : labels) {
            // A label is preceded by '{' or ',' and followed by ',' or '}'.
            all = all && (labels_part.find("{" + label + ",") != std::string::npos ||
                          labels_part.find("{" + label + "}") != std::string::npos ||
                          labels_part.find("," + label + ",") != std::string::npos ||
                          labels_part.find("," + label + "}") != std::string::npos);
        }
        if (all) {
            out.sum += std::stod(line.substr(value_at + 1));
            ++out.count;
        }
    }
    return out;
}

std::optional<std::string> promtool_problems(const std::string& exposition) {
    const std::string promtool = resolve_program("promtool");
    if (promtool.find('/') == std::string::npos) {
        return std::nullopt;
    }
    const std::string path = "/tmp/echoplex-metrics-" + std::to_string(::getpid()) + ".txt";
    std::FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs(exposition.c_str(), f);
    std::fclose(f);
    const auto r = run_to_completion("/bin/sh", {"-c", "'" + promtool + "' check metrics < '" + path + "'"},
                                     std::chrono::seconds(60));
    ::unlink(path.c_str());
    return r.status.ok() ? std::string() : r.status.describe() + " " + r.out + r.err;
}

}  // namespace echoplex::test
