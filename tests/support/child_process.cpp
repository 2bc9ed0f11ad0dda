// A program run as a child of the test: implementation.
#include "support/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "support/syscall.hpp"

namespace echoplex::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Milliseconds left until `deadline`, clamped to [0, INT_MAX] for poll(2).
int ms_left(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
        return 0;
    }
    return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

ExitStatus decode(int status) {
    ExitStatus s;
    if (WIFEXITED(status)) {
        s.exited = true;
        s.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        s.signal = WTERMSIG(status);
    }
    return s;
}

}  // namespace

std::string ExitStatus::describe() const {
    if (exited) {
        return "exit code " + std::to_string(code);
    }
    if (signal != 0) {
        return std::string("killed by signal ") + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
    }
    return "unknown status";
}

// ---- ChildProcess ----

ChildProcess::ChildProcess(const std::string& program, const std::vector<std::string>& args,
                           const std::vector<ResourceLimit>& limits) {
    int out_pipe[2];
    int err_pipe[2];
    checked(::pipe2(out_pipe, O_CLOEXEC), "pipe2");
    UniqueFd out_r(out_pipe[0]);
    UniqueFd out_w(out_pipe[1]);
    checked(::pipe2(err_pipe, O_CLOEXEC), "pipe2");
    UniqueFd err_r(err_pipe[0]);
    UniqueFd err_w(err_pipe[1]);
    UniqueFd devnull(checked(::open("/dev/null", O_RDONLY | O_CLOEXEC), "open(/dev/null)"));

    // Everything the child needs is prepared before fork: between fork and exec only
    // async-signal-safe calls are allowed (the test process has threads).
    std::vector<std::string> argv_storage;
    argv_storage.push_back(program);
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    static const char exec_failed[] = "echoplex test: execv failed\n";
    static const char setrlimit_failed[] = "echoplex test: setrlimit failed\n";
    std::vector<std::pair<int, rlimit>> rlimits;
    for (const auto& limit : limits) {
        rlimits.emplace_back(limit.resource, rlimit{limit.soft, limit.hard});
    }

    const pid_t pid = ::fork();
    if (pid < 0) {
        fail("fork");
    }
    if (pid == 0) {
        // Child. dup2 clears FD_CLOEXEC on the new descriptors; every other descriptor of the test
        // process is close-on-exec.
        if (::dup2(devnull.get(), 0) < 0 || ::dup2(out_w.get(), 1) < 0 || ::dup2(err_w.get(), 2) < 0) {
            ::_exit(127);
        }
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        for (const int sig : {SIGPIPE, SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGCHLD}) {
            ::signal(sig, SIG_DFL);
        }
        for (const auto& [resource, value] : rlimits) {
            if (::setrlimit(resource, &value) < 0) {
                const ssize_t ignored = ::write(2, setrlimit_failed, sizeof setrlimit_failed - 1);
                (void)ignored;
                ::_exit(127);
            }
        }
        ::execv(argv[0], argv.data());
        const ssize_t ignored = ::write(2, exec_failed, sizeof exec_failed - 1);
        (void)ignored;
        ::_exit(127);
    }
    pid_ = pid;
    out_w.reset();
    err_w.reset();
#ifdef SYS_pidfd_open
    const long pidfd = ::syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0) {
        pidfd_.reset(static_cast<int>(pidfd));
        ::fcntl(pidfd_.get(), F_SETFD, FD_CLOEXEC);
    }
#endif
    const int out_fd = out_r.release();
    const int err_fd = err_r.release();
    reader_ = std::thread([this, out_fd, err_fd] { reader_main(out_fd, err_fd); });
}

ChildProcess::~ChildProcess() {
    if (!status_) {
        ::kill(pid_, SIGKILL);
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
    if (reader_.joinable()) {
        reader_.join();  // the pipes reach EOF once the child is gone
    }
}

void ChildProcess::reader_main(int out_fd, int err_fd) {
    UniqueFd out(out_fd);
    UniqueFd err(err_fd);
    char buffer[8192];
    for (;;) {
        pollfd fds[2];
        nfds_t n = 0;
        {
            std::lock_guard lock(mutex_);
            if (!out_eof_) {
                fds[n++] = {out.get(), POLLIN, 0};
            }
            if (!err_eof_) {
                fds[n++] = {err.get(), POLLIN, 0};
            }
        }
        if (n == 0) {
            return;
        }
        if (::poll(fds, n, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            std::lock_guard lock(mutex_);
            out_eof_ = err_eof_ = true;
            changed_.notify_all();
            return;
        }
        for (nfds_t i = 0; i < n; ++i) {
            if (fds[i].revents == 0) {
                continue;
            }
            const ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
            if (got < 0 && errno == EINTR) {
                continue;
            }
            std::lock_guard lock(mutex_);
            const bool is_out = fds[i].fd == out.get();
            if (got <= 0) {
                (is_out ? out_eof_ : err_eof_) = true;
            } else {
                (is_out ? out_ : err_).append(buffer, static_cast<std::size_t>(got));
            }
            changed_.notify_all();
        }
    }
}

bool ChildProcess::send_signal(int sig) {
    if (status_) {
        return false;
    }
    return ::kill(pid_, sig) == 0;
}

std::optional<ExitStatus> ChildProcess::wait_exit(milliseconds timeout) {
    if (status_) {
        return status_;
    }
    const auto deadline = Clock::now() + timeout;
    if (pidfd_) {
        for (;;) {
            pollfd p{pidfd_.get(), POLLIN, 0};
            const int rc = ::poll(&p, 1, ms_left(deadline));
            if (rc < 0 && errno == EINTR) {
                continue;
            }
            break;
        }
    } else {
        wait_output_eof(timeout);  // no pidfd: the pipes' EOF is the best hint of an exit
    }
    int status = 0;
    pid_t rc;
    while ((rc = ::waitpid(pid_, &status, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (rc == pid_) {
        status_ = decode(status);
    }
    return status_;
}

bool ChildProcess::running() { return !wait_exit(milliseconds(0)).has_value(); }

std::string ChildProcess::stdout_text() const {
    std::lock_guard lock(mutex_);
    return out_;
}

std::string ChildProcess::stderr_text() const {
    std::lock_guard lock(mutex_);
    return err_;
}

bool ChildProcess::wait_output(const std::function<bool(const std::string&, const std::string&)>& pred,
                               milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return pred(out_, err_) || (out_eof_ && err_eof_); });
    return pred(out_, err_);
}

bool ChildProcess::wait_output_eof(milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return out_eof_ && err_eof_; });
}

// ---- running to completion ----

RunResult run_to_completion(const std::string& program, const std::vector<std::string>& args, milliseconds timeout) {
    ChildProcess child(program, args);
    auto status = child.wait_exit(timeout);
    if (!status) {
        child.send_signal(SIGKILL);
        status = child.wait_exit(std::chrono::seconds(10));
    }
    child.wait_output_eof(std::chrono::seconds(5));
    return {status.value_or(ExitStatus{}), child.stdout_text(), child.stderr_text()};
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        const auto nl = text.find('\n', start);
        if (nl == std::string::npos) {
            lines.push_back(text.substr(start));
            break;
        }
        lines.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return lines;
}

}  // namespace echoplex::test
