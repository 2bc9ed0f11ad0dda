// Connection implementation: the state machine, the read path, the write path and backpressure.
#include "echoplex/net/connection.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cassert>
#include <utility>

#include "echoplex/io/fmt.hpp"
#include "echoplex/net/bind_socket.hpp"

namespace echoplex {
namespace {

// A chunk at least this long moves to the output with its block; a shorter one is copied into
// the output's tail. Moving short chunks would pin a 16 KiB block for each: a client sending a
// byte per readiness event would make a paused connection hold 16 KiB per queued byte (4 GiB
// at the default high watermark). With the copy, every block but the first, the last and one
// short block after a full one is at least half full: memory stays within about twice the
// queued bytes.
constexpr std::size_t move_threshold = BlockPool::block_size / 2;

}  // namespace

std::string_view close_reason_name(CloseReason reason) noexcept {
    switch (reason) {
        case CloseReason::client_closed: return "client_closed";
        case CloseReason::reset: return "reset";
        case CloseReason::idle_timeout: return "idle_timeout";
        case CloseReason::drained: return "drained";
        case CloseReason::drain_timeout: return "drain_timeout";
        case CloseReason::linger_timeout: return "linger_timeout";
        case CloseReason::finished: return "finished";
        case CloseReason::protocol: return "protocol";
        case CloseReason::limit: return "limit";
        case CloseReason::error: return "error";
    }
    return "?";
}

std::string_view refusal_cause_name(RefusalCause cause) noexcept {
    switch (cause) {
        case RefusalCause::max_connections: return "max_connections";
        case RefusalCause::out_of_descriptors: return "out_of_descriptors";
        case RefusalCause::fd_setsize: return "fd_setsize";
        case RefusalCause::shutting_down: return "shutting_down";
    }
    return "?";
}

std::uint64_t ServerStats::refused_total() const noexcept {
    std::uint64_t sum = 0;
    for (const std::uint64_t n : refused) {
        sum += n;
    }
    return sum;
}

ServerStats& ServerStats::operator+=(const ServerStats& other) noexcept {
    accepted += other.accepted;
    open += other.open;
    peak += other.peak;
    bytes_in += other.bytes_in;
    bytes_out += other.bytes_out;
    paused += other.paused;
    proxy_rejected += other.proxy_rejected;
    for (std::size_t i = 0; i < refused.size(); ++i) {
        refused[i] += other.refused[i];
    }
    for (std::size_t i = 0; i < closed.size(); ++i) {
        closed[i] += other.closed[i];
    }
    return *this;
}

std::string_view state_name(ConnectionState state) noexcept {
    switch (state) {
        case ConnectionState::open: return "open";
        case ConnectionState::paused: return "paused";
        case ConnectionState::peer_closed: return "peer_closed";
        case ConnectionState::finishing: return "finishing";
        case ConnectionState::lingering: return "lingering";
        case ConnectionState::closing: return "closing";
        case ConnectionState::closed: return "closed";
    }
    return "?";
}

Connection::Connection(const ConnectionContext& context, std::unique_ptr<Stream> stream, ProtocolPtr protocol)
    : context_(context),
      stream_(std::move(stream)),
      protocol_(std::move(protocol)),
      input_(context.pool),
      output_(context.pool),
      last_activity_(context.loop.now()),
      acts_immediately_(stream_ != nullptr && stream_->acts_immediately()) {
    assert(stream_ && protocol_);
}

Connection::~Connection() {
    if (const TimerId timer = linger_timer(); timer != TimerId{}) {
        context_.loop.cancel_timer(timer);
    }
    if (opened_) {
        protocol_->on_close();  // a protocol may hold this Session: it must hear the end
    }
    // Before the queues go: a completion stream destroyed with a send in flight stops the kernel
    // reading output_ first.
    stream_.reset();
}

Result<void> Connection::start() {
    if (auto started = stream_->open(*this); !started) {
        return started;
    }
    asked_ = Interest::read;
    opened_ = true;
    in_callback_ = true;
    protocol_->on_open(*this);
    in_callback_ = false;
    // Anything the greeting did is written at the end of the iteration, once the owner holds
    // this connection: a failure then closes it through the owner like any other.
    if (!output_.empty() || close_pending_ || want_space_ || state_ != ConnectionState::open) {
        settle_later();
    }
    return {};
}

// ---- events ----

void Connection::on_readable() {
    in_callback_ = true;
    if (state_ == ConnectionState::lingering) {
        discard_input();
    } else {
        read_input();
    }
    in_callback_ = false;
    settle();
}

void Connection::on_writable() {
    in_callback_ = true;
    if (flush() && want_space_ && (state_ == ConnectionState::open || state_ == ConnectionState::paused) &&
        output_.size() <= context_.limits.low_watermark) {
        follow_watermarks();  // so that output_full() is already false in the callback
        protocol_->on_output_space(*this);  // written on the next writable event
    }
    in_callback_ = false;
    settle(false);  // one write budget per event: this one is spent
}

void Connection::on_closed() {
    input_.clear();
    output_.clear();
    state_ = ConnectionState::closed;
    ++context_.stats.closed_by(close_reason_);
    // While fd() still names this connection.
    context_.owner.connection_closed(*this, close_detail());
}

// ---- reading ----

void Connection::read_input() {
    std::size_t budget = context_.limits.event_read_budget(context_.loop.batch_events());
    while (budget > 0 && reading() && !close_pending_ && output_.size() < context_.limits.high_watermark) {
        const IoResult got = stream_->read(input_, budget);
        if (got.bytes > 0) {
            context_.stats.bytes_in += got.bytes;
            budget -= std::min(budget, got.bytes);
            last_activity_ = context_.loop.now();
            protocol_->on_input(*this, input_);
            input_.own_borrowed();  // what the protocol left, out of the loop's read scratch
            if (state_ == ConnectionState::finishing) {
                // The protocol has answered and finishes (an HTTP error for an oversized head):
                // it consumes nothing more, and its answer must not be lost to the input limit.
                input_.clear();
                return;
            }
            if (input_.size() > context_.limits.input_limit) {
                close_now(CloseReason::limit, "input limit: a frame longer than the connection may hold");
                return;
            }
        }
        switch (got.status) {
            case IoStatus::ok:
                continue;
            case IoStatus::would_block:
                return;  // level-triggered: any more is reported again
            case IoStatus::end:
                state_ = ConnectionState::peer_closed;
                finish_reason_ = CloseReason::client_closed;
                protocol_->on_input_end(*this, input_);
                input_.clear();
                return;
            case IoStatus::reset:
                close_now(CloseReason::reset, "reset by peer");
                return;
            case IoStatus::failed:
                close_now(CloseReason::error, Error::from_errno("readv", got.error).message());
                return;
        }
    }
}

void Connection::discard_input() {
    const IoResult got = stream_->discard(context_.limits.read_budget);
    if (got.status != IoStatus::ok && got.status != IoStatus::would_block) {
        close_now(finish_reason_, finish_detail());  // EOF (or the client's reset): nothing more is owed either way
    }
}

// ---- writing ----

bool Connection::flush() {
    // Called with nothing queued too: a completion stream reports here what its last send took.
    return count_sent(stream_->write(output_, context_.limits.write_budget), false);
}

void Connection::write_now(ByteQueue& bytes) {
    if (count_sent(stream_->write(bytes, context_.limits.write_budget), true)) {
        write_blocked_ = !bytes.empty();
    } else {
        bytes.clear();
    }
}

bool Connection::count_sent(const IoResult& sent, bool in_protocol) {
    context_.stats.bytes_out += sent.bytes;
    if (sent.status != IoStatus::reset && sent.status != IoStatus::failed) {
        return true;
    }
    const CloseReason reason = sent.status == IoStatus::reset ? CloseReason::reset : CloseReason::error;
    std::string detail =
        reason == CloseReason::reset ? "peer went away" : Error::from_errno("sendmsg", sent.error).message();
    if (!in_protocol) {
        close_now(reason, detail);
    } else if (!close_pending_) {
        // Inside the protocol's call: the close waits for the end of the event, as close() does.
        close_pending_ = true;
        close_reason_ = reason;
        set_close_detail(std::move(detail));
    }
    return false;
}

void Connection::settle(bool write) {
    if (closed()) {
        return;
    }
    if (close_pending_) {
        close_now(close_reason_, std::string(close_detail()));
        return;
    }
    // Not written again: what a reply written on the spot left (the kernel took less), and an
    // empty queue of a stream that has nothing to report.
    const bool blocked = std::exchange(write_blocked_, false);
    if (write && !blocked && (!output_.empty() || !acts_immediately_) && !flush()) {
        return;
    }
    if (output_.size() > context_.limits.output_limit) {
        close_now(CloseReason::limit, "output limit: the client does not read what it is sent");
        return;
    }
    update_interest();
}

void Connection::settle_later() {
    if (settle_pending_ || closed()) {
        return;
    }
    settle_pending_ = true;
    auto& self = extra().self;
    if (!self) {
        self = std::make_shared<Connection*>(this);
    }
    // The connection may be closed and freed before the deferred work runs: the weak handle
    // expires with it.
    context_.loop.defer([weak = std::weak_ptr<Connection*>(self)] {
        if (const auto self = weak.lock()) {
            (*self)->settle_pending_ = false;
            (*self)->settle();
        }
    });
}

void Connection::update_interest() {
    if (state_ == ConnectionState::open && output_.empty() && asked_ == Interest::read && acts_immediately_ &&
        !want_space_ && !input_held_ && context_.limits.high_watermark > 0) {
        return;  // every event of a steady echo: reading, nothing queued, nothing to change
    }
    if ((state_ == ConnectionState::peer_closed || state_ == ConnectionState::finishing) && output_.empty()) {
        on_output_delivered();
        return;
    }
    follow_watermarks();
    const bool producing = want_space_ && (state_ == ConnectionState::open || state_ == ConnectionState::paused);
    const bool read = reading() || state_ == ConnectionState::lingering;
    const bool write = !output_.empty() || producing;
    const Interest want = (read ? Interest::read : Interest::none) | (write ? Interest::write : Interest::none);
    ask(want);
}

void Connection::ask(Interest want) {
    if (want == asked_ && acts_immediately_) {
        return;  // every event of a steady connection over readiness
    }
    if (auto changed = stream_->set_interest(want); !changed) {
        close_now(CloseReason::error, changed.error().message());
        return;
    }
    asked_ = want;
}

void Connection::follow_watermarks() {
    if (state_ == ConnectionState::open && output_.size() >= context_.limits.high_watermark) {
        state_ = ConnectionState::paused;
        ++context_.stats.paused;
    } else if (state_ == ConnectionState::paused && output_.size() <= context_.limits.low_watermark) {
        state_ = ConnectionState::open;
    }
}

std::string_view Connection::finish_detail() const noexcept {
    switch (finish_reason_) {
        case CloseReason::drained: return "drained";
        case CloseReason::finished: return "finished";
        default: return "client closed";
    }
}

Connection::Extra& Connection::extra() {
    if (!extra_) {
        extra_ = std::make_unique<Extra>();
    }
    return *extra_;
}

void Connection::set_close_detail(std::string detail) {
    extra().close_detail = std::move(detail);
}

std::string Connection::peer() const {
    if (extra_ && !extra_->peer.empty()) {
        return extra_->peer;
    }
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getpeername(fd(), reinterpret_cast<sockaddr*>(&address), &length) == 0 &&
        (address.ss_family == AF_INET || address.ss_family == AF_INET6)) {
        return format_address(reinterpret_cast<const sockaddr*>(&address));
    }
    return fmt::format("fd {}", fd());
}

