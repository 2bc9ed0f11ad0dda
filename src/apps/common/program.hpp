// What every echoplex program shares on its command line: the --backend choices and the
// version line.
#pragma once

#include <optional>
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

// ECHOPLEX_BACKEND, for a program whose command line named no --backend: the backend it names,
// nullopt when it is unset or empty; throws cli::UsageError naming the variable if it is unknown.
// Read after the flags, so that --backend wins over it and --help/--version never read it.
std::optional<BackendKind> backend_from_environment();

// The one line a program prints when its backend cannot start (io_uring refused by the kernel):
// what failed, why, and which other backends --backend offers.
std::string backend_failure(BackendKind kind, const Error& error);

}  // namespace echoplex
