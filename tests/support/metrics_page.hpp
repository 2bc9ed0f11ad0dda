// The server's /metrics page as a test reads it: one scrape over loopback, and samples picked out
// of the exposition by name and labels.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace echoplex::test {

// Sends `request` to 127.0.0.1:port and returns everything the server sent until it closed
// (bounded by a deadline; fails the test if the server does not close).
std::string http_exchange(std::uint16_t port, const std::string& request);
// The body of an HTTP response (after its blank line), empty if there is none.
std::string http_body(const std::string& response);
// GET /metrics: the exposition.
std::string scrape(std::uint16_t port);

// The value of the sample written exactly as `series` ("name" or "name{a=\"1\",b=\"2\"}"), or
// nullopt when there is no such line.
std::optional<double> sample_of(const std::string& exposition, const std::string& series);
// The sum over every sample of metric `name` whose labels include each of `labels`
// ("service=\"echo\""), and how many samples that was.
struct SampleSum {
    double sum = 0;
    std::size_t count = 0;
};
SampleSum sum_of(const std::string& exposition, const std::string& name, const std::vector<std::string>& labels = {});

// Runs `promtool check metrics` on `exposition`; "" when it passes, else what it said. nullopt
// when promtool is not installed (Debian: apt-get install prometheus).
std::optional<std::string> promtool_problems(const std::string& exposition);

}  // namespace echoplex::test