void Connection::set_peer(std::string peer) {
    extra().peer = std::move(peer);
}

void Connection::on_output_delivered() {
    // Everything owed is delivered: send FIN. If the client has finished too, close now.
    // Otherwise linger: closing with unread input makes the kernel send RST, which can destroy
    // our last bytes in the client's receive queue. So read and discard until the client's EOF,
    // for at most the linger timeout.
    stream_->shutdown_write();
    if (state_ == ConnectionState::peer_closed) {
        close_now(finish_reason_, finish_detail());
        return;
    }
    state_ = ConnectionState::lingering;
    input_.clear();
    extra().linger_timer = context_.loop.add_timer(context_.limits.linger_timeout, [this] {
        extra_->linger_timer = TimerId{};
        close_now(CloseReason::linger_timeout, "linger timeout");
    });
    ask(Interest::read);
}

// ---- the Session the protocol sees ----

void Connection::send(std::string_view bytes) {
    if (closed() || state_ == ConnectionState::lingering) {
        return;  // after our FIN nothing more can be delivered (a protocol sending from a timer)
    }
    output_.append(bytes);
    if (!in_callback_) {
        settle_later();
    }
}

void Connection::send(ByteQueue& bytes) {
    if (closed() || state_ == ConnectionState::lingering) {
        bytes.clear();
        return;
    }
    if (output_.empty() && acts_immediately_) {
        // Nothing queued before: written on the spot from where the bytes are (in a callback of
        // ours, whose end settles the rest), and only what the kernel did not take is queued,
        // its blocks moved however few bytes they hold.
        if (in_callback_ && !close_pending_ && !write_blocked_) {
            write_now(bytes);
        }
        if (!bytes.empty()) {
            output_.splice_from(bytes);
        }
    } else if (bytes.size() >= move_threshold) {
        output_.splice_from(bytes);  // moves the blocks: no copy
    } else {
        while (!bytes.empty()) {
            iovec piece{};
            bytes.peek(&piece, 1, bytes.size());
            output_.append({static_cast<const char*>(piece.iov_base), piece.iov_len});
            bytes.consume(piece.iov_len);
        }
    }
    if (!in_callback_) {
        settle_later();
    }
}

