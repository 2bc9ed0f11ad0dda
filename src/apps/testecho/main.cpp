// testecho: the load generator. The edge: parse the command line, split the load over --procs
// processes, run each share on an EventLoop, merge, report, and turn the outcome into an exit
// status (0 every byte verified, 1 any error, 2 usage error).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "echoplex/io/fmt.hpp"

#include "cli.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/log.hpp"
#include "echoplex/io/log_pump.hpp"
#include "echoplex/net/worker_group.hpp"
#include "load_run.hpp"
#include "program.hpp"
#include "report.hpp"
#include "settings.hpp"

namespace {

using namespace echoplex;
using namespace echoplex::testecho;

constexpr std::string_view book_message = "Hello network world";  // the book's echo-client default
constexpr double default_duration_s = 10;                         // wrk's and tcpkali's default
constexpr std::size_t max_procs = 1024;

// A positive rate in events per second; fractions allowed ("0.5" is one every two seconds).
double parse_rate(std::string_view option, std::string_view text) {
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) || value < 0) {
        throw cli::UsageError(fmt::format("{}: '{}' is not a rate (messages per second, e.g. 100 or 0.5)", option, text));
    }
    return value;
}

// --percentiles: each in (0, 100), ascending, no repeats; "50,99,99.9".
std::vector<double> parse_percentiles(std::string_view text) {
    std::vector<double> out;
    for (const std::string_view item : cli::split_list("--percentiles", text)) {
        double value = 0;
        const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
        if (item.empty() || ec != std::errc{} || end != item.data() + item.size() || !(value > 0 && value < 100)) {
            throw cli::UsageError(fmt::format("--percentiles: '{}' is not a percentile between 0 and 100 (e.g. 99.9)", item));
        }
        out.push_back(value);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

struct Args {
    enum class Action { run, help, version } action = Action::run;
    LoadSettings settings;
    std::string text;
};

Args parse_args(int argc, char** argv) {
    Args args;
    LoadSettings& s = args.settings;
    bool backend_given = false;
    bool ports_given = false;
    bool quiet = false;
    bool reply_given = false;
    std::optional<std::string> message;
    std::optional<std::uint64_t> size;
    std::vector<std::string> positional;

    cli::Parser p("testecho", "[OPTIONS] [HOST [WORD...]]",
                  "Load generator and verifier for echo servers: many connections from one event loop,\n"
                  "every echoed byte checked. `testecho HOST WORD...` runs the book's 8 lockstep clients.");
    p.flag('h', "help", "print this help and exit", [&] { args.action = Args::Action::help; });
    p.flag('V', "version", "print the version and the compiled-in backends, and exit",
           [&] { args.action = Args::Action::version; });
    p.option(0, "backend", "NAME",
             fmt::format("event mechanism: {} (default {}; env ECHOPLEX_BACKEND)",
                         fmt::join(backend_choices(), "|"), backend_name(available_backends().front())),
             [&](std::string_view v) {
                 s.backend = parse_backend_option("--backend", v);
                 backend_given = true;
             });
    p.option('H', "host", "ADDR", "server address or name (default 127.0.0.1); a name is tried\nat each address it resolves to, in order, until one connects",
             [&](std::string_view v) { s.host = std::string(v); });
    p.option('p', "port", "PORT[,PORT...]",
             "server port(s), repeatable (default 50007,50008);\nconnections are spread over them round-robin",
             [&](std::string_view v) {
                 if (!ports_given) {
                     s.ports.clear();
                     ports_given = true;
                 }
                 for (const auto item : cli::split_list("--port", v)) {
                     s.ports.push_back(static_cast<std::uint16_t>(cli::parse_int("--port", item, 1, 65535)));
                 }
             });
    p.option('c', "connections", "N", "connections sending messages (default 8)",
             [&](std::string_view v) { s.connections = static_cast<std::size_t>(cli::parse_int("--connections", v, 1, 1'000'000)); });
    p.option('d', "duration", "TIME", "send for this long (e.g. 10s, 500ms, 2m; default 10s)",
             [&](std::string_view v) { s.duration_s = cli::parse_seconds("--duration", v); });
    p.option('n', "requests", "N", "send N messages in total, then stop (instead of -d)",
             [&](std::string_view v) { s.requests = static_cast<std::uint64_t>(cli::parse_int("--requests", v, 1, INT64_MAX)); });
    p.option('s', "size", "BYTES", "message size, k/m suffixes (generated bytes, all 256 values)",
             [&](std::string_view v) { size = cli::parse_bytes("--size", v); });
    p.option('m', "message", "TEXT", fmt::format("message text (default '{}')", book_message),
             [&](std::string_view v) { message = std::string(v); });
    p.option('P', "pipeline", "N", "messages in flight per connection (default 1: lockstep)",
             [&](std::string_view v) { s.pipeline = static_cast<std::size_t>(cli::parse_int("--pipeline", v, 1, 1'000'000)); });
    p.option('r', "rate", "R", "messages per second per connection (default 0: unlimited);\nlatency counts from each message's scheduled time",
             [&](std::string_view v) { s.rate = parse_rate("--rate", v); });
    p.option(0, "connect-rate", "R", "new connections per second (default 0: all at once)",
             [&](std::string_view v) { s.connect_rate = parse_rate("--connect-rate", v); });
    p.option(0, "idle", "N", "extra connections opened first and held silent for the run",
             [&](std::string_view v) { s.idle = static_cast<std::size_t>(cli::parse_int("--idle", v, 0, 1'000'000)); });
    p.option(0, "procs", "N", "processes sharing the connections (default 1)",
             [&](std::string_view v) { s.procs = static_cast<std::size_t>(cli::parse_int("--procs", v, 1, max_procs)); });
    p.option(0, "reply", "MODE", "echo: expect the bytes sent back (default);\nstamp: expect the book's 'Echo=>DATA at TIME'",
             [&](std::string_view v) {
                 s.reply = cli::parse_choice("--reply", v, {"echo", "stamp"}) == 0 ? ReplyMode::echo : ReplyMode::stamp;
                 reply_given = true;
             });
    p.option(0, "mode", "MODE",
             "echo: send and verify each echo (default); discard: send only,\n"
             "any byte back is an error; chargen: receive only, every RFC 864\nline verified",
             [&](std::string_view v) {
                 static constexpr TrafficMode modes[] = {TrafficMode::echo, TrafficMode::discard, TrafficMode::chargen};
                 s.mode = modes[cli::parse_choice("--mode", v, {"echo", "discard", "chargen"})];
             });
    p.option(0, "warmup", "TIME", "run the load this long first and leave it out of every\nfigure but errors (needs -d)",
             [&](std::string_view v) { s.warmup_s = cli::parse_seconds("--warmup", v); });
    p.option(0, "reconnect-every", "N", "close and reopen each connection after N messages\n(connect latency under load)",
             [&](std::string_view v) {
                 s.reconnect_every = static_cast<std::uint64_t>(cli::parse_int("--reconnect-every", v, 1, INT64_MAX));
             });
    p.option(0, "timeout", "TIME", "connect and echo deadline; also how long to wait\nfor echoes after -d ends (default 5s)",
             [&](std::string_view v) { s.timeout_s = cli::parse_seconds("--timeout", v); });
    p.option(0, "percentiles", "LIST", "latency percentiles to report (default 50,90,99,99.9)",
             [&](std::string_view v) { s.percentiles = parse_percentiles(v); });
    p.option(0, "interval", "TIME", "step of the time series: JSON \"intervals\", --csv and the\nlive line (default 1s)",
             [&](std::string_view v) { s.interval_s = cli::parse_seconds("--interval", v); });
    p.option(0, "hdr-out", "FILE", "write the latency distribution there, in HdrHistogram's\npercentile text format",
             [&](std::string_view v) { s.hdr_out = std::string(v); });
    p.option(0, "csv", "FILE", "write the time series there as CSV", [&](std::string_view v) { s.csv_out = std::string(v); });
    p.flag(0, "allow-interrupt", "exit 0 after SIGINT/SIGTERM if nothing else failed\n(otherwise an interrupted run exits 1)",
           [&] { s.allow_interrupt = true; });
    p.flag(0, "json", "print the result as one JSON object on stdout, nothing else", [&] { s.json = true; });
    p.flag('q', "quiet", "no progress line, errors only on stderr", [&] { quiet = true; });
    p.positionals("[HOST [WORD...]]", [&](std::string_view w) { positional.emplace_back(w); });
    p.parse(argc, argv);

    if (args.action == Args::Action::help) {
        args.text = p.help() +
                    "\nExit status: 0 every echo verified, 1 any mismatch, early close, timeout or\n"
                    "connect failure, or a run ended by SIGINT/SIGTERM (unless --allow-interrupt),\n"
                    "2 usage error. Errors are counted by kind and the first is shown.\n";
        return args;
    }
    if (args.action == Args::Action::version) {
        args.text = version_line("testecho") + "\n";
        return args;
    }
    if (!backend_given) {
        s.backend = backend_from_environment().value_or(s.backend);
    }
    if (s.mode == TrafficMode::chargen) {
        // Nothing is sent: the options that shape what is sent cannot apply.
        if (size || message || positional.size() > 1) {
            throw cli::UsageError("--mode=chargen sends nothing: leave out -s, -m and WORDs");
        }
        if (s.pipeline != 1 || s.rate > 0) {
            throw cli::UsageError("--mode=chargen sends nothing: leave out -P/--pipeline and -r/--rate");
        }
    }
    if (s.mode != TrafficMode::echo && reply_given && s.reply != ReplyMode::echo) {
        throw cli::UsageError("--reply=stamp expects replies: it goes with --mode=echo only");
    }
    if (s.warmup_s > 0 && s.requests) {
        throw cli::UsageError("--warmup goes with -d/--duration: with -n the warm-up's messages would count towards N");
    }
    if (s.interval_s <= 0) {
        throw cli::UsageError("--interval must be more than 0");
    }
    if (s.duration_s && s.requests) {
        throw cli::UsageError("-d/--duration and -n/--requests are alternatives: give one");
    }
    if (size && message) {
        throw cli::UsageError("-s/--size and -m/--message are alternatives: give one");
    }
    if (!positional.empty()) {
        s.host = positional.front();
        if (positional.size() > 1 && (size || message)) {
            throw cli::UsageError("WORDs and -s/--message are alternatives: give one");
        }
        s.messages.assign(positional.begin() + 1, positional.end());
    }
    if (size) {
        if (*size == 0 || *size > (std::uint64_t{1} << 30)) {
            throw cli::UsageError("--size: must be 1 byte .. 1g");
        }
        s.size = static_cast<std::size_t>(*size);
    } else if (message) {
        s.messages = {*message};
    }
    if (!size && s.messages.empty()) {
        s.messages = {std::string(book_message)};
    }
    for (const auto& m : s.messages) {
        if (m.empty()) {
            throw cli::UsageError("messages must not be empty");
        }
    }
    if (!s.duration_s && !s.requests) {
        // chargen and discard have no book to follow: a host alone runs for the default time.
        const bool book = s.mode == TrafficMode::echo ? !positional.empty() : positional.size() > 1;
        if (book) {
            // The book: every client sends each word once, in lockstep.
            s.requests = s.connections * s.messages.size();
        } else {
            s.duration_s = default_duration_s;
        }
    }
    if (s.timeout_s <= 0) {
        throw cli::UsageError("--timeout must be more than 0");
    }
    if (s.procs > s.connections) {
        throw cli::UsageError(fmt::format("--procs ({}) must not exceed --connections ({})", s.procs, s.connections));
    }
    s.total_connections = s.connections;
    s.progress = !quiet && ::isatty(2) == 1;
    if (quiet) {
        log::set_level(log::Level::error);
    }
    return args;
}

// Lets one process hold every connection it opens: the soft descriptor limit up to the hard one.
void raise_fd_limit(std::size_t wanted) {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= wanted) {
        return;
    }
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, wanted);
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
        log::warn("{}", Error::from_errno("setrlimit(RLIMIT_NOFILE)").message());
    }
}

