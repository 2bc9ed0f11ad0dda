// SignalWatcher implementation.
#include "echoplex/io/signal_watcher.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace echoplex {
namespace {

// The handler can only reach globals; lock-free atomics are async-signal-safe.
std::atomic<int> g_write_end{-1};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_signal(int signo) {
    const int saved_errno = errno;
    const int fd = g_write_end.load(std::memory_order_relaxed);
    if (fd >= 0) {
        const auto byte = static_cast<unsigned char>(signo);
        // Non-blocking: when the pipe is full the byte is dropped, and the reader already has
        // plenty pending, including earlier copies of this signal.
        [[maybe_unused]] const ssize_t ignored = ::write(fd, &byte, 1);
    }
    errno = saved_errno;
}

}  // namespace

Result<std::unique_ptr<SignalWatcher>> SignalWatcher::create() {
    if (g_write_end.load() >= 0) {
        return Error{"SignalWatcher", make_error_code(errc::bad_argument), "(one per process)"};
    }
    int ends[2];
    if (::pipe2(ends, O_NONBLOCK | O_CLOEXEC) < 0) {
        return Error::from_errno("pipe2");
    }
    return std::unique_ptr<SignalWatcher>(new SignalWatcher(UniqueFd(ends[0]), UniqueFd(ends[1])));
}

SignalWatcher::SignalWatcher(UniqueFd read_end, UniqueFd write_end)
    : read_end_(std::move(read_end)), write_end_(std::move(write_end)) {
    g_write_end.store(write_end_.get());
}

SignalWatcher::~SignalWatcher() {
    for (auto it = replaced_.rbegin(); it != replaced_.rend(); ++it) {
        ::sigaction(it->signo, &it->previous, nullptr);
    }
    g_write_end.store(-1);
}

Result<void> SignalWatcher::add(int signo) {
    if (std::any_of(replaced_.begin(), replaced_.end(), [&](const Replaced& r) { return r.signo == signo; })) {
        return {};
    }
    struct sigaction action {};
    action.sa_handler = on_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    Replaced replaced{signo, {}};
    if (::sigaction(signo, &action, &replaced.previous) < 0) {
        return Error::from_errno("sigaction", errno);
    }
    replaced_.push_back(replaced);
    return {};
}

std::vector<int> SignalWatcher::take_pending() {
    std::vector<int> signals;
    unsigned char buffer[64];
    for (;;) {
        const ssize_t n = ::read(read_end_.get(), buffer, sizeof buffer);
        if (n <= 0) {
            break;  // EAGAIN: drained (EINTR is harmless: the byte stays for the next call)
        }
        signals.insert(signals.end(), buffer, buffer + n);
    }
    return signals;
}

}  // namespace echoplex
