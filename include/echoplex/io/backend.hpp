// The readiness backend: the one question a multiplexer answers (which descriptors are ready?),
// asked through select(2), poll(2) or epoll(7) behind one interface chosen at run time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "echoplex/io/error.hpp"

namespace echoplex {

// The mechanisms echoplex knows. The enumerator names are the one spelling used by
// --backend, ECHOPLEX_BACKEND, log lines and test names.
enum class BackendKind : std::uint8_t { epoll, poll, select };

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
//  - watch(fd, want) adds `fd` or changes its interest; repeating the current interest is harmless.
//    Interest::none keeps the registration but reports nothing for the descriptor, not even a
//    hangup (poll and epoll report hangups unasked; the backends take such a descriptor out of
//    the kernel's set so that it cannot wake the loop over and over).
//  - unwatch(fd) forgets `fd`; call it before close(2), because an epoll registration follows the
//    open file, not the number, and outlives close while a duplicate of the descriptor exists.
//    Unwatching an unknown descriptor is a no-op.
//  - A descriptor outside [0, fd_limit()) is refused with errc::fd_out_of_range: never undefined
//    behaviour (FD_SET beyond FD_SETSIZE writes out of bounds).
//  - wait(timeout) blocks until at least one watched descriptor is ready, the timeout passes
//    (nullopt: no timeout) or a signal interrupts it. Timeout and EINTR give an empty span, not an
//    error. The span lives in the backend and stays valid until the next wait; watch and
//    unwatch calls in between do not disturb it.
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

    [[nodiscard]] virtual Result<void> watch(int fd, Interest want) = 0;
    virtual void unwatch(int fd) noexcept = 0;
    [[nodiscard]] virtual Result<std::span<const Readiness>> wait(
        std::optional<std::chrono::milliseconds> timeout) = 0;
};

// "epoll" | "poll" | "select".
std::string_view backend_name(BackendKind kind) noexcept;

// Parses a backend name; nullopt for a name that is not a backend (compiled in or not).
std::optional<BackendKind> parse_backend_kind(std::string_view name) noexcept;

// The backends compiled into this build, best first. The first is the default.
std::span<const BackendKind> available_backends() noexcept;

// Creates a backend; errc::backend_unavailable if it was not compiled in, or the system call
// that failed (epoll_create1).
[[nodiscard]] Result<std::unique_ptr<Backend>> make_backend(BackendKind kind);

}  // namespace echoplex
