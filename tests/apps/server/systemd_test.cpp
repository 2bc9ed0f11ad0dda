// The server under systemd's two protocols, without systemd as PID 1: systemd-socket-activate
// (Debian's systemd package) passes it listening sockets, a datagram socket the test binds stands
// for NOTIFY_SOCKET, and systemd-analyze scores deploy/echoplex.service. Registered per backend.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "support/child_process.hpp"
#include "support/clients.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"
#include "support/server_process.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

std::string backend_arg() { return "--backend=" + std::string(backend_name(backend_under_test())); }

// `n` loopback ports free a moment ago (systemd-socket-activate takes no port 0).
std::vector<std::uint16_t> free_ports(std::size_t n) {
    std::vector<UniqueFd> held;
    std::vector<std::uint16_t> ports;
    for (std::size_t i = 0; i < n; ++i) {
        UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        socklen_t len = sizeof addr;
        REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
        ports.push_back(ntohs(addr.sin_port));
        held.push_back(std::move(fd));
    }
    return ports;
}

std::vector<std::string> workers_args() {
    if (workers_under_test() > 1) {
        return {"--workers=" + std::to_string(workers_under_test())};
    }
    return {};
}

// A datagram socket bound at a fresh path: what systemd listens on for sd_notify.
class NotifyListener {
public:
    NotifyListener() {
        path_ = std::string(std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp") + "/echoplex-notify-" +
                std::to_string(::getpid()) + "-" + std::to_string(counter_++);
        fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd_);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
        ::unlink(path_.c_str());
        REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    ~NotifyListener() { ::unlink(path_.c_str()); }
    NotifyListener(const NotifyListener&) = delete;
    NotifyListener& operator=(const NotifyListener&) = delete;
    const std::string& path() const noexcept { return path_; }

    // Datagrams until one contains `wanted` (returned), or `timeout` passes ("" then).
    std::string wait_for(const std::string& wanted, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return "";
            }
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) != 1) {
                return "";
            }
            char buf[4096];
            const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
            if (n > 0) {
                std::string message(buf, static_cast<std::size_t>(n));
                seen_.push_back(message);
                if (message.find(wanted) != std::string::npos) {
                    return message;
                }
            }
        }
    }
    const std::vector<std::string>& seen() const noexcept { return seen_; }

private:
    static inline int counter_ = 0;
    std::string path_;
    UniqueFd fd_;
    std::vector<std::string> seen_;
};

TEST_CASE("socket activation: sockets passed by systemd-socket-activate are served, each with the service its name gives") {
    const std::string activate = resolve_program("systemd-socket-activate");
    if (activate.find('/') == std::string::npos) {
        MESSAGE("skipped: systemd-socket-activate is not installed (Debian: apt-get install systemd)");
        return;
    }
    const auto ports = free_ports(2);
    std::vector<std::string> args = {"-l", "127.0.0.1:" + std::to_string(ports[0]), "-l", "127.0.0.1:" + std::to_string(ports[1]),
                                     "--fdname=echo:discard", server_binary(), backend_arg()};
    for (const auto& a : workers_args()) {
        args.push_back(a);
    }
    ChildProcess activator(activate, args);
    // It listens before it starts the server, which it starts at the first connection.
    REQUIRE_MESSAGE(activator.wait_output([](const std::string&, const std::string& err) { return err.find("as 4.") != std::string::npos; }, 10s),
                    activator.stderr_text());
    Client echo = Client::verifying(connect_to(ports[0]), random_bytes(100 * 1024, 1));
    const auto r = drive(echo, 10s);
    CHECK_MESSAGE(r.all_done, r.describe(), " ", activator.stderr_text());
    CHECK(echo.echoed_all());
    REQUIRE(activator.wait_output([](const std::string& out, const std::string&) { return out.find('\n') != std::string::npos; }, 10s));
    const std::string startup = activator.stdout_text();
    MESSAGE(startup);
    CHECK(startup.find("127.0.0.1:" + std::to_string(ports[0]) + " (echo)") != std::string::npos);
    CHECK(startup.find("127.0.0.1:" + std::to_string(ports[1]) + " (discard)") != std::string::npos);
    CHECK(startup.find(":50007") == std::string::npos);  // the default ports give way to the passed ones
    // discard: nothing comes back, the connection stays open.
    Client discard = Client::storing(connect_to(ports[1]), "into the void");
    drive(discard, 300ms);
    CHECK(discard.sent == discard.send_limit);
    CHECK(discard.stored.empty());
    CHECK_FALSE(discard.closed());
    discard.fd.reset();
    echo.fd.reset();
    REQUIRE(activator.send_signal(SIGTERM));
    const auto status = activator.wait_exit(15s);
    REQUIRE(status.has_value());
    CHECK_MESSAGE(status->ok(), status->describe(), " ", activator.stderr_text());
}

