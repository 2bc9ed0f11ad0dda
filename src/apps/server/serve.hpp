// serve(): the server on one event loop, in the foreground process or in a worker.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "echoplex/net/worker_group.hpp"
#include "server_config.hpp"
#include "systemd.hpp"

namespace echoplex {

// What makes a worker's server different from the single process's: its master chose the ports
// (port 0 resolved once, for all workers), it listens with SO_REUSEPORT beside its siblings, and
// it talks to the master over `channel` (worker_wire.hpp) instead of taking signals and printing
// the startup and stats lines itself.
struct WorkerRole {
    WorkerChannel channel;
    std::vector<std::uint16_t> ports;  // parallel to the config's ports
};

// Binds, serves until told to stop (SIGINT/SIGTERM, or the master's stop), drains, and returns
// the exit status: 0 after a clean drain, 1 on any failure or a second stop.
// A single process tells systemd (`notifier`) when it is ready, how it is doing and when it stops.
int serve(const ServerConfig& config, const WorkerRole* worker = nullptr, const systemd::Notifier* notifier = nullptr);

// How often the STATUS= line of systemd's notification is refreshed.
inline constexpr std::chrono::seconds notify_status_period{10};

// "STATUS=serving: 12 open, 340 accepted, 0 refused".
std::string notify_status(const ServerStats& stats);

}  // namespace echoplex
