// What every echoplex program shares on its command line.
#include "program.hpp"

#include <algorithm>
#include <cstdlib>

#include "echoplex/io/fmt.hpp"

#include "cli.hpp"
#include "build_info.h"
#include "commit.h"
#include "echoplex/config.h"

namespace echoplex {

std::vector<std::string_view> backend_choices() {
    std::vector<std::string_view> names;
    for (const BackendKind kind : available_backends()) {
        names.push_back(backend_name(kind));
    }
    return names;
}

BackendKind parse_backend_option(std::string_view option, std::string_view text) {
    const auto known = parse_backend_kind(text);
    const auto compiled = available_backends();
    if (known && std::find(compiled.begin(), compiled.end(), *known) == compiled.end()) {
        const char* how = *known == BackendKind::io_uring ? " (it needs liburing: install liburing-dev and rebuild)" : "";
        throw cli::UsageError(fmt::format("{}: {} is not compiled into this build{}; choose one of {}", option, text, how,
                                          fmt::join(backend_choices(), ", ")));
    }
    return compiled[cli::parse_choice(option, text, backend_choices())];
}

std::optional<BackendKind> backend_from_environment() {
    const char* env = std::getenv("ECHOPLEX_BACKEND");
    if (env == nullptr || *env == '\0') {
        return std::nullopt;
    }
    return parse_backend_option("ECHOPLEX_BACKEND", env);
}

std::string backend_failure(BackendKind kind, const Error& error) {
    std::vector<std::string_view> others;
    for (const std::string_view name : backend_choices()) {
        if (name != backend_name(kind)) {
            others.push_back(name);
        }
    }
    return fmt::format("cannot start the {} backend: {}; choose another with --backend ({})", backend_name(kind),
                       error.message(), fmt::join(others, ", "));
}

std::string version_line(std::string_view program) {
    const std::string_view commit = ECHOPLEX_COMMIT;
    return fmt::format("{} {} ({}{}, {}) [backends: {}]", program, ECHOPLEX_VERSION,
                       commit.empty() ? "" : fmt::format("git {}, ", commit), ECHOPLEX_BUILD_TYPE, ECHOPLEX_COMPILER,
                       fmt::join(backend_choices(), ", "));
}

}  // namespace echoplex
