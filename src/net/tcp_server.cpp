// TcpServer implementation.
#include "echoplex/net/tcp_server.hpp"

#include <algorithm>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/log.hpp"
#include "echoplex/net/proxy_gate.hpp"

namespace echoplex {
namespace {

std::chrono::milliseconds to_ms(double seconds) {
    return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
}

}  // namespace

std::vector<std::string> service_names(const std::vector<Endpoint>& endpoints) {
    std::vector<std::string> names;
    for (const Endpoint& endpoint : endpoints) {
        if (std::find(names.begin(), names.end(), endpoint.service) == names.end()) {
            names.push_back(endpoint.service);
        }
    }
    return names;
}

TcpServer::TcpServer(EventLoop& loop, TcpServerOptions options) : loop_(loop), options_(std::move(options)) {
    const std::vector<std::string> names = service_names(options_.endpoints);
    for (const std::string& name : names) {
        services_.push_back(ServiceStats{name, {}});
    }
    for (const Endpoint& endpoint : options_.endpoints) {
        endpoint_service_.push_back(
            static_cast<std::size_t>(std::find(names.begin(), names.end(), endpoint.service) - names.begin()));
    }
    // services_ is never resized again: the contexts refer to its elements.
    contexts_.reserve(services_.size());
    for (std::size_t service = 0; service < services_.size(); ++service) {
        contexts_.push_back(ConnectionContext{loop_, options_.limits, pool_, services_[service].stats, *this, service});
    }
}

TcpServer::~TcpServer() {
    // Connections and listeners unwatch themselves as they are destroyed.
    if (idle_timer_) {
        loop_.cancel_timer(*idle_timer_);
    }
    if (drain_timer_) {
        loop_.cancel_timer(*drain_timer_);
    }
}

Result<std::unique_ptr<TcpServer>> TcpServer::create(EventLoop& loop, TcpServerOptions options) {
    auto server = std::unique_ptr<TcpServer>(new TcpServer(loop, std::move(options)));
    TcpServer* self = server.get();
    for (std::size_t index = 0; index < self->options_.endpoints.size(); ++index) {
        const Endpoint& endpoint = self->options_.endpoints[index];
        BindOptions bind_options;
        bind_options.backlog = self->options_.backlog;
        bind_options.reuse_port = self->options_.reuse_port;
        Result<std::vector<BoundSocket>> bound = std::vector<BoundSocket>{};
        if (endpoint.listen_fd >= 0) {
            auto adopted = adopt_listening_socket(endpoint.listen_fd);
            if (!adopted) {
                return std::move(adopted).error();
            }
            bound->push_back(std::move(adopted).value());
        } else {
            bound = bind_tcp_all(endpoint.hosts, endpoint.port, bind_options);
        }
        if (!bound) {
            return std::move(bound).error();  // `server` closes the ones already bound
        }
        for (BoundSocket& socket : *bound) {
            server->listeners_.push_back(Listener::open(
                loop, std::move(socket),
                [self, index](UniqueFd client, std::string peer) { self->adopt(index, std::move(client), std::move(peer)); },
                [self, index](const Error& error) { self->note_refusal(self->stats_of(index), error); }));
            server->listener_endpoint_.push_back(index);
        }
    }
    for (auto& listener : server->listeners_) {
        if (auto started = listener->start(); !started) {
            return std::move(started).error();
        }
    }
    if (self->options_.idle_timeout_s > 0) {
        server->sweep_idle();
    }
    return server;
}

std::vector<std::string> TcpServer::addresses() const {
    std::vector<std::string> out;
    for (const auto& listener : listeners_) {
        out.push_back(listener->address());
    }
    return out;
}

std::vector<std::string> TcpServer::descriptions() const {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < listeners_.size(); ++i) {
        out.push_back(fmt::format("{} ({})", listeners_[i]->address(), options_.endpoints[listener_endpoint_[i]].service));
    }
    return out;
}

ServerStats TcpServer::stats() const noexcept {
    ServerStats sum;
    for (const ServiceStats& service : services_) {
        sum += service.stats;
    }
    sum.peak = peak_;
    return sum;
}

