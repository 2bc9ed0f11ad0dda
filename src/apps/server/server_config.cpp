// Command line of the echoplex server.
#include "server_config.hpp"

#include <sys/select.h>

#include <algorithm>
#include <cstdlib>

#include "echoplex/io/fmt.hpp"

#include "cli.hpp"
#include "echoplex/net/worker_group.hpp"
#include "echoplex/services/services.hpp"
#include "program.hpp"

namespace echoplex {
namespace {

constexpr std::size_t max_workers = 1024;

std::vector<std::string_view> service_names() {
    std::vector<std::string_view> names;
    for (const auto& service : services::all()) {
        names.push_back(service.name);
    }
    return names;
}

// "50007" or "50009/discard".
PortSpec parse_port_item(std::string_view item) {
    PortSpec spec;
    const auto slash = item.find('/');
    spec.port = static_cast<std::uint16_t>(cli::parse_int("--port", item.substr(0, slash), 0, 65535));
    if (slash != std::string_view::npos) {
        const std::string_view name = item.substr(slash + 1);
        if (services::find(name) == nullptr) {
            throw cli::UsageError(fmt::format("--port: unknown service '{}' in '{}' (services: {})", name, item,
                                              fmt::join(service_names(), ", ")));
        }
        spec.service = std::string(name);
    }
    return spec;
}

// An -H value: an address or a name, an IPv6 address with or without brackets; not a port.
std::string parse_host(std::string_view text) {
    if (text.empty()) {
        throw cli::UsageError("--host: empty address");
    }
    if (text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos) {
            throw cli::UsageError(fmt::format("--host: '{}' has no closing ']'", text));
        }
        if (close + 1 != text.size()) {
            throw cli::UsageError(fmt::format("--host: '{}' has a port: give the address alone and the port with "
                                              "-p (-H {} -p {})",
                                              text, text.substr(0, close + 1), text.substr(close + 2)));
        }
        return std::string(text.substr(1, close - 1));
    }
    // One colon is host:port; an IPv6 address has at least two.
    if (const auto colon = text.find(':'); colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
        throw cli::UsageError(fmt::format("--host: '{}' has a port: give the address alone and the port with -p "
                                          "(-H {} -p {})",
                                          text, text.substr(0, colon), text.substr(colon + 1)));
    }
    return std::string(text);
}

// "127.0.0.1:9100", "localhost:9100", "[::1]:9100".
std::pair<std::string, std::uint16_t> parse_host_port(std::string_view option, std::string_view text) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
        throw cli::UsageError(fmt::format("{}: '{}' is not HOST:PORT (e.g. 127.0.0.1:9100)", option, text));
    }
    std::string_view host = text.substr(0, colon);
    if (host.front() == '[') {
        if (host.back() != ']' || host.size() < 3) {
            throw cli::UsageError(fmt::format("{}: '{}' is not HOST:PORT (an IPv6 address goes in brackets: [::1]:9100)", option, text));
        }
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string_view::npos) {
        throw cli::UsageError(fmt::format("{}: '{}': put an IPv6 address in brackets ([::1]:9100)", option, text));
    }
    const auto port = static_cast<std::uint16_t>(cli::parse_int(option, text.substr(colon + 1), 0, 65535));
    return {std::string(host), port};
}

std::string services_help() {
    std::string text = "\nServices (--port PORT/SERVICE; --reply sets the one for ports given without):\n";
    for (const auto& service : services::all()) {
        text += fmt::format("  {:<9} {}\n", service.name, service.summary);
    }
    return text;
}

}  // namespace

TcpServerOptions ServerConfig::server_options() const {
    TcpServerOptions options;
    for (const PortSpec& spec : ports) {
        const std::string& name = service_of(spec);
        const services::Service* service = services::find(name);
        options.endpoints.push_back(Endpoint{hosts, spec.port, name, service->factory});
    }
    for (const systemd::PassedSocket& socket : passed) {
        const services::Service* named = services::find(socket.name);
        const services::Service* service = named != nullptr ? named : services::find(default_service);
        options.endpoints.push_back(Endpoint{{}, 0, std::string(service->name), service->factory, socket.fd});
    }
    options.limits.high_watermark = high_watermark;
    options.limits.low_watermark = low_watermark;
    options.limits.linger_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(drain_timeout_s * 1000.0));
    options.max_connections = max_connections;
    options.idle_timeout_s = idle_timeout_s;
    options.drain_timeout_s = drain_timeout_s;
    options.backlog = backlog;
    options.proxy_protocol = proxy_protocol;
    options.proxy_deadline = std::chrono::milliseconds(static_cast<std::int64_t>(proxy_timeout_s * 1000.0));
    return options;
}

