// The --workers master: supervises, relays, sums; serves nothing itself.
#include "workers.hpp"

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/log.hpp"
#include "echoplex/net/bind_socket.hpp"
#include "echoplex/net/tcp_server.hpp"
#include "echoplex/net/worker_group.hpp"
#include "echoplex/config.h"
#include "master_metrics.hpp"
#include "metrics.hpp"
#include "program.hpp"
#include "serve.hpp"
#include "worker_wire.hpp"

namespace echoplex {
namespace {

using namespace std::chrono_literals;

// "127.0.0.1:50007" for a socket systemd passed.
std::string describe_passed(int fd) {
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) < 0) {
        return fmt::format("descriptor {}", fd);
    }
    return format_address(reinterpret_cast<const sockaddr*>(&bound));
}

// How long SIGUSR1 waits for every worker's fresh counts before printing what it has.
constexpr auto stats_wait = 1000ms;

std::string describe_exit(int status) {
    if (WIFSIGNALED(status)) {
        return fmt::format("was killed by SIG{}", sigabbrev_np(WTERMSIG(status)));
    }
    return fmt::format("exited with status {}", WEXITSTATUS(status));
}

// One worker slot's counts: the workers that held it before (gone, their last report kept) and
// the one holding it now.
struct SlotStats {
    ProcessCounts retired;
    ProcessCounts current;
    pid_t pid = -1;  // the slot's worker now, or its last one

    ProcessCounts counts() const { return followed_by(retired, current); }
};

class Master {
public:
    Master(const ServerConfig& config, const systemd::Notifier& notifier)
        : config_(config),
          notifier_(notifier),
          services_(service_names(config.server_options().endpoints)),
          slots_(config.workers) {}

    int run() {
        log::prepare();  // before the workers: they inherit the log's descriptors instead of opening their own
        // Every port bound here first, not listening: port 0 becomes one port for all workers, a
        // port taken by another program fails before any worker starts, and the port stays ours
        // while a worker is replaced.
        BindOptions reserve;
        reserve.reuse_port = true;
        reserve.listen = false;
        for (const PortSpec& spec : config_.ports) {
            auto bound = bind_tcp_all(config_.hosts, spec.port, reserve);
            if (!bound) {
                log::error("cannot listen: {}", bound.error().message());
                return 1;
            }
            role_ports_.push_back(bound->front().port);
            reserved_.push_back(std::move(bound).value());
        }
        WorkerGroupOptions options;
        options.workers = config_.workers;
        options.signals = {SIGINT, SIGTERM, SIGUSR1, SIGHUP};
        options.restart = true;
        if (config_.metrics) {
            auto opened = MasterMetrics::open(config_.metrics->first, config_.metrics->second, [this] { return metrics_page(); });
            if (!opened) {
                log::error("cannot listen for --metrics: {}", opened.error().message());
                return 1;
            }
            metrics_ = std::move(opened).value();
        }
        WorkerGroup group(options, [this](const WorkerChannel& channel) { return worker_main(channel); });
        group_ = &group;
        if (metrics_) {
            metrics_->watch(group);
        }
        const WorkerGroup::Handlers handlers = make_handlers();
        if (auto started = group.start(handlers); !started) {
            log::error("cannot start the workers: {}", started.error().message());
            group.stop();
            group.broadcast(worker_wire::stop_command);
            group.broadcast(worker_wire::stop_command);
            exit_status_ = 1;
        }
        if (auto ran = group.run(handlers); !ran) {
            log::error("supervising the workers failed: {}", ran.error().message());
            metrics_.reset();
            return 1;
        }
        metrics_.reset();  // before the group it watches in
        if (announced_) {
            print_stats();
        }
        return exit_status_;
    }

private:
    int worker_main(const WorkerChannel& channel) {
        reserved_.clear();  // the master's; the worker binds its own
        if (metrics_) {
            metrics_->forget_in_child();
        }
        log::set_context(fmt::format("worker {}", channel.index + 1));
        const WorkerRole role{channel, role_ports_};
        return serve(config_, &role);
    }

