// Unit tests of testecho's report: the --procs result line, merging, fairness, the HdrHistogram
// distribution text, CSV, and JSON strings that stay valid whatever bytes they are given.
#include <string>

#include "report.hpp"
#include "support/doctest.hpp"

namespace echoplex::testecho {
namespace {

IntervalStats step(double t, std::uint64_t messages, std::uint64_t latency_ns) {
    IntervalStats i;
    i.t = t;
    i.messages = messages;
    i.bytes = messages * 10;
    i.errors = 0;
    i.open = 2;
    Histogram h;
    for (std::uint64_t k = 0; k < messages; ++k) {
        h.record(latency_ns);
    }
    i.latency = h.serialize();
    return i;
}

TEST_CASE("the result line carries every field to the parent") {
    RunResult r;
    r.messages = 10;
    r.bytes_sent = 190;
    r.bytes_received = 191;
    r.payload = 190;
    r.established = 3;
    r.idle_held = 1;
    r.duration_s = 1.25;
    r.latency.record(12345);
    r.connect.record(678);
    r.errors = {1, 2, 3, 4};
    r.first_error = "conn 2 (127.0.0.1:5) mismatch:\toffset 7";
    r.interrupted = true;
    r.per_connection = {{0, 6}, {1, 4}};
    r.intervals = {step(1.0, 6, 1000), step(1.5, 4, 2000000)};
    const auto back = parse_result(serialize_result(r));
    REQUIRE(back.has_value());
    CHECK(back->messages == 10);
    CHECK(back->bytes_sent == 190);
    CHECK(back->bytes_received == 191);
    CHECK(back->payload == 190);
    CHECK(back->established == 3);
    CHECK(back->idle_held == 1);
    CHECK(back->duration_s == doctest::Approx(1.25));
    CHECK(back->latency.count() == 1);
    CHECK(back->connect.max() == 678);
    CHECK(back->errors.total() == 10);
    CHECK(back->first_error == "conn 2 (127.0.0.1:5) mismatch: offset 7");
    CHECK(back->interrupted);
    CHECK(back->per_connection == r.per_connection);
    REQUIRE(back->intervals.size() == 2);
    CHECK(back->intervals[1].t == doctest::Approx(1.5));
    CHECK(back->intervals[1].messages == 4);
    CHECK(back->intervals[1].bytes == 40);
    CHECK(back->intervals[1].open == 2);
    CHECK(back->intervals[1].latency_histogram().count() == 4);
    CHECK_FALSE(parse_result("1\t2\t3").has_value());
    // A damaged interval or count is refused, not half read.
    std::string line = serialize_result(r);
    CHECK_FALSE(parse_result(line.replace(line.find("0:6"), 3, "0;6")).has_value());
}

TEST_CASE("merging results adds intervals step by step and joins the connections in id order") {
    RunResult a;
    a.intervals = {step(1.0, 5, 1000), step(2.0, 5, 1000)};
    a.per_connection = {{2, 5}, {0, 5}};
    RunResult b;
    b.intervals = {step(1.01, 3, 3000000)};
    b.per_connection = {{1, 3}};
    b.interrupted = true;
    a.merge(b);
    REQUIRE(a.intervals.size() == 2);
    CHECK(a.intervals[0].messages == 8);
    CHECK(a.intervals[0].t == doctest::Approx(1.01));
    CHECK(a.intervals[0].open == 4);
    CHECK(a.intervals[0].latency_histogram().count() == 8);
    CHECK(a.intervals[0].latency_histogram().max() == 3000000);
    CHECK(a.intervals[1].messages == 5);
    REQUIRE(a.per_connection.size() == 3);
    CHECK(a.per_connection[0].id == 0);
    CHECK(a.per_connection[2].id == 2);
    CHECK(a.interrupted);
}

TEST_CASE("fairness: the spread of messages per connection and Jain's index") {
    const Fairness even = fairness_of({{0, 10}, {1, 10}, {2, 10}, {3, 10}});
    CHECK(even.jain == doctest::Approx(1.0));
    CHECK(even.min == 10);
    CHECK(even.max == 10);
    // One connection did everything: 1/n.
    const Fairness starved = fairness_of({{0, 0}, {1, 0}, {2, 0}, {3, 40}});
    CHECK(starved.jain == doctest::Approx(0.25));
    REQUIRE(starved.slowest.size() == 3);
    CHECK(starved.slowest[0] == ConnectionCount{0, 0});
    CHECK(starved.p50 == 0);
    // (1+2+3+4)^2 / (4 * (1+4+9+16)) = 100 / 120
    const Fairness mixed = fairness_of({{7, 4}, {5, 1}, {6, 3}, {8, 2}});
    CHECK(mixed.jain == doctest::Approx(100.0 / 120.0));
    CHECK(mixed.slowest[0].id == 5);
    CHECK(mixed.p50 == 2);
}

TEST_CASE("the HdrHistogram distribution: header, steps to 100%, and a footer whose count is the samples'") {
    Histogram h;
    for (std::uint64_t v = 1; v <= 1000; ++v) {
        h.record(v * 1000);  // 1 us .. 1 ms
    }
    const std::string text = hdr_distribution(h);
    CHECK(text.rfind("       Value     Percentile TotalCount 1/(1-Percentile)\n\n", 0) == 0);
    CHECK(text.find("       0.001 0.000000000000          1           1.00\n") != std::string::npos);
    CHECK(text.find("#[Max     =        1.000, Total count    =         1000]\n") != std::string::npos);
    CHECK(text.find("#[Mean    =        0.500,") != std::string::npos);
    // The last step is 100% with the maximum and every sample.
    CHECK(text.find("       1.000 1.000000000000       1000\n#[Mean") != std::string::npos);
    // Steps rise: 0, 10, ..., 50, 55, ..., 75, 77.5, ...
    CHECK(text.find(" 0.100000000000 ") != std::string::npos);
    CHECK(text.find(" 0.550000000000 ") != std::string::npos);
    CHECK(text.find(" 0.775000000000 ") != std::string::npos);
    // Empty: no steps, a zero count.
    const std::string empty = hdr_distribution(Histogram{});
    CHECK(empty.find("Total count    =            0]") != std::string::npos);
}

TEST_CASE("CSV: one row per interval, empty latency cells when an interval had no samples") {
    RunResult r;
    r.intervals = {step(1.0, 2, 1500000), step(2.0, 0, 0)};
    CHECK(csv_intervals(r) ==
          "t,messages,bytes,errors,open,p50_ms,p99_ms,max_ms\n"
          "1.000,2,20,0,2,1.500,1.500,1.500\n"
          "2.000,0,0,0,2,,,\n");
}

TEST_CASE("json_string escapes quotes, backslashes and control characters, and keeps the output UTF-8") {
    CHECK(json_string("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\n\\u0001\"");
    CHECK(json_string("caf\xc3\xa9 \xe2\x82\xac") == "\"caf\xc3\xa9 \xe2\x82\xac\"");  // valid UTF-8 passes
    CHECK(json_string("\xff\xfe") == "\"\\ufffd\\ufffd\"");
    CHECK(json_string("\xc3") == "\"\\ufffd\"");              // a sequence cut short
    CHECK(json_string("\xc0\xaf") == "\"\\ufffd\\ufffd\"");   // an overlong '/'
    CHECK(json_string("\xed\xa0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate
}

}  // namespace
}  // namespace echoplex::testecho
