// Logging implementation.
#include "echoplex/io/log.hpp"

#include <string>

namespace echoplex::log {
namespace {
std::string g_program = "echoplex";
Level g_level = Level::info;
}  // namespace

void set_program(std::string_view name) { g_program = name; }
void set_level(Level l) noexcept { g_level = l; }
bool enabled(Level l) noexcept { return l <= g_level; }

void write(Level l, std::string_view message) {
    if (!enabled(l)) {
        return;
    }
    const std::string line = fmt::format("{}: {}\n", g_program, message);
    std::fputs(line.c_str(), stderr);
}

}  // namespace echoplex::log
