// ServerConfig: everything the echoplex server can be told, with the defaults, and its parser.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "echoplex/backend.hpp"
#include "echoplex/log.hpp"

namespace echoplex {

enum class ReplyMode { echo, stamp };

struct ServerConfig {
    BackendKind backend = available_backends().front();
    std::string host = "127.0.0.1";
    std::vector<std::uint16_t> ports = {50007, 50008};  // the book's select-server pair
    ReplyMode reply = ReplyMode::echo;
    std::size_t max_connections = 10000;
    std::size_t high_watermark = 256 * 1024;  // queued output that pauses reading
    std::size_t low_watermark = 64 * 1024;    // queued output that resumes it
    double idle_timeout_s = 0;                // 0: never close idle connections
    double drain_timeout_s = 5;               // graceful shutdown's flush deadline
    int backlog = 511;
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

std::string version_line(std::string_view program);

// The compiled-in backends' names, best first: the choices every program's --backend offers.
std::vector<std::string_view> backend_choices();

// A --backend value (or ECHOPLEX_BACKEND's); throws cli::UsageError naming `option` if unknown.
BackendKind parse_backend_option(std::string_view option, std::string_view text);

}  // namespace echoplex
