// Report formatting and the --procs result line.
#include "report.hpp"

#include <algorithm>
#include <charconv>
#include <vector>

#include <fmt/format.h>

namespace echoplex::testecho {
namespace {

constexpr double mib = 1024.0 * 1024.0;

double ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }

struct Summary {
    double avg, min, p50, p90, p99, p99_9, max;
};

Summary summarize(const Histogram& h) {
    return {h.mean() / 1e6, ms(h.min()), ms(h.percentile(50)), ms(h.percentile(90)),
            ms(h.percentile(99)), ms(h.percentile(99.9)), ms(h.max())};
}

std::string table(std::string_view title, const Histogram& h) {
    const Summary s = summarize(h);
    return fmt::format("  {} (msec, {} samples):\n"
                       "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n"
                       "  {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f}\n",
                       title, h.count(), "avg", "min", "p50", "p90", "p99", "p99.9", "max", s.avg, s.min, s.p50,
                       s.p90, s.p99, s.p99_9, s.max);
}

std::string json_summary(const Histogram& h) {
    const Summary s = summarize(h);
    return fmt::format(R"({{"count":{},"avg":{:.3f},"min":{:.3f},"p50":{:.3f},"p90":{:.3f},"p99":{:.3f},"p99_9":{:.3f},"max":{:.3f}}})",
                       h.count(), s.avg, s.min, s.p50, s.p90, s.p99, s.p99_9, s.max);
}

std::string targets(const LoadSettings& s) {
    std::vector<std::string> items;
    for (const auto port : s.ports) {
        items.push_back(s.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", s.host, port)
                                                             : fmt::format("{}:{}", s.host, port));
    }
    return fmt::format("{}", fmt::join(items, ", "));
}

std::string_view reply_name(ReplyMode mode) { return mode == ReplyMode::echo ? "echo" : "stamp"; }

double rps(const RunResult& r) { return r.duration_s > 0 ? static_cast<double>(r.messages) / r.duration_s : 0.0; }
double mib_per_s(const RunResult& r) {
    return r.duration_s > 0 ? static_cast<double>(r.payload_received) / mib / r.duration_s : 0.0;
}

}  // namespace

void RunResult::merge(const RunResult& other) {
    messages += other.messages;
    bytes_sent += other.bytes_sent;
    bytes_received += other.bytes_received;
    payload_received += other.payload_received;
    established += other.established;
    idle_held += other.idle_held;
    duration_s = std::max(duration_s, other.duration_s);
    latency.merge(other.latency);
    connect.merge(other.connect);
    errors.connect += other.errors.connect;
    errors.mismatch += other.errors.mismatch;
    errors.closed += other.errors.closed;
    errors.timeout += other.errors.timeout;
    if (first_error.empty()) {
        first_error = other.first_error;
    }
    // Every process resolved the same names; the first that connected on a port says where.
    if (addresses.empty()) {
        addresses = other.addresses;
    }
    for (std::size_t i = 0; i < addresses.size() && i < other.addresses.size(); ++i) {
        if (addresses[i].used.empty()) {
            addresses[i].used = other.addresses[i].used;
        }
    }
}

void RunResult::note_error(std::string what) {
    if (first_error.empty()) {
        first_error = std::move(what);
    }
}

std::string json_string(std::string_view text) {
    std::string out = "\"";
    for (const char c : text) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
            } else {
                // Bytes >= 0x80 pass through: messages from the command line are the user's text.
                out += c;
            }
        }
    }
    return out + "\"";
}

std::string human_report(const LoadSettings& s, const RunResult& r) {
    std::string out = fmt::format("====== testecho: {} ({}) ======\n", targets(s), backend_name(s.backend));
    out += fmt::format("  {} connections (+{} idle) from {} process{}, {} bytes per message, pipeline {}, rate {}\n",
                       s.connections, s.idle, s.procs, s.procs == 1 ? "" : "es", s.payload_size(), s.pipeline,
                       s.rate > 0 ? fmt::format("{:g}/s per connection", s.rate) : std::string("unlimited"));
    out += fmt::format("  stop after {}, reply {}, timeout {:g} s{}\n",
                       s.duration_s ? fmt::format("{:g} s", *s.duration_s) : fmt::format("{} requests", *s.requests),
                       reply_name(s.reply), s.timeout_s,
                       s.connect_rate > 0 ? fmt::format(", connect rate {:g}/s", s.connect_rate) : std::string());
    // Which address a name led to, when it was not an address already.
    for (std::size_t i = 0; i < r.addresses.size() && i < s.ports.size(); ++i) {
        const PortAddresses& a = r.addresses[i];
        const bool said = a.resolved.size() == 1 && a.used == a.resolved.front() &&
                          a.used.find(s.host) != std::string::npos;
        if (!said) {
            out += fmt::format("  {} port {}: resolved to {}; connected to {}\n", s.host, s.ports[i],
                               fmt::join(a.resolved, ", "), a.used.empty() ? std::string("none") : a.used);
        }
    }
    out += "\n";
    out += fmt::format("  {} messages completed in {:.3f} seconds\n", r.messages, r.duration_s);
    out += fmt::format("  bytes sent {}, received {}\n", r.bytes_sent, r.bytes_received);
    out += fmt::format("  connections: {} established, {} failed, {} idle held\n", r.established, r.errors.connect,
                       r.idle_held);
    out += fmt::format("  errors: connect {}, mismatch {}, closed {}, timeout {}\n", r.errors.connect,
                       r.errors.mismatch, r.errors.closed, r.errors.timeout);
    out += r.verified() ? std::string("  verified: OK\n") : fmt::format("  verified: FAILED: {}\n", r.first_error);
    out += "\nSummary:\n";
    out += fmt::format("  throughput summary: {:.2f} messages per second, {:.3f} MiB/s\n", rps(r), mib_per_s(r));
    out += table("latency summary", r.latency);
    out += table("connect summary", r.connect);
    return out;
}

