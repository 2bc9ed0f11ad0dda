// WorkerGroup implementation.
#include "echoplex/net/worker_group.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <exception>
#include <utility>

#include "echoplex/io/log.hpp"

namespace echoplex {
namespace {

// A worker's line longer than this is cut off there (the rest is dropped up to its '\n'), so a
// runaway worker cannot make the master buffer without bound.
constexpr std::size_t max_line = 4 * 1024 * 1024;

// What the handlers below saw: counts per signal, taken by run(). Handlers only run inside
// ppoll, where the signals are unblocked, so run() reads these without racing them.
std::array<volatile std::sig_atomic_t, NSIG> g_pending{};

extern "C" void note_signal(int signo) {
    g_pending[static_cast<std::size_t>(signo)] = g_pending[static_cast<std::size_t>(signo)] + 1;
}

// The process's signal state before start(), restored by the destructor and in each child.
struct SavedSignals {
    bool taken = false;
    sigset_t mask{};
    std::vector<std::pair<int, struct sigaction>> actions;
};
SavedSignals g_saved;

std::vector<int> watched_signals(const WorkerGroupOptions& options) {
    std::vector<int> out = options.signals;
    out.push_back(SIGCHLD);
    return out;
}

Result<std::pair<UniqueFd, UniqueFd>> make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        return Error::from_errno("pipe2");
    }
    return std::pair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

}  // namespace

std::size_t usable_cpus() noexcept {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        return std::max(1, CPU_COUNT(&set));
    }
    const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? static_cast<std::size_t>(online) : 1;
}

WorkerGroup::WorkerGroup(WorkerGroupOptions options, WorkerMain main)
    : options_(std::move(options)), main_(std::move(main)), workers_(options_.workers) {
    for (auto& w : workers_) {
        w.next_delay = options_.first_restart_delay;
    }
}

WorkerGroup::~WorkerGroup() {
    workers_.clear();  // closes the pipes
    if (started_ && g_saved.taken) {
        for (const auto& [signo, action] : g_saved.actions) {
            ::sigaction(signo, &action, nullptr);
        }
        ::sigprocmask(SIG_SETMASK, &g_saved.mask, nullptr);
        g_saved = SavedSignals{};
    }
}

Result<void> WorkerGroup::start(const Handlers& handlers) {
    if (g_saved.taken) {
        return Error{"WorkerGroup::start", make_error_code(errc::bad_argument), "another worker group is running"};
    }
    started_ = true;
    g_saved.taken = true;
    sigset_t block;
    ::sigemptyset(&block);
    for (const int signo : watched_signals(options_)) {
        ::sigaddset(&block, signo);
    }
    // Blocked first: from here on a signal waits for run() instead of interrupting a fork.
    ::sigprocmask(SIG_BLOCK, &block, &g_saved.mask);
    for (const int signo : watched_signals(options_)) {
        g_pending[static_cast<std::size_t>(signo)] = 0;
        struct sigaction action {};
        action.sa_handler = note_signal;
        ::sigemptyset(&action.sa_mask);
        struct sigaction old {};
        ::sigaction(signo, &action, &old);
        g_saved.actions.emplace_back(signo, old);
    }
    // A command to a worker that just died must not kill the master.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction old_pipe {};
    ::sigaction(SIGPIPE, &ignore, &old_pipe);
    g_saved.actions.emplace_back(SIGPIPE, old_pipe);

    for (std::size_t i = 0; i < workers_.size(); ++i) {
        if (auto forked = fork_worker(i, handlers); !forked) {
            return forked;
        }
    }
    return {};
}