ServerArgs parse_server_args(int argc, char** argv) {
    ServerArgs args;
    ServerConfig& c = args.config;
    bool backend_given = false;
    bool max_given = false;
    bool hosts_given = false;
    bool high_given = false;
    bool low_given = false;
    bool ports_given = false;
    int verbosity = 0;

    cli::Parser p("echoplex", "[OPTIONS]",
                  "A single-threaded multiplexing TCP server for echo and the classic small services:\nevery port, every client, one event loop.");
    p.flag('h', "help", "print this help and exit", [&] { args.action = ServerArgs::Action::help; });
    p.flag('V', "version", "print the version and the compiled-in backends, and exit",
           [&] { args.action = ServerArgs::Action::version; });
    p.option(0, "backend", "NAME",
             fmt::format("event mechanism: {} (default {}; env ECHOPLEX_BACKEND)",
                         fmt::join(backend_choices(), "|"), backend_name(available_backends().front())),
             [&](std::string_view v) {
                 c.backend = parse_backend_option("--backend", v);
                 backend_given = true;
             });
    p.option('H', "host", "ADDR",
             "address or name to listen on, repeatable (default 127.0.0.1);\na name listens on every address it resolves to; 0.0.0.0 or\n:: (IPv4 and IPv6) opens to the network; ::1 for IPv6 loopback",
             [&](std::string_view v) {
                 if (!hosts_given) {
                     c.hosts.clear();
                     hosts_given = true;
                 }
                 c.hosts.push_back(parse_host(v));
             });
    p.option('p', "port", "PORT[/SERVICE][,...]",
             "port(s) to listen on, repeatable (default 50007,50008), each\nwith its service (default echo, see below); 0 picks a free port",
             [&](std::string_view v) {
                 if (!ports_given) {
                     c.ports.clear();
                     ports_given = true;
                 }
                 for (const auto item : cli::split_list("--port", v)) {
                     PortSpec spec = parse_port_item(item);
                     const bool repeated = spec.port != 0 && std::any_of(c.ports.begin(), c.ports.end(),
                                                                          [&](const PortSpec& s) { return s.port == spec.port; });
                     if (repeated) {
                         throw cli::UsageError(fmt::format("--port: port {} is given twice", spec.port));
                     }
                     c.ports.push_back(std::move(spec));
                 }
             });
    p.option(0, "reply", "MODE", "the service of ports given without one: echo (default)\nor stamp ('Echo=>DATA at TIME' per chunk, as the book)",
             [&](std::string_view v) {
                 c.default_service = cli::parse_choice("--reply", v, {"echo", "stamp"}) == 0 ? "echo" : "stamp";
             });
    p.option('c', "max-connections", "N",
             fmt::format("clients served at once by each worker; more are accepted\nand closed (default 10000; with select {})",
                         FD_SETSIZE - reserved_descriptors),
             [&](std::string_view v) {
                 c.max_connections = static_cast<std::size_t>(cli::parse_int("--max-connections", v, 1, 10'000'000));
                 max_given = true;
             });
    p.option(0, "high-watermark", "BYTES", "queued output per client that pauses its reading\n(default 256k)",
             [&](std::string_view v) {
                 c.high_watermark = cli::parse_bytes("--high-watermark", v);
                 high_given = true;
             });
    p.option(0, "low-watermark", "BYTES", "queued output under which reading resumes (default 64k)",
             [&](std::string_view v) {
                 c.low_watermark = cli::parse_bytes("--low-watermark", v);
                 low_given = true;
             });
    p.option(0, "idle-timeout", "SECONDS", "close clients silent this long (default 0: never)",
             [&](std::string_view v) { c.idle_timeout_s = cli::parse_seconds("--idle-timeout", v); });
    p.option(0, "drain-timeout", "SECONDS", "on SIGINT/SIGTERM, flush queued output for at most this\nlong (default 5); also how long a connection that has sent\neverything waits for the client to close",
             [&](std::string_view v) { c.drain_timeout_s = cli::parse_seconds("--drain-timeout", v); });
    p.option(0, "backlog", "N", "listen(2) backlog (default 511)",
             [&](std::string_view v) { c.backlog = static_cast<int>(cli::parse_int("--backlog", v, 1, 1 << 20)); });
    p.flag(0, "proxy-protocol",
           "every connection begins with a PROXY protocol header (v1 or\nv2, as HAProxy's send-proxy[-v2] sends it): consumed, never\nechoed; the client it names is the one logged. A bad or\nmissing header closes the connection",
           [&] { c.proxy_protocol = true; });
    p.option(0, "proxy-timeout", "SECONDS", "with --proxy-protocol, close a connection whose header is\nnot complete this long after it was accepted (default 5)",
             [&](std::string_view v) { c.proxy_timeout_s = cli::parse_seconds("--proxy-timeout", v); });
    p.option(0, "metrics", "HOST:PORT",
             "serve GET /metrics there (Prometheus text format), e.g.\n127.0.0.1:9100 or [::1]:9100; port 0 picks one; with --workers\nthe master serves every worker's counts",
             [&](std::string_view v) { c.metrics = parse_host_port("--metrics", v); });
    p.option('w', "workers", "N|auto",
             fmt::format("worker processes, each with its own event loop and its own\nlistening sockets (SO_REUSEPORT); auto: one per CPU ({} here).\nDefault 1: one process, no master",
                         usable_cpus()),
             [&](std::string_view v) {
                 c.workers = v == "auto" ? std::min(usable_cpus(), max_workers)
                                         : static_cast<std::size_t>(cli::parse_int("--workers", v, 1, max_workers));
             });
    p.flag('v', "verbose", "log every connection (--log-level=debug)", [&] { ++verbosity; });
    p.flag('q', "quiet", "log errors only (--log-level=error)", [&] { --verbosity; });
    std::optional<log::Level> level;
    p.option(0, "log-level", "LEVEL",
             "error|warn|info|debug: what is logged (default info:\nstartup, signals, statistics, problems)",
             [&](std::string_view v) {
                 level = static_cast<log::Level>(cli::parse_choice("--log-level", v, {"error", "warn", "info", "debug"}));
             });
    p.parse(argc, argv);

    if (args.action == ServerArgs::Action::help) {
        args.text = p.help() + services_help() +
                    "\nSignals: SIGINT/SIGTERM drain and exit 0 (a second one exits at once, status 1);\n"
                    "SIGUSR1 prints statistics; SIGHUP is logged and ignored. With --workers the\n"
                    "master takes the signals and relays them, sums the workers' statistics (-v: one\n"
                    "line each too), and replaces a worker that dies. Exit status: 0 ok (every worker\n"
                    "stopped cleanly), 1 runtime failure, 2 usage error.\n"
                    "\nUnder systemd: listening sockets passed by socket activation (LISTEN_FDS) are\n"
                    "served, each with the service its FileDescriptorName= names (without --port, only\n"
                    "they are); READY=1, STATUS= and STOPPING=1 go to NOTIFY_SOCKET; in the journal,\n"
                    "log lines carry <N> priorities instead of timestamps (deploy/echoplex.service).\n";
        return args;
    }
    if (args.action == ServerArgs::Action::version) {
        args.text = version_line("echoplex") + "\n";
        return args;
    }
    if (!backend_given) {
        c.backend = backend_from_environment().value_or(c.backend);
    }
    if (c.backend == BackendKind::select && !max_given) {
        // What select can watch is the default; more is the user's choice, warned about at startup.
        c.max_connections = FD_SETSIZE - reserved_descriptors;
    }
    const auto given = [&](const char* host) { return std::find(c.hosts.begin(), c.hosts.end(), host) != c.hosts.end(); };
    if (given("::") && given("0.0.0.0")) {
        throw cli::UsageError("--host :: listens on IPv4 too (dual stack): drop --host 0.0.0.0");
    }
    if (c.ports.empty()) {
        throw cli::UsageError("--port: at least one port is needed");
    }
    c.ports_given = ports_given;
    if (c.low_watermark > c.high_watermark) {
        // Blame what was typed: a default is not the user's mistake.
        if (!low_given) {
            throw cli::UsageError(fmt::format("--high-watermark ({}) is below the default --low-watermark ({}): "
                                              "give --low-watermark too, at most {}",
                                              c.high_watermark, c.low_watermark, c.high_watermark));
        }
        if (!high_given) {
            throw cli::UsageError(fmt::format("--low-watermark ({}) is above the default --high-watermark ({}): "
                                              "lower it, or give a --high-watermark at least as large",
                                              c.low_watermark, c.high_watermark));
        }
        throw cli::UsageError(fmt::format("--low-watermark ({}) must not exceed --high-watermark ({}): lower the first "
                                          "or raise the second",
                                          c.low_watermark, c.high_watermark));
    }
    if (c.high_watermark == 0) {
        throw cli::UsageError("--high-watermark must be at least 1 byte");
    }
    if (c.proxy_timeout_s < 0.001) {
        throw cli::UsageError("--proxy-timeout must be at least 1ms (default 5s)");
    }
    c.log_level = level ? *level
                : verbosity < 0 ? log::Level::error
                : verbosity == 0 ? log::Level::info
                                 : log::Level::debug;
    return args;
}

}  // namespace echoplex
