// run_load implementation.
#include "load_run.hpp"

#include <netdb.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/log.hpp"
#include "echoplex/net/bind_socket.hpp"
#include "echoplex/net/worker_link.hpp"

namespace echoplex::testecho {
namespace {

using namespace std::chrono_literals;

// How often deadlines are checked.
constexpr auto tick = 250ms;

// Extra pattern bytes beyond --size: each client's window starts somewhere in this spread.
constexpr std::size_t pattern_spread = 251;

Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Bytes of every value in an order that repeats only after 2^64 (xorshift64), so a shifted or
// repeated block of echoed data does not happen to match.
std::string make_pattern(std::size_t size) {
    std::string pattern(size, '\0');
    std::uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (char& c : pattern) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c = static_cast<char>(x >> 56);
    }
    return pattern;
}

class LoadRun {
public:
    LoadRun(EventLoop& loop, const LoadSettings& settings, std::vector<Target>& targets, const ProgressFn& progress)
        : loop_(loop), settings_(settings), progress_(progress),
          context_{loop, settings, result_, {}, {}, seconds(settings.timeout_s), {}, std::vector<char>(64 * 1024), 0, {}, {}, 0} {
        if (settings.messages.empty()) {
            pattern_ = make_pattern(settings.size + pattern_spread);
            context_.pattern = pattern_;
        }
        for (const auto& m : settings.messages) {
            context_.messages.push_back(m);
        }
        context_.notify = [this](LoadClient& c, LoadContext::Event e) { on_event(c, e); };
        const std::size_t total = settings.total_connections;
        for (std::size_t i = 0; i < settings.idle; ++i) {
            // Idle ids follow every active id of every process.
            const std::size_t id = total + settings.first_idle_id + i;
            idle_.push_back(std::make_unique<LoadClient>(context_, id, LoadClient::Role::idle,
                                                         targets[id % targets.size()], 0));
        }
        for (std::size_t i = 0; i < settings.connections; ++i) {
            const std::size_t id = settings.first_id + i;
            std::uint64_t quota = UINT64_MAX;
            if (settings.requests) {
                // redis-benchmark's -n is the total: share it out, the remainder to the first ids.
                quota = *settings.requests / total + (id < *settings.requests % total ? 1 : 0);
            }
            active_.push_back(std::make_unique<LoadClient>(context_, id, LoadClient::Role::active,
                                                           targets[id % targets.size()], quota));
        }
    }

    Result<RunResult> run() {
        if (settings_.interrupt_fd >= 0) {
            // A --procs child: each byte is an interrupt relayed by the parent; EOF (the parent is
            // gone) ends the run as two interrupts would.
            auto link = WorkerLink::watch(
                loop_, settings_.interrupt_fd, [this](char) { interrupted(); },
                [this] {
                    interrupted();
                    interrupted();
                });
            if (!link) {
                return std::move(link).error();
            }
            interrupts_ = std::move(link).value();
        } else {
            for (const int signo : {SIGINT, SIGTERM}) {
                if (auto watching = loop_.on_signal(signo, [this](int) { interrupted(); }); !watching) {
                    return std::move(watching).error();
                }
            }
        }
        schedule_tick();
        // Until the window is set, everything is warm-up for nothing: begin_active sets it.
        context_.window_start = Clock::time_point::max();
        if (idle_.empty()) {
            begin_active();
        } else {
            pace(idle_, 0, Clock::now());
        }
        auto ran = loop_.run();
        interrupts_.reset();
        if (!ran) {
            return std::move(ran).error();
        }
        if (tick_timer_) {
            loop_.cancel_timer(*tick_timer_);
        }
        if (pace_timer_) {
            loop_.cancel_timer(*pace_timer_);
        }
        if (stop_timer_) {
            loop_.cancel_timer(*stop_timer_);
        }
        if (drain_timer_) {
            loop_.cancel_timer(*drain_timer_);
        }
        for (const std::optional<TimerId>* timer : {&warmup_timer_, &interval_timer_}) {
            if (*timer) {
                loop_.cancel_timer(**timer);
            }
        }
        return result_;
    }

private:
    using Clients = std::vector<std::unique_ptr<LoadClient>>;

