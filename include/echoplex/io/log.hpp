// Logging: one line per event on stderr, "<program>: message", filtered by level.
#pragma once

#include <cstdio>
#include <string_view>

#include <fmt/format.h>

namespace echoplex::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };

void set_program(std::string_view name);
void set_level(Level level) noexcept;
bool enabled(Level l) noexcept;
void write(Level l, std::string_view message);  // one fputs of the whole line

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
