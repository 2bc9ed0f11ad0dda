// Unit tests of testecho's latency histogram: bucket arithmetic, the relative error bound,
// percentiles, merging and serialization.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "histogram.hpp"
#include "support/doctest.hpp"

namespace echoplex::testecho {
namespace {

TEST_CASE("every value falls in the bucket whose bounds contain it") {
    for (const std::uint64_t v : std::vector<std::uint64_t>{0, 1, 255, 256, 257, 511, 512, 1000, 123456789,
                                                             Histogram::max_value}) {
        const std::size_t i = Histogram::index_of(v);
        CHECK(i < Histogram::bucket_count);
        CHECK(Histogram::lowest_in(i) <= v);
        CHECK(v <= Histogram::highest_in(i));
    }
    CHECK(Histogram::index_of(Histogram::max_value) == Histogram::bucket_count - 1);
    CHECK(Histogram::index_of(UINT64_MAX) == Histogram::bucket_count - 1);
}

TEST_CASE("buckets tile the range without gaps or overlaps") {
    for (std::size_t i = 0; i + 1 < Histogram::bucket_count; ++i) {
        REQUIRE(Histogram::highest_in(i) + 1 == Histogram::lowest_in(i + 1));
        REQUIRE(Histogram::index_of(Histogram::lowest_in(i)) == i);
    }
}

TEST_CASE("bucket width stays under 1% of its values from 1 us to 60 s") {
    for (std::size_t i = Histogram::index_of(1000); i <= Histogram::index_of(60'000'000'000ULL); ++i) {
        const double low = static_cast<double>(Histogram::lowest_in(i));
        const double width = static_cast<double>(Histogram::highest_in(i) - Histogram::lowest_in(i) + 1);
        REQUIRE(width / low <= 0.01);
    }
}

TEST_CASE("percentiles of a known distribution are within 1%") {
    Histogram h;
    for (std::uint64_t v = 1; v <= 100'000; ++v) {
        h.record(v * 1000);  // 1 us .. 100 ms, uniform
    }
    CHECK(h.count() == 100'000);
    CHECK(h.min() == 1000);
    CHECK(h.max() == 100'000'000);
    CHECK(h.mean() == doctest::Approx(50'000'500.0));
    for (const double p : {50.0, 90.0, 99.0, 99.9}) {
        const double want = p / 100.0 * 100'000'000.0;
        const double got = static_cast<double>(h.percentile(p));
        CHECK_MESSAGE(std::abs(got - want) / want <= 0.01, "p", p, " got ", got, " want ", want);
    }
    CHECK(h.percentile(100) == h.max());
    CHECK(h.percentile(0) >= h.min());
}

TEST_CASE("random values: each percentile is within 1% of the exact order statistic") {
    std::mt19937_64 rng(42);
    std::lognormal_distribution<double> dist(11.0, 1.5);  // around 60 us, long tail
    std::vector<std::uint64_t> values;
    Histogram h;
    for (int i = 0; i < 20'000; ++i) {
        const auto v = static_cast<std::uint64_t>(dist(rng)) + 1000;
        values.push_back(v);
        h.record(v);
    }
    std::sort(values.begin(), values.end());
    for (const double p : {50.0, 90.0, 99.0, 99.9}) {
        const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
        const double want = static_cast<double>(values[rank - 1]);
        const double got = static_cast<double>(h.percentile(p));
        CHECK_MESSAGE(std::abs(got - want) / want <= 0.01, "p", p, " got ", got, " want ", want);
    }
}

TEST_CASE("an empty histogram reports zeros") {
    const Histogram h;
    CHECK(h.count() == 0);
    CHECK(h.min() == 0);
    CHECK(h.max() == 0);
    CHECK(h.mean() == 0.0);
    CHECK(h.percentile(99) == 0);
}

TEST_CASE("merging equals recording everything in one histogram") {
    Histogram a;
    Histogram b;
    Histogram all;
    for (std::uint64_t v = 1; v < 5000; v += 7) {
        (v % 2 == 0 ? a : b).record(v * 333);
        all.record(v * 333);
    }
    a.merge(b);
    CHECK(a.count() == all.count());
    CHECK(a.min() == all.min());
    CHECK(a.max() == all.max());
    for (const double p : {1.0, 50.0, 99.0, 99.9}) {
        CHECK(a.percentile(p) == all.percentile(p));
    }
}

TEST_CASE("serialize and deserialize round-trip; malformed text is refused") {
    Histogram h;
    for (const std::uint64_t v : std::vector<std::uint64_t>{5, 5, 900, 70'000, 3'000'000'000}) {
        h.record(v);
    }
    Histogram back;
    REQUIRE(back.deserialize(h.serialize()));
    CHECK(back.count() == h.count());
    CHECK(back.min() == h.min());
    CHECK(back.max() == h.max());
    CHECK(back.percentile(50) == h.percentile(50));
    CHECK(back.serialize() == h.serialize());

    Histogram empty;
    REQUIRE(back.deserialize(empty.serialize()));
    CHECK(back.count() == 0);

    CHECK_FALSE(back.deserialize(""));
    CHECK_FALSE(back.deserialize("2 1 1 2 1:1"));                 // counts do not add up
    CHECK_FALSE(back.deserialize("1 1 1 1 999999:1"));            // bucket out of range
    CHECK_FALSE(back.deserialize("1 1 1 1 x"));
}

}  // namespace
}  // namespace echoplex::testecho
