// The backend: the one question a multiplexer answers (which descriptors are ready?), asked
// through select(2), poll(2), epoll(7) or io_uring(7) behind one interface chosen at run time.
// io_uring answers it with poll submissions and also completes operations (accept, receive, send)
// for the sockets that submit them: the completion half below, empty for the other three.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "echoplex/io/completion.hpp"
#include "echoplex/io/error.hpp"

namespace echoplex {

// The mechanisms echoplex knows. The enumerator names are the one spelling used by
// --backend, ECHOPLEX_BACKEND, log lines and test names.
enum class BackendKind : std::uint8_t { epoll, poll, select, io_uring };

// What the caller wants to hear about for one descriptor. A bit set: both = read | write.
enum class Interest : std::uint8_t { none = 0, read = 1, write = 2, both = 3 };

constexpr Interest operator|(Interest a, Interest b) noexcept {
    return static_cast<Interest>(static_cast<std::uint8_t>(a) | static_cast<std::uint8_t>(b));
}
constexpr bool wants_read(Interest i) noexcept { return (static_cast<std::uint8_t>(i) & 1U) != 0; }
constexpr bool wants_write(Interest i) noexcept { return (static_cast<std::uint8_t>(i) & 2U) != 0; }

// One ready descriptor. Only directions the caller asked for are ever set. An error or hangup
// on the descriptor sets every direction the caller asked for, so whichever handler runs
// discovers the condition from its own read(2)/write(2) result; there is no separate error event.
struct Readiness {
    int fd;
    bool readable;
    bool writable;
};

// The contract every backend keeps:
//  - Level-triggered: a descriptor is reported on every wait for as long as it stays ready.
//  - modify(fd, old_interest, new_interest) is the only mutation. The caller owns the one
//    per-descriptor table (EventLoop's slots) and passes what it last gave the backend for `fd`
//    and what it wants now; the backend keeps no copy of interests. Interest::none means "not in
//    the kernel's set": modify(fd, none, read) adds, modify(fd, read, none) removes,
//    modify(fd, read, both) changes, and old == new does nothing. A descriptor at none reports
//    nothing, not even a hangup (poll and epoll report hangups unasked, so none leaves the
//    kernel's set instead of staying in it with an empty mask).
//  - An old_interest other than what the backend was last given for `fd` is the caller's bug; the
//    backend refuses it where it can tell (epoll: the kernel's EEXIST or ENOENT; poll and select:
//    errc::bad_argument) and never reaches undefined behaviour.
//  - Remove a descriptor (modify to none) before close(2). Afterwards its number names nothing the
//    backend can remove: an epoll registration follows the open file, not the number, and outlives
//    close while a duplicate of the descriptor exists (epoll(7), Q6), still reported but out of
//    EPOLL_CTL_DEL's reach; poll reports POLLNVAL for it on every wait; select fails with EBADF.
//  - A descriptor outside [0, fd_limit()) is refused with errc::fd_out_of_range, whatever the
//    interests: never undefined behaviour (FD_SET beyond FD_SETSIZE writes out of bounds).
//  - wait(timeout) blocks until at least one descriptor in the set is ready, the timeout passes
//    (nullopt: no timeout) or a signal interrupts it. Timeout and EINTR give an empty span, not an
//    error. The span lives in the backend and stays valid until the next wait; modify calls in
//    between do not disturb it.
//    A descriptor appears at most once per wait.
//  - The backend never calls user code, never owns descriptors and never aborts; failures come
//    back as Error with the system call that failed.
class Backend {
public:
    Backend() = default;
    Backend(const Backend&) = delete;
    Backend& operator=(const Backend&) = delete;
    virtual ~Backend() = default;

    virtual BackendKind kind() const noexcept = 0;

    // One past the largest descriptor this backend can watch: FD_SETSIZE for select; for poll
    // and epoll the mechanism has no limit of its own (RLIMIT_NOFILE bounds the descriptors).
    virtual int fd_limit() const noexcept = 0;

    // Moves `fd` from old_interest to new_interest (see the contract above). Fails with
    // errc::fd_out_of_range, errc::bad_argument for an old_interest the backend knows is wrong, or
    // the system call that failed (epoll_ctl(ADD|MOD|DEL)); on failure the set is as it was.
    [[nodiscard]] virtual Result<void> modify(int fd, Interest old_interest, Interest new_interest) = 0;

    [[nodiscard]] virtual Result<std::span<const Readiness>> wait(
        std::optional<std::chrono::milliseconds> timeout) = 0;

    // ---- completions (io_uring only; a readiness backend has none) ----
    // Where operations are submitted; nullptr for a readiness backend.
    virtual CompletionRing* completion_ring() noexcept { return nullptr; }
    // The completions of handlers' operations that the last wait collected, valid until the next.
    virtual std::span<const Completion> completions() const noexcept { return {}; }
    // The result, whether more will follow, and the received bytes of one completion.
    virtual CompletionInfo describe(const Completion& completion) const noexcept {
        return {completion.result, false, {}};
    }
    // After a completion was delivered to its handler (or dropped: its handler has gone, and a
    // descriptor it carries is closed). Gives its buffer back to the ring.
    virtual void finished(const Completion& completion, bool delivered) noexcept {
        (void)completion;
        (void)delivered;
    }
    // Receives that found the provided-buffer ring empty (-ENOBUFS) and had to be re-armed.
    virtual std::uint64_t buffer_ring_shortages() const noexcept { return 0; }
};

// "epoll" | "poll" | "select" | "io_uring".
std::string_view backend_name(BackendKind kind) noexcept;

// Parses a backend name; nullopt for a name that is not a backend (compiled in or not).
std::optional<BackendKind> parse_backend_kind(std::string_view name) noexcept;

// The backends compiled into this build. The first is the default (epoll where the platform has
// it); io_uring, when compiled in, comes last: a kernel may still refuse it at run time.
std::span<const BackendKind> available_backends() noexcept;

// Creates a backend; errc::backend_unavailable if it was not compiled in, or the system call
// that failed (epoll_create1; io_uring_setup, with why the kernel refused it in the message).
[[nodiscard]] Result<std::unique_ptr<Backend>> make_backend(BackendKind kind);

}  // namespace echoplex
