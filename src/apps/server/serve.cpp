// serve() implementation.
#include "serve.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <cstdio>
#include <memory>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/error.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/log.hpp"
#include "echoplex/io/log_pump.hpp"
#include "echoplex/net/tcp_server.hpp"
#include "echoplex/net/worker_link.hpp"
#include "echoplex/config.h"
#include "echoplex/services/http_metrics.hpp"
#include "metrics.hpp"
#include "program.hpp"
#include "worker_wire.hpp"

namespace echoplex {
namespace {

constexpr rlim_t reserved_fds = reserved_descriptors;
// How often a worker tells the master its counts, so that a worker killed loses at most this
// much of them from the master's totals.
constexpr std::chrono::seconds worker_report_period{1};

// Distributions start processes with a soft limit of 1024 descriptors and a much higher hard one;
// like Redis with maxclients, raise the soft limit so --max-connections can really be reached.
// An administrator's lower hard limit stands: EMFILE is then handled as a refusal.
void raise_descriptor_limit(std::size_t max_connections, bool warn) {
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
    if (lim.rlim_cur < wanted && warn) {
        log::warn("descriptor limit {} allows fewer than --max-connections={} clients; beyond it they are "
                  "refused (raise 'ulimit -n' to serve more)",
                  lim.rlim_cur, max_connections);
    }
}

// select cannot watch descriptors at or above FD_SETSIZE: say so at startup, not at the 1024th client.
void warn_about_fd_limit(const Backend& backend, const ServerConfig& config) {
    const auto limit = static_cast<std::size_t>(backend.fd_limit());
    if (config.max_connections + reserved_fds > limit) {
        log::warn("--backend={} watches descriptors below {} only: at most about {} of --max-connections={} clients "
                  "can be served at once (the rest are refused); use epoll or poll for more",
                  backend_name(config.backend), limit, limit - reserved_fds, config.max_connections);
    }
}

// A failure before serving: one line, from the single process itself or, in a worker, from the
// master (which prints one line however many workers fail).
int fail_to_start(const WorkerRole* worker, const std::string& line) {
    if (worker == nullptr || !report_line(worker->channel.report_fd, fmt::format("{} {}", worker_wire::error_tag, line))) {
        log::error("{}", line);
    }
    return 1;
}

}  // namespace

std::string notify_status(const ServerStats& stats) {
    return fmt::format("STATUS=serving: {} open, {} accepted, {} refused", stats.open, stats.accepted, stats.refused_total());
}

int serve(const ServerConfig& config, const WorkerRole* worker, const systemd::Notifier* notifier) {
    if (worker != nullptr) {
        set_nonblocking(worker->channel.report_fd);  // every report below may be dropped, never wait
    }
    auto loop = EventLoop::create(config.backend);
    if (!loop) {
        return fail_to_start(worker, backend_failure(config.backend, loop.error()));
    }
    TcpServerOptions options = config.server_options();
    if (worker != nullptr) {
        // The --port endpoints come first, the passed sockets (shared by every worker) after them.
        for (std::size_t i = 0; i < worker->ports.size(); ++i) {
            options.endpoints[i].port = worker->ports[i];
        }
        options.reuse_port = true;
    }
    auto server = TcpServer::create(**loop, std::move(options));
    if (!server) {
        return fail_to_start(worker, "cannot listen: " + server.error().message());
    }
    EventLoop& l = **loop;
    TcpServer& s = **server;
    // --metrics: a server of its own on the same loop, so that scrapes are not counted as clients.
    std::unique_ptr<TcpServer> metrics;
    if (config.metrics && worker == nullptr) {
        const double started = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
        TcpServerOptions m;
        m.max_connections = 64;
        m.limits.input_limit = services::HttpMetrics::max_request * 2;
        m.endpoints.push_back(Endpoint{{config.metrics->first}, config.metrics->second, "metrics", [&s, &l, &config, started] {
            return std::make_unique<services::HttpMetrics>([&s, &l, &config, started] {
                return render_metrics({counts_of(s, l, log::dropped())},
                                      {ECHOPLEX_VERSION, backend_name(config.backend), started, log::dropped(), {}, 0});
            });
        }});
        auto made = TcpServer::create(l, std::move(m));
        if (!made) {
            return fail_to_start(worker, "cannot listen for --metrics: " + made.error().message());
        }
        metrics = std::move(made).value();
    }
    const LogPump log_pump(l);  // from here on, a stalled stderr or stdout waits in the log's queue
    // After the listeners bound, so that a failure to start stays one line; what is the same for
    // every worker is said once, by the first.
    const bool speaks_for_all = worker == nullptr || worker->channel.index == 0;
    raise_descriptor_limit(config.max_connections, speaks_for_all);
    if (speaks_for_all) {
        warn_about_fd_limit(l.backend(), config);
    }

    int exit_status = 0;
    int stops = 0;
    // The first stop drains, a second one exits at once; `why` says who asked.
    auto stop = [&](const std::string& why) {
        if (++stops > 1) {
            log::warn("{} again: exiting now, dropping queued output", why);
            exit_status = 1;
            l.stop();
            return;
        }
        if (worker == nullptr) {
            log::info("{} received: draining (up to {}s; again to exit now)", why, config.drain_timeout_s);
            if (notifier != nullptr) {
                notifier->send(fmt::format("STOPPING=1\nSTATUS=draining {} connection(s)", s.stats().open));
            }
        }
        if (metrics) {
            metrics->shutdown([] {});
        }
        s.shutdown([&] { l.stop(); });
    };

    std::unique_ptr<WorkerLink> link;
    std::function<void()> report_stats;  // a worker's: to the master, on request and every period
    std::function<void()> tick;  // a periodic report: the worker's to the master, or systemd's STATUS=
    if (worker == nullptr) {
        for (const int signo : {SIGINT, SIGTERM}) {
            if (auto watching = l.on_signal(signo, [&](int n) { stop(fmt::format("SIG{}", sigabbrev_np(n))); }); !watching) {
                log::error("{}", watching.error().message());
                return 1;
            }
        }
        if (auto watching = l.on_signal(SIGUSR1, [&](int) { log::info("{}", s.stats_line()); }); !watching) {
            log::error("{}", watching.error().message());
            return 1;
        }
        // A daemon does not die of a hangup (SIGHUP's default); there is nothing to reload yet.
        if (auto watching = l.on_signal(SIGHUP, [](int) { log::info("SIGHUP received: nothing to reload; still serving"); });
            !watching) {
            log::error("{}", watching.error().message());
            return 1;
        }
        // The one line scripts read: every address really bound with its service, and the backend.
        std::vector<std::string> where = s.descriptions();
        if (metrics) {
            for (auto& d : metrics->descriptions()) {
                where.push_back(std::move(d));
            }
        }
        log::print(fmt::format("echoplex: listening on {}; backend {}\n", fmt::join(where, ", "), backend_name(config.backend)));
        if (notifier != nullptr && notifier->active()) {
            notifier->send(fmt::format("READY=1\nMAINPID={}\n{}", ::getpid(), notify_status(s.stats())));
            tick = [&] {
                notifier->send(notify_status(s.stats()));
                l.add_timer(notify_status_period, tick);
            };
            l.add_timer(notify_status_period, tick);
        }
    } else {
        const int report_fd = worker->channel.report_fd;
        report_stats = [&s, &l, report_fd] {
            report_line(report_fd, worker_wire::stats_report(worker_wire::stats_tag, counts_of(s, l, log::dropped())));
        };
        auto watching = WorkerLink::watch(
            l, worker->channel.control_fd,
            [&](char command) {
                if (command == worker_wire::stop_command) {
                    stop("stop");
                } else if (command == worker_wire::stats_command) {
                    report_stats();
                }
            },
            // The master is gone (killed, say): drain, as if it had relayed a stop.
            [&] {
                log::warn("master process gone: draining");
                stop("master gone");
            });
        if (!watching) {
            return fail_to_start(worker, watching.error().message());
        }
        link = std::move(watching).value();
        tick = [&] {
            report_stats();
            l.add_timer(worker_report_period, tick);
        };
        l.add_timer(worker_report_period, tick);
        report_line(report_fd, worker_wire::ready_tag);
    }

    if (auto ran = l.run(); !ran) {
        log::error("event loop failed: {}", ran.error().message());
        exit_status = 1;
    }
    if (worker == nullptr) {
        log::info("{}", s.stats_line());
    } else {
        report_line(worker->channel.report_fd, worker_wire::stats_report(worker_wire::final_tag, counts_of(s, l, log::dropped())));
    }
    return exit_status;
}

}  // namespace echoplex
