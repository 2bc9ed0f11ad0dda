// Listener implementation.
#include "echoplex/net/listener.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/log.hpp"

namespace echoplex {
namespace {

// Accepts per readiness event: enough to empty a burst, few enough that clients already
// connected are not kept waiting by a connection storm.
constexpr int accepts_per_event = 64;

// Errors after which that connection is gone but others may be queued: EINTR, an aborted
// handshake, and the network errors accept(2) (NOTES) says Linux passes on from the new socket.
bool connection_gone(int err) noexcept {
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

}  // namespace

Result<std::unique_ptr<Listener>> Listener::open(EventLoop& loop, const std::string& host, std::uint16_t port,
                                                 int backlog, AcceptFn on_accept, ExhaustedFn on_exhausted) {
    BindOptions options;
    options.backlog = backlog;
    auto bound = bind_tcp(host, port, options);
    if (!bound) {
        return std::move(bound).error();
    }
    return open(loop, std::move(bound).value(), std::move(on_accept), std::move(on_exhausted));
}

std::unique_ptr<Listener> Listener::open(EventLoop& loop, BoundSocket socket, AcceptFn on_accept,
                                         ExhaustedFn on_exhausted) {
    auto listener = std::unique_ptr<Listener>(
        new Listener(loop, std::move(socket.fd), std::move(on_accept), std::move(on_exhausted)));
    listener->address_ = std::move(socket.address);
    return listener;
}

Listener::Listener(EventLoop& loop, UniqueFd socket, AcceptFn on_accept, ExhaustedFn on_exhausted)
    : loop_(loop),
      socket_(std::move(socket)),
      on_accept_(std::move(on_accept)),
      on_exhausted_(std::move(on_exhausted)),
      accept_([](int fd, sockaddr* addr, socklen_t* len, int flags) { return ::accept4(fd, addr, len, flags); }) {
    reopen_spare();
}

Listener::~Listener() { close(); }

Result<void> Listener::start() {
    if (backoff_timer_) {
        return {};  // resume() watches the socket when the pause ends
    }
    if (loop_.completion_ring() != nullptr) {
        accept_by_completion();
        return {};
    }
    return loop_.watch(socket_.get(), *this, Interest::read);
}

void Listener::close() noexcept {
    if (backoff_timer_) {
        loop_.cancel_timer(*backoff_timer_);
        backoff_timer_.reset();
    }
    stop_accepting();
    if (socket_) {
        loop_.unwatch(socket_.get());
        socket_.reset();
    }
}

void Listener::set_accept_call(AcceptCall call) {
    accept_ = std::move(call);
    scripted_ = true;
    if (tag_) {
        stop_accepting();
        watch_for_readiness();
    }
}

void Listener::watch_for_readiness() {
    if (auto watching = loop_.watch(socket_.get(), *this, Interest::read); !watching) {
        back_off(watching.error());
    }
}

void Listener::stop_accepting() noexcept {
    if (!tag_) {
        return;
    }
    // Synchronously: until the kernel lets go of it, the socket would go on listening. A new tag
    // next time: whatever completed meanwhile (a socket accepted, an accept that failed before the
    // cancel reached it) is stale, and the loop drops it, closing any socket it carries.
    loop_.completion_ring()->cancel_now(socket_.get());
    loop_.remove_completion_handler(*tag_);
    tag_.reset();
    accepting_ = false;
}

void Listener::accept_by_completion() {
    if (!socket_ || accepting_) {
        return;
    }
    if (scripted_) {
        watch_for_readiness();
        return;
    }
    loop_.unwatch(socket_.get());
    if (!tag_) {
        tag_ = loop_.add_completion_handler(*this);
    }
    loop_.completion_ring()->accept_multishot(socket_.get(), op_data::encode(*tag_, 0, /*fd_result=*/true));
    accepting_ = true;
}

void Listener::on_completion(OpCode /*op*/, const CompletionInfo& info) {
    if (!info.more) {
        accepting_ = false;
    }
    if (info.result >= 0) {
        UniqueFd client(info.result);
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        std::string address = ::getpeername(client.get(), reinterpret_cast<sockaddr*>(&peer), &len) == 0
                                  ? format_address(reinterpret_cast<const sockaddr*>(&peer))
                                  : std::string("?");
        take(std::move(client), std::move(address));  // may close this listener
        if (socket_ && !accepting_) {
            accept_by_completion();
        }
        return;
    }
    const int err = -info.result;
    if (!socket_ || err == ECANCELED || accepting_) {
        return;
    }
    if (connection_gone(err)) {
        accept_by_completion();
        return;
    }
    // EMFILE and the like: the accept4 path knows what to do (spare descriptor, back-off) and
    // comes back here once the queue is empty.
    watch_for_readiness();
}

void Listener::take(UniqueFd client, std::string peer) {
    next_backoff_ = first_backoff;
    const int one = 1;
    // Echo replies are small and latency-bound; Nagle would hold them back.
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    on_accept_(std::move(client), std::move(peer));
}

void Listener::on_readable() {
    // on_accept_ and on_exhausted_ may close the listener: check the socket on every turn.
    for (int i = 0; i < accepts_per_event && socket_; ++i) {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        UniqueFd client(accept_(socket_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (client) {
            take(std::move(client), format_address(reinterpret_cast<const sockaddr*>(&peer)));
            continue;
        }
        int err = errno;
        if (connection_gone(err)) {
            continue;
        }
        if (err == EAGAIN || err == EWOULDBLOCK) {
            if (loop_.completion_ring() != nullptr) {
                accept_by_completion();  // the trouble is over: back to the multishot accept
            }
            return;  // the queue is empty
        }
        if (err == EMFILE || err == ENFILE) {
            const int refusal = refuse_with_spare_fd(err);
            if (refusal == 0) {
                on_exhausted_(Error::from_errno("accept4", err));
                continue;
            }
            if (refusal == EAGAIN || refusal == EWOULDBLOCK) {
                // accept4 checks for a free descriptor before it looks at the queue, so EMFILE
                // does not mean that a connection was waiting.
                return;
            }
            if (connection_gone(refusal)) {
                continue;
            }
            err = refusal;
        }
        back_off(Error::from_errno("accept4", err));
        return;
    }
}

int Listener::refuse_with_spare_fd(int err) {
    if (!spare_) {
        return err;
    }
    spare_.reset();
    UniqueFd refused(accept_(socket_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    const int result = refused ? 0 : errno;
    refused.reset();
    // With ENFILE another process may take the slot just freed; then the spare stays closed and
    // the next EMFILE/ENFILE backs off until the timer can reopen it.
    reopen_spare();
    return result;
}

void Listener::reopen_spare() noexcept { spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

void Listener::back_off(const Error& why) {
    if (!socket_ || backoff_timer_) {
        return;
    }
    const std::chrono::milliseconds pause = next_backoff_;
    next_backoff_ = std::min(next_backoff_ * 2, max_backoff);
    // Unwatched rather than Interest::none: unwatch cannot fail, so the pause is a real one.
    loop_.unwatch(socket_.get());
    backoff_timer_ = loop_.add_timer(pause, [this] { resume(); });
    // One line when a run of failures starts (the pause is then the first), and at most one a
    // second: a condition that persists must not turn into a log storm.
    const auto now = loop_.now();
    if (pause == first_backoff && (!last_backoff_log_ || now - *last_backoff_log_ >= std::chrono::seconds(1))) {
        last_backoff_log_ = now;
        log::warn("not accepting on {} for {} ms (longer while it lasts): {}", address_, pause.count(), why.message());
    }
}

void Listener::resume() {
    backoff_timer_.reset();
    if (!socket_) {
        return;
    }
    if (!spare_) {
        reopen_spare();
    }
    // On a completion loop too, readiness first: the accept4 path tells whether the condition is
    // over before the multishot accept is armed again (with no free descriptor it fails at once).
    watch_for_readiness();
}

}  // namespace echoplex
