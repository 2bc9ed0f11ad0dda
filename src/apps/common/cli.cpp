// Command-line parsing shared by echoplex, testecho and echo-client.
#include "cli.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/log.hpp"

namespace echoplex::cli {

Parser::Parser(std::string program, std::string synopsis, std::string description)
    : program_(std::move(program)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

void Parser::flag(char short_name, std::string long_name, std::string help, std::function<void()> on_seen) {
    specs_.push_back({short_name, std::move(long_name), {}, std::move(help), std::move(on_seen), {}});
}

void Parser::option(char short_name, std::string long_name, std::string value_name, std::string help,
                    std::function<void(std::string_view)> on_value) {
    specs_.push_back({short_name, std::move(long_name), std::move(value_name), std::move(help), {}, std::move(on_value)});
}

void Parser::positionals(std::string usage, std::function<void(std::string_view)> on_word) {
    positional_usage_ = std::move(usage);
    on_positional_ = std::move(on_word);
}

const Parser::Spec* Parser::find_long(std::string_view name) const {
    for (const auto& spec : specs_) {
        if (spec.long_name == name) {
            return &spec;
        }
    }
    return nullptr;
}

const Parser::Spec* Parser::find_short(char name) const {
    for (const auto& spec : specs_) {
        if (spec.short_name != 0 && spec.short_name == name) {
            return &spec;
        }
    }
    return nullptr;
}

void Parser::parse(int argc, char** argv) const {
    bool options_done = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto next_value = [&](std::string_view shown) -> std::string_view {
            if (i + 1 >= argc) {
                throw UsageError(fmt::format("{} needs a value", shown));
            }
            return argv[++i];
        };
        if (options_done || arg.size() < 2 || arg[0] != '-') {
            if (!on_positional_) {
                throw UsageError(fmt::format("unexpected argument '{}'", arg));
            }
            on_positional_(arg);
        } else if (arg == "--") {
            options_done = true;
        } else if (arg.starts_with("--")) {
            const auto eq = arg.find('=');
            const std::string_view name = arg.substr(2, eq == std::string_view::npos ? std::string_view::npos : eq - 2);
            const Spec* spec = find_long(name);
            if (spec == nullptr) {
                throw UsageError(fmt::format("unknown option '--{}'", name));
            }
            if (spec->value_name.empty()) {
                if (eq != std::string_view::npos) {
                    throw UsageError(fmt::format("--{} takes no value", name));
                }
                spec->on_seen();
            } else {
                const std::string shown = "--" + spec->long_name;
                spec->on_value(eq != std::string_view::npos ? arg.substr(eq + 1) : next_value(shown));
            }
        } else {
            // Bundled short flags (-vv) and attached values (-p50007).
            for (std::size_t k = 1; k < arg.size(); ++k) {
                const Spec* spec = find_short(arg[k]);
                if (spec == nullptr) {
                    throw UsageError(fmt::format("unknown option '-{}'", arg[k]));
                }
                if (spec->value_name.empty()) {
                    spec->on_seen();
                    continue;
                }
                const std::string shown = fmt::format("-{}", arg[k]);
                spec->on_value(k + 1 < arg.size() ? arg.substr(k + 1) : next_value(shown));
                break;
            }
        }
    }
}

std::string Parser::help() const {
    std::string out = fmt::format("Usage: {} {}\n{}\n\nOptions:\n", program_, synopsis_, description_);
    for (const auto& spec : specs_) {
        std::string names = spec.short_name != 0 ? fmt::format("-{}, --{}", spec.short_name, spec.long_name)
                                                 : fmt::format("    --{}", spec.long_name);
        if (!spec.value_name.empty()) {
            names += "=" + spec.value_name;
        }
        std::string_view help = spec.help;
        bool first = true;
        // Help texts may hold several lines; the first goes beside the names.
        while (!help.empty() || first) {
            const auto nl = help.find('\n');
            const std::string_view line = help.substr(0, nl);
            out += fmt::format("  {:<30} {}\n", first ? names : std::string{}, line);
            help = nl == std::string_view::npos ? std::string_view{} : help.substr(nl + 1);
            first = false;
        }
    }
    return out;
}

std::int64_t parse_int(std::string_view option, std::string_view text, std::int64_t min, std::int64_t max) {
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) {
        throw UsageError(fmt::format("{}: '{}' is not a whole number", option, text));
    }
    if (value < min || value > max) {
        throw UsageError(fmt::format("{}: {} is out of range ({}..{})", option, value, min, max));
    }
    return value;
}

