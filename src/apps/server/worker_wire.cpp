// The worker reports' format.
#include "worker_wire.hpp"

#include <array>
#include <charconv>

#include <fmt/format.h>

namespace echoplex::worker_wire {
namespace {

constexpr std::size_t fields = 8;

std::array<std::uint64_t*, fields> fields_of(ServerStats& s) {
    return {&s.accepted, &s.refused, &s.open, &s.peak, &s.bytes_in, &s.bytes_out, &s.paused, &s.proxy_rejected};
}

}  // namespace

std::string stats_report(std::string_view tag, const ServerStats& stats) {
    ServerStats copy = stats;
    std::string line(tag);
    for (const std::uint64_t* field : fields_of(copy)) {
        line += fmt::format(" {}", *field);
    }
    return line;
}

std::optional<ServerStats> parse_stats(std::string_view numbers) {
    ServerStats stats;
    const char* at = numbers.data();
    const char* const end = numbers.data() + numbers.size();
    for (std::uint64_t* field : fields_of(stats)) {
        if (at == end || *at != ' ') {
            return std::nullopt;
        }
        ++at;
        const auto [next, ec] = std::from_chars(at, end, *field);
        if (ec != std::errc{} || next == at) {
            return std::nullopt;
        }
        at = next;
    }
    if (at != end) {
        return std::nullopt;
    }
    return stats;
}

Report split_report(std::string_view line) noexcept {
    const auto blank = line.find(' ');
    if (blank == std::string_view::npos) {
        return {line, {}};
    }
    return {line.substr(0, blank), line.substr(blank)};
}

}  // namespace echoplex::worker_wire