    // Starts clients[next..] as --connect-rate allows, re-arming itself for the rest.
    void pace(Clients& clients, std::size_t next, Clock::time_point origin) {
        pace_timer_.reset();
        std::size_t until = clients.size();
        if (settings_.connect_rate > 0) {
            const double elapsed = std::chrono::duration<double>(Clock::now() - origin).count();
            const auto allowed = static_cast<std::size_t>(elapsed * settings_.connect_rate) + 1;
            until = std::min(until, std::max(allowed, next + 1));
        }
        Clients* const list = &clients;
        const bool active = list == &active_;
        for (; next < until; ++next) {
            if (active && stopping_) {
                return;
            }
            clients[next]->start();
        }
        if (next < clients.size() && !(active && stopping_)) {
            const auto due = origin + seconds(static_cast<double>(next) / settings_.connect_rate);
            pace_timer_ = loop_.add_timer_at(due, [this, list, next, origin] { pace(*list, next, origin); });
        }
    }

    void begin_active() {
        if (active_started_) {
            return;
        }
        active_started_ = true;
        start_ = Clock::now();
        if (settings_.warmup_s > 0) {
            // The load starts now; the window, its clock and its stop condition after the warm-up.
            const auto window = start_ + seconds(settings_.warmup_s);
            context_.window_start = window;
            warmup_timer_ = loop_.add_timer_at(window, [this, window] {
                warmup_timer_.reset();
                begin_window(window);
            });
        } else {
            begin_window(start_);
        }
        if (active_.empty()) {
            end_run();
            return;
        }
        if (stopping_) {
            // Interrupted while the idle connections were opening: nothing is sent.
            for (auto& c : active_) {
                c->stop_sending();
            }
            return;
        }
        pace(active_, 0, start_);
    }

    // The measured window opens at `at` (this runs a little later, when its timer fires): the
    // warm-up's messages and bytes were never counted (the clients compare with window_start), so
    // what is counted so far is the window's. The duration, the intervals and -d count from `at`.
    // Errors and connections count over the whole run; the first interval has any from before.
    void begin_window(Clock::time_point at) {
        context_.window_start = at;
        start_ = at;
        window_open_ = true;
        last_ = Snapshot{};
        if (settings_.duration_s && !stopping_) {
            stop_timer_ = loop_.add_timer_at(start_ + seconds(*settings_.duration_s), [this] {
                stop_timer_.reset();
                begin_stop();
            });
        }
        schedule_interval(1);
    }

    void schedule_interval(std::uint64_t k) {
        const auto due = start_ + seconds(settings_.interval_s * static_cast<double>(k));
        interval_timer_ = loop_.add_timer_at(due, [this, k] {
            interval_timer_.reset();
            close_interval(Clock::now());
            if (!done_) {
                schedule_interval(k + 1);
            }
        });
    }

    // One step of the time series: what changed since the last one.
    void close_interval(Clock::time_point now) {
        IntervalStats step;
        step.t = std::chrono::duration<double>(now - start_).count();
        step.messages = result_.messages - last_.messages;
        step.bytes = result_.payload - last_.payload;
        step.errors = result_.errors.total() - last_.errors;
        step.open = context_.open;
        step.latency = context_.interval_latency.serialize();
        context_.interval_latency = Histogram{};
        last_ = Snapshot{result_.messages, result_.payload, result_.errors.total()};
        last_close_ = now;
        result_.intervals.push_back(std::move(step));
        if (progress_ && !done_) {
            progress_(result_, result_.intervals.back(), result_.intervals.back().t);
        }
    }

    void begin_stop() {
        if (stopping_) {
            return;
        }
        stopping_ = true;
        if (pace_timer_ && active_started_) {
            loop_.cancel_timer(*pace_timer_);
            pace_timer_.reset();
        }
        for (auto& c : active_) {
            c->stop_sending();
        }
        if (!done_) {
            drain_timer_ = loop_.add_timer(context_.timeout, [this] {
                drain_timer_.reset();
                for (auto& c : active_) {
                    c->expire();
                }
            });
        }
    }

    void interrupted() {
        result_.interrupted = true;
        if (stopping_) {
            // A second interrupt: stop waiting for echoes.
            for (auto& c : active_) {
                c->expire();
            }
            return;
        }
        if (!active_started_) {
            // Still opening idle connections: give up on the rest and end the run.
            if (pace_timer_) {
                loop_.cancel_timer(*pace_timer_);
                pace_timer_.reset();
            }
            stopping_ = true;
            for (auto& c : idle_) {
                if (c->state() == LoadClient::State::waiting || c->state() == LoadClient::State::connecting) {
                    c->expire();
                }
            }
            begin_active();
            return;
        }
        begin_stop();
    }

    void on_event(LoadClient& client, LoadContext::Event event) {
        if (client.role() == LoadClient::Role::idle) {
            if (event != LoadContext::Event::finished && ++idle_resolved_ == idle_.size() && !active_started_) {
                // Every idle connection is open (or failed): now the measured load begins.
                loop_.defer([this] { begin_active(); });
            }
            return;
        }
        if (event == LoadContext::Event::finished && ++active_finished_ == active_.size()) {
            end_run();
        }
    }