// The live line: the interval just closed (the same figures as that step of the JSON series) and
// the running totals, overwritten in place.
class ProgressLine {
public:
    explicit ProgressLine(double interval_s) : interval_s_(interval_s) {}
    void update(const RunResult& r, const IntervalStats& last, double elapsed) {
        const Histogram latency = last.latency_histogram();
        const std::string p50 = latency.count() == 0 ? std::string("-")
                                                     : fmt::format("{:.3f} ms", static_cast<double>(latency.percentile(50)) / 1e6);
        std::fputs(fmt::format("\r[{:6.1f}s] {} open  {} msgs  {:.0f} msg/s  {:.3f} MiB/s  p50 {}  errors {}\033[K", elapsed,
                               last.open, r.messages, static_cast<double>(last.messages) / interval_s_,
                               static_cast<double>(last.bytes) / (1024.0 * 1024.0) / interval_s_, p50, r.errors.total())
                       .c_str(),
                   stderr);
        shown_ = true;
    }
    void clear() {
        if (shown_) {
            std::fputs("\r\033[K", stderr);
        }
    }

private:
    double interval_s_;
    bool shown_ = false;
};

// One process's share on its own loop.
Result<RunResult> run_share(const LoadSettings& share) {
    auto loop = EventLoop::create(share.backend);
    if (!loop) {
        return std::move(loop).error();
    }
    const LogPump log_pump(**loop);
    ProgressLine line(share.interval_s);
    ProgressFn progress;
    if (share.progress) {
        progress = [&line](const RunResult& r, const IntervalStats& last, double elapsed) { line.update(r, last, elapsed); };
    }
    auto result = run_load(**loop, share, progress);
    line.clear();
    return result;
}

