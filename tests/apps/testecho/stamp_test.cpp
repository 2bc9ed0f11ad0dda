// Unit tests of the stamped-reply decoder (the book's 'Echo=>DATA at <ctime>' form).
#include <string>
#include <string_view>

#include "stamp.hpp"
#include "support/doctest.hpp"

namespace echoplex::testecho {
namespace {

std::string stamped(const std::string& data) { return "Echo=>" + data + " at Sun Jun 18 23:49:23 2000"; }

TEST_CASE("stamped chunks decode to their data, however the bytes arrive") {
    const std::string stream = stamped("Hello ") + stamped("network") + stamped(" world");
    for (std::size_t step : {std::size_t{1}, std::size_t{3}, std::size_t{7}, stream.size()}) {
        StampDecoder d;
        std::string data;
        for (std::size_t i = 0; i < stream.size(); i += step) {
            REQUIRE(d.feed(std::string_view(stream).substr(i, step), data));
        }
        CHECK(data == "Hello network world");
        CHECK(d.pending() == 0);
    }
}

TEST_CASE("a day of the month padded with a space is a valid stamp") {
    StampDecoder d;
    std::string data;
    REQUIRE(d.feed("Echo=>x at Mon Jun  5 01:02:03 2023", data));
    CHECK(data == "x");
}

TEST_CASE("' at ' inside the data is not taken for the stamp") {
    StampDecoder d;
    std::string data;
    REQUIRE(d.feed(stamped("meet at noon at the station"), data));
    CHECK(data == "meet at noon at the station");
}

TEST_CASE("an incomplete stamp is held back until it completes") {
    StampDecoder d;
    std::string data;
    REQUIRE(d.feed("Echo=>abc at Sun Jun 18", data));
    CHECK(data.empty());
    REQUIRE(d.feed(" 23:49:23 2000Echo=>d", data));
    CHECK(data == "abc");
    CHECK(d.pending() == 7);
}

TEST_CASE("a reply that is not stamped is an error") {
    StampDecoder d;
    std::string data;
    CHECK_FALSE(d.feed("Hello network world", data));
    CHECK(d.error().find("Echo=>") != std::string::npos);
    CHECK_FALSE(d.feed(stamped("x"), data));  // stays failed
}

}  // namespace
}  // namespace echoplex::testecho