Result<void> WorkerGroup::fork_worker(std::size_t index, const Handlers& handlers) {
    auto control = make_pipe();
    if (!control) {
        return std::move(control).error();
    }
    auto report = make_pipe();
    if (!report) {
        return std::move(report).error();
    }
    // Output buffered now would be written twice, once by each process.
    std::fflush(stdout);
    std::fflush(stderr);
    log::flush(std::chrono::milliseconds(0));
    const pid_t pid = ::fork();
    if (pid < 0) {
        return Error::from_errno("fork");
    }
    if (pid == 0) {
        log::after_fork();  // the master writes what it had queued
        for (const int signo : options_.signals) {
            std::signal(signo, SIG_IGN);
        }
        std::signal(SIGCHLD, SIG_DFL);
        for (std::size_t i = 0; i < workers_.size(); ++i) {
            workers_[i].control.reset();  // else a sibling's pipe would never see EOF
            workers_[i].report.reset();
        }
        control->second.reset();
        report->first.reset();
        ::sigprocmask(SIG_SETMASK, &g_saved.mask, nullptr);
        const WorkerChannel channel{index, control->first.get(), report->second.get()};
        int status = 1;
        try {
            status = main_(channel);
        } catch (const std::exception& e) {
            log::error("{}", e.what());
        }
        std::fflush(stdout);
        std::fflush(stderr);
        // _exit: the master's atexit handlers and static destructors are not this process's.
        ::_exit(status);
    }
    Worker& w = workers_[index];
    w.pid = pid;
    w.control = std::move(control->second);
    w.report = std::move(report->first);
    w.partial.clear();
    w.started = Clock::now();
    w.restart_at.reset();
    set_nonblocking(w.control.get());
    set_nonblocking(w.report.get());
    if (handlers.on_started) {
        handlers.on_started(index, pid);
    }
    return {};
}

void WorkerGroup::send(std::size_t index, char command) noexcept {
    Worker& w = workers_.at(index);
    if (w.pid > 0 && w.control) {
        [[maybe_unused]] const ssize_t n = ::write(w.control.get(), &command, 1);
    }
}

void WorkerGroup::broadcast(char command) noexcept {
    for (std::size_t i = 0; i < workers_.size(); ++i) {
        send(i, command);
    }
}

void WorkerGroup::stop() noexcept {
    stopping_ = true;
    for (auto& w : workers_) {
        w.restart_at.reset();
    }
}

void WorkerGroup::after(std::chrono::milliseconds delay, std::function<void()> fn) {
    timers_.push_back({Clock::now() + delay, std::move(fn)});
}

std::size_t WorkerGroup::running() const noexcept {
    return static_cast<std::size_t>(std::count_if(workers_.begin(), workers_.end(), [](const Worker& w) { return w.pid > 0; }));
}

