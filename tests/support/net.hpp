// Test helpers: connected socket pairs over AF_UNIX and loopback TCP, the backend under test,
// and a bounded "step the loop until" that replaces sleeping.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"
#include "echoplex/io/unique_fd.hpp"

namespace echoplex::test {

// ECHOPLEX_BACKEND from the environment (meson registers each suite once per backend), or the
// default backend when unset. An unknown name fails the test run loudly.
BackendKind backend_under_test();

// make_backend(backend_under_test()); throws std::runtime_error with the Error's message if that fails.
std::unique_ptr<Backend> new_backend();

struct SocketPair {
    UniqueFd a;
    UniqueFd b;
};
enum class Transport { unix_stream, tcp_loopback };

// Both ends non-blocking and close-on-exec. tcp_loopback connects over 127.0.0.1 on an ephemeral
// port. Failures throw std::system_error (a test helper may; the library may not).
SocketPair connected_pair(Transport transport);

// A close-on-exec duplicate of `fd` numbered `lowest` or above (select cannot take FD_SETSIZE),
// raising the soft RLIMIT_NOFILE towards the hard limit when it must. An empty UniqueFd when the
// limit leaves no room: the caller reports the test skipped.
UniqueFd duplicate_at_or_above(int fd, int lowest);

// Makes the next close of `fd` send RST instead of FIN (SO_LINGER with a zero timeout).
void set_linger_zero(int fd);

// Calls run_once until `done()` or `max_steps` iterations, each waiting at most `step`.
// Returns done(). Synchronises on events; the bound only stops a broken test from hanging.
bool run_until(EventLoop& loop, const std::function<bool()>& done, int max_steps = 1000,
               std::chrono::milliseconds step = std::chrono::milliseconds(10));

// An IoHandler that counts and forwards its callbacks.
class RecordingHandler final : public IoHandler {
public:
    std::function<void()> readable = [] {};
    std::function<void()> writable = [] {};
    int readable_calls = 0;
    int writable_calls = 0;

    void on_readable() override {
        ++readable_calls;
        readable();
    }
    void on_writable() override {
        ++writable_calls;
        writable();
    }
};

// Writes all of `data` to a non-blocking socket that has room (tests write little).
void write_all(int fd, const std::string& data);

// Sends the next piece (at most 64 KiB) of `data` from offset `sent` if the socket takes it,
// advancing `sent`.
void send_some(int fd, const std::string& data, std::size_t& sent);

// Drains what is readable now; returns the bytes read (stops at EAGAIN or EOF). With `closed`,
// sets *closed when the peer's EOF or a reset was seen.
std::string read_available(int fd, bool* closed = nullptr);

// A non-blocking client connected to 127.0.0.1:port (which must be listening). Throws on failure.
UniqueFd connect_loopback(std::uint16_t port);

}  // namespace echoplex::test
