// render_metrics: names follow Prometheus's conventions (a unit suffix, _total on counters).
#include "metrics.hpp"

#include <fmt/format.h>

namespace echoplex {
namespace {

void add(std::string& out, std::string_view name, std::string_view type, std::string_view help, std::uint64_t value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
}

// A label value as the exposition format writes it: backslash, quote and newline escaped.
std::string label(std::string_view value) {
    std::string out;
    for (const char c : value) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

}  // namespace

std::string render_metrics(const ServerStats& s, const MetricsInfo& info) {
    std::string out;
    add(out, "echoplex_connections_accepted_total", "counter", "Connections accepted and served.", s.accepted);
    add(out, "echoplex_connections_refused_total", "counter",
        "Connections accepted and closed at once: over --max-connections, out of descriptors, beyond select's "
        "FD_SETSIZE, or while shutting down.",
        s.refused);
    add(out, "echoplex_connections_open", "gauge", "Connections open now.", s.open);
    add(out, "echoplex_connections_peak", "gauge", "The most connections open at once so far.", s.peak);
    add(out, "echoplex_received_bytes_total", "counter", "Bytes received from clients.", s.bytes_in);
    add(out, "echoplex_sent_bytes_total", "counter", "Bytes sent to clients.", s.bytes_out);
    add(out, "echoplex_backpressure_pauses_total", "counter",
        "Times a connection's reading paused because its queued output reached the high watermark.", s.paused);
    add(out, "echoplex_proxy_header_rejected_total", "counter",
        "Connections closed for an invalid, missing or late PROXY protocol header.", s.proxy_rejected);
    add(out, "echoplex_log_lines_dropped_total", "counter", "Log lines dropped because stderr was not taking them.",
        info.log_lines_dropped);
    out += fmt::format("# HELP process_start_time_seconds Start time of the process since the Unix epoch in seconds.\n"
                       "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {:.3f}\n",
                       info.start_time_s);
    out += fmt::format("# HELP echoplex_build_info The version and the event backend; always 1.\n"
                       "# TYPE echoplex_build_info gauge\nechoplex_build_info{{version=\"{}\",backend=\"{}\"}} 1\n",
                       label(info.version), label(info.backend));
    return out;
}

}  // namespace echoplex
