// End-to-end test helpers: the echoplex binary as a child process (started, signalled, watched
// through /proc, killed on scope exit) and loopback clients driven by poll() with deadlines.
// Nothing here sleeps: every wait is a poll(2) or a condition variable with a deadline.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "echoplex/io/unique_fd.hpp"

namespace echoplex::test {

// The program under test: $ECHOPLEX_BIN (meson sets it). Throws when unset.
std::string server_binary();

// How a child ended: exited with `code`, or killed by `signal`.
struct ExitStatus {
    bool exited = false;
    int code = -1;
    int signal = 0;
    bool ok() const noexcept { return exited && code == 0; }
    std::string describe() const;
};

// A resource limit set in the child between fork and exec (setrlimit(2) is async-signal-safe),
// e.g. {RLIMIT_NOFILE, 64, 64} to run a server that runs out of descriptors early.
struct ResourceLimit {
    int resource = RLIMIT_NOFILE;
    rlim_t soft = 0;
    rlim_t hard = 0;
};

// A child process with stdout and stderr captured by a reader thread (so the child never blocks
// on a full pipe). Killed (SIGKILL) and reaped on destruction if still running.
class ChildProcess {
public:
    // Runs `program` with `args` (argv[1..]) and `limits` applied. Throws std::system_error if it
    // cannot be started (a failed exec or setrlimit shows up as exit code 127 with a line on stderr).
    ChildProcess(const std::string& program, const std::vector<std::string>& args,
                 const std::vector<ResourceLimit>& limits = {});
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ~ChildProcess();

    pid_t pid() const noexcept { return pid_; }

    // Sends `sig` unless the child was already reaped. Returns false if kill(2) failed.
    bool send_signal(int sig);

    // Waits (pidfd + poll) at most `timeout` for the child to end and reaps it; nullopt if it is
    // still running. Once reaped, later calls return the same status at once.
    std::optional<ExitStatus> wait_exit(std::chrono::milliseconds timeout);
    bool running();

    // Everything captured so far.
    std::string stdout_text() const;
    std::string stderr_text() const;

    // Waits until `pred(stdout, stderr)` holds or both streams reached EOF or the deadline passed.
    // Returns pred's final value.
    bool wait_output(const std::function<bool(const std::string& out, const std::string& err)>& pred,
                     std::chrono::milliseconds timeout) const;

    // Waits for both streams to reach EOF (the child and everything it started closed them).
    bool wait_output_eof(std::chrono::milliseconds timeout) const;

private:
    void reader_main(int out_fd, int err_fd);

