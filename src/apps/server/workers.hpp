// run_workers(): the master of --workers=N.
#pragma once

#include "server_config.hpp"
#include "systemd.hpp"

namespace echoplex {

// Reserves every port (port 0 chosen once), forks config.workers workers that each serve them
// with SO_REUSEPORT, prints the startup line once all are serving, relays SIGINT/SIGTERM/SIGUSR1,
// replaces workers that die, and prints the summed stats on SIGUSR1 and at exit. Returns the exit
// status: 0 when every worker stopped cleanly after a stop signal, 1 otherwise.
// `notifier` gets READY=1 once every worker serves, STATUS= now and then, STOPPING=1 on a stop.
int run_workers(const ServerConfig& config, const systemd::Notifier& notifier);

}  // namespace echoplex
