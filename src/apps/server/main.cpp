// echoplex: the server program. The edge: parse, then serve on one loop or supervise workers, and
// turn errors into one line and an exit status (0 ok, 1 runtime failure, 2 usage error).
#include <csignal>
#include <cstdio>

#include "cli.hpp"
#include "echoplex/io/log.hpp"
#include "serve.hpp"
#include "server_config.hpp"
#include "systemd.hpp"
#include "workers.hpp"

namespace {

using namespace echoplex;

int run_server(int argc, char** argv) {
    const ServerArgs args = parse_server_args(argc, argv);
    if (args.action != ServerArgs::Action::run) {
        std::fputs(args.text.c_str(), stdout);
        return 0;
    }
    ServerConfig config = args.config;
    log::set_level(config.log_level);
    // A daemon's lines say when and how bad; journald reads a priority prefix and adds the time.
    log::set_format(log::stderr_is_journal() ? log::Format::journal : log::Format::timestamped);
    // Belt and braces with MSG_NOSIGNAL: no write to a vanished client may kill the server.
    std::signal(SIGPIPE, SIG_IGN);
    // Started by a systemd socket unit: its sockets, served as if bound by --port.
    auto passed = systemd::take_listen_fds();
    if (!passed) {
        log::error("{}", passed.error().message());
        return 1;
    }
    config.passed = std::move(passed).value();
    if (!config.passed.empty() && !config.ports_given) {
        config.ports.clear();  // the defaults give way to the sockets systemd passed
    }
    const systemd::Notifier notifier = systemd::Notifier::from_environment();
    return config.workers > 1 ? run_workers(config, notifier) : serve(config, nullptr, &notifier);
}

}  // namespace

int main(int argc, char** argv) {
    return echoplex::cli::run_main("echoplex", [&] { return run_server(argc, argv); });
}
