// The server's command line through the shared parser: values, units, errors and defaults.
#include "server_config.hpp"

#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cli.hpp"
#include "echoplex/net/bind_socket.hpp"
#include "echoplex/net/worker_group.hpp"
#include "systemd.hpp"
#include "support/doctest.hpp"

namespace echoplex {
namespace {

// argv from words; the strings live as long as the object.
struct Argv {
    explicit Argv(std::vector<std::string> words) : words_(std::move(words)) {
        for (auto& w : words_) ptrs_.push_back(w.data());
        ptrs_.push_back(nullptr);
    }
    int argc() const { return static_cast<int>(words_.size()); }
    char** argv() { return ptrs_.data(); }

private:
    std::vector<std::string> words_;
    std::vector<char*> ptrs_;
};

ServerArgs parse(std::vector<std::string> words) {
    words.insert(words.begin(), "echoplex");
    Argv a(std::move(words));
    return parse_server_args(a.argc(), a.argv());
}

std::string usage_error(std::vector<std::string> words) {
    try {
        parse(std::move(words));
    } catch (const cli::UsageError& e) {
        return e.what();
    }
    return "(accepted)";
}

std::vector<std::uint16_t> port_numbers(const ServerConfig& c) {
    std::vector<std::uint16_t> out;
    for (const auto& spec : c.ports) out.push_back(spec.port);
    return out;
}

TEST_CASE("defaults are the book's two ports on loopback, raw echo, the best backend") {
    const ServerConfig c = parse({}).config;
    CHECK(port_numbers(c) == std::vector<std::uint16_t>{50007, 50008});
    CHECK(c.hosts == std::vector<std::string>{"127.0.0.1"});
    CHECK(c.service_of(c.ports[0]) == "echo");
    CHECK(c.backend == available_backends().front());
    CHECK(c.low_watermark < c.high_watermark);
}

TEST_CASE("ports repeat and take comma lists; given ports replace the defaults") {
    CHECK(port_numbers(parse({"--port", "0", "-p", "7,8", "--port=9"}).config) == std::vector<std::uint16_t>{0, 7, 8, 9});
    CHECK(port_numbers(parse({"-p9"}).config) == std::vector<std::uint16_t>{9});
    CHECK(port_numbers(parse({"-p", "0,0"}).config) == std::vector<std::uint16_t>{0, 0});  // two free ports
}

TEST_CASE("each port names its service; --reply is the service of ports given without one") {
    const ServerConfig c = parse({"-p", "50007", "-p", "50008/stamp,50009/discard", "-p", "50019/chargen",
                                  "-p", "50013/daytime", "--reply=stamp"})
                               .config;
    REQUIRE(c.ports.size() == 5);
    CHECK(c.service_of(c.ports[0]) == "stamp");
    CHECK(c.service_of(c.ports[1]) == "stamp");
    CHECK(c.service_of(c.ports[2]) == "discard");
    CHECK(c.service_of(c.ports[3]) == "chargen");
    CHECK(c.service_of(c.ports[4]) == "daytime");
    const TcpServerOptions options = c.server_options();
    REQUIRE(options.endpoints.size() == 5);
    CHECK(options.endpoints[2].service == "discard");
    CHECK(options.endpoints[2].port == 50009);
    for (const auto& endpoint : options.endpoints) {
        CHECK(endpoint.protocol != nullptr);
        CHECK(endpoint.protocol() != nullptr);
    }
    CHECK(parse({"-p", "1"}).config.service_of(PortSpec{1, {}}) == "echo");
}

TEST_CASE("a port given twice or an unknown service is a usage error naming it") {
    CHECK(usage_error({"-p", "50007,50007"}) == "--port: port 50007 is given twice");
    CHECK(usage_error({"-p", "50007", "-p", "50007/discard"}) == "--port: port 50007 is given twice");
    CHECK(usage_error({"-p", "50009/dicard"}) ==
          "--port: unknown service 'dicard' in '50009/dicard' (services: echo, stamp, discard, chargen, daytime)");
    CHECK(usage_error({"-p", "50009/"}).find("unknown service ''") != std::string::npos);
    CHECK(usage_error({"-p", "/echo"}) == "--port: '' is not a whole number");
}

TEST_CASE("every backend name is accepted and an unknown one lists the valid ones") {
    for (const BackendKind kind : available_backends()) {
        CHECK(parse({"--backend=" + std::string(backend_name(kind))}).config.backend == kind);
    }
    CHECK(usage_error({"--backend=kqueue"}).find("'kqueue' is not one of epoll") != std::string::npos);
}

TEST_CASE("sizes and durations take units") {
    const ServerConfig c = parse({"--high-watermark=1m", "--low-watermark", "64k", "--idle-timeout=250ms",
                                  "--drain-timeout=1.5s", "--reply=stamp", "-c", "3", "-vv"})
                               .config;
    CHECK(c.high_watermark == 1024 * 1024);
    CHECK(c.low_watermark == 64 * 1024);
    CHECK(c.idle_timeout_s == doctest::Approx(0.25));
    CHECK(c.drain_timeout_s == doctest::Approx(1.5));
    CHECK(c.default_service == "stamp");
    CHECK(c.max_connections == 3);
    CHECK(c.log_level == log::Level::debug);
    CHECK(cli::parse_seconds("-d", "2m") == doctest::Approx(120));
    CHECK(cli::parse_bytes("-s", "512") == 512);
}

TEST_CASE("--proxy-protocol turns the PROXY header on for every port, with its deadline") {
    const ServerConfig off = parse({}).config;
    CHECK_FALSE(off.server_options().proxy_protocol);
    const ServerConfig on = parse({"--proxy-protocol", "--proxy-timeout=3s", "-p", "0,0/daytime"}).config;
    const TcpServerOptions options = on.server_options();
    CHECK(options.proxy_protocol);
    CHECK(options.proxy_deadline == std::chrono::milliseconds(3000));
    CHECK(parse({"--proxy-protocol"}).config.server_options().proxy_deadline == std::chrono::milliseconds(5000));
    CHECK(usage_error({"--proxy-timeout=0"}) == "--proxy-timeout must be at least 1ms (default 5s)");
}

TEST_CASE("bad input is one line naming the option and the value") {
    CHECK(usage_error({"--bogus"}) == "unknown option '--bogus'");
    CHECK(usage_error({"-x"}) == "unknown option '-x'");
    CHECK(usage_error({"--port=70000"}) == "--port: 70000 is out of range (0..65535)");
    CHECK(usage_error({"--port=http"}) == "--port: 'http' is not a whole number");
    CHECK(usage_error({"--port"}) == "--port needs a value");
    CHECK(usage_error({"--port=1,,2"}) == "--port: empty item in list");
    CHECK(usage_error({"--idle-timeout=5 parsecs"}).find("unknown time unit") != std::string::npos);
    CHECK(usage_error({"--high-watermark=1k", "--low-watermark=2k"}).find("must not exceed") != std::string::npos);
    CHECK(usage_error({"--help=yes"}) == "--help takes no value");
    CHECK(usage_error({"stray"}) == "unexpected argument 'stray'");
}

TEST_CASE("help and version are actions, not errors") {
    const ServerArgs help = parse({"--help"});
    CHECK(help.action == ServerArgs::Action::help);
    CHECK(help.text.starts_with("Usage: echoplex"));
    for (const char* flag : {"--backend", "--port", "--host", "--reply", "--max-connections", "--high-watermark",
                             "--low-watermark", "--idle-timeout", "--drain-timeout", "--proxy-protocol",
                             "--proxy-timeout", "--workers", "--log-level", "--version"}) {
        CHECK_MESSAGE(help.text.find(flag) != std::string::npos, flag);
    }
    CHECK(help.text.find("LISTEN_FDS") != std::string::npos);
    CHECK(help.text.find("NOTIFY_SOCKET") != std::string::npos);
    for (const char* service : {"echo ", "stamp ", "discard ", "chargen ", "daytime "}) {
        CHECK_MESSAGE(help.text.find(std::string("  ") + service) != std::string::npos, service);
    }
    const ServerArgs version = parse({"-V"});
    CHECK(version.action == ServerArgs::Action::version);
    CHECK(version.text.starts_with("echoplex "));
}

TEST_CASE("a watermark error blames the value typed, not a default") {
    CHECK(usage_error({"--high-watermark=1k"}) ==
          "--high-watermark (1024) is below the default --low-watermark (65536): give --low-watermark too, at most 1024");
    CHECK(usage_error({"--low-watermark=1m"}) ==
          "--low-watermark (1048576) is above the default --high-watermark (262144): lower it, or give a "
          "--high-watermark at least as large");
    CHECK(usage_error({"--high-watermark=1k", "--low-watermark=2k"}) ==
          "--low-watermark (2048) must not exceed --high-watermark (1024): lower the first or raise the second");
    CHECK(parse({"--high-watermark=1k", "--low-watermark=512"}).config.low_watermark == 512);
}

TEST_CASE("durations have an upper bound instead of overflowing") {
    CHECK(usage_error({"--idle-timeout=10000000h"}) ==
          "--idle-timeout: '10000000h' is longer than the longest duration allowed (365 days)");
    CHECK(usage_error({"--drain-timeout=99999999999999h"}).find("longest duration allowed") != std::string::npos);
    CHECK(parse({"--idle-timeout=8760h"}).config.idle_timeout_s == doctest::Approx(365.0 * 24 * 3600));
}

TEST_CASE("ECHOPLEX_BACKEND: --backend wins over it, and --help/--version never read it") {
    ::setenv("ECHOPLEX_BACKEND", "kqueue", 1);
    CHECK(parse({"--version"}).action == ServerArgs::Action::version);
    CHECK(parse({"--help"}).action == ServerArgs::Action::help);
    CHECK(parse({"--backend=poll"}).config.backend == BackendKind::poll);
    CHECK(usage_error({}).starts_with("ECHOPLEX_BACKEND: 'kqueue' is not one of"));
    ::setenv("ECHOPLEX_BACKEND", "select", 1);
    CHECK(parse({}).config.backend == BackendKind::select);
    ::unsetenv("ECHOPLEX_BACKEND");
}

TEST_CASE("with select, --max-connections defaults to what select can watch; given, it stands") {
    CHECK(parse({"--backend=select"}).config.max_connections == FD_SETSIZE - reserved_descriptors);
    CHECK(parse({"--backend=select", "--max-connections=5000"}).config.max_connections == 5000);
    CHECK(parse({"--backend=poll"}).config.max_connections == 10000);
}

TEST_CASE("--host repeats, takes IPv6 with or without brackets, and refuses a port") {
    CHECK(parse({"-H", "::1", "-H", "127.0.0.1"}).config.hosts == std::vector<std::string>{"::1", "127.0.0.1"});
    CHECK(parse({"--host=[::1]"}).config.hosts == std::vector<std::string>{"::1"});
    CHECK(parse({"--host=localhost"}).config.hosts == std::vector<std::string>{"localhost"});
    CHECK(usage_error({"--host=localhost:80"}) ==
          "--host: 'localhost:80' has a port: give the address alone and the port with -p (-H localhost -p 80)");
    CHECK(usage_error({"--host=[::1]:80"}) ==
          "--host: '[::1]:80' has a port: give the address alone and the port with -p (-H [::1] -p 80)");
    CHECK(usage_error({"--host=[::1"}) == "--host: '[::1' has no closing ']'");
    CHECK(usage_error({"-H", "::", "-H", "0.0.0.0"}) == "--host :: listens on IPv4 too (dual stack): drop --host 0.0.0.0");
    const TcpServerOptions options = parse({"-H", "127.0.0.2", "-H", "127.0.0.3", "-p", "7"}).config.server_options();
    REQUIRE(options.endpoints.size() == 1);
    CHECK(options.endpoints[0].hosts == std::vector<std::string>{"127.0.0.2", "127.0.0.3"});
}

TEST_CASE("--workers: a number from 1 to 1024, or auto (one per usable CPU)") {
    CHECK(parse({}).config.workers == 1);
    CHECK(parse({"--workers=3"}).config.workers == 3);
    CHECK(parse({"-w", "2"}).config.workers == 2);
    CHECK(parse({"--workers=auto"}).config.workers == usable_cpus());
    CHECK(usage_error({"--workers=0"}).find("--workers") == 0);
    CHECK(usage_error({"--workers=1025"}).find("--workers") == 0);
}

TEST_CASE("LISTEN_FDS: only for the process LISTEN_PID names; a bad count is an error; the variables are consumed") {
    ::setenv("LISTEN_PID", std::to_string(::getpid() + 1).c_str(), 1);
    ::setenv("LISTEN_FDS", "2", 1);
    auto other = systemd::take_listen_fds();
    REQUIRE(other.has_value());
    CHECK(other->empty());
    CHECK(std::getenv("LISTEN_FDS") == nullptr);
    CHECK(std::getenv("LISTEN_PID") == nullptr);

    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "many", 1);
    auto bad = systemd::take_listen_fds();
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().message().find("LISTEN_FDS") == 0);

    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "2", 1);
    ::setenv("LISTEN_FDNAMES", "echo:discard", 1);
    auto two = systemd::take_listen_fds();
    REQUIRE(two.has_value());
    REQUIRE(two->size() == 2);
    CHECK((*two)[0].fd == 3);
    CHECK((*two)[0].name == "echo");
    CHECK((*two)[1].fd == 4);
    CHECK((*two)[1].name == "discard");
}

