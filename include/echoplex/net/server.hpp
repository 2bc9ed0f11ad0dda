// EchoServer: the listeners, the connection table, the limits and graceful shutdown.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "echoplex/io/byte_queue.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/net/connection.hpp"
#include "echoplex/net/listener.hpp"

namespace echoplex {

// What the server is told: where to listen and the limits every connection lives by.
struct ServerOptions {
    std::string host = "127.0.0.1";
    std::vector<std::uint16_t> ports = {50007, 50008};  // the book's select-server pair
    ReplyMode reply = ReplyMode::echo;
    std::size_t max_connections = 10000;
    std::size_t high_watermark = 256 * 1024;  // queued output that pauses reading
    std::size_t low_watermark = 64 * 1024;    // queued output that resumes it
    double idle_timeout_s = 0;                // 0: never close idle connections
    double drain_timeout_s = 5;               // graceful shutdown's flush deadline
    int backlog = 511;
};

class EchoServer final : public ConnectionOwner {
public:
    // Binds every port or none: on failure the listeners already opened are closed again and the
    // error names the address that failed.
    static Result<std::unique_ptr<EchoServer>> create(EventLoop& loop, const ServerOptions& config);
    EchoServer(const EchoServer&) = delete;
    EchoServer& operator=(const EchoServer&) = delete;
    ~EchoServer();

    // The addresses really bound, in --port order ("127.0.0.1:50007").
    std::vector<std::string> addresses() const;

    // Stops accepting and reading, flushes queued output for at most the drain timeout, closes
    // everything, then calls `on_finished` (from the loop). Calling it again does nothing.
    void shutdown(std::function<void()> on_finished);

    // Drops every connection now, queued output included.
    void close_all(std::string_view reason);

    const ServerStats& stats() const noexcept { return stats_; }
    std::string stats_line() const;  // "stats: accepted=… refused=… open=… …"

    void connection_closed(Connection& connection, std::string_view reason) override;

private:
    EchoServer(EventLoop& loop, const ServerOptions& config);
    void adopt(UniqueFd socket, std::string peer);
    void refuse(UniqueFd socket, std::string_view peer, std::string_view why);
    // A connection refused for lack of descriptors (EMFILE, or beyond the backend's fd_limit).
    void note_refusal(const Error& error);
    void sweep_idle();
    void maybe_finish_shutdown();

    EventLoop& loop_;
    ServerOptions config_;
    ConnectionLimits limits_;
    BlockPool pool_;
    ServerStats stats_;
    std::vector<std::unique_ptr<Listener>> listeners_;
    std::vector<std::unique_ptr<Connection>> connections_;  // indexed by fd
    std::vector<std::unique_ptr<Connection>> retired_;      // closed this batch, freed after it
    std::function<void()> on_shutdown_finished_;
    std::optional<TimerId> idle_timer_;
    std::optional<TimerId> drain_timer_;
    Clock::time_point last_refusal_log_{};
    bool shutting_down_ = false;
};

}  // namespace echoplex
