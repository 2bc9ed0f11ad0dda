// The echoplex binary as a child of the test: started with --backend set to the backend under
// test, ready once its startup line was read, watched through /proc and its stats lines, and run
// under ECHOPLEX_WRAPPER (valgrind) when the test setup asks for it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "support/child_process.hpp"

namespace echoplex::test {

// A program name without a slash looked up in $PATH (execv does not search; execvp is not
// async-signal-safe, so the lookup happens before fork); the name itself when not found.
std::string resolve_program(const std::string& name);

// Each log line "2026-12-02T05:32:08.123Z echoplex info: message" as "echoplex: message" (the
// server's timestamped format, see log.hpp); other lines as they are.
std::string without_log_stamps(const std::string& text);

// The program under test: $ECHOPLEX_BIN (meson sets it). Throws when unset.
std::string server_binary();

// Runs $ECHOPLEX_BIN with exactly `args` (no --backend is added), waiting at most `timeout`
// for it to exit; a child still running then is killed and the result says signal 9.
RunResult run_server_to_completion(const std::vector<std::string>& args,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

// One stats line: "echoplex: stats: accepted=N refused=N open=N peak=N bytes_in=N bytes_out=N paused=N",
// with " proxy_rejected=N" after it under --proxy-protocol and " workers=N restarts=N" from a
// --workers master.
struct Stats {
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    std::uint64_t open = 0;
    std::uint64_t peak = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::uint64_t paused = 0;
    std::optional<std::uint64_t> proxy_rejected;
    // The master's sum under --workers ends " workers=N restarts=N".
    std::optional<std::uint64_t> workers;
    std::optional<std::uint64_t> restarts;
};
// Parses one line that must match the stats format exactly; nullopt otherwise.
std::optional<Stats> parse_stats_line(const std::string& line);
// All lines of `text` that parse as stats lines, in order.
std::vector<Stats> stats_lines(const std::string& text);
// Lines of `text` that start "echoplex: stats:" (whether or not they parse): a malformed stats
// line shows up here and not in stats_lines.
std::size_t count_stats_prefixed_lines(const std::string& text);

// ECHOPLEX_WORKERS from the environment (1 when unset): ServerProcess adds --workers=N when it is
// more than 1, so that a suite runs against a master and its workers (meson registers those runs).
std::size_t workers_under_test();

// ECHOPLEX_WRAPPER from the environment, split on blanks: a command that ServerProcess puts in
// front of the server (the meson test setup 'valgrind' sets it to a memcheck command line).
// Empty when unset.
std::vector<std::string> server_wrapper();
// True when ServerProcess runs the server under a wrapper: tests scale sizes and bounds down.
bool server_wrapped();

struct ServerOptions {
    // Multiplied by 6 under a wrapper (valgrind needs seconds to start).
    std::chrono::milliseconds startup_timeout = std::chrono::seconds(10);
    // Applied to the server process (not to a wrapper's own startup: setrlimit runs before exec).
    std::vector<ResourceLimit> limits;
};

// The echoplex server as a child: started with --backend=<backend under test> plus `args`, and
// ready when its startup line ("echoplex: listening on A:P (echo), ...; backend NAME") has been read from
// stdout, which the constructor waits for (bounded). If the server exits or stays silent, the
// constructor throws std::runtime_error carrying what it printed.
//
// Under a valgrind wrapper the report goes to a temporary file, not to the server's stderr; on
// destruction a server still running is stopped with SIGTERM (so that valgrind's exit checks run)
// and a report with errors (or an exit with valgrind's error code) fails the current test case.
class ServerProcess {
public:
    explicit ServerProcess(const std::vector<std::string>& args,
                           std::chrono::milliseconds startup_timeout = std::chrono::seconds(10));
    ServerProcess(const std::vector<std::string>& args, const ServerOptions& options);
    ServerProcess(const ServerProcess&) = delete;
    ServerProcess& operator=(const ServerProcess&) = delete;
    ~ServerProcess();

    const std::vector<std::uint16_t>& ports() const noexcept { return ports_; }
    std::uint16_t port(std::size_t i = 0) const { return ports_.at(i); }
    // The addresses as printed ("127.0.0.1", "::1"), parallel to ports().
    const std::vector<std::string>& hosts() const noexcept { return hosts_; }
    const std::string& startup_line() const noexcept { return startup_line_; }
    // The backend named in parentheses at the end of the startup line.
    const std::string& announced_backend() const noexcept { return announced_backend_; }
    // The workers the startup line announces ("; 2 workers"), 1 without.
    std::size_t announced_workers() const noexcept { return announced_workers_; }
    // The service announced for each port, in the same order ("echo", "discard", ...).
    const std::vector<std::string>& services() const noexcept { return services_; }

    pid_t pid() const noexcept { return child_.pid(); }
    bool send_signal(int sig) { return child_.send_signal(sig); }
    std::optional<ExitStatus> wait_exit(std::chrono::milliseconds timeout) { return child_.wait_exit(timeout); }
    bool running() { return child_.running(); }
    // Waits (bounded) until `pred(stderr)` holds; returns its last value.
    bool wait_stderr(const std::function<bool(const std::string& err)>& pred, std::chrono::milliseconds timeout) const {
        return child_.wait_output([&](const std::string&, const std::string& err) { return pred(without_log_stamps(err)); },
                                  timeout);
    }
    std::string stdout_text() const { return child_.stdout_text(); }
    // stderr with each log line's timestamp and level taken out ("echoplex: message", as the
    // tests match it); raw_stderr_text() as written.
    std::string stderr_text() const { return without_log_stamps(child_.stderr_text()); }
    std::string raw_stderr_text() const { return child_.stderr_text(); }

    // Waits until stderr holds at least `count` stats lines; returns the last one.
    std::optional<Stats> wait_stats_line(std::size_t count, std::chrono::milliseconds timeout) const;
    // Asks for a stats line (SIGUSR1) and waits for it, again and again, until `until` holds for
    // it or `timeout` passes: for state the server reaches a little after the test (a close it
    // has yet to see). Returns the last line, nullopt if none came.
    std::optional<Stats> ask_stats_until(const std::function<bool(const Stats&)>& until,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(20));

    // A --workers master's workers (its children, from /proc/PID/task/PID/children); empty for
    // a single process.
    std::vector<pid_t> worker_pids() const;
    // The server and its workers.
    std::vector<pid_t> process_tree() const;

    // The figures below are of the whole server: summed over the master and its workers.
    // VmRSS of the server in KiB (from /proc/PID/status); -1 if it cannot be read.
    long rss_kib() const;
    // Number of entries in /proc/PID/fd; -1 if it cannot be read.
    int open_fds() const;
    // The descriptor numbers in /proc/PID/fd (of the first worker under --workers: each worker
    // has its own descriptor table and limit), ascending; empty if it cannot be read.
    // (Descriptors the test process inherited without close-on-exec show up here too, e.g. a CI
    // runner's.)
    std::vector<int> fd_numbers() const;
    // CPU time used so far, user + system, in clock ticks (sysconf(_SC_CLK_TCK) per second), from
    // /proc/PID/stat; -1 if it cannot be read.
    long cpu_ticks() const;

private:
    // A file removed on destruction (nothing to remove when the path is empty).
    struct TempFile {
        std::string path;
        TempFile() = default;
        explicit TempFile(std::string p) : path(std::move(p)) {}
        TempFile(const TempFile&) = delete;
        TempFile& operator=(const TempFile&) = delete;
        ~TempFile();
    };
    // valgrind's report (no file without a valgrind wrapper), read when the server has exited.
    TempFile valgrind_log_;
    void check_wrapper_report();

    ChildProcess child_;
    std::string startup_line_;
    std::string announced_backend_;
    std::size_t announced_workers_ = 1;
    std::vector<std::string> hosts_;
    std::vector<std::uint16_t> ports_;
    std::vector<std::string> services_;
};

}  // namespace echoplex::test
