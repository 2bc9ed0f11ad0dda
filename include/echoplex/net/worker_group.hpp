// WorkerGroup: N worker processes forked from one supervising process, which relays signals to
// them as command bytes, reads the lines they report, and replaces any that dies. The server's
// --workers and testecho's --procs are both this.
//
// Why commands over a pipe instead of signals: a terminal's Ctrl-C, and systemd's SIGTERM with
// KillMode=control-group, reach every process in the group at once. Workers ignore SIGINT, SIGTERM
// and SIGUSR1 and act only on what the master relays, so each signal counts once, as with one
// process; a worker that finds its pipe closed knows the master is gone.
//
// A loop must not cross a fork (its epoll set, io_uring rings and signal pipe would be shared with
// the child): the master runs no EventLoop. It waits in ppoll(2) on the workers' report pipes with
// its signals unblocked only there, so a fork, a restart or a relay never races a handler.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "echoplex/io/error.hpp"
#include "echoplex/io/unique_fd.hpp"

namespace echoplex {

struct WorkerGroupOptions {
    std::size_t workers = 2;
    // Signals the master takes and hands to on_signal (the workers ignore them).
    std::vector<int> signals;
    // Replace a worker that exits before stop(): at once if it had run for `stable_after`, else
    // after a pause that starts at `first_restart_delay` and doubles with each quick death up to
    // `max_restart_delay`, so a worker that dies on start cannot make the master spin.
    bool restart = false;
    std::chrono::milliseconds first_restart_delay{100};
    std::chrono::milliseconds max_restart_delay{10000};
    std::chrono::milliseconds stable_after{10000};
};

// What a worker is given: its number (a replacement keeps it) and its ends of the two pipes.
struct WorkerChannel {
    std::size_t index = 0;
    int control_fd = -1;  // read: the master's command bytes; EOF: the master is gone
    int report_fd = -1;   // write: lines for the master (on_line)
};

class WorkerGroup {
public:
    // Runs in the child, after fork; returns the child's exit status. Every other worker's pipes
    // are closed in it, its signal mask is the one the process had before start(), and the
    // options' signals are ignored.
    using WorkerMain = std::function<int(const WorkerChannel&)>;

    struct Handlers {
        std::function<void(int signo)> on_signal;
        std::function<void(std::size_t index, pid_t pid)> on_started;  // each fork, restarts included
        // Each line a worker writes (without its '\n'), in order; a last line without one at EOF.
        std::function<void(std::size_t index, std::string_view line)> on_line;
        // After the worker's last line: `status` as waitpid(2) gives it, and when (if) it will be
        // replaced.
        std::function<void(std::size_t index, pid_t pid, int status, std::optional<std::chrono::milliseconds> restart_in)>
            on_exit;
    };

    WorkerGroup(WorkerGroupOptions options, WorkerMain main);
    WorkerGroup(const WorkerGroup&) = delete;
    WorkerGroup& operator=(const WorkerGroup&) = delete;
    // Closes the pipes (a worker still running sees its master gone) and restores the signals.
    ~WorkerGroup();

    // Takes the signals and forks every worker. Only one group may be started in a process.
    [[nodiscard]] Result<void> start(const Handlers& handlers);
    // Supervises until every worker has exited and none is due to be replaced.
    [[nodiscard]] Result<void> run(const Handlers& handlers);

    // One command byte to a worker (dropped if the worker is gone or not reading).
    void send(std::size_t index, char command) noexcept;
    void broadcast(char command) noexcept;
    // No more replacements: workers that exit from now on stay gone.
    void stop() noexcept;
    // Calls `fn` from run() after `delay`.
    void after(std::chrono::milliseconds delay, std::function<void()> fn);
    // Waits for `fd` in run() too: `on_ready(revents)` when poll(2) reports one of `events` (or an
    // error or hangup). For the master's own descriptors (a listener, its clients); every worker
    // inherits them, so its WorkerMain closes them. Watching a watched fd replaces its callback.
    void watch(int fd, short events, std::function<void(short revents)> on_ready);
    void unwatch(int fd) noexcept;

    std::size_t size() const noexcept { return workers_.size(); }
    std::size_t running() const noexcept;
    // The worker's process id, or -1 while it is not running.
    pid_t pid(std::size_t index) const noexcept { return workers_.at(index).pid; }

private:
    using Clock = std::chrono::steady_clock;
    struct Worker {
        pid_t pid = -1;
        UniqueFd control;  // the master's write end
        UniqueFd report;   // the master's read end, non-blocking
        std::string partial;
        Clock::time_point started{};
        std::optional<Clock::time_point> restart_at;
        std::chrono::milliseconds next_delay{};
    };
    struct Timer {
        Clock::time_point due;
        std::function<void()> fn;
    };
    struct Watched {
        int fd = -1;
        short events = 0;
        std::function<void(short)> on_ready;
    };

    [[nodiscard]] Result<void> fork_worker(std::size_t index, const Handlers& handlers);
    void read_reports(std::size_t index, const Handlers& handlers);
    void reap(const Handlers& handlers);
    void deliver_signals(const Handlers& handlers);
    std::optional<Clock::time_point> next_wakeup() const;

    WorkerGroupOptions options_;
    WorkerMain main_;
    std::vector<Worker> workers_;
    std::vector<Timer> timers_;
    std::vector<Watched> watched_;
    bool started_ = false;
    bool stopping_ = false;
};

// The number of CPUs this process may run on (sched_getaffinity), at least 1: --workers=auto.
std::size_t usable_cpus() noexcept;

}  // namespace echoplex
