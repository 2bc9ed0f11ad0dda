// sd_listen_fds and sd_notify, as sd_listen_fds(3) and sd_notify(3) describe them.
#include "systemd.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include "echoplex/io/fmt.hpp"

namespace echoplex::systemd {
namespace {

constexpr int first_passed_fd = 3;  // SD_LISTEN_FDS_START

std::string take_env(const char* name) {
    const char* value = std::getenv(name);
    std::string out = value != nullptr ? value : "";
    ::unsetenv(name);
    return out;
}

bool parse_number(std::string_view text, long& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return !text.empty() && ec == std::errc{} && end == text.data() + text.size();
}

}  // namespace

Result<std::vector<PassedSocket>> take_listen_fds() {
    const std::string pid = take_env("LISTEN_PID");
    const std::string count = take_env("LISTEN_FDS");
    const std::string names = take_env("LISTEN_FDNAMES");
    std::vector<PassedSocket> out;
    long listen_pid = 0;
    long n = 0;
    if (count.empty() || !parse_number(pid, listen_pid) || listen_pid != ::getpid()) {
        return out;  // not for this process (a parent's, or none at all)
    }
    if (!parse_number(count, n) || n < 0 || n > 4096) {
        return Error{"LISTEN_FDS", make_error_code(errc::bad_argument), fmt::format("'{}' is not a count of sockets", count)};
    }
    std::vector<std::string> name_list;
    for (std::string_view rest = names; !names.empty();) {
        const auto colon = rest.find(':');
        name_list.emplace_back(rest.substr(0, colon));
        if (colon == std::string_view::npos) {
            break;
        }
        rest.remove_prefix(colon + 1);
    }
    for (long i = 0; i < n; ++i) {
        PassedSocket s;
        s.fd = first_passed_fd + static_cast<int>(i);
        if (static_cast<std::size_t>(i) < name_list.size()) {
            s.name = name_list[static_cast<std::size_t>(i)];
        }
        out.push_back(std::move(s));
    }
    return out;
}

Notifier Notifier::from_environment() {
    Notifier n;
    std::string path = take_env("NOTIFY_SOCKET");
    if (path.empty() || (path[0] != '/' && path[0] != '@') || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
        return n;
    }
    if (path[0] == '@') {
        path[0] = '\0';
    }
    n.socket_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    n.address_ = std::move(path);
    return n;
}

bool Notifier::send(std::string_view state) const noexcept {
    if (!socket_) {
        return false;
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, address_.data(), address_.size());
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size() + (address_[0] == '\0' ? 0 : 1));
    return ::sendto(socket_.get(), state.data(), state.size(), MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr),
                    len) == static_cast<ssize_t>(state.size());
}

}  // namespace echoplex::systemd
