// What every echoplex program shares on its command line: the --backend choices and the
// version line.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "echoplex/io/backend.hpp"

namespace echoplex {

std::string version_line(std::string_view program);

// The compiled-in backends' names, best first: the choices every program's --backend offers.
std::vector<std::string_view> backend_choices();

// A --backend value (or ECHOPLEX_BACKEND's); throws cli::UsageError naming `option` if unknown.
BackendKind parse_backend_option(std::string_view option, std::string_view text);

}  // namespace echoplex
