// echoplex: the server program. The edge: parse, build, run, and turn errors into one line and
// an exit status (0 ok, 1 runtime failure, 2 usage error).
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdio>

#include <fmt/format.h>

#include "cli.hpp"
#include "echoplex/io/error.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/log.hpp"
#include "echoplex/net/tcp_server.hpp"
#include "program.hpp"
#include "server_config.hpp"

namespace {

using namespace echoplex;

// Descriptors the server needs besides its clients: listeners, the loop's, the spare for EMFILE.
constexpr rlim_t reserved_fds = 64;

// Distributions start processes with a soft limit of 1024 descriptors and a much higher hard one;
// like Redis with maxclients, raise the soft limit so --max-connections can really be reached.
// An administrator's lower hard limit stands: EMFILE is then handled as a refusal.
void raise_descriptor_limit(std::size_t max_connections) {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return;
    }
    const rlim_t wanted = static_cast<rlim_t>(max_connections) + reserved_fds;
    if (lim.rlim_cur < wanted && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = std::min(wanted, lim.rlim_max);
        if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
            log::warn("{}", Error::from_errno("setrlimit(RLIMIT_NOFILE)").message());
            return;
        }
    }
    if (lim.rlim_cur < wanted) {
        log::warn("descriptor limit {} allows fewer than --max-connections={} clients; beyond it they are "
                  "refused (raise 'ulimit -n' to serve more)",
                  lim.rlim_cur, max_connections);
    }
}

int run_server(int argc, char** argv) {
    const ServerArgs args = parse_server_args(argc, argv);
    if (args.action != ServerArgs::Action::run) {
        std::fputs(args.text.c_str(), stdout);
        return 0;
    }
    const ServerConfig& config = args.config;
    log::set_level(config.log_level);
    // Belt and braces with MSG_NOSIGNAL: no write to a vanished client may kill the server.
    std::signal(SIGPIPE, SIG_IGN);

    auto loop = EventLoop::create(config.backend);
    if (!loop) {
        log::error("{}", backend_failure(config.backend, loop.error()));
        return 1;
    }
    auto server = TcpServer::create(**loop, config.server_options());
    if (!server) {
        log::error("cannot listen: {}", server.error().message());
        return 1;
    }
    EventLoop& l = **loop;
    TcpServer& s = **server;
    // After the listeners bound, so that a failure to start stays one line.
    raise_descriptor_limit(config.max_connections);

    int exit_status = 0;
    int stop_signals = 0;
    auto on_stop_signal = [&](int signo) {
        if (++stop_signals > 1) {
            log::warn("SIG{} again: exiting now, dropping queued output", sigabbrev_np(signo));
            exit_status = 1;
            l.stop();
            return;
        }
        log::info("SIG{} received: draining (up to {}s; again to exit now)", sigabbrev_np(signo), config.drain_timeout_s);
        s.shutdown([&] { l.stop(); });
    };
    for (const int signo : {SIGINT, SIGTERM}) {
        if (auto watching = l.on_signal(signo, on_stop_signal); !watching) {
            log::error("{}", watching.error().message());
            return 1;
        }
    }
    if (auto watching = l.on_signal(SIGUSR1, [&](int) { log::info("{}", s.stats_line()); }); !watching) {
        log::error("{}", watching.error().message());
        return 1;
    }

    // The one line scripts read: every address really bound with its service, and the backend.
    std::fputs(fmt::format("echoplex: listening on {}; backend {}\n", fmt::join(s.descriptions(), ", "),
                           backend_name(config.backend))
                   .c_str(),
               stdout);
    std::fflush(stdout);

    if (auto ran = l.run(); !ran) {
        log::error("event loop failed: {}", ran.error().message());
        exit_status = 1;
    }
    log::info("{}", s.stats_line());
    return exit_status;
}

}  // namespace

int main(int argc, char** argv) {
    return echoplex::cli::run_main("echoplex", [&] { return run_server(argc, argv); });
}
