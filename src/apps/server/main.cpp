// echoplex: the server program. The edge: parse, then serve on one loop or supervise workers, and
// turn errors into one line and an exit status (0 ok, 1 runtime failure, 2 usage error).
#include <csignal>
#include <cstdio>

#include "cli.hpp"
#include "echoplex/io/log.hpp"
#include "serve.hpp"
#include "server_config.hpp"
#include "workers.hpp"

namespace {

using namespace echoplex;

int run_server(int argc, char** argv) {
    const ServerArgs args = parse_server_args(argc, argv);
    if (args.action != ServerArgs::Action::run) {
        std::fputs(args.text.c_str(), stdout);
        return 0;
    }
    const ServerConfig& config = args.config;
    log::set_level(config.log_level);
    // A daemon's lines say when and how bad; journald reads a priority prefix and adds the time.
    log::set_format(log::stderr_is_journal() ? log::Format::journal : log::Format::timestamped);
    // Belt and braces with MSG_NOSIGNAL: no write to a vanished client may kill the server.
    std::signal(SIGPIPE, SIG_IGN);
    return config.workers > 1 ? run_workers(config) : serve(config);
}

}  // namespace

int main(int argc, char** argv) {
    return echoplex::cli::run_main("echoplex", [&] { return run_server(argc, argv); });
}
