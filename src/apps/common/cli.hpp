// A small GNU-style command-line parser shared by echoplex's programs: --long[=value], -s value,
// repeatable options, positionals, generated --help, and one-line usage errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace echoplex::cli {

// A bad command line. main() prints "<program>: <what> (try --help)" and exits 2.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Parser {
public:
    Parser(std::string program, std::string synopsis, std::string description);

    // A switch without a value, e.g. -v/--verbose (short_name 0: long only).
    void flag(char short_name, std::string long_name, std::string help, std::function<void()> on_seen);
    // An option with a value: --port=50007, --port 50007, -p 50007, -p50007.
    void option(char short_name, std::string long_name, std::string value_name, std::string help,
                std::function<void(std::string_view)> on_value);
    // Words that are not options, in order ("--" ends option parsing).
    void positionals(std::string usage, std::function<void(std::string_view)> on_word);

    // Throws UsageError; handlers may throw UsageError too.
    void parse(int argc, char** argv) const;
    std::string help() const;
    const std::string& program() const noexcept { return program_; }

private:
    struct Spec {
        char short_name;
        std::string long_name;
        std::string value_name;  // empty for flags
        std::string help;
        std::function<void()> on_seen;
        std::function<void(std::string_view)> on_value;
    };
    const Spec* find_long(std::string_view name) const;
    const Spec* find_short(char name) const;

    std::string program_;
    std::string synopsis_;
    std::string description_;
    std::vector<Spec> specs_;
    std::string positional_usage_;
    std::function<void(std::string_view)> on_positional_;
};

// The longest duration any option takes: 365 days.
inline constexpr double max_duration_s = 365.0 * 24 * 3600;

// Value parsers; each throws UsageError naming `option` and the offending text.
std::int64_t parse_int(std::string_view option, std::string_view text, std::int64_t min, std::int64_t max);
// Bytes with an optional binary suffix k, m, g (KiB, MiB, GiB): "64k" = 65536.
std::uint64_t parse_bytes(std::string_view option, std::string_view text);
// Seconds, fractional allowed, with an optional unit ms, s, m, h: "1.5s", "250ms", "2m".
double parse_seconds(std::string_view option, std::string_view text);
// One of `choices`, returned as its index.
std::size_t parse_choice(std::string_view option, std::string_view text, const std::vector<std::string_view>& choices);
// "a,b,c" -> {"a","b","c"}; empty items are an error.
std::vector<std::string_view> split_list(std::string_view option, std::string_view text);

// How long a program's end waits for queued log output to be written.
inline constexpr std::chrono::milliseconds exit_flush_timeout{1000};

// The edge of every program: runs `body`, turns UsageError into one line + exit 2 and any other
// exception into one line + exit 1.
int run_main(std::string_view program, const std::function<int()>& body);

}  // namespace echoplex::cli
