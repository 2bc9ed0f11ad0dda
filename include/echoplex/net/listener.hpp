// Listener: one bound, listening port. Accepts in bounded batches and hands sockets to its owner.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "echoplex/io/completion.hpp"
#include "echoplex/io/error.hpp"
#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "echoplex/net/bind_socket.hpp"

namespace echoplex {

// On a loop that completes operations (io_uring) the listener keeps a multishot accept in the
// kernel, which completes once per connection. An accept that fails ends it; the listener then
// falls back to readiness and the accept4 path below (spare descriptor, back-off) until the queue
// is empty, and arms the multishot accept again.
//
// Accept failures that leave the connection queued (ENOBUFS, ENOMEM, EMFILE/ENFILE when the spare
// descriptor is gone, anything unexpected) would have a level-triggered loop report the listener
// readable forever. The listener then backs off: it stops being watched, and a loop timer watches
// it again (reopening the spare first if it is gone) after first_backoff, a pause that doubles
// with each failure up to max_backoff and starts over once a connection is accepted.
class Listener final : public IoHandler, private CompletionHandler {
public:
    // Receives each accepted socket (non-blocking, close-on-exec) and the peer's address.
    using AcceptFn = std::function<void(UniqueFd socket, std::string peer)>;
    // Told when accept fails for lack of descriptors (EMFILE/ENFILE) and the spare descriptor let
    // the listener take the waiting connection off the queue and close it. Not told of back-offs
    // (the listener logs those, at most once a second).
    using ExhaustedFn = std::function<void(const Error& error)>;
    // How the listener takes a connection off the queue: accept4(2)'s arguments, result and errno.
    using AcceptCall = std::function<int(int fd, sockaddr* addr, socklen_t* len, int flags)>;

    static constexpr std::chrono::milliseconds first_backoff{10};
    static constexpr std::chrono::milliseconds max_backoff{1000};

    // Binds and listens (bind_tcp: SO_REUSEADDR, IPV6_V6ONLY for IPv6). `host` is numeric or a
    // name; a name that does not resolve fails with errc::resolve_failed.
    static Result<std::unique_ptr<Listener>> open(EventLoop& loop, const std::string& host, std::uint16_t port,
                                                  int backlog, AcceptFn on_accept, ExhaustedFn on_exhausted);
    // Serves a socket already bound and listening (bind_tcp with reuse_port, say).
    static std::unique_ptr<Listener> open(EventLoop& loop, BoundSocket socket, AcceptFn on_accept,
                                          ExhaustedFn on_exhausted);
    ~Listener();  // close()

    [[nodiscard]] Result<void> start();  // watch for incoming connections
    // Unwatches and closes the socket and cancels a pending back-off. Idempotent.
    void close() noexcept;

    // "127.0.0.1:50007" or "[::1]:50007", with the port really bound.
    const std::string& address() const noexcept { return address_; }
    // The listening socket, -1 once closed.
    int fd() const noexcept { return socket_.get(); }
    // True from a failure that left a connection queued until the back-off timer fires.
    bool backing_off() const noexcept { return backoff_timer_.has_value(); }
    // True while a multishot accept is in the kernel (completion loops only).
    bool accepting_by_completion() const noexcept { return accepting_; }

    // For tests: takes connections with `call` instead of accept4(2), to produce failures the
    // kernel will not produce on demand (ENOBUFS, ENFILE). On a completion loop the listener
    // then accepts on readiness too, since a multishot accept would bypass `call`.
    void set_accept_call(AcceptCall call);

    void on_readable() override;
    void on_writable() override {}

private:
    Listener(EventLoop& loop, UniqueFd socket, AcceptFn on_accept, ExhaustedFn on_exhausted);
    // EMFILE/ENFILE (`err`): accept fails but the connection stays queued. Closing the spare
    // descriptor frees one slot to accept the connection and close it. Returns 0 when one was
    // refused, EAGAIN when none was waiting, otherwise the errno that left it queued (`err`
    // when the spare is gone).
    int refuse_with_spare_fd(int err);
    void reopen_spare() noexcept;
    // Completion loops: arms the multishot accept (readiness is unwatched first).
    void accept_by_completion();
    void stop_accepting() noexcept;  // cancels the multishot accept and retires its tag
    void watch_for_readiness();      // the accept4 path; a loop that refuses it backs off
    void on_completion(OpCode op, const CompletionInfo& info) override;
    void take(UniqueFd client, std::string peer);
    // Stops watching and arms the timer that calls resume(); `why` is logged.
    void back_off(const Error& why);
    void resume();

    EventLoop& loop_;
    UniqueFd socket_;
    UniqueFd spare_;  // /dev/null, held for the EMFILE case
    AcceptFn on_accept_;
    ExhaustedFn on_exhausted_;
    AcceptCall accept_;
    std::string address_;
    std::optional<TimerId> backoff_timer_;
    std::chrono::milliseconds next_backoff_ = first_backoff;
    std::optional<Clock::time_point> last_backoff_log_;
    std::optional<CompletionTag> tag_;  // registered with the loop's completion table
    bool accepting_ = false;            // a multishot accept is in the kernel
    bool scripted_ = false;             // set_accept_call: readiness only
};

}  // namespace echoplex
