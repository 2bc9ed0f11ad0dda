// The two systemd protocols the server speaks itself (each is a few lines; no libsystemd):
// socket activation (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and readiness
// notification (sd_notify(3): a datagram to NOTIFY_SOCKET).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "echoplex/io/error.hpp"
#include "echoplex/io/unique_fd.hpp"

namespace echoplex::systemd {

// A socket systemd passed, and its FileDescriptorName= ("" when none was given).
struct PassedSocket {
    int fd = -1;
    std::string name;
};

// The sockets passed to this process (descriptors 3, 4, ... when LISTEN_PID is this process),
// with their names; empty when none were. The variables are removed from the environment, so a
// child never takes them for its own.
[[nodiscard]] Result<std::vector<PassedSocket>> take_listen_fds();

// sd_notify: the state lines ("READY=1", "STATUS=...", "STOPPING=1") as one datagram to
// NOTIFY_SOCKET, without blocking. Inactive (every send does nothing) when the variable is unset.
class Notifier {
public:
    // Reads NOTIFY_SOCKET (a path, or "@name" in the abstract namespace) and removes it from the
    // environment.
    static Notifier from_environment();
    Notifier() = default;

    bool active() const noexcept { return static_cast<bool>(socket_); }
    // False when the datagram was not sent (no socket, or it would block).
    bool send(std::string_view state) const noexcept;

private:
    UniqueFd socket_;
    std::string address_;  // sun_path bytes, a leading '\0' for the abstract namespace
};

}  // namespace echoplex::systemd
