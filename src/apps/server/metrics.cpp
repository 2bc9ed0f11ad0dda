// render_metrics: names follow Prometheus's conventions (a unit suffix, _total on counters); one
// # HELP and # TYPE per family, then a sample per service (and worker).
#include "metrics.hpp"

#include <algorithm>
#include <functional>

#include "echoplex/io/fmt.hpp"

namespace echoplex {
namespace {

// A label value as the exposition format writes it: backslash, quote and newline escaped.
std::string escaped(std::string_view value) {
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

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

// `labels` already formatted ("service=\"echo\",worker=\"1\""), or empty.
void sample(std::string& out, std::string_view name, const std::string& labels, std::uint64_t value) {
    if (labels.empty()) {
        out += fmt::format("{} {}\n", name, value);
    } else {
        out += fmt::format("{}{{{}}} {}\n", name, labels, value);
    }
}

std::string joined(std::string a, const std::string& b) {
    if (a.empty()) {
        return b;
    }
    if (!b.empty()) {
        a += ',';
        a += b;
    }
    return a;
}

class Renderer {
public:
    Renderer(const std::vector<ProcessCounts>& sources, std::string& out) : sources_(sources), out_(out) {}

    // The worker label of source `i`, or nothing for a single process.
    std::string worker_label(std::size_t i) const {
        return workers_ ? fmt::format("worker=\"{}\"", i + 1) : std::string();
    }
    void set_workers(bool on) { workers_ = on; }

    // One sample per (source, service) of the value `get` picks.
    void per_service(std::string_view name, std::string_view type, std::string_view help,
                     const std::function<std::uint64_t(const ServerStats&)>& get) {
        family(out_, name, type, help);
        each_service([&](const std::string& labels, const ServerStats& s) { sample(out_, name, labels, get(s)); });
    }

    // A counter family with one sample per (source, service, kind): `key="name_of(k)"` for each of
    // `kinds` kinds.
    void by_kind(std::string_view name, std::string_view help, std::string_view key, std::size_t kinds,
                 const std::function<std::string_view(std::size_t)>& name_of,
                 const std::function<std::uint64_t(const ServerStats&, std::size_t)>& get) {
        family(out_, name, "counter", help);
        each_service([&](const std::string& labels, const ServerStats& s) {
            for (std::size_t k = 0; k < kinds; ++k) {
                sample(out_, name, joined(labels, fmt::format("{}=\"{}\"", key, name_of(k))), get(s, k));
            }
        });
    }

    void each_service(const std::function<void(const std::string& labels, const ServerStats&)>& fn) const {
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            for (const ServiceStats& service : sources_[i].services) {
                fn(joined(fmt::format("service=\"{}\"", escaped(service.service)), worker_label(i)), service.stats);
            }
        }
    }

    void loop_histogram() {
        constexpr std::string_view name = "echoplex_loop_events_per_wait";
        family(out_, name, "histogram",
               "Events (ready descriptors and completions) each wait of the event loop's backend returned; "
               "_count is the loop's iterations.");
        for (std::size_t i = 0; i < sources_.size(); ++i) {
            const LoopStats& loop = sources_[i].loop;
            const std::string worker = worker_label(i);
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < LoopStats::bucket_bounds.size(); ++b) {
                cumulative += loop.waits_in_bucket[b];
                sample(out_, fmt::format("{}_bucket", name),
                       joined(worker, fmt::format("le=\"{}\"", LoopStats::bucket_bounds[b])), cumulative);
            }
            sample(out_, fmt::format("{}_bucket", name), joined(worker, "le=\"+Inf\""), loop.waits);
            sample(out_, fmt::format("{}_sum", name), worker, loop.events);
            sample(out_, fmt::format("{}_count", name), worker, loop.waits);
        }
    }

private:
    const std::vector<ProcessCounts>& sources_;
    std::string& out_;
    bool workers_ = false;
};

}  // namespace

ServerStats ProcessCounts::total() const {
    ServerStats sum;
    for (const ServiceStats& service : services) {
        sum += service.stats;
    }
    sum.peak = peak;
    return sum;
}

ProcessCounts counts_of(const TcpServer& server, const EventLoop& loop, std::uint64_t log_lines_dropped) {
    return {server.service_stats(), server.stats().peak, loop.stats(), log_lines_dropped};
}