    WorkerGroup::Handlers make_handlers() {
        WorkerGroup::Handlers h;
        h.on_signal = [this](int signo) { on_signal(signo); };
        h.on_started = [this](std::size_t i, pid_t pid) {
            slots_[i].pid = pid;
            if (announced_) {
                log::info("worker {} started (pid {})", i + 1, pid);
            } else {
                log::debug("worker {} started (pid {})", i + 1, pid);
            }
        };
        h.on_line = [this](std::size_t i, std::string_view line) { on_line(i, line); };
        h.on_exit = [this](std::size_t i, pid_t pid, int status, std::optional<std::chrono::milliseconds> restart_in) {
            on_exit(i, pid, status, restart_in);
        };
        return h;
    }

    void on_line(std::size_t i, std::string_view line) {
        namespace wire = worker_wire;
        const auto [tag, rest] = wire::split_report(line);
        if (tag == wire::ready_tag) {
            ++ready_;
            maybe_announce();
        } else if (tag == wire::error_tag) {
            const std::string_view message = rest.empty() ? rest : rest.substr(1);
            if (!announced_) {
                fail_start(message);
            } else {
                log::error("worker {}: {}", i + 1, message);
            }
        } else if (tag == wire::stats_tag || tag == wire::final_tag) {
            if (auto counts = wire::parse_stats(rest, services_)) {
                slots_[i].current = std::move(*counts);
                answered(i);
            }
        }
    }

