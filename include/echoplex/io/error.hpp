// Errors that carry the failing system call and its errno to the caller, and Result<T>,
// a value-or-Error shaped like std::expected so it can become an alias of it under C++23.
#pragma once

#include <cassert>
#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace echoplex {

// Conditions that are ours rather than the kernel's.
enum class errc {
    fd_out_of_range = 1,   // the descriptor cannot be watched by this backend (select: >= FD_SETSIZE)
    backend_unavailable,   // the backend was not compiled in on this platform
    bad_argument,          // a caller passed a value the function cannot use
    resolve_failed,        // getaddrinfo found no address; `context` holds the name and the
                           // resolver's reason (gai_strerror), which message() prints instead
    timed_out,             // a deadline passed before the operation completed
};

const std::error_category& echoplex_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

// What failed and why. `call` names the operation ("epoll_ctl(ADD)", "bind 127.0.0.1:50007");
// it must outlive the Error, so pass a string literal or use `context` for dynamic text.
struct Error {
    std::string_view call;
    std::error_code code;
    std::string context = {};  // optional dynamic detail, printed after `call`

    // The current errno from the call that just failed.
    static Error from_errno(std::string_view call, int err = errno) {
        return Error{call, std::error_code(err, std::system_category())};
    }

    // "call context: message (ENAME)", the single place errors are formatted.
    std::string message() const;
};

// Value or Error. `[[nodiscard]]` because an ignored Result is an ignored failure.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
    Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

    bool has_value() const noexcept { return state_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& value() & { assert(has_value()); return std::get<0>(state_); }
    const T& value() const& { assert(has_value()); return std::get<0>(state_); }
    T&& value() && { assert(has_value()); return std::get<0>(std::move(state_)); }
    T& operator*() & { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const& { assert(!has_value()); return std::get<1>(state_); }
    Error&& error() && { assert(!has_value()); return std::get<1>(std::move(state_)); }

private:
    std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)) {}  // NOLINT: implicit by design

    bool has_value() const noexcept { return !error_.has_value(); }
    explicit operator bool() const noexcept { return has_value(); }
    const Error& error() const& { assert(error_); return *error_; }
    Error&& error() && { assert(error_); return std::move(*error_); }

private:
    // Empty on success, so that the success path (every interest change, every start) builds
    // and destroys no Error and its string.
    std::optional<Error> error_;
};

}  // namespace echoplex

template <>
struct std::is_error_code_enum<echoplex::errc> : std::true_type {};
