// Listener: one bound, listening port. Accepts in bounded batches and hands sockets to its owner.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <string>

#include "echoplex/io/error.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"
#include "echoplex/io/unique_fd.hpp"

namespace echoplex {

class Listener final : public IoHandler {
public:
    // Receives each accepted socket (non-blocking, close-on-exec) and the peer's address.
    using AcceptFn = std::function<void(UniqueFd socket, std::string peer)>;
    // Told when accept fails for lack of descriptors (EMFILE/ENFILE); the connection that
    // could not be accepted has already been taken off the queue and closed.
    using ExhaustedFn = std::function<void(const Error& error)>;

    // Binds and listens (SO_REUSEADDR, IPV6_V6ONLY for IPv6). `host` is numeric or a name.
    static Result<std::unique_ptr<Listener>> open(EventLoop& loop, const std::string& host, std::uint16_t port,
                                                  int backlog, AcceptFn on_accept, ExhaustedFn on_exhausted);
    ~Listener();

    [[nodiscard]] Result<void> start();  // watch for incoming connections
    void close() noexcept;

    // "127.0.0.1:50007" or "[::1]:50007", with the port really bound.
    const std::string& address() const noexcept { return address_; }

    void on_readable() override;
    void on_writable() override {}

private:
    Listener(EventLoop& loop, UniqueFd socket, AcceptFn on_accept, ExhaustedFn on_exhausted);
    // EMFILE: accept fails but the connection stays queued, so a level-triggered loop would
    // spin. Closing the spare descriptor frees one slot to accept the connection and close it.
    // Returns false when no connection was waiting (or the spare is gone).
    bool refuse_with_spare_fd();

    EventLoop& loop_;
    UniqueFd socket_;
    UniqueFd spare_;  // /dev/null, held for the EMFILE case
    AcceptFn on_accept_;
    ExhaustedFn on_exhausted_;
    std::string address_;
};

// "host:port" as users type it: IPv6 in brackets.
std::string format_address(const sockaddr* addr);

}  // namespace echoplex