namespace {

// Splits "1.5ms" into 1.5 and "ms".
std::pair<double, std::string_view> number_and_unit(std::string_view option, std::string_view text, std::string_view what) {
    std::size_t digits = 0;
    while (digits < text.size() && ((text[digits] >= '0' && text[digits] <= '9') || text[digits] == '.')) {
        ++digits;
    }
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
    if (digits == 0 || ec != std::errc{} || end != text.data() + digits || !std::isfinite(value)) {
        throw UsageError(fmt::format("{}: '{}' is not {}", option, text, what));
    }
    return {value, text.substr(digits)};
}

}  // namespace

std::uint64_t parse_bytes(std::string_view option, std::string_view text) {
    const auto [value, unit] = number_and_unit(option, text, "a size (e.g. 512, 64k, 8m)");
    double scale = 1;
    if (unit == "k" || unit == "K" || unit == "KiB") {
        scale = 1024.0;
    } else if (unit == "m" || unit == "M" || unit == "MiB") {
        scale = 1024.0 * 1024;
    } else if (unit == "g" || unit == "G" || unit == "GiB") {
        scale = 1024.0 * 1024 * 1024;
    } else if (!unit.empty() && unit != "b" && unit != "B") {
        throw UsageError(fmt::format("{}: unknown size unit in '{}' (use k, m or g)", option, text));
    }
    const double bytes = value * scale;
    if (bytes > 1e18) {
        throw UsageError(fmt::format("{}: '{}' is too large", option, text));
    }
    return static_cast<std::uint64_t>(bytes);
}

double parse_seconds(std::string_view option, std::string_view text) {
    const auto [value, unit] = number_and_unit(option, text, "a duration (e.g. 10, 1.5s, 250ms, 2m)");
    double seconds = 0;
    if (unit.empty() || unit == "s") {
        seconds = value;
    } else if (unit == "ms") {
        seconds = value / 1000;
    } else if (unit == "m") {
        seconds = value * 60;
    } else if (unit == "h") {
        seconds = value * 3600;
    } else {
        throw UsageError(fmt::format("{}: unknown time unit in '{}' (use ms, s, m or h)", option, text));
    }
    // Beyond this a duration in nanoseconds (steady_clock's) would overflow somewhere downstream.
    if (seconds > max_duration_s) {
        throw UsageError(fmt::format("{}: '{}' is longer than the longest duration allowed (365 days)", option, text));
    }
    return seconds;
}

std::size_t parse_choice(std::string_view option, std::string_view text, const std::vector<std::string_view>& choices) {
    for (std::size_t i = 0; i < choices.size(); ++i) {
        if (choices[i] == text) {
            return i;
        }
    }
    throw UsageError(fmt::format("{}: '{}' is not one of {}", option, text, fmt::join(choices, ", ")));
}

std::vector<std::string_view> split_list(std::string_view option, std::string_view text) {
    std::vector<std::string_view> items;
    for (;;) {
        const auto comma = text.find(',');
        const std::string_view item = text.substr(0, comma);
        if (item.empty()) {
            throw UsageError(fmt::format("{}: empty item in list", option));
        }
        items.push_back(item);
        if (comma == std::string_view::npos) {
            return items;
        }
        text.remove_prefix(comma + 1);
    }
}

int run_main(std::string_view program, const std::function<int()>& body) {
    int status = 1;
    try {
        status = body();
    } catch (const UsageError& e) {
        log::flush(std::chrono::milliseconds(0));  // a line queued before it stays before it
        std::fputs(fmt::format("{}: {} (try '{} --help')\n", program, e.what(), program).c_str(), stderr);
        status = 2;
    } catch (const std::exception& e) {
        log::flush(std::chrono::milliseconds(0));
        std::fputs(fmt::format("{}: {}\n", program, e.what()).c_str(), stderr);
        status = 1;
    }
    // What the log still holds gets a second to go out; a reader that takes nothing longer is
    // not waited for.
    log::flush(exit_flush_timeout);
    return status;
}

}  // namespace echoplex::cli