// Per port: {"resolved":["[::1]:50007","127.0.0.1:50007"],"used":"127.0.0.1:50007"} (used null
// when nothing connected).
std::string json_addresses(const RunResult& r) {
    std::vector<std::string> items;
    for (const PortAddresses& a : r.addresses) {
        std::vector<std::string> resolved;
        for (const auto& text : a.resolved) {
            resolved.push_back(json_string(text));
        }
        items.push_back(fmt::format(R"({{"resolved":[{}],"used":{}}})", fmt::join(resolved, ","),
                                    a.used.empty() ? std::string("null") : json_string(a.used)));
    }
    return fmt::format("{}", fmt::join(items, ","));
}

std::string json_report(const LoadSettings& s, const RunResult& r) {
    std::string settings = fmt::format(
        R"({{"backend":"{}","host":{},"ports":[{}],"connections":{},"idle":{},"procs":{},"duration_s":{},"requests":{},)"
        R"("size":{},"message":{},"pipeline":{},"rate":{},"connect_rate":{},"timeout_s":{},"reply":"{}"}})",
        backend_name(s.backend), json_string(s.host), fmt::join(s.ports, ","), s.connections, s.idle, s.procs,
        s.duration_s ? fmt::format("{}", *s.duration_s) : std::string("null"),
        s.requests ? fmt::format("{}", *s.requests) : std::string("null"), s.payload_size(),
        s.messages.size() == 1 ? json_string(s.messages.front()) : std::string("null"), s.pipeline, s.rate,
        s.connect_rate, s.timeout_s, reply_name(s.reply));
    return fmt::format(
        R"({{"settings":{},"messages":{},"bytes_sent":{},"bytes_received":{},"duration_s":{:.6f},"rps":{:.2f},)"
        R"("mib_per_s":{:.3f},"latency_ms":{},"connect_ms":{},"connections":{{"established":{},"failed":{},"idle_held":{}}},)"
        R"("errors":{{"connect":{},"mismatch":{},"closed":{},"timeout":{}}},"first_error":{},"verified":{},)"
        R"("addresses":[{}]}})"
        "\n",
        settings, r.messages, r.bytes_sent, r.bytes_received, r.duration_s, rps(r), mib_per_s(r),
        json_summary(r.latency), json_summary(r.connect), r.established, r.errors.connect, r.idle_held,
        r.errors.connect, r.errors.mismatch, r.errors.closed, r.errors.timeout,
        r.first_error.empty() ? std::string("null") : json_string(r.first_error), r.verified(), json_addresses(r));
}

// Tab-separated: the counters, the duration, the two histograms, then first_error (tabs and
// newlines in it replaced, so the line stays one line).
std::string serialize_result(const RunResult& r) {
    std::string error = r.first_error;
    std::replace_if(error.begin(), error.end(), [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
    // Per port "resolved,resolved>used", ports joined by ';' (addresses hold none of ",;>\t").
    std::vector<std::string> ports;
    for (const PortAddresses& a : r.addresses) {
        ports.push_back(fmt::format("{}>{}", fmt::join(a.resolved, ","), a.used));
    }
    return fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{:.9f}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}", r.messages, r.bytes_sent,
                       r.bytes_received, r.payload_received, r.established, r.idle_held, r.duration_s,
                       r.errors.connect, r.errors.mismatch, r.errors.closed, r.errors.timeout, r.latency.serialize(),
                       r.connect.serialize(), fmt::join(ports, ";"), error);
}

std::optional<RunResult> parse_result(std::string_view line) {
    std::vector<std::string_view> fields;
    for (int i = 0; i < 14; ++i) {
        const auto tab = line.find('\t');
        if (tab == std::string_view::npos) {
            return std::nullopt;
        }
        fields.push_back(line.substr(0, tab));
        line.remove_prefix(tab + 1);
    }
    fields.push_back(line);
    RunResult r;
    std::uint64_t* counters[] = {&r.messages, &r.bytes_sent, &r.bytes_received, &r.payload_received,
                                 &r.established, &r.idle_held};
    auto number = [](std::string_view text, auto& value) {
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        return ec == std::errc{} && end == text.data() + text.size();
    };
    for (std::size_t i = 0; i < 6; ++i) {
        if (!number(fields[i], *counters[i])) {
            return std::nullopt;
        }
    }
    if (!number(fields[6], r.duration_s) || !number(fields[7], r.errors.connect) ||
        !number(fields[8], r.errors.mismatch) || !number(fields[9], r.errors.closed) ||
        !number(fields[10], r.errors.timeout) || !r.latency.deserialize(fields[11]) ||
        !r.connect.deserialize(fields[12])) {
        return std::nullopt;
    }
    for (std::string_view rest = fields[13]; !rest.empty();) {
        const std::string_view port = rest.substr(0, rest.find(';'));
        rest.remove_prefix(std::min(rest.size(), port.size() + 1));
        const auto mark = port.find('>');
        if (mark == std::string_view::npos) {
            return std::nullopt;
        }
        PortAddresses& a = r.addresses.emplace_back();
        for (std::string_view list = port.substr(0, mark); !list.empty();) {
            const std::string_view item = list.substr(0, list.find(','));
            a.resolved.emplace_back(item);
            list.remove_prefix(std::min(list.size(), item.size() + 1));
        }
        a.used = std::string(port.substr(mark + 1));
    }
    r.first_error = std::string(fields[14]);
    return r;
}

}  // namespace echoplex::testecho
