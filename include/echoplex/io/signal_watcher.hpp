// SignalWatcher: turns signals into bytes on a pipe (the self-pipe trick), so that any backend
// sees a signal as an ordinary readable descriptor and handlers run in the loop, not in signal context.
#pragma once

#include <csignal>
#include <memory>
#include <vector>

#include "echoplex/io/error.hpp"
#include "echoplex/io/unique_fd.hpp"

namespace echoplex {

class SignalWatcher {
public:
    // Only one watcher may exist per process at a time (a signal disposition is process-wide);
    // a second create() fails with errc::bad_argument until the first is destroyed.
    static Result<std::unique_ptr<SignalWatcher>> create();

    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;
    // Restores every disposition add() replaced.
    ~SignalWatcher();

    // Read end of the pipe; readable while signals are pending.
    int fd() const noexcept { return read_end_.get(); }

    // Starts catching `signo` (SA_RESTART, so other system calls are not disturbed; poll, select
    // and epoll_wait return EINTR regardless, see signal(7)).
    Result<void> add(int signo);

    // The signals received since the last call, in arrival order. Repeats of one signal that
    // arrive while the pipe is full are merged, never lost entirely.
    std::vector<int> take_pending();

private:
    SignalWatcher(UniqueFd read_end, UniqueFd write_end);

    struct Replaced {
        int signo;
        struct sigaction previous;
    };
    UniqueFd read_end_;
    UniqueFd write_end_;
    std::vector<Replaced> replaced_;
};

}  // namespace echoplex
