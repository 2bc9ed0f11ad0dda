// The worker reports' format.
#include "worker_wire.hpp"

#include <charconv>

#include "echoplex/io/fmt.hpp"

namespace echoplex::worker_wire {
namespace {

// Every number of a report, in order, through one function for writing and reading alike.
template <typename Counts, typename Visit>
void each_number(Counts& counts, Visit&& visit) {
    visit(counts.peak);
    visit(counts.log_lines_dropped);
    visit(counts.loop.waits);
    visit(counts.loop.events);
    for (auto& n : counts.loop.waits_in_bucket) {
        visit(n);
    }
    for (auto& service : counts.services) {
        auto& s = service.stats;
        for (auto* field : {&s.accepted, &s.open, &s.peak, &s.bytes_in, &s.bytes_out, &s.paused, &s.proxy_rejected}) {
            visit(*field);
        }
        for (auto& n : s.refused) {
            visit(n);
        }
        for (auto& n : s.closed) {
            visit(n);
        }
    }
}

}  // namespace

std::string stats_report(std::string_view tag, const ProcessCounts& counts) {
    std::string line(tag);
    each_number(counts, [&](const std::uint64_t n) { line += fmt::format(" {}", n); });
    return line;
}

std::optional<ProcessCounts> parse_stats(std::string_view numbers, const std::vector<std::string>& services) {
    ProcessCounts counts;
    for (const std::string& name : services) {
        counts.services.push_back(ServiceStats{name, {}});
    }
    const char* at = numbers.data();
    const char* const end = numbers.data() + numbers.size();
    bool ok = true;
    each_number(counts, [&](std::uint64_t& n) {
        if (!ok || at == end || *at != ' ') {
            ok = false;
            return;
        }
        ++at;
        const auto [next, ec] = std::from_chars(at, end, n);
        ok = ec == std::errc{} && next != at;
        at = next;
    });
    if (!ok || at != end) {
        return std::nullopt;
    }
    return counts;
}

Report split_report(std::string_view line) noexcept {
    const auto blank = line.find(' ');
    if (blank == std::string_view::npos) {
        return {line, {}};
    }
    return {line.substr(0, blank), line.substr(blank)};
}

}  // namespace echoplex::worker_wire
