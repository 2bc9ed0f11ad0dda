// Histogram: a fixed-size log-linear histogram of durations in nanoseconds, for latency
// percentiles with bounded relative error and no per-sample memory (HdrHistogram's idea, ours).
//
//   index 0..255      one bucket per nanosecond (exact)
//   index 256..       per power of two [2^e, 2^(e+1)), 128 equal sub-buckets: width/value < 1/128
//
// So any recorded value in range is reported within 0.4% (bucket midpoint), i.e. better than two
// significant digits, from 1 ns up to max_value (about 68.7 s); larger values are clamped.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace echoplex::testecho {

class Histogram {
public:
    static constexpr unsigned sub_bucket_bits = 7;                         // 128 sub-buckets per octave
    static constexpr unsigned linear_limit_bits = sub_bucket_bits + 1;     // values < 256 are exact
    static constexpr unsigned max_exponent = 35;                           // 2^36 ns ~ 68.7 s
    static constexpr std::uint64_t max_value = (std::uint64_t{1} << (max_exponent + 1)) - 1;
    static constexpr std::size_t bucket_count =
        (std::size_t{1} << linear_limit_bits) + (max_exponent - linear_limit_bits + 1) * (std::size_t{1} << sub_bucket_bits);

    // Records one value; values above max_value count in the last bucket (max() stays exact).
    void record(std::uint64_t nanoseconds) noexcept;
    // Adds every count of `other` (results of several processes or connections).
    void merge(const Histogram& other) noexcept;

    std::uint64_t count() const noexcept { return count_; }
    // Exact; 0 when empty.
    std::uint64_t min() const noexcept { return count_ == 0 ? 0 : min_; }
    std::uint64_t max() const noexcept { return max_; }
    double mean() const noexcept;
    // The value at or below which `percent` (0..100) of the records fall, within the relative
    // error above and clamped to [min, max]; 0 when empty.
    std::uint64_t percentile(double percent) const noexcept;
    // Records in the buckets up to and including `value`'s (all of them from max() up).
    std::uint64_t count_at_or_below(std::uint64_t value) const noexcept;
    // From the buckets' midpoints, as HdrHistogram computes it; 0 when empty.
    double stddev() const noexcept;

    // Compact text for passing a histogram between processes: "count min max sum i:n,i:n,...".
    std::string serialize() const;
    // Parses serialize()'s output; false (and *this unspecified) if the text is malformed.
    bool deserialize(std::string_view text);

    // Bucket arithmetic, public for tests.
    static std::size_t index_of(std::uint64_t value) noexcept;
    static std::uint64_t lowest_in(std::size_t index) noexcept;
    static std::uint64_t highest_in(std::size_t index) noexcept;

private:
    std::array<std::uint64_t, bucket_count> counts_{};
    std::uint64_t count_ = 0;
    std::uint64_t min_ = UINT64_MAX;
    std::uint64_t max_ = 0;
    // Sum in long double: 2^64 ns is 584 years, but a long run of many samples could get close.
    long double sum_ = 0;
};

}  // namespace echoplex::testecho