    void on_exit(std::size_t i, pid_t pid, int status, std::optional<std::chrono::milliseconds> restart_in) {
        SlotStats& slot = slots_[i];
        // A worker gone has closed its connections, one way or another.
        slot.retired = followed_by(slot.retired, closed_out(std::move(slot.current)));
        slot.current = ProcessCounts{};
        answered(i);  // a worker gone answers no more
        if (!announced_ && !stopping_) {
            // Before every worker served: the error line (if any) was printed; stop the rest.
            fail_start(fmt::format("worker {} (pid {}) {} before serving", i + 1, pid, describe_exit(status)));
            return;
        }
        if (restart_in) {
            ++restarts_;
            log::warn("worker {} (pid {}) {}; starting another in {} ms", i + 1, pid, describe_exit(status),
                      restart_in->count());
            return;
        }
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            exit_status_ = 1;
            if (!failed_start_) {
                log::warn("worker {} (pid {}) {}", i + 1, pid, describe_exit(status));
            }
        }
    }

    void on_signal(int signo) {
        if (signo == SIGUSR1) {
            request_stats();
            return;
        }
        if (signo == SIGHUP) {
            log::info("SIGHUP received: nothing to reload; still serving");
            return;
        }
        if (!stopping_) {
            stopping_ = true;
            group_->stop();
            log::info("SIG{} received: draining {} workers (up to {}s; again to exit now)", sigabbrev_np(signo),
                      group_->running(), config_.drain_timeout_s);
            notifier_.send(fmt::format("STOPPING=1\nSTATUS=draining {} connection(s)", summed().open));
            if (metrics_) {
                metrics_->stop();
            }
        } else {
            log::warn("SIG{} again: workers exit now, dropping queued output", sigabbrev_np(signo));
            exit_status_ = 1;
        }
        group_->broadcast(worker_wire::stop_command);
    }

    void maybe_announce() {
        if (announced_ || ready_ < config_.workers || failed_start_) {
            return;
        }
        announced_ = true;
        std::vector<std::string> where;
        for (std::size_t k = 0; k < reserved_.size(); ++k) {
            for (const BoundSocket& socket : reserved_[k]) {
                where.push_back(fmt::format("{} ({})", socket.address, config_.service_of(config_.ports[k])));
            }
        }
        const TcpServerOptions options = config_.server_options();
        for (std::size_t k = reserved_.size(); k < options.endpoints.size(); ++k) {
            where.push_back(fmt::format("{} ({})", describe_passed(options.endpoints[k].listen_fd), options.endpoints[k].service));
        }
        if (metrics_) {
            where.push_back(fmt::format("{} (metrics)", metrics_->address()));
        }
        log::print(fmt::format("echoplex: listening on {}; {} workers; backend {}\n", fmt::join(where, ", "),
                               config_.workers, backend_name(config_.backend)));
        if (notifier_.active()) {
            notifier_.send(fmt::format("READY=1\nMAINPID={}\n{}", ::getpid(), notify_status(summed())));
            keep_status_fresh();
        }
    }

    // Once, however many workers fail: the first reason, then every worker is told to exit now.
    void fail_start(std::string_view message) {
        exit_status_ = 1;
        if (failed_start_) {
            return;
        }
        failed_start_ = true;
        stopping_ = true;
        log::error("{}", message);
        group_->stop();
        group_->broadcast(worker_wire::stop_command);
        group_->broadcast(worker_wire::stop_command);
    }

    // Worker `i` sent its counts (or is gone): the SIGUSR1 line is printed once no worker is awaited.
    void answered(std::size_t i) {
        awaited_.erase(std::remove(awaited_.begin(), awaited_.end(), i), awaited_.end());
        if (stats_requested_ && awaited_.empty()) {
            stats_requested_ = false;
            print_stats();
        }
    }

    void request_stats() {
        if (stats_requested_) {
            return;  // the request already out will print
        }
        awaited_.clear();
        for (std::size_t i = 0; i < group_->size(); ++i) {
            if (group_->pid(i) > 0) {
                awaited_.push_back(i);
                group_->send(i, worker_wire::stats_command);
            }
        }
        stats_requested_ = true;
        const std::uint64_t request = ++stats_requests_;
        group_->after(stats_wait, [this, request] {
            if (stats_requested_ && stats_requests_ == request) {
                stats_requested_ = false;
                print_stats();  // a worker that did not answer in time counts with its last report
            }
        });
    }

    ServerStats summed() const {
        ServerStats sum;
        for (const SlotStats& slot : slots_) {
            sum += slot.counts().total();
        }
        return sum;
    }

    // Every worker's last report (a worker killed loses at most its last second of counts).
    std::string metrics_page() const {
        std::vector<ProcessCounts> sources;
        for (const SlotStats& slot : slots_) {
            ProcessCounts counts = slot.counts();
            if (counts.services.empty()) {
                // Not reported yet: zeros under the services' names, so that every series exists.
                for (const std::string& name : services_) {
                    counts.services.push_back(ServiceStats{name, {}});
                }
            }
            sources.push_back(std::move(counts));
        }
        MetricsInfo info{ECHOPLEX_VERSION, backend_name(config_.backend), start_time_s_, log::dropped(),
                         config_.workers, restarts_};
        return render_metrics(sources, info);
    }

    void keep_status_fresh() {
        group_->after(notify_status_period, [this] {
            if (!stopping_) {
                notifier_.send(notify_status(summed()));
                keep_status_fresh();
            }
        });
    }

    // The summed line (the same format as one process's, plus the workers), then with -v one line
    // per worker.
    void print_stats() {
        const ServerStats sum = summed();
        log::info("{} workers={} restarts={}", format_stats(sum, config_.proxy_protocol), config_.workers, restarts_);
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            log::debug("worker {} (pid {}) {}", i + 1, slots_[i].pid, format_stats(slots_[i].counts().total(), config_.proxy_protocol));
        }
    }

    const ServerConfig& config_;
    const systemd::Notifier& notifier_;
    std::vector<std::vector<BoundSocket>> reserved_;  // per port: every address
    std::vector<std::uint16_t> role_ports_;
    const std::vector<std::string> services_;  // the order of the workers' reports
    std::vector<SlotStats> slots_;
    std::unique_ptr<MasterMetrics> metrics_;  // --metrics
    const double start_time_s_ =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::vector<std::size_t> awaited_;  // workers whose answer to a SIGUSR1 has not come yet
    WorkerGroup* group_ = nullptr;
    std::size_t ready_ = 0;
    std::uint64_t restarts_ = 0;
    std::uint64_t stats_requests_ = 0;
    int exit_status_ = 0;
    bool announced_ = false;
    bool stopping_ = false;
    bool failed_start_ = false;
    bool stats_requested_ = false;
};

}  // namespace

int run_workers(const ServerConfig& config, const systemd::Notifier& notifier) { return Master(config, notifier).run(); }

}  // namespace echoplex