bool Connection::output_full() const noexcept {
    return state_ == ConnectionState::paused || output_.size() >= context_.limits.high_watermark;
}

void Connection::want_output_space(bool on) {
    want_space_ = on;
    if (!in_callback_) {
        settle_later();
    }
}

void Connection::hold_input(bool on) {
    input_held_ = on;
    if (!in_callback_) {
        settle_later();
    }
}

void Connection::finish() {
    if (state_ == ConnectionState::open || state_ == ConnectionState::paused) {
        state_ = ConnectionState::finishing;
        finish_reason_ = CloseReason::finished;
    }
    if (!in_callback_) {
        settle_later();
    }
}

void Connection::close(std::string_view reason) {
    if (closed() || close_pending_) {
        return;
    }
    close_pending_ = true;
    close_reason_ = CloseReason::protocol;
    set_close_detail(std::string(reason));
    if (!in_callback_) {
        settle_later();
    }
}

// ---- the owner's controls ----

void Connection::drain() {
    if (state_ == ConnectionState::open || state_ == ConnectionState::paused) {
        state_ = ConnectionState::finishing;
        finish_reason_ = CloseReason::drained;
        input_.clear();
    } else if (state_ == ConnectionState::peer_closed) {
        finish_reason_ = CloseReason::drained;  // it was closing anyway once its output is delivered
    }
    settle();
}

void Connection::close_now(CloseReason reason, std::string_view detail) {
    if (closed()) {
        return;
    }
    // `detail` may view extra_->close_detail.
    std::string why(detail.empty() ? close_reason_name(reason) : detail);
    state_ = ConnectionState::closing;
    if (const TimerId timer = linger_timer(); timer != TimerId{}) {
        extra_->linger_timer = TimerId{};
        context_.loop.cancel_timer(timer);
    }
    if (opened_) {
        opened_ = false;
        protocol_->on_close();
    }
    close_reason_ = reason;
    set_close_detail(std::move(why));
    // Cancels what is in flight; on_closed() follows once nothing is (at once over readiness).
    stream_->close();
}

}  // namespace echoplex
