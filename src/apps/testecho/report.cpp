// Report formatting and the --procs result line.
#include "report.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>

#include "echoplex/io/fmt.hpp"

namespace echoplex::testecho {
namespace {

constexpr double mib = 1024.0 * 1024.0;

double ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }

// "p50", "p99.9": the column title; "p99_9": the JSON key.
std::string percentile_title(double p) { return fmt::format("p{:g}", p); }
std::string percentile_key(double p) {
    std::string key = percentile_title(p);
    std::replace(key.begin(), key.end(), '.', '_');
    return key;
}

// A figure of a histogram with samples, or "-" / null without.
std::string cell(const Histogram& h, double value) { return h.count() == 0 ? "-" : fmt::format("{:.3f}", value); }
std::string json_number(const Histogram& h, double value) {
    return h.count() == 0 ? "null" : fmt::format("{:.3f}", value);
}

std::string table(std::string_view title, const Histogram& h, const std::vector<double>& percentiles) {
    std::string names = fmt::format("  {:>9} {:>9}", "avg", "min");
    std::string values = fmt::format("  {:>9} {:>9}", cell(h, h.mean() / 1e6), cell(h, ms(h.min())));
    for (const double p : percentiles) {
        names += fmt::format(" {:>9}", percentile_title(p));
        values += fmt::format(" {:>9}", cell(h, ms(h.percentile(p))));
    }
    names += fmt::format(" {:>9}\n", "max");
    values += fmt::format(" {:>9}\n", cell(h, ms(h.max())));
    return fmt::format("  {} (msec, {} samples):\n", title, h.count()) + names + values;
}

std::string json_summary(const Histogram& h, const std::vector<double>& percentiles) {
    std::string out = fmt::format(R"({{"count":{},"avg":{},"min":{})", h.count(), json_number(h, h.mean() / 1e6),
                                  json_number(h, ms(h.min())));
    for (const double p : percentiles) {
        out += fmt::format(R"(,"{}":{})", percentile_key(p), json_number(h, ms(h.percentile(p))));
    }
    return out + fmt::format(R"(,"max":{}}})", json_number(h, ms(h.max())));
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
std::string_view mode_name(TrafficMode mode) {
    switch (mode) {
    case TrafficMode::echo: return "echo";
    case TrafficMode::discard: return "discard";
    case TrafficMode::chargen: return "chargen";
    }
    return "?";
}

double rps(const RunResult& r) { return r.duration_s > 0 ? static_cast<double>(r.messages) / r.duration_s : 0.0; }
double mib_per_s(const RunResult& r) { return r.duration_s > 0 ? static_cast<double>(r.payload) / mib / r.duration_s : 0.0; }
double gbit_per_s(const RunResult& r) {
    return r.duration_s > 0 ? static_cast<double>(r.payload) * 8.0 / 1e9 / r.duration_s : 0.0;
}

// One step of HdrHistogram's percentile iteration: the value at `percentile` (0..1) and the
// records up to it.
struct Step {
    std::uint64_t value_ns;
    double percentile;
    std::uint64_t total;
};

// Levels 0, 10, .., 50, 55, .., 75, 77.5, ..: five steps per halving of the distance to 100%,
// until every record is covered; then the 100% line (the maximum).
std::vector<Step> distribution(const Histogram& h) {
    std::vector<Step> steps;
    if (h.count() == 0) {
        return steps;
    }
    constexpr int ticks_per_half_distance = 5;
    double level = 0;
    while (level < 100) {
        const std::uint64_t value = h.percentile(level);
        const std::uint64_t total = h.count_at_or_below(value);
        steps.push_back({value, level / 100.0, total});
        if (total >= h.count()) {
            break;
        }
        const double halvings = std::floor(std::log2(100.0 / (100.0 - level))) + 1;
        level += 100.0 / (std::pow(2.0, halvings) * ticks_per_half_distance);
    }
    steps.push_back({h.max(), 1.0, h.count()});
    return steps;
}

// "fffe" for the bytes of `text`.
std::string hex(std::string_view text) {
    std::string out;
    for (const char c : text) {
        out += fmt::format("{:02x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
    }
    return out;
}

// The length of the UTF-8 sequence starting text[at] (RFC 3629: no overlongs, no surrogates,
// nothing above U+10FFFF), or 0 if the bytes there are not one.
std::size_t utf8_sequence(std::string_view text, std::size_t at) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = byte(at);
    std::size_t length = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xbf;
    if (lead < 0x80) {
        return 1;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
        length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        length = 3;
        low = lead == 0xe0 ? 0xa0 : 0x80;
        high = lead == 0xed ? 0x9f : 0xbf;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        length = 4;
        low = lead == 0xf0 ? 0x90 : 0x80;
        high = lead == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (at + length > text.size()) {
        return 0;
    }
    for (std::size_t i = 1; i < length; ++i) {
        const unsigned char c = byte(at + i);
        if (c < (i == 1 ? low : 0x80) || c > (i == 1 ? high : 0xbf)) {
            return 0;
        }
    }
    return length;
}

bool valid_utf8(std::string_view text) {
    for (std::size_t at = 0; at < text.size();) {
        const std::size_t n = utf8_sequence(text, at);
        if (n == 0) {
            return false;
        }
        at += n;
    }
    return true;
}

}  // namespace

Histogram IntervalStats::latency_histogram() const {
    Histogram h;
    if (!latency.empty() && !h.deserialize(latency)) {
        return Histogram{};
    }
    return h;
}

Fairness fairness_of(std::vector<ConnectionCount> counts) {
    Fairness f;
    if (counts.empty()) {
        return f;
    }
    std::sort(counts.begin(), counts.end(), [](const ConnectionCount& a, const ConnectionCount& b) {
        return a.messages != b.messages ? a.messages < b.messages : a.id < b.id;
    });
    f.min = counts.front().messages;
    f.max = counts.back().messages;
    f.p50 = counts[(counts.size() - 1) / 2].messages;
    long double sum = 0;
    long double squares = 0;
    for (const ConnectionCount& c : counts) {
        sum += static_cast<long double>(c.messages);
        squares += static_cast<long double>(c.messages) * static_cast<long double>(c.messages);
    }
    // Nothing done anywhere is even, if not useful.
    f.jain = squares == 0 ? 1.0 : static_cast<double>(sum * sum / (static_cast<long double>(counts.size()) * squares));
    counts.resize(std::min<std::size_t>(counts.size(), 3));
    f.slowest = std::move(counts);
    return f;
}

void RunResult::merge(const RunResult& other) {
    messages += other.messages;
    bytes_sent += other.bytes_sent;
    bytes_received += other.bytes_received;
    payload += other.payload;
    interrupted = interrupted || other.interrupted;
    // Step i of every process covers the same stretch of its own window: add them up.
    for (std::size_t i = 0; i < other.intervals.size(); ++i) {
        if (i == intervals.size()) {
            intervals.push_back(other.intervals[i]);
            continue;
        }
        IntervalStats& mine = intervals[i];
        const IntervalStats& theirs = other.intervals[i];
        mine.t = std::max(mine.t, theirs.t);
        mine.messages += theirs.messages;
        mine.bytes += theirs.bytes;
        mine.errors += theirs.errors;
        mine.open += theirs.open;
        Histogram latency = mine.latency_histogram();
        latency.merge(theirs.latency_histogram());
        mine.latency = latency.serialize();
    }
    per_connection.insert(per_connection.end(), other.per_connection.begin(), other.per_connection.end());
    std::sort(per_connection.begin(), per_connection.end(),
              [](const ConnectionCount& a, const ConnectionCount& b) { return a.id < b.id; });
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
    for (std::size_t at = 0; at < text.size(); ++at) {
        const char c = text[at];
        if (static_cast<unsigned char>(c) >= 0x80) {
            // RFC 8259 wants UTF-8: a valid sequence passes, a stray byte becomes U+FFFD.
            const std::size_t n = utf8_sequence(text, at);
            if (n == 0) {
                out += "\\ufffd";
            } else {
                out.append(text.substr(at, n));
                at += n - 1;
            }
            continue;
        }
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
                out += c;  // printable ASCII
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
    std::string extras;
    if (s.connect_rate > 0) {
        extras += fmt::format(", connect rate {:g}/s", s.connect_rate);
    }
    if (s.warmup_s > 0) {
        extras += fmt::format(", warm-up {:g} s (not counted)", s.warmup_s);
    }
    if (s.reconnect_every > 0) {
        extras += fmt::format(", reconnect every {} messages", s.reconnect_every);
    }
    out += fmt::format("  mode {}, stop after {}, reply {}, timeout {:g} s{}\n", mode_name(s.mode),
                       s.duration_s ? fmt::format("{:g} s", *s.duration_s) : fmt::format("{} requests", *s.requests),
                       reply_name(s.reply), s.timeout_s, extras);
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
    if (r.interrupted) {
        out += "  interrupted: the run was ended early by a signal; its figures cover less than asked\n";
    }
    if (!r.per_connection.empty()) {
        const Fairness f = fairness_of(r.per_connection);
        std::vector<std::string> slowest;
        for (const ConnectionCount& c : f.slowest) {
            slowest.push_back(fmt::format("conn {} ({})", c.id, c.messages));
        }
        out += fmt::format("  per connection: min {}, p50 {}, max {} messages; Jain's fairness {:.4f}; slowest {}\n",
                           f.min, f.p50, f.max, f.jain, fmt::join(slowest, ", "));
    }
    out += "\nSummary:\n";
    out += fmt::format("  throughput summary: {:.2f} messages per second, {:.3f} MiB/s, {:.3f} Gbit/s\n", rps(r),
                       mib_per_s(r), gbit_per_s(r));
    out += table("latency summary", r.latency, s.percentiles);
    out += table("connect summary", r.connect, s.percentiles);
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

std::string json_intervals(const RunResult& r) {
    std::vector<std::string> items;
    for (const IntervalStats& i : r.intervals) {
        const Histogram h = i.latency_histogram();
        items.push_back(fmt::format(
            R"({{"t":{:.3f},"messages":{},"bytes":{},"errors":{},"open":{},"latency_ms":{{"p50":{},"p99":{},"max":{}}}}})",
            i.t, i.messages, i.bytes, i.errors, i.open, json_number(h, ms(h.percentile(50))),
            json_number(h, ms(h.percentile(99))), json_number(h, ms(h.max()))));
    }
    return fmt::format("[{}]", fmt::join(items, ","));
}

std::string json_per_connection(const RunResult& r) {
    if (r.per_connection.empty()) {
        return R"({"count":0,"min":null,"p50":null,"max":null,"jain":null,"slowest":[]})";
    }
    const Fairness f = fairness_of(r.per_connection);
    std::vector<std::string> slowest;
    for (const ConnectionCount& c : f.slowest) {
        slowest.push_back(fmt::format(R"({{"id":{},"messages":{}}})", c.id, c.messages));
    }
    return fmt::format(R"({{"count":{},"min":{},"p50":{},"max":{},"jain":{:.6f},"slowest":[{}]}})",
                       r.per_connection.size(), f.min, f.p50, f.max, f.jain, fmt::join(slowest, ","));
}

std::string json_distribution(const Histogram& h) {
    std::vector<std::string> items;
    for (const Step& step : distribution(h)) {
        items.push_back(fmt::format("[{:.6f},{:.3f}]", step.percentile * 100.0, ms(step.value_ns)));
    }
    return fmt::format("[{}]", fmt::join(items, ","));
}

std::string json_report(const LoadSettings& s, const RunResult& r) {
    std::string message = "null";
    if (s.messages.size() == 1) {
        message = valid_utf8(s.messages.front())
                      ? json_string(s.messages.front())
                      : fmt::format(R"(null,"message_hex":"{}")", hex(s.messages.front()));
    }
    std::string settings = fmt::format(
        R"({{"backend":"{}","host":{},"ports":[{}],"connections":{},"idle":{},"procs":{},"duration_s":{},"requests":{},)"
        R"("size":{},"message":{},"pipeline":{},"rate":{},"connect_rate":{},"timeout_s":{},"reply":"{}","mode":"{}",)"
        R"("percentiles":[{}],"interval_s":{},"warmup_s":{},"reconnect_every":{}}})",
        backend_name(s.backend), json_string(s.host), fmt::join(s.ports, ","), s.connections, s.idle, s.procs,
        s.duration_s ? fmt::format("{}", *s.duration_s) : std::string("null"),
        s.requests ? fmt::format("{}", *s.requests) : std::string("null"), s.payload_size(), message, s.pipeline,
        s.rate, s.connect_rate, s.timeout_s, reply_name(s.reply), mode_name(s.mode), fmt::join(s.percentiles, ","),
        s.interval_s, s.warmup_s, s.reconnect_every);
    return fmt::format(
        R"({{"settings":{},"messages":{},"bytes_sent":{},"bytes_received":{},"duration_s":{:.6f},"rps":{:.2f},)"
        R"("mib_per_s":{:.3f},"gbit_per_s":{:.6f},"latency_ms":{},"latency_distribution":{},"connect_ms":{},)"
        R"("connections":{{"established":{},"failed":{},"idle_held":{}}},)"
        R"("errors":{{"connect":{},"mismatch":{},"closed":{},"timeout":{}}},"first_error":{},"interrupted":{},)"
        R"("verified":{},"intervals":{},"per_connection":{},"addresses":[{}]}})"
        "\n",
        settings, r.messages, r.bytes_sent, r.bytes_received, r.duration_s, rps(r), mib_per_s(r), gbit_per_s(r),
        json_summary(r.latency, s.percentiles), json_distribution(r.latency), json_summary(r.connect, s.percentiles),
        r.established, r.errors.connect, r.idle_held, r.errors.connect, r.errors.mismatch, r.errors.closed,
        r.errors.timeout, r.first_error.empty() ? std::string("null") : json_string(r.first_error), r.interrupted,
        r.verified(), json_intervals(r), json_per_connection(r), json_addresses(r));
}

std::string hdr_distribution(const Histogram& h) {
    std::string out = fmt::format("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    const std::vector<Step> steps = distribution(h);
    for (std::size_t i = 0; i < steps.size(); ++i) {
        const Step& step = steps[i];
        if (i + 1 == steps.size()) {
            out += fmt::format("{:12.3f} {:2.12f} {:10d}\n", ms(step.value_ns), step.percentile, step.total);
        } else {
            out += fmt::format("{:12.3f} {:2.12f} {:10d} {:14.2f}\n", ms(step.value_ns), step.percentile, step.total,
                               1.0 / (1.0 - step.percentile));
        }
    }
    out += fmt::format("#[Mean    = {:12.3f}, StdDeviation   = {:12.3f}]\n", h.mean() / 1e6, h.stddev() / 1e6);
    out += fmt::format("#[Max     = {:12.3f}, Total count    = {:12d}]\n", ms(h.max()), h.count());
    out += fmt::format("#[Buckets = {:12d}, SubBuckets     = {:12d}]\n",
                       Histogram::max_exponent - Histogram::linear_limit_bits + 2, std::size_t{1} << Histogram::sub_bucket_bits);
    return out;
}

std::string csv_intervals(const RunResult& r) {
    std::string out = "t,messages,bytes,errors,open,p50_ms,p99_ms,max_ms\n";
    for (const IntervalStats& i : r.intervals) {
        const Histogram h = i.latency_histogram();
        const auto figure = [&](double v) { return h.count() == 0 ? std::string() : fmt::format("{:.3f}", v); };
        out += fmt::format("{:.3f},{},{},{},{},{},{},{}\n", i.t, i.messages, i.bytes, i.errors, i.open,
                           figure(ms(h.percentile(50))), figure(ms(h.percentile(99))), figure(ms(h.max())));
    }
    return out;
}

// Tab-separated: the counters, the duration, the two histograms, the addresses, the interrupted
// flag, the connections' counts ("id:n,..."), the intervals ("t/messages/bytes/errors/open/
// histogram|..."), then first_error (tabs and newlines in it replaced, so the line stays one line).
std::string serialize_result(const RunResult& r) {
    std::string error = r.first_error;
    std::replace_if(error.begin(), error.end(), [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
    // Per port "resolved,resolved>used", ports joined by ';' (addresses hold none of ",;>\t").
    std::vector<std::string> ports;
    for (const PortAddresses& a : r.addresses) {
        ports.push_back(fmt::format("{}>{}", fmt::join(a.resolved, ","), a.used));
    }
    std::vector<std::string> counts;
    for (const ConnectionCount& c : r.per_connection) {
        counts.push_back(fmt::format("{}:{}", c.id, c.messages));
    }
    std::vector<std::string> steps;
    for (const IntervalStats& i : r.intervals) {
        steps.push_back(fmt::format("{:.9f}/{}/{}/{}/{}/{}", i.t, i.messages, i.bytes, i.errors, i.open, i.latency));
    }
    return fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{:.9f}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}", r.messages,
                       r.bytes_sent, r.bytes_received, r.payload, r.established, r.idle_held, r.duration_s,
                       r.errors.connect, r.errors.mismatch, r.errors.closed, r.errors.timeout, r.latency.serialize(),
                       r.connect.serialize(), fmt::join(ports, ";"), r.interrupted ? 1 : 0, fmt::join(counts, ","),
                       fmt::join(steps, "|"), error);
}

namespace {

template <typename T>
bool number(std::string_view text, T& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

// `text` split at every `separator`; nothing for an empty text.
std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> out;
    while (!text.empty()) {
        const auto at = text.find(separator);
        out.push_back(text.substr(0, at));
        if (at == std::string_view::npos) {
            break;
        }
        text.remove_prefix(at + 1);
    }
    return out;
}

bool parse_counts(std::string_view text, std::vector<ConnectionCount>& out) {
    for (const std::string_view item : split(text, ',')) {
        const auto colon = item.find(':');
        ConnectionCount c;
        if (colon == std::string_view::npos || !number(item.substr(0, colon), c.id) ||
            !number(item.substr(colon + 1), c.messages)) {
            return false;
        }
        out.push_back(c);
    }
    return true;
}

bool parse_intervals(std::string_view text, std::vector<IntervalStats>& out) {
    for (const std::string_view item : split(text, '|')) {
        const std::vector<std::string_view> f = split(item, '/');
        IntervalStats i;
        if (f.size() != 6 || !number(f[0], i.t) || !number(f[1], i.messages) || !number(f[2], i.bytes) ||
            !number(f[3], i.errors) || !number(f[4], i.open)) {
            return false;
        }
        i.latency = std::string(f[5]);
        Histogram check;
        if (!check.deserialize(i.latency)) {
            return false;
        }
        out.push_back(std::move(i));
    }
    return true;
}

}  // namespace

std::optional<RunResult> parse_result(std::string_view line) {
    constexpr std::size_t fields_before_error = 17;
    std::vector<std::string_view> fields;
    for (std::size_t i = 0; i < fields_before_error; ++i) {
        const auto tab = line.find('\t');
        if (tab == std::string_view::npos) {
            return std::nullopt;
        }
        fields.push_back(line.substr(0, tab));
        line.remove_prefix(tab + 1);
    }
    fields.push_back(line);
    RunResult r;
    std::uint64_t* counters[] = {&r.messages, &r.bytes_sent, &r.bytes_received, &r.payload, &r.established, &r.idle_held};
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
    for (const std::string_view port : split(fields[13], ';')) {
        const auto mark = port.find('>');
        if (mark == std::string_view::npos) {
            return std::nullopt;
        }
        PortAddresses& a = r.addresses.emplace_back();
        for (const std::string_view item : split(port.substr(0, mark), ',')) {
            a.resolved.emplace_back(item);
        }
        a.used = std::string(port.substr(mark + 1));
    }
    if (fields[14] != "0" && fields[14] != "1") {
        return std::nullopt;
    }
    r.interrupted = fields[14] == "1";
    if (!parse_counts(fields[15], r.per_connection) || !parse_intervals(fields[16], r.intervals)) {
        return std::nullopt;
    }
    r.first_error = std::string(fields[17]);
    return r;
}

}  // namespace echoplex::testecho
