// Unit tests of testecho's report: the --procs result line and JSON string escaping.
#include <string>

#include "report.hpp"
#include "support/doctest.hpp"

namespace echoplex::testecho {
namespace {

TEST_CASE("the result line carries every field to the parent") {
    RunResult r;
    r.messages = 10;
    r.bytes_sent = 190;
    r.bytes_received = 191;
    r.payload_received = 190;
    r.established = 3;
    r.idle_held = 1;
    r.duration_s = 1.25;
    r.latency.record(12345);
    r.connect.record(678);
    r.errors = {1, 2, 3, 4};
    r.first_error = "conn 2 (127.0.0.1:5) mismatch:\toffset 7";
    const auto back = parse_result(serialize_result(r));
    REQUIRE(back.has_value());
    CHECK(back->messages == 10);
    CHECK(back->bytes_sent == 190);
    CHECK(back->bytes_received == 191);
    CHECK(back->payload_received == 190);
    CHECK(back->established == 3);
    CHECK(back->idle_held == 1);
    CHECK(back->duration_s == doctest::Approx(1.25));
    CHECK(back->latency.count() == 1);
    CHECK(back->connect.max() == 678);
    CHECK(back->errors.total() == 10);
    CHECK(back->first_error == "conn 2 (127.0.0.1:5) mismatch: offset 7");
    CHECK_FALSE(parse_result("1\t2\t3").has_value());
}

TEST_CASE("json_string escapes quotes, backslashes and control characters") {
    CHECK(json_string("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\n\\u0001\"");
}

}  // namespace
}  // namespace echoplex::testecho