// The child's end of --procs: runs its share and writes one result line (or "error: ...").
int child_main(const LoadSettings& share, int out_fd) {
    std::string line;
    int status = 1;
    try {
        auto result = run_share(share);
        if (result) {
            line = serialize_result(*result) + "\n";
            status = result->verified() ? 0 : 1;
        } else {
            line = "error: " + result.error().message() + "\n";
        }
    } catch (const std::exception& e) {
        line = fmt::format("error: {}\n", e.what());
    }
    // Blocking: the line (a histogram) may exceed the pipe, and the parent reads until EOF.
    std::string_view rest = line;
    while (!rest.empty()) {
        const ssize_t n = ::write(out_fd, rest.data(), rest.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
    return status;
}

// The connections and idle ones of process `index` of `procs`: an even split, the remainder to
// the first, and ids that continue where the previous process's end.
LoadSettings share_of(const LoadSettings& settings, std::size_t index) {
    auto part = [&](std::size_t total, std::size_t i) { return total / settings.procs + (i < total % settings.procs ? 1 : 0); };
    LoadSettings share = settings;
    share.connections = part(settings.connections, index);
    share.idle = part(settings.idle, index);
    share.first_id = 0;
    share.first_idle_id = 0;
    for (std::size_t i = 0; i < index; ++i) {
        share.first_id += part(settings.connections, i);
        share.first_idle_id += part(settings.idle, i);
    }
    share.progress = false;  // one line from N processes would interleave
    return share;
}

// --procs: a worker group without restarts. The parent relays each SIGINT/SIGTERM to every
// child as one byte on its control pipe (children ignore the signals themselves, so a terminal's
// Ctrl-C, which reaches the whole process group, counts once, as with one process), and merges
// the result lines.
RunResult run_procs(const LoadSettings& settings) {
    WorkerGroupOptions options;
    options.workers = settings.procs;
    options.signals = {SIGINT, SIGTERM};
    WorkerGroup group(options, [&settings](const WorkerChannel& channel) {
        LoadSettings share = share_of(settings, channel.index);
        share.interrupt_fd = channel.control_fd;
        return child_main(share, channel.report_fd);
    });
    std::vector<std::string> lines(settings.procs);
    std::vector<int> statuses(settings.procs, 0);
    WorkerGroup::Handlers handlers;
    handlers.on_signal = [&](int) { group.broadcast(1); };
    handlers.on_line = [&](std::size_t i, std::string_view line) { lines[i] = std::string(line); };
    handlers.on_exit = [&](std::size_t i, pid_t, int status, auto) { statuses[i] = status; };
    if (auto started = group.start(handlers); !started) {
        throw std::runtime_error(started.error().message());
    }
    if (auto ran = group.run(handlers); !ran) {
        throw std::runtime_error(ran.error().message());
    }

    RunResult merged;
    std::vector<std::string> failures;
    for (std::size_t i = 0; i < settings.procs; ++i) {
        const std::string& text = lines[i];
        const int status = statuses[i];
        if (auto r = parse_result(text)) {
            merged.merge(*r);
        } else if (text.starts_with("error: ")) {
            failures.push_back(fmt::format("process {}: {}", i, text.substr(7)));
        } else if (WIFSIGNALED(status)) {
            failures.push_back(fmt::format("process {} killed by SIG{}", i, sigabbrev_np(WTERMSIG(status))));
        } else {
            failures.push_back(fmt::format("process {} exited ({}) without a result", i, WEXITSTATUS(status)));
        }
    }
    if (!failures.empty()) {
        throw std::runtime_error(fmt::format("{}", fmt::join(failures, "; ")));
    }
    return merged;
}

struct FileCloser {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// `path` opened for writing (nothing when empty); a failure is logged and gives nullptr.
FilePtr open_output(std::string_view option, const std::string& path) {
    if (path.empty()) {
        return nullptr;
    }
    FilePtr f(std::fopen(path.c_str(), "w"));
    if (!f) {
        log::error("{} {}: {}", option, path, Error::from_errno("fopen").message());
    }
    return f;
}

// Writes `text` to `file` (opened by open_output for `path`) and closes it; false on failure.
bool write_file(FilePtr& file, const std::string& path, const std::string& text) {
    if (!file) {
        return true;  // not asked for
    }
    const bool written = std::fwrite(text.data(), 1, text.size(), file.get()) == text.size();
    const bool closed = std::fclose(file.release()) == 0;
    if (!written || !closed) {
        log::error("{}: {}", path, Error::from_errno("write").message());
        return false;
    }
    return true;
}

int run_testecho(int argc, char** argv) {
    log::set_program("testecho");
    const Args args = parse_args(argc, argv);
    if (args.action != Args::Action::run) {
        std::fputs(args.text.c_str(), stdout);
        return 0;
    }
    const LoadSettings& settings = args.settings;
    // Belt and braces with MSG_NOSIGNAL: a vanished server is counted, never fatal.
    std::signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(settings.connections + settings.idle + 64);
    // Once, before any process starts: a backend the kernel refuses is one line, not one per process.
    if (auto probe = make_backend(settings.backend); !probe) {
        log::error("{}", backend_failure(settings.backend, probe.error()));
        return 1;
    }

    // Opened before the run, so that a path that cannot be written fails now, not after it.
    FilePtr hdr_out = open_output("--hdr-out", settings.hdr_out);
    FilePtr csv_out = open_output("--csv", settings.csv_out);
    if ((!settings.hdr_out.empty() && !hdr_out) || (!settings.csv_out.empty() && !csv_out)) {
        return 1;
    }

    RunResult result;
    if (settings.procs == 1) {
        auto ran = run_share(settings);
        if (!ran) {
            log::error("{}", ran.error().message());
            return 1;
        }
        result = std::move(ran).value();
    } else {
        result = run_procs(settings);
    }
    const std::string report = settings.json ? json_report(settings, result) : human_report(settings, result);
    std::fputs(report.c_str(), stdout);
    if (std::fflush(stdout) != 0 || std::ferror(stdout) != 0) {
        log::error("{}", Error::from_errno("writing the report to stdout").message());
        return 1;
    }
    if (!write_file(hdr_out, settings.hdr_out, hdr_distribution(result.latency)) ||
        !write_file(csv_out, settings.csv_out, csv_intervals(result))) {
        return 1;
    }
    if (result.interrupted && !settings.allow_interrupt) {
        log::error("interrupted: the run was ended early, so its figures cover less than asked "
                   "(exit status 1; --allow-interrupt makes it 0)");
        return 1;
    }
    return result.verified() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    return echoplex::cli::run_main("testecho", [&] { return run_testecho(argc, argv); });
}