    pid_t pid_ = -1;
    UniqueFd pidfd_;
    std::optional<ExitStatus> status_;
    mutable std::mutex mutex_;
    mutable std::condition_variable changed_;
    std::string out_;
    std::string err_;
    bool out_eof_ = false;
    bool err_eof_ = false;
    std::thread reader_;
};

// Result of running the binary to completion.
struct RunResult {
    ExitStatus status;
    std::string out;
    std::string err;
};

// Runs $ECHOPLEX_BIN with exactly `args` (no --backend is added), waiting at most `timeout`
// for it to exit; a child still running then is killed and the result says signal 9.
RunResult run_server_to_completion(const std::vector<std::string>& args,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

// The lines of `text` (without the '\n'); a final line without '\n' is included.
std::vector<std::string> split_lines(const std::string& text);

// One stats line: "echoplex: stats: accepted=N refused=N open=N peak=N bytes_in=N bytes_out=N paused=N".
struct Stats {
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    std::uint64_t open = 0;
    std::uint64_t peak = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::uint64_t paused = 0;
};
// Parses one line that must match the stats format exactly; nullopt otherwise.
std::optional<Stats> parse_stats_line(const std::string& line);
// All lines of `text` that parse as stats lines, in order.
std::vector<Stats> stats_lines(const std::string& text);
// Lines of `text` that start "echoplex: stats:" (whether or not they parse): a malformed stats
// line shows up here and not in stats_lines.
std::size_t count_stats_prefixed_lines(const std::string& text);

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
    // The service announced for each port, in the same order ("echo", "discard", ...).
    const std::vector<std::string>& services() const noexcept { return services_; }

    pid_t pid() const noexcept { return child_.pid(); }
    bool send_signal(int sig) { return child_.send_signal(sig); }
    std::optional<ExitStatus> wait_exit(std::chrono::milliseconds timeout) { return child_.wait_exit(timeout); }
    bool running() { return child_.running(); }
    std::string stdout_text() const { return child_.stdout_text(); }
    std::string stderr_text() const { return child_.stderr_text(); }

    // Waits until stderr holds at least `count` stats lines; returns the last one.
    std::optional<Stats> wait_stats_line(std::size_t count, std::chrono::milliseconds timeout) const;

    // VmRSS of the server in KiB (from /proc/PID/status); -1 if it cannot be read.
    long rss_kib() const;
    // Number of entries in /proc/PID/fd; -1 if it cannot be read.
    int open_fds() const;
    // The descriptor numbers in /proc/PID/fd, ascending; empty if it cannot be read. (Descriptors
    // the test process inherited without close-on-exec show up here too, e.g. a CI runner's.)
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
    std::vector<std::string> hosts_;
    std::vector<std::uint16_t> ports_;
    std::vector<std::string> services_;
};

// ---- clients ----

// Connects a TCP socket to host:port (host "127.0.0.1" or "::1" or any numeric address),
// blocking, then makes it non-blocking, close-on-exec, TCP_NODELAY. `before_connect` may set
// socket options (e.g. SO_RCVBUF) on the fresh socket. Throws std::system_error on failure.
UniqueFd connect_to(std::uint16_t port, const std::string& host = "127.0.0.1",
                    const std::function<void(int)>& before_connect = {});

// True if a socket can be bound on [::1]:0 here.
bool ipv6_loopback_available();

// Random bytes, all 256 values, reproducible from `seed`.
std::string random_bytes(std::size_t size, std::uint64_t seed);

// One client conversation driven by drive_sessions(): writes `to_send` (in chunks, whenever the
// socket is writable) while reading whatever comes back.
struct Session {
    UniqueFd fd;
    std::string to_send;
    std::size_t sent = 0;
    std::string received;
    // Done once `expect` bytes were received (default: to_send.size()); or, with until_eof, once
    // EOF (or a reset) was seen.
    std::optional<std::size_t> expect;
    bool until_eof = false;
    // shutdown(SHUT_WR) once everything was sent.
    bool shutdown_after_send = false;
    bool shut_down = false;

    bool eof = false;   // read returned 0
    int error = 0;      // errno of a failed read/write (e.g. ECONNRESET), 0 if none

    std::size_t expected() const { return expect.value_or(to_send.size()); }
    bool done() const;
};

struct DriveResult {
    bool all_done = false;
    std::size_t done = 0;
    std::size_t total = 0;
    std::chrono::milliseconds elapsed{0};
    std::string describe() const;
};

// Drives all sessions concurrently with one poll() loop until every one is done or `deadline`
// passes. A session whose socket fails (error set) counts as done only with until_eof.
DriveResult drive_sessions(std::vector<Session>& sessions, std::chrono::milliseconds deadline);

// Writes from a repeating pattern to `fd` without ever reading, until `limit` bytes were sent or
// no byte could be sent for `stall`, or `deadline` passed. Returns the bytes sent (stops early on
// a write error, reported through `error`).
struct PushResult {
    std::size_t sent = 0;
    bool stalled = false;  // stopped because nothing moved for `stall`
    int error = 0;
};
PushResult push_without_reading(int fd, const std::string& pattern, std::size_t limit,
                                std::chrono::milliseconds stall, std::chrono::milliseconds deadline,
                                std::size_t start_offset = 0);

// Reads until EOF, a read error, or `deadline`. `eof`/`error` say which happened.
struct ReadResult {
    std::string data;
    bool eof = false;
    int error = 0;
    bool timed_out = false;
};
ReadResult read_until_eof(int fd, std::chrono::milliseconds deadline);

}  // namespace echoplex::test