ProcessCounts followed_by(const ProcessCounts& earlier, const ProcessCounts& later) {
    ProcessCounts out = earlier.services.empty() ? later : earlier;
    if (earlier.services.empty() || later.services.empty()) {
        return out;
    }
    for (std::size_t i = 0; i < out.services.size() && i < later.services.size(); ++i) {
        ServerStats& s = out.services[i].stats;
        const ServerStats& next = later.services[i].stats;
        const std::uint64_t peak = std::max(s.peak, next.peak);
        s += next;
        s.open = next.open;
        s.peak = peak;
    }
    out.peak = std::max(earlier.peak, later.peak);
    out.loop += later.loop;
    out.log_lines_dropped += later.log_lines_dropped;
    return out;
}

ProcessCounts closed_out(ProcessCounts counts) {
    for (ServiceStats& service : counts.services) {
        service.stats.open = 0;
    }
    return counts;
}

std::string render_metrics(const std::vector<ProcessCounts>& sources, const MetricsInfo& info) {
    std::string out;
    Renderer r(sources, out);
    r.set_workers(info.workers.has_value());
    r.per_service("echoplex_connections_accepted_total", "counter", "Connections accepted and served.",
                  [](const ServerStats& s) { return s.accepted; });

    r.by_kind("echoplex_connections_refused_total",
              "Connections closed at once, by cause: over --max-connections, out of descriptors, beyond select's "
              "FD_SETSIZE, while shutting down; proxy_header: accepted, then closed for an invalid, missing or late "
              "PROXY protocol header.",
              "cause", refusal_cause_count,
              [](std::size_t c) { return refusal_cause_name(static_cast<RefusalCause>(c)); },
              [](const ServerStats& s, std::size_t c) { return s.refused[c]; });
    // Not a RefusalCause (the connection was accepted): its own sample in the same family.
    r.each_service([&](const std::string& labels, const ServerStats& s) {
        sample(out, "echoplex_connections_refused_total", joined(labels, "cause=\"proxy_header\""), s.proxy_rejected);
    });
    r.by_kind("echoplex_connections_closed_total",
              "Connections closed after being served, by reason: client_closed, reset, idle_timeout, drained, "
              "drain_timeout, linger_timeout (our FIN was not answered), finished (the protocol was done), protocol "
              "(the protocol closed it), limit (input or output limit), error (a system call failed).",
              "reason", close_reason_count,
              [](std::size_t c) { return close_reason_name(static_cast<CloseReason>(c)); },
              [](const ServerStats& s, std::size_t c) { return s.closed[c]; });

    r.per_service("echoplex_connections_open", "gauge", "Connections open now.",
                  [](const ServerStats& s) { return s.open; });
    r.per_service("echoplex_connections_peak", "gauge", "The most connections open at once so far.",
                  [](const ServerStats& s) { return s.peak; });
    r.per_service("echoplex_received_bytes_total", "counter", "Bytes received from clients.",
                  [](const ServerStats& s) { return s.bytes_in; });
    r.per_service("echoplex_sent_bytes_total", "counter", "Bytes sent to clients.",
                  [](const ServerStats& s) { return s.bytes_out; });
    r.per_service("echoplex_backpressure_pauses_total", "counter",
                  "Times a connection's reading paused because its queued output reached the high watermark.",
                  [](const ServerStats& s) { return s.paused; });
    r.loop_histogram();

    family(out, "echoplex_log_lines_dropped_total", "counter", "Log lines dropped because stderr was not taking them.");
    if (info.workers) {
        sample(out, "echoplex_log_lines_dropped_total", "worker=\"master\"", info.log_lines_dropped);
        for (std::size_t i = 0; i < sources.size(); ++i) {
            sample(out, "echoplex_log_lines_dropped_total", r.worker_label(i), sources[i].log_lines_dropped);
        }
        family(out, "echoplex_workers", "gauge", "Worker processes the master keeps running (--workers).");
        sample(out, "echoplex_workers", {}, *info.workers);
        family(out, "echoplex_worker_restarts_total", "counter", "Workers that died and were replaced.");
        sample(out, "echoplex_worker_restarts_total", {}, info.restarts);
    } else {
        sample(out, "echoplex_log_lines_dropped_total", {}, info.log_lines_dropped);
    }
    out += fmt::format("# HELP process_start_time_seconds Start time of the process since the Unix epoch in seconds.\n"
                       "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {:.3f}\n",
                       info.start_time_s);
    out += fmt::format("# HELP echoplex_build_info The version and the event backend; always 1.\n"
                       "# TYPE echoplex_build_info gauge\nechoplex_build_info{{version=\"{}\",backend=\"{}\"}} 1\n",
                       escaped(info.version), escaped(info.backend));
    return out;
}

}  // namespace echoplex