void WorkerGroup::read_reports(std::size_t index, const Handlers& handlers) {
    Worker& w = workers_[index];
    char buf[16384];
    while (w.report) {
        const ssize_t n = ::read(w.report.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        if (n <= 0) {
            w.report.reset();  // EOF (or an error, which ends the pipe the same way)
            break;
        }
        std::string_view chunk(buf, static_cast<std::size_t>(n));
        while (!chunk.empty()) {
            const auto newline = chunk.find('\n');
            const std::string_view piece = chunk.substr(0, newline);
            if (w.partial.size() < max_line) {
                w.partial.append(piece.substr(0, max_line - w.partial.size()));
            }
            if (newline == std::string_view::npos) {
                break;
            }
            if (handlers.on_line) {
                handlers.on_line(index, w.partial);
            }
            w.partial.clear();
            chunk.remove_prefix(newline + 1);
        }
    }
    if (!w.partial.empty() && handlers.on_line) {
        handlers.on_line(index, w.partial);
    }
    w.partial.clear();
}

void WorkerGroup::reap(const Handlers& handlers) {
    for (std::size_t i = 0; i < workers_.size(); ++i) {
        Worker& w = workers_[i];
        if (w.pid <= 0) {
            continue;
        }
        int status = 0;
        pid_t done = 0;
        do {
            done = ::waitpid(w.pid, &status, WNOHANG);
        } while (done < 0 && errno == EINTR);
        if (done == 0) {
            continue;
        }
        const pid_t pid = w.pid;
        w.pid = -1;
        read_reports(i, handlers);  // the dead worker's last lines come before its exit
        w.report.reset();
        w.control.reset();
        std::optional<std::chrono::milliseconds> restart_in;
        if (options_.restart && !stopping_) {
            if (Clock::now() - w.started >= options_.stable_after) {
                w.next_delay = options_.first_restart_delay;
                restart_in = std::chrono::milliseconds(0);
            } else {
                restart_in = w.next_delay;
                w.next_delay = std::min(w.next_delay * 2, options_.max_restart_delay);
            }
            w.restart_at = Clock::now() + *restart_in;
        }
        if (handlers.on_exit) {
            handlers.on_exit(i, pid, status, restart_in);
        }
    }
}

void WorkerGroup::deliver_signals(const Handlers& handlers) {
    for (const int signo : options_.signals) {
        auto& pending = g_pending[static_cast<std::size_t>(signo)];
        while (pending > 0) {
            pending = pending - 1;
            if (handlers.on_signal) {
                handlers.on_signal(signo);
            }
        }
    }
    g_pending[SIGCHLD] = 0;  // reap() looks at every worker anyway
}

std::optional<WorkerGroup::Clock::time_point> WorkerGroup::next_wakeup() const {
    std::optional<Clock::time_point> next;
    auto consider = [&](Clock::time_point t) {
        if (!next || t < *next) {
            next = t;
        }
    };
    for (const auto& w : workers_) {
        if (w.restart_at) {
            consider(*w.restart_at);
        }
    }
    for (const auto& t : timers_) {
        consider(t.due);
    }
    return next;
}

void WorkerGroup::watch(int fd, short events, std::function<void(short revents)> on_ready) {
    for (Watched& w : watched_) {
        if (w.fd == fd) {
            w.events = events;
            w.on_ready = std::move(on_ready);
            return;
        }
    }
    watched_.push_back({fd, events, std::move(on_ready)});
}

void WorkerGroup::unwatch(int fd) noexcept {
    std::erase_if(watched_, [fd](const Watched& w) { return w.fd == fd; });
}

Result<void> WorkerGroup::run(const Handlers& handlers) {
    sigset_t during_wait = g_saved.mask;
    for (const int signo : watched_signals(options_)) {
        ::sigdelset(&during_wait, signo);
    }
    std::vector<pollfd> fds;
    std::vector<std::size_t> owners;
    for (;;) {
        reap(handlers);
        deliver_signals(handlers);
        const auto now = Clock::now();
        for (std::size_t i = 0; i < workers_.size(); ++i) {
            if (workers_[i].restart_at && *workers_[i].restart_at <= now) {
                if (auto forked = fork_worker(i, handlers); !forked) {
                    return forked;
                }
            }
        }
        // Timers may add timers: take the due ones out first.
        std::vector<Timer> due;
        for (auto it = timers_.begin(); it != timers_.end();) {
            if (it->due <= now) {
                due.push_back(std::move(*it));
                it = timers_.erase(it);
            } else {
                ++it;
            }
        }
        for (auto& t : due) {
            t.fn();
        }
        const bool restarts_due =
            std::any_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.restart_at.has_value(); });
        if (running() == 0 && !restarts_due) {
            return {};
        }
        fds.clear();
        owners.clear();
        for (std::size_t i = 0; i < workers_.size(); ++i) {
            if (workers_[i].pid > 0 && workers_[i].report) {
                fds.push_back({workers_[i].report.get(), POLLIN, 0});
                owners.push_back(i);
            }
        }
        const std::size_t first_watched = fds.size();
        for (const Watched& w : watched_) {
            fds.push_back({w.fd, w.events, 0});
        }
        timespec timeout{};
        timespec* wait_for = nullptr;
        if (const auto next = next_wakeup()) {
            const auto left = std::max(Clock::duration::zero(), *next - Clock::now());
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            timeout.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
            timeout.tv_nsec = static_cast<long>(ns % 1'000'000'000);
            wait_for = &timeout;
        }
        // The signals are unblocked only inside this call: each one ends the wait.
        const int ready = ::ppoll(fds.data(), fds.size(), wait_for, &during_wait);
        if (ready < 0 && errno != EINTR) {
            return Error::from_errno("ppoll");
        }
        for (std::size_t k = 0; ready > 0 && k < first_watched; ++k) {
            if (fds[k].revents != 0) {
                read_reports(owners[k], handlers);
            }
        }
        for (std::size_t k = first_watched; ready > 0 && k < fds.size(); ++k) {
            if (fds[k].revents == 0) {
                continue;
            }
            // An earlier callback may have unwatched this descriptor or watched others.
            const auto it = std::find_if(watched_.begin(), watched_.end(), [&](const Watched& w) { return w.fd == fds[k].fd; });
            if (it != watched_.end()) {
                const auto on_ready = it->on_ready;  // the callback may unwatch, destroying it->on_ready
                on_ready(fds[k].revents);
            }
        }
    }
}

}  // namespace echoplex