void TcpServer::adopt(std::size_t index, UniqueFd socket, std::string peer) {
    const Endpoint& endpoint = options_.endpoints[index];
    ServerStats& stats = stats_of(index);
    if (shutting_down_) {
        refuse(stats, RefusalCause::shutting_down, peer, "shutting down");
        return;
    }
    if (open_ >= options_.max_connections) {
        refuse(stats, RefusalCause::max_connections, peer, "connection limit reached");
        return;
    }
    const int fd = socket.get();
    ProtocolPtr protocol = endpoint.protocol();
    if (options_.proxy_protocol) {
        protocol = std::make_unique<ProxyGate>(std::move(protocol), options_.proxy_deadline, stats.proxy_rejected);
    }
    auto connection = std::make_unique<Connection>(contexts_[endpoint_service_[index]],
                                                   make_socket_stream(loop_, std::move(socket), pool_), std::move(protocol));
    if (auto started = connection->start(); !started) {
        // select beyond FD_SETSIZE: refused the same way as any connection over a limit.
        note_refusal(stats, started.error());
        return;  // the connection was never watched; destroying it closes the socket
    }
    if (static_cast<std::size_t>(fd) >= connections_.size()) {
        connections_.resize(static_cast<std::size_t>(fd) + 1);
    }
    if (log::enabled(log::Level::debug)) {
        log::debug("connection from {} to {} (fd {})", peer, endpoint.service, fd);
        // For the closing line: a reset socket can no longer tell its peer. Kept only when
        // logged, so that a connection carries no address string otherwise.
        connection->set_peer(std::move(peer));
    }
    connections_[static_cast<std::size_t>(fd)] = std::move(connection);
    ++stats.accepted;
    ++stats.open;
    stats.peak = std::max(stats.peak, stats.open);
    ++open_;
    peak_ = std::max(peak_, open_);
}

void TcpServer::refuse(ServerStats& stats, RefusalCause cause, std::string_view peer, std::string_view why) {
    ++stats.refused_by(cause);
    log::debug("refused {}: {}", peer, why);  // the caller's `socket` closes it
}

void TcpServer::note_refusal(ServerStats& stats, const Error& error) {
    ++stats.refused_by(error.code == errc::fd_out_of_range ? RefusalCause::fd_setsize : RefusalCause::out_of_descriptors);
    // At most one line a second: a connection storm must not turn into a log storm.
    const auto now = loop_.now();
    if (now - last_refusal_log_ >= std::chrono::seconds(1)) {
        last_refusal_log_ = now;
        const bool fd_limit = error.code == errc::fd_out_of_range;
        log::warn("refusing connections: {} ({})", error.message(),
                  fd_limit ? "select cannot watch descriptors >= FD_SETSIZE; use the epoll or poll backend"
                           : "raise the limit with ulimit -n");
    }
}

void TcpServer::connection_closed(Connection& connection, std::string_view reason) {
    if (log::enabled(log::Level::debug)) {  // peer() may ask the socket: only when it is logged
        log::debug("closed {} (fd {}): {}", connection.peer(), connection.fd(), reason);
    }
    --services_[connection.context().service].stats.open;
    --open_;
    // Called before the socket is closed, so the fd still indexes this connection. Its callback
    // may still be on the stack: move it aside and free it after the batch.
    auto& slot = connections_[static_cast<std::size_t>(connection.fd())];
    retired_.push_back(std::move(slot));
    if (retired_.size() == 1) {
        loop_.defer([this] { retired_.clear(); });
    }
    maybe_finish_shutdown();
}

void TcpServer::close_all(CloseReason reason, std::string_view detail) {
    for (auto& slot : connections_) {
        if (slot) {
            slot->close_now(reason, detail);
        }
    }
}

void TcpServer::sweep_idle() {
    const auto limit = to_ms(options_.idle_timeout_s);
    const auto now = Clock::now();
    for (auto& slot : connections_) {
        if (slot && now - slot->last_activity() >= limit) {
            slot->close_now(CloseReason::idle_timeout, "idle timeout");
        }
    }
    // Checking twice per timeout closes a silent client between 1x and 1.5x the timeout, at the
    // cost of one walk over the table, instead of a timer per connection.
    const auto period = std::max(limit / 2, std::chrono::milliseconds(10));
    idle_timer_ = loop_.add_timer(period, [this] { sweep_idle(); });
}

void TcpServer::shutdown(std::function<void()> on_finished) {
    if (shutting_down_) {
        return;
    }
    shutting_down_ = true;
    on_shutdown_finished_ = std::move(on_finished);
    for (auto& listener : listeners_) {
        listener->close();
    }
    // Armed before draining: connections that finish at once may complete the shutdown here.
    drain_timer_ = loop_.add_timer(to_ms(options_.drain_timeout_s), [this] {
        drain_timer_.reset();
        log::warn("drain timeout: dropping {} connection(s) still open", open_);
        close_all(CloseReason::drain_timeout, "drain timeout");
    });
    for (auto& slot : connections_) {
        if (slot) {
            slot->drain();
        }
    }
    maybe_finish_shutdown();
}

void TcpServer::maybe_finish_shutdown() {
    if (!shutting_down_ || open_ > 0 || !on_shutdown_finished_) {
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

std::string format_stats(const ServerStats& stats, bool proxy_protocol) {
    std::string line = fmt::format("stats: accepted={} refused={} open={} peak={} bytes_in={} bytes_out={} paused={}",
                                   stats.accepted, stats.refused_total(), stats.open, stats.peak, stats.bytes_in,
                                   stats.bytes_out, stats.paused);
    if (proxy_protocol) {
        line += fmt::format(" proxy_rejected={}", stats.proxy_rejected);
    }
    return line;
}

}  // namespace echoplex