    void end_run() {
        if (done_) {
            return;
        }
        done_ = true;
        const auto now = Clock::now();
        result_.duration_s = window_open_ ? std::chrono::duration<double>(now - start_).count() : 0.0;
        if (window_open_) {
            // The last, partial step, so that the intervals add up to the totals.
            const bool changed = result_.messages != last_.messages || result_.payload != last_.payload ||
                                 result_.errors.total() != last_.errors;
            if (changed || result_.intervals.empty() || now - last_close_ > 1ms) {
                close_interval(now);
            }
        } else {
            // Ended during the warm-up: nothing was measured.
            result_.messages = 0;
            result_.payload = 0;
            result_.bytes_sent = 0;
            result_.bytes_received = 0;
            result_.latency = Histogram{};
        }
        for (auto& c : active_) {
            result_.per_connection.push_back({c->id(), window_open_ ? c->completed() : 0});
        }
        for (auto& c : idle_) {
            c->finish_idle();
        }
        loop_.stop();
    }

    void schedule_tick() {
        tick_timer_ = loop_.add_timer(tick, [this] {
            const auto now = Clock::now();
            for (auto& c : idle_) {
                c->check_timeout(now);
            }
            for (auto& c : active_) {
                c->check_timeout(now);
            }
            if (!done_) {
                schedule_tick();
            }
        });
    }

    EventLoop& loop_;
    const LoadSettings& settings_;
    const ProgressFn& progress_;
    RunResult result_;
    std::unique_ptr<WorkerLink> interrupts_;
    LoadContext context_;
    std::string pattern_;
    Clients idle_;
    Clients active_;
    std::size_t idle_resolved_ = 0;
    std::size_t active_finished_ = 0;
    bool active_started_ = false;
    bool stopping_ = false;
    bool done_ = false;
    // The totals at the last interval's end, for the next one's differences.
    struct Snapshot {
        std::uint64_t messages = 0;
        std::uint64_t payload = 0;
        std::uint64_t errors = 0;
    };
    Snapshot last_;
    Clock::time_point last_close_{};
    bool window_open_ = false;
    Clock::time_point start_{};  // the measured window's start (the load's, until begin_window)
    std::optional<TimerId> tick_timer_;
    std::optional<TimerId> pace_timer_;
    std::optional<TimerId> stop_timer_;
    std::optional<TimerId> drain_timer_;
    std::optional<TimerId> warmup_timer_;
    std::optional<TimerId> interval_timer_;
};

}  // namespace

Result<std::vector<Target>> resolve_targets(const std::string& host, const std::vector<std::uint16_t>& ports) {
    std::vector<Target> targets;
    for (const auto port : ports) {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        addrinfo* found = nullptr;
        const std::string service = std::to_string(port);
        const std::string shown = host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                                                      : fmt::format("{}:{}", host, port);
        if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
            return Error{"getaddrinfo", make_error_code(errc::resolve_failed), fmt::format("{}: {}", host, ::gai_strerror(rc))};
        }
        std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> results(found, ::freeaddrinfo);
        Target t;
        t.name = shown;
        for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
            Address a;
            std::memcpy(&a.address, ai->ai_addr, ai->ai_addrlen);
            a.length = ai->ai_addrlen;
            a.text = format_address(ai->ai_addr);
            const bool seen = std::any_of(t.candidates.begin(), t.candidates.end(), [&](const Address& b) { return b.text == a.text; });
            if (!seen) {
                t.candidates.push_back(std::move(a));
            }
        }
        targets.push_back(std::move(t));
    }
    return targets;
}

Result<RunResult> run_load(EventLoop& loop, const LoadSettings& settings, const ProgressFn& progress) {
    auto targets = resolve_targets(settings.host, settings.ports);
    if (!targets) {
        return std::move(targets).error();
    }
    return run_load(loop, settings, *targets, progress);
}

Result<RunResult> run_load(EventLoop& loop, const LoadSettings& settings, std::vector<Target>& targets,
                           const ProgressFn& progress) {
    LoadRun run(loop, settings, targets, progress);
    auto result = run.run();
    if (result) {
        for (const Target& t : targets) {
            PortAddresses& a = result->addresses.emplace_back();
            for (const Address& c : t.candidates) {
                a.resolved.push_back(c.text);
            }
            if (t.connected) {
                a.used = t.candidates[t.preferred].text;
            }
        }
    }
    return result;
}

}  // namespace echoplex::testecho
