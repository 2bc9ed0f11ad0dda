// TcpServer: listeners, each with the protocol it serves, the connection table, the limits and
// graceful shutdown. Knows sockets and queues, not what any protocol says.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "echoplex/io/byte_queue.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/net/connection.hpp"
#include "echoplex/net/listener.hpp"
#include "echoplex/net/protocol.hpp"

namespace echoplex {

// One port to listen on, at every address its hosts resolve to, and what its clients are served.
struct Endpoint {
    std::vector<std::string> hosts = {"127.0.0.1"};  // addresses or names ("::" is dual-stack)
    std::uint16_t port = 0;        // 0: the kernel picks a free port, the same for every address
    std::string service = "echo";  // a name for logs and the startup line
    ProtocolFactory protocol;      // makes the protocol of each accepted connection
    // A socket bound and listening already (systemd's socket activation), which the server takes
    // over instead of binding hosts and port; -1: bind them.
    int listen_fd = -1;
};

struct TcpServerOptions {
    std::vector<Endpoint> endpoints;
    ConnectionLimits limits;
    std::size_t max_connections = 10000;  // more are accepted and closed at once
    double idle_timeout_s = 0;            // 0: never close idle connections
    double drain_timeout_s = 5;           // graceful shutdown's flush deadline
    int backlog = 511;
    // SO_REUSEPORT on every listener, so that other processes (workers) serve the same ports.
    bool reuse_port = false;
    // Every connection must begin with a PROXY protocol header (v1 or v2), complete within the
    // deadline; the client it names is the connection's peer (see ProxyGate).
    bool proxy_protocol = false;
    std::chrono::milliseconds proxy_deadline{5000};
};

// "stats: accepted=N refused=N open=N peak=N bytes_in=N bytes_out=N paused=N", with
// " proxy_rejected=N" when the PROXY protocol is on.
std::string format_stats(const ServerStats& stats, bool proxy_protocol);

// One service's counts: every endpoint that names it adds to them.
struct ServiceStats {
    std::string service;
    ServerStats stats;
};

// The services the endpoints name, each once, in the order they are first named: the order of
// TcpServer::service_stats().
std::vector<std::string> service_names(const std::vector<Endpoint>& endpoints);

class TcpServer final : public ConnectionOwner {
public:
    // Binds every address of every endpoint or none: on failure the listeners already opened are
    // closed again and the error names the address that failed.
    static Result<std::unique_ptr<TcpServer>> create(EventLoop& loop, TcpServerOptions options);
    TcpServer(const TcpServer&) = delete;
    TcpServer& operator=(const TcpServer&) = delete;
    ~TcpServer();

    // The addresses really bound, in endpoint order, an endpoint's addresses in the resolver's
    // order ("127.0.0.1:50007", "[::1]:50007").
    std::vector<std::string> addresses() const;
    // The same with each endpoint's service: "127.0.0.1:50007 (echo)".
    std::vector<std::string> descriptions() const;

    // Stops accepting and reading, flushes queued output for at most the drain timeout, closes
    // everything, then calls `on_finished` (from the loop). Calling it again does nothing.
    void shutdown(std::function<void()> on_finished);

    // Drops every connection now, queued output included.
    void close_all(CloseReason reason, std::string_view detail);

    std::string stats_line() const { return format_stats(stats(), options_.proxy_protocol); }
    // Every service's counts added up, with the peak of all connections open at once.
    ServerStats stats() const noexcept;
    // Per service, in the order the endpoints first name them.
    const std::vector<ServiceStats>& service_stats() const noexcept { return services_; }

    void connection_closed(Connection& connection, std::string_view reason) override;

private:
    TcpServer(EventLoop& loop, TcpServerOptions options);
    void adopt(std::size_t endpoint, UniqueFd socket, std::string peer);
    void refuse(ServerStats& stats, RefusalCause cause, std::string_view peer, std::string_view why);
    // A connection refused for lack of descriptors (EMFILE, or beyond the backend's fd_limit).
    void note_refusal(ServerStats& stats, const Error& error);
    ServerStats& stats_of(std::size_t endpoint) noexcept { return services_[endpoint_service_[endpoint]].stats; }
    void sweep_idle();
    void maybe_finish_shutdown();

    EventLoop& loop_;
    TcpServerOptions options_;
    BlockPool pool_;
    std::vector<ServiceStats> services_;
    std::vector<std::size_t> endpoint_service_;  // the services_ index of each endpoint
    std::uint64_t open_ = 0;                     // over every service
    std::uint64_t peak_ = 0;
    std::vector<std::unique_ptr<Listener>> listeners_;      // one per bound address, endpoint order
    std::vector<std::size_t> listener_endpoint_;            // the endpoint each listener serves
    std::vector<ConnectionContext> contexts_;               // one per service, services_ order
    std::vector<std::unique_ptr<Connection>> connections_;  // indexed by fd
    std::vector<std::unique_ptr<Connection>> retired_;      // closed this batch, freed after it
    std::function<void()> on_shutdown_finished_;
    std::optional<TimerId> idle_timer_;
    std::optional<TimerId> drain_timer_;
    Clock::time_point last_refusal_log_{};
    bool shutting_down_ = false;
};

}  // namespace echoplex