TEST_CASE("sd_notify: READY=1 with MAINPID and STATUS once serving, STOPPING=1 on SIGTERM (a path and an abstract name)") {
    for (const bool abstract : {false, true}) {
        CAPTURE(abstract);
        NotifyListener listener;
        std::string address = listener.path();
        if (abstract) {
            // The abstract namespace: '@' stands for the leading NUL; bind a second socket there.
            address = "@" + listener.path();
        }
        UniqueFd abstract_socket;
        if (abstract) {
            abstract_socket.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            std::memcpy(addr.sun_path + 1, listener.path().c_str(), listener.path().size());
            REQUIRE(::bind(abstract_socket.get(), reinterpret_cast<sockaddr*>(&addr),
                           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + listener.path().size())) == 0);
        }
        ::setenv("NOTIFY_SOCKET", address.c_str(), 1);
        ServerProcess server({"--port", "0"});
        ::unsetenv("NOTIFY_SOCKET");
        std::string ready;
        if (abstract) {
            pollfd p{abstract_socket.get(), POLLIN, 0};
            REQUIRE(::poll(&p, 1, 10000) == 1);
            char buf[4096];
            const ssize_t n = ::recv(abstract_socket.get(), buf, sizeof buf, 0);
            REQUIRE(n > 0);
            ready.assign(buf, static_cast<std::size_t>(n));
        } else {
            ready = listener.wait_for("READY=1", 10s);
        }
        MESSAGE(ready);
        CHECK(ready.find("READY=1") != std::string::npos);
        CHECK(ready.find("MAINPID=" + std::to_string(server.pid())) != std::string::npos);
        CHECK(ready.find("STATUS=serving: 0 open, 0 accepted") != std::string::npos);
        REQUIRE(server.send_signal(SIGTERM));
        if (!abstract) {
            const std::string stopping = listener.wait_for("STOPPING=1", 10s);
            CHECK_MESSAGE(stopping.find("STOPPING=1") != std::string::npos, "seen: ", listener.seen().size(), " datagrams");
        }
        const auto status = server.wait_exit(15s);
        REQUIRE(status.has_value());
        CHECK(status->ok());
    }
}

TEST_CASE("deploy/echoplex.service: systemd-analyze security scores it 2.0 or lower") {
    const std::string analyze = resolve_program("systemd-analyze");
    const char* unit_dir = std::getenv("DEPLOY_DIR");
    REQUIRE_MESSAGE(unit_dir != nullptr, "DEPLOY_DIR is not set (meson test sets it)");
    if (analyze.find('/') == std::string::npos) {
        MESSAGE("skipped: systemd-analyze is not installed (Debian: apt-get install systemd)");
        return;
    }
    const auto r = run_to_completion(analyze, {"security", "--offline=yes", std::string(unit_dir) + "/echoplex.service"}, 60s);
    static const std::regex overall(R"(Overall exposure level for echoplex\.service: ([0-9]+\.[0-9]+))");
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_search(r.out, m, overall), r.out, r.err);
    MESSAGE("exposure ", m[1].str());
    CHECK(std::stod(m[1].str()) <= 2.0);
}

}  // namespace
}  // namespace echoplex::test
