// What every echoplex program shares on its command line.
#include "program.hpp"

#include <fmt/format.h>

#include "cli.hpp"
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
    return available_backends()[cli::parse_choice(option, text, backend_choices())];
}

std::string version_line(std::string_view program) {
    return fmt::format("{} {} [backends: {}]", program, ECHOPLEX_VERSION, fmt::join(backend_choices(), ", "));
}

}  // namespace echoplex
