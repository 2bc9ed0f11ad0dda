// Logging: one line per event on stderr, filtered by level, that never blocks the caller.
//
// A line goes out at once when stderr takes it; what stderr does not take (a pipe nobody reads, a
// terminal paused with Ctrl-S) waits in a bounded queue and is written when the descriptor is
// writable again: by a LogPump on an event loop, or by the next log call, or by flush() at exit.
// A full queue drops lines and counts them; the next line that fits is preceded by one saying how
// many were dropped. The same holds for print(), the program's lines on stdout.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string_view>

#include "echoplex/io/fmt.hpp"

namespace echoplex::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };

// How a line looks:
//   plain        "program: message"                                  (the tools, the default)
//   timestamped  "2026-12-02T05:32:08.123Z program info: message"    (RFC 3339, UTC, milliseconds)
//   journal      "<6>message": the priority prefix journald reads (error 3, warn 4, info 6, debug 7)
enum class Format { plain, timestamped, journal };

void set_program(std::string_view name);
// Said after the program in every line ("echoplex worker 1"), and first in a journal line
// ("<6>worker 1: message"). Empty by default.
void set_context(std::string_view context);
void set_level(Level level) noexcept;
void set_format(Format format) noexcept;
bool enabled(Level l) noexcept;
// True when stderr is the systemd journal's stream (JOURNAL_STREAM names its device and inode).
bool stderr_is_journal() noexcept;

void write(Level l, std::string_view message);
// Text for stdout as it is (the startup line), on the same terms as a log line.
void print(std::string_view text);

// Waits at most `timeout` for queued lines to be written; what is left then is dropped. For the
// end of a program.
void flush(std::chrono::milliseconds timeout) noexcept;
// In a child after fork(2): forgets the lines the parent had queued (the parent writes them).
void after_fork() noexcept;
// Opens now what the streams write through (a descriptor of their own for a pipe or terminal),
// so that it is not opened later, in the middle of serving. LogPump calls it.
void prepare() noexcept;
// After stderr or stdout was replaced (dup2): looks again at what they are. Queued output is
// dropped.
void reopen() noexcept;
// Lines dropped so far because the queue was full (both streams).
std::uint64_t dropped() noexcept;

// For LogPump: the descriptors with queued output, and writing what they take now.
void for_each_pending(const std::function<void(int fd)>& fn);
void write_queued(int fd) noexcept;
// Called (once per change from empty) when output is left queued; LogPump sets it.
void set_wake(std::function<void()> wake);

template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
    write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::warn)) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::info)) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::debug)) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace echoplex::log
