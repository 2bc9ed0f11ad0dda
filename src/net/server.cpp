// EchoServer implementation.
#include "echoplex/net/server.hpp"

#include <fmt/format.h>

#include "echoplex/io/log.hpp"

namespace echoplex {
namespace {

std::chrono::milliseconds to_ms(double seconds) {
    return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
}

}  // namespace

EchoServer::EchoServer(EventLoop& loop, const ServerOptions& config) : loop_(loop), config_(config) {
    limits_.reply = config.reply;
    limits_.high_watermark = config.high_watermark;
    limits_.low_watermark = config.low_watermark;
}

EchoServer::~EchoServer() {
    // Connections and listeners unwatch themselves as they are destroyed.
    if (idle_timer_) {
        loop_.cancel_timer(*idle_timer_);
    }
    if (drain_timer_) {
        loop_.cancel_timer(*drain_timer_);
    }
}

Result<std::unique_ptr<EchoServer>> EchoServer::create(EventLoop& loop, const ServerOptions& config) {
    auto server = std::unique_ptr<EchoServer>(new EchoServer(loop, config));
    EchoServer* self = server.get();
    for (const std::uint16_t port : config.ports) {
        auto listener = Listener::open(
            loop, config.host, port, config.backlog,
            [self](UniqueFd socket, std::string peer) { self->adopt(std::move(socket), std::move(peer)); },
            [self](const Error& error) { self->note_refusal(error); });
        if (!listener) {
            return std::move(listener).error();  // `server` closes the ones already bound
        }
        server->listeners_.push_back(std::move(listener).value());
    }
    for (auto& listener : server->listeners_) {
        if (auto started = listener->start(); !started) {
            return std::move(started).error();
        }
    }
    if (config.idle_timeout_s > 0) {
        server->sweep_idle();
    }
    return server;
}

std::vector<std::string> EchoServer::addresses() const {
    std::vector<std::string> out;
    for (const auto& listener : listeners_) {
        out.push_back(listener->address());
    }
    return out;
}

void EchoServer::adopt(UniqueFd socket, std::string peer) {
    if (shutting_down_) {
        refuse(std::move(socket), peer, "shutting down");
        return;
    }
    if (stats_.open >= config_.max_connections) {
        refuse(std::move(socket), peer, "--max-connections reached");
        return;
    }
    const int fd = socket.get();
    auto connection = std::make_unique<Connection>(loop_, std::move(socket), std::move(peer), limits_, pool_, stats_, *this);
    if (auto started = connection->start(); !started) {
        // select beyond FD_SETSIZE: refused the same way as any connection over a limit.
        note_refusal(started.error());
        return;  // the connection was never watched; destroying it closes the socket
    }
    if (static_cast<std::size_t>(fd) >= connections_.size()) {
        connections_.resize(static_cast<std::size_t>(fd) + 1);
    }
    log::debug("connection from {} (fd {})", connection->peer(), fd);
    connections_[static_cast<std::size_t>(fd)] = std::move(connection);
    ++stats_.accepted;
    ++stats_.open;
    stats_.peak = std::max(stats_.peak, stats_.open);
}

void EchoServer::refuse(UniqueFd socket, std::string_view peer, std::string_view why) {
    ++stats_.refused;
    log::debug("refused {}: {}", peer, why);
    socket.reset();
}

void EchoServer::note_refusal(const Error& error) {
    ++stats_.refused;
    // At most one line a second: a connection storm must not turn into a log storm.
    const auto now = loop_.now();
    if (now - last_refusal_log_ >= std::chrono::seconds(1)) {
        last_refusal_log_ = now;
        const bool fd_limit = error.code == errc::fd_out_of_range;
        log::warn("refusing connections: {} ({})", error.message(),
                  fd_limit ? "select cannot watch descriptors >= FD_SETSIZE; use --backend=epoll or poll"
                           : "raise the limit with ulimit -n");
    }
}

void EchoServer::connection_closed(Connection& connection, std::string_view reason) {
    log::debug("closed {} (fd {}): {}", connection.peer(), connection.fd(), reason);
    --stats_.open;
    // Called before the socket is closed, so the fd still indexes this connection. Its callback
    // may still be on the stack: move it aside and free it after the batch.
    auto& slot = connections_[static_cast<std::size_t>(connection.fd())];
    retired_.push_back(std::move(slot));
    if (retired_.size() == 1) {
        loop_.defer([this] { retired_.clear(); });
    }
    maybe_finish_shutdown();
}

void EchoServer::close_all(std::string_view reason) {
    for (auto& slot : connections_) {
        if (slot) {
            slot->close(reason);
        }
    }
}

void EchoServer::sweep_idle() {
    const auto limit = to_ms(config_.idle_timeout_s);
    const auto now = Clock::now();
    for (auto& slot : connections_) {
        if (slot && now - slot->last_activity() >= limit) {
            slot->close("idle timeout");
        }
    }
    // Checking twice per timeout closes a silent client between 1x and 1.5x the timeout, at the
    // cost of one walk over the table, instead of a timer per connection.
    const auto period = std::max(limit / 2, std::chrono::milliseconds(10));
    idle_timer_ = loop_.add_timer(period, [this] { sweep_idle(); });
}

void EchoServer::shutdown(std::function<void()> on_finished) {
    if (shutting_down_) {
        return;
    }
    shutting_down_ = true;
    on_shutdown_finished_ = std::move(on_finished);
    for (auto& listener : listeners_) {
        listener->close();
    }
    // Armed before draining: connections that finish at once may complete the shutdown here.
    drain_timer_ = loop_.add_timer(to_ms(config_.drain_timeout_s), [this] {
        drain_timer_.reset();
        log::warn("drain timeout: dropping {} connection(s) still open", stats_.open);
        close_all("drain timeout");
    });
    for (auto& slot : connections_) {
        if (slot) {
            slot->drain();
        }
    }
    maybe_finish_shutdown();
}

void EchoServer::maybe_finish_shutdown() {
    if (!shutting_down_ || stats_.open > 0 || !on_shutdown_finished_) {
        return;
    }
    if (drain_timer_) {
        loop_.cancel_timer(*drain_timer_);
        drain_timer_.reset();
    }
    auto done = std::move(on_shutdown_finished_);
    on_shutdown_finished_ = nullptr;
    done();
}

std::string EchoServer::stats_line() const {
    return fmt::format("stats: accepted={} refused={} open={} peak={} bytes_in={} bytes_out={} paused={}",
                       stats_.accepted, stats_.refused, stats_.open, stats_.peak, stats_.bytes_in,
                       stats_.bytes_out, stats_.paused);
}

}  // namespace echoplex
