// A program run as a child of the test: started with fork/exec (resource limits applied in
// between), its stdout and stderr captured by a reader thread, its exit waited for through a pidfd.
// Nothing here sleeps: every wait is a poll(2) or a condition variable with a deadline.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "echoplex/io/unique_fd.hpp"

namespace echoplex::test {

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

// Result of running a program to completion.
struct RunResult {
    ExitStatus status;
    std::string out;
    std::string err;
};

// Runs `program` with `args`, waiting at most `timeout` for it to exit; a child still running
// then is killed and the result says signal 9. Output is collected until both streams' EOF
// (bounded too).
RunResult run_to_completion(const std::string& program, const std::vector<std::string>& args,
                            std::chrono::milliseconds timeout);

// The lines of `text` (without the '\n'); a final line without '\n' is included.
std::vector<std::string> split_lines(const std::string& text);

}  // namespace echoplex::test
