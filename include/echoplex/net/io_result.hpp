// IoResult: what a socket call did, classified once. Would-block, end of input and a vanished
// peer are expected outcomes, not errors; only `failed` is worth an errno in the log.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace echoplex {

enum class IoStatus : std::uint8_t {
    ok,           // the call did all it was asked (the data or the budget ran out)
    would_block,  // the kernel has no more for now (bytes may be > 0): wait for the next event
    end,          // the peer shut down its sending side (a read returned 0)
    reset,        // the peer went away (ECONNRESET, EPIPE)
    failed,       // anything else: `error` holds errno
};

struct IoResult {
    std::size_t bytes = 0;
    IoStatus status = IoStatus::ok;
    int error = 0;  // errno for reset and failed
};

// Classifies one system call's return value `n` and errno `err`: n > 0 is ok, n == 0 is the
// end of input (for reads; callers never offer a zero-length write). Never called for EINTR:
// retry_eintr repeats the call instead.
constexpr IoResult classify_io(ssize_t n, int err) noexcept {
    if (n > 0) {
        return {static_cast<std::size_t>(n), IoStatus::ok, 0};
    }
    if (n == 0) {
        return {0, IoStatus::end, 0};
    }
    if (err == EAGAIN || err == EWOULDBLOCK) {
        return {0, IoStatus::would_block, 0};
    }
    if (err == ECONNRESET || err == EPIPE) {
        return {0, IoStatus::reset, err};
    }
    return {0, IoStatus::failed, err};
}

// Runs `call` (returning ssize_t, -1 with errno) until it is not interrupted, and classifies it.
template <class Call>
IoResult retry_eintr(Call&& call) {
    for (;;) {
        const ssize_t n = call();
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return classify_io(n, n < 0 ? errno : 0);
    }
}

}  // namespace echoplex
