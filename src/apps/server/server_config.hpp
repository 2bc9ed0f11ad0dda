// ServerConfig: everything the echoplex server can be told, with the defaults, and its parser.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/log.hpp"
#include "echoplex/net/server.hpp"

namespace echoplex {

// The server's own settings beside what the TCP server is told (ServerOptions).
struct ServerConfig : ServerOptions {
    BackendKind backend = available_backends().front();
    log::Level log_level = log::Level::info;
};

// What the command line asked for: run with a config, or print help/version and exit 0.
struct ServerArgs {
    enum class Action { run, help, version } action = Action::run;
    ServerConfig config;
    std::string text;  // the help or version text
};

// Parses argv; throws cli::UsageError for anything wrong. ECHOPLEX_BACKEND in the environment
// sets the backend unless --backend is given.
ServerArgs parse_server_args(int argc, char** argv);

}  // namespace echoplex
