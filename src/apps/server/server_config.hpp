// ServerConfig: everything the echoplex server can be told, with the defaults, and its parser.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/log.hpp"
#include "echoplex/net/tcp_server.hpp"
#include "systemd.hpp"

namespace echoplex {

// One --port item: the port and the service named after it ("50009/discard"); an empty
// service means the default one (--reply).
struct PortSpec {
    std::uint16_t port = 0;
    std::string service;
    bool operator==(const PortSpec&) const = default;
};

// Descriptors a server needs besides its clients: listeners, the loop's, the spare for EMFILE.
inline constexpr std::size_t reserved_descriptors = 64;

struct ServerConfig {
    BackendKind backend = available_backends().front();
    std::vector<std::string> hosts = {"127.0.0.1"};  // -H, repeatable; each port binds every address of each
    std::vector<PortSpec> ports = {{50007, {}}, {50008, {}}};  // the book's select-server pair
    std::string default_service = "echo";                      // --reply: for ports given without one
    std::size_t max_connections = 10000;      // with select and not given: FD_SETSIZE - reserved_descriptors
    std::size_t high_watermark = 256 * 1024;  // queued output that pauses reading
    std::size_t low_watermark = 64 * 1024;    // queued output that resumes it
    double idle_timeout_s = 0;                // 0: never close idle connections
    double drain_timeout_s = 5;               // graceful shutdown's flush deadline
    int backlog = 511;
    bool proxy_protocol = false;              // every connection begins with a PROXY header
    double proxy_timeout_s = 5;               // ... complete within this long
    log::Level log_level = log::Level::info;
    std::size_t workers = 1;                  // processes, each with its own loop (--workers)
    bool ports_given = false;                 // --port on the command line (else the defaults)
    std::optional<std::pair<std::string, std::uint16_t>> metrics;  // --metrics=HOST:PORT: /metrics served there
    // Listening sockets systemd passed (socket activation), served after the ports; each serves
    // the service its name says, or the default one. With them and no --port, only they are served.
    std::vector<systemd::PassedSocket> passed;

    // The service a port serves: its own, else the default.
    const std::string& service_of(const PortSpec& spec) const noexcept {
        return spec.service.empty() ? default_service : spec.service;
    }
    // What the TCP server is told: an endpoint per port with its service's protocol, in --port
    // order, then one per passed socket.
    TcpServerOptions server_options() const;
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