TEST_CASE("passed sockets serve the service their name gives, or the default one; the --port endpoints come first") {
    ServerConfig c = parse({"-p", "7/chargen", "--reply=stamp"}).config;
    c.passed = {{3, "discard"}, {4, "echoplex.socket"}};
    const TcpServerOptions options = c.server_options();
    REQUIRE(options.endpoints.size() == 3);
    CHECK(options.endpoints[0].service == "chargen");
    CHECK(options.endpoints[0].listen_fd == -1);
    CHECK(options.endpoints[1].service == "discard");
    CHECK(options.endpoints[1].listen_fd == 3);
    CHECK(options.endpoints[2].service == "stamp");  // an unknown name: the --reply service
    CHECK(options.endpoints[2].listen_fd == 4);
}

TEST_CASE("a passed descriptor that is not a listening TCP socket is refused, naming it") {
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    auto adopted = adopt_listening_socket(pair[0]);
    REQUIRE_FALSE(adopted.has_value());
    CHECK(adopted.error().message().find("(passed descriptor " + std::to_string(pair[0]) + "): not a listening TCP socket") !=
          std::string::npos);
    ::close(pair[0]);
    ::close(pair[1]);
}

TEST_CASE("--metrics=HOST:PORT: IPv6 in brackets, a port from 0; with --workers too") {
    CHECK(parse({"--metrics=127.0.0.1:9100"}).config.metrics == std::pair<std::string, std::uint16_t>{"127.0.0.1", 9100});
    CHECK(parse({"--metrics=[::1]:0"}).config.metrics == std::pair<std::string, std::uint16_t>{"::1", 0});
    CHECK(parse({"--metrics=localhost:9100"}).config.metrics == std::pair<std::string, std::uint16_t>{"localhost", 9100});
    CHECK_FALSE(parse({}).config.metrics.has_value());
    CHECK(usage_error({"--metrics=9100"}) == "--metrics: '9100' is not HOST:PORT (e.g. 127.0.0.1:9100)");
    CHECK(usage_error({"--metrics=::1:9100"}) == "--metrics: '::1:9100': put an IPv6 address in brackets ([::1]:9100)");
    CHECK(usage_error({"--metrics=127.0.0.1:http"}).find("--metrics: 'http' is not a whole number") == 0);
    CHECK(parse({"--metrics=127.0.0.1:9100", "--workers=2"}).config.metrics.has_value());
}

TEST_CASE("run_main turns a usage error into exit 2 and any other failure into exit 1") {
    CHECK(cli::run_main("t", [] { return 0; }) == 0);
    CHECK(cli::run_main("t", []() -> int { throw cli::UsageError("nope"); }) == 2);
    CHECK(cli::run_main("t", []() -> int { throw std::runtime_error("boom"); }) == 1);
}

}  // namespace
}  // namespace echoplex
