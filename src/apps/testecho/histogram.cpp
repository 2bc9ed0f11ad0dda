// Histogram implementation.
#include "histogram.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>

#include "echoplex/io/fmt.hpp"

namespace echoplex::testecho {

std::size_t Histogram::index_of(std::uint64_t value) noexcept {
    value = std::min(value, max_value);
    constexpr std::uint64_t linear_limit = std::uint64_t{1} << linear_limit_bits;
    if (value < linear_limit) {
        return static_cast<std::size_t>(value);
    }
    const unsigned exponent = static_cast<unsigned>(std::bit_width(value)) - 1;  // >= linear_limit_bits
    const unsigned shift = exponent - sub_bucket_bits;
    const std::uint64_t sub = (value >> shift) - (std::uint64_t{1} << sub_bucket_bits);  // 0..127
    return static_cast<std::size_t>(linear_limit + (exponent - linear_limit_bits) * (std::uint64_t{1} << sub_bucket_bits) + sub);
}

std::uint64_t Histogram::lowest_in(std::size_t index) noexcept {
    constexpr std::size_t linear_limit = std::size_t{1} << linear_limit_bits;
    if (index < linear_limit) {
        return index;
    }
    const std::size_t rest = index - linear_limit;
    const unsigned exponent = static_cast<unsigned>(rest >> sub_bucket_bits) + linear_limit_bits;
    const std::uint64_t sub = (rest & ((std::size_t{1} << sub_bucket_bits) - 1)) + (std::uint64_t{1} << sub_bucket_bits);
    return sub << (exponent - sub_bucket_bits);
}

std::uint64_t Histogram::highest_in(std::size_t index) noexcept {
    return index + 1 >= bucket_count ? max_value : lowest_in(index + 1) - 1;
}

void Histogram::record(std::uint64_t nanoseconds) noexcept {
    ++counts_[index_of(nanoseconds)];
    ++count_;
    min_ = std::min(min_, nanoseconds);
    max_ = std::max(max_, nanoseconds);
    sum_ += static_cast<long double>(nanoseconds);
}

void Histogram::merge(const Histogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) {
        counts_[i] += other.counts_[i];
    }
    count_ += other.count_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
    sum_ += other.sum_;
}

double Histogram::mean() const noexcept {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_ / static_cast<long double>(count_));
}

std::uint64_t Histogram::percentile(double percent) const noexcept {
    if (count_ == 0) {
        return 0;
    }
    percent = std::clamp(percent, 0.0, 100.0);
    // The rank of the value wanted, 1-based: the smallest value with at least this many at or below it.
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(percent / 100.0 * static_cast<double>(count_))));
    if (rank >= count_) {
        return max_;  // the top rank is the largest value, which is kept exactly
    }
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
        seen += counts_[i];
        if (seen >= rank) {
            // The midpoint halves the worst-case error of either edge.
            const std::uint64_t mid = lowest_in(i) + (highest_in(i) - lowest_in(i)) / 2;
            return std::clamp(mid, min(), max_);
        }
    }
    return max_;
}

std::uint64_t Histogram::count_at_or_below(std::uint64_t value) const noexcept {
    if (value >= max_) {
        return count_;
    }
    std::uint64_t seen = 0;
    const std::size_t last = index_of(value);
    for (std::size_t i = 0; i <= last; ++i) {
        seen += counts_[i];
    }
    return seen;
}

double Histogram::stddev() const noexcept {
    if (count_ == 0) {
        return 0;
    }
    const long double mean = sum_ / static_cast<long double>(count_);
    long double squares = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
        if (counts_[i] != 0) {
            const long double mid = static_cast<long double>(lowest_in(i) + (highest_in(i) - lowest_in(i)) / 2);
            squares += static_cast<long double>(counts_[i]) * (mid - mean) * (mid - mean);
        }
    }
    return static_cast<double>(std::sqrt(squares / static_cast<long double>(count_)));
}

std::string Histogram::serialize() const {
    std::string out = fmt::format("{} {} {} {:.0f}", count_, min(), max_, static_cast<double>(sum_));
    char sep = ' ';
    for (std::size_t i = 0; i < bucket_count; ++i) {
        if (counts_[i] != 0) {
            out += fmt::format("{}{}:{}", sep, i, counts_[i]);
            sep = ',';
        }
    }
    if (sep == ' ') {
        out += " -";
    }
    return out;
}

namespace {

// Reads one unsigned number ending at `stop` (or the end); advances `text` past the separator.
bool take_number(std::string_view& text, char stop, std::uint64_t& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{}) {
        return false;
    }
    text.remove_prefix(static_cast<std::size_t>(end - text.data()));
    if (text.empty()) {
        return true;
    }
    if (text.front() != stop) {
        return false;
    }
    text.remove_prefix(1);
    return true;
}

}  // namespace

bool Histogram::deserialize(std::string_view text) {
    *this = Histogram{};
    std::uint64_t count = 0;
    std::uint64_t min = 0;
    std::uint64_t max = 0;
    std::uint64_t sum = 0;
    if (!take_number(text, ' ', count) || !take_number(text, ' ', min) || !take_number(text, ' ', max) ||
        !take_number(text, ' ', sum)) {
        return false;
    }
    std::uint64_t total = 0;
    if (text != "-") {
        while (!text.empty()) {
            std::uint64_t index = 0;
            std::uint64_t n = 0;
            if (!take_number(text, ':', index) || !take_number(text, ',', n) || index >= bucket_count) {
                return false;
            }
            counts_[index] += n;
            total += n;
        }
    }
    if (total != count) {
        return false;
    }
    count_ = count;
    min_ = count == 0 ? UINT64_MAX : min;
    max_ = max;
    sum_ = static_cast<long double>(sum);
    return true;
}

}  // namespace echoplex::testecho
