// LoadClient implementation.
#include "load_client.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/log.hpp"
#include "echoplex/net/io_result.hpp"

namespace echoplex::testecho {
namespace {

// Errors logged on stderr per process; the rest are only counted (a dead server would otherwise
// produce one line per connection).
constexpr std::size_t max_logged_errors = 5;

// Reads per readiness event: enough to empty a pipelined burst, bounded so one busy connection
// cannot starve the others on a level-triggered loop.
constexpr int reads_per_event = 4;

// --mode=discard: bytes and send calls per writable event at most, so that neither large nor
// tiny messages let one connection hold the loop (at 19 bytes a message, a byte budget alone
// meant tens of thousands of calls per event, and connects waited seconds behind them).
constexpr std::size_t discard_write_budget = 1024 * 1024;
constexpr int discard_sends_per_event = 16;
// --mode=discard: messages queued at once, whatever --pipeline says (nothing comes back to wait
// for: a message is done once the kernel has it), so one call can carry this many.
constexpr std::size_t discard_batch = 64;

std::uint64_t to_ns(Clock::duration d) {
    return static_cast<std::uint64_t>(std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()));
}

}  // namespace

LoadClient::LoadClient(LoadContext& context, std::size_t id, Role role, Target& target, std::uint64_t quota)
    : context_(context), id_(id), role_(role), target_(target), quota_(quota) {
    if (context_.settings.reply == ReplyMode::stamp) {
        stamp_.emplace();
    }
}

LoadClient::~LoadClient() {
    if (rate_timer_) {
        context_.loop.cancel_timer(*rate_timer_);
    }
    context_.loop.unwatch(fd_.get());
}

std::string_view LoadClient::message(std::uint64_t seq) const noexcept {
    if (context_.messages.empty()) {
        // The window's offset: a prime spread, so neighbouring ids get different bytes.
        const std::size_t spread = context_.pattern.size() - context_.settings.size;
        return context_.pattern.substr(spread == 0 ? 0 : (id_ * 37) % spread, context_.settings.size);
    }
    return context_.messages[seq % context_.messages.size()];
}

void LoadClient::start() {
    if (state_ != State::waiting) {
        return;
    }
    state_ = State::connecting;
    connect_started_ = Clock::now();
    candidate_ = target_.preferred;
    connect_candidate();
}

void LoadClient::connect_candidate() {
    ++tried_;
    const Address& to = target_.candidates[candidate_];
    fd_.reset(::socket(to.address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd_) {
        connect_failed(Error::from_errno("socket").message(), errno);
        return;
    }
    // Small messages in lockstep would otherwise wait for Nagle's delayed ACK (RFC 896).
    const int one = 1;
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const int rc = ::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&to.address), to.length);
    if (rc != 0 && errno != EINPROGRESS) {
        const int err = errno;
        connect_failed(Error::from_errno("connect", err).message(), err);
        return;
    }
    if (auto watching = context_.loop.watch(fd_.get(), *this, Interest::write); !watching) {
        fail(Kind::connect, watching.error().message());
        return;
    }
    // Loopback connects usually complete at once, but the result is read when writable either way.
}

void LoadClient::connect_failed(const std::string& what, int err) {
    // Errors that say "not at this address" (RFC 6724's order may put ::1 first while the
    // server listens on 127.0.0.1 only), as echo-client and getaddrinfo(3)'s example treat them.
    const bool wrong_address = err == ECONNREFUSED || err == ENETUNREACH || err == EHOSTUNREACH ||
                               err == EADDRNOTAVAIL || err == EAFNOSUPPORT;
    if (wrong_address && tried_ < target_.candidates.size()) {
        if (fd_ && context_.loop.watched(fd_.get())) {
            context_.loop.unwatch(fd_.get());
        }
        fd_.reset();
        candidate_ = (candidate_ + 1) % target_.candidates.size();
        connect_candidate();
        return;
    }
    const std::string where = target_.candidates.size() > 1 ? fmt::format(" (tried all {} addresses)", tried_) : "";
    fail(Kind::connect, what + where);
}

void LoadClient::connected() {
    const auto now = Clock::now();
    state_ = State::running;
    context_.result.connect.record(to_ns(now - connect_started_));
    ++context_.result.established;
    ++context_.open;
    counted_open_ = true;
    context_.notify(*this, LoadContext::Event::connected);
    if (state_ != State::running) {
        return;  // the notification stopped the run
    }
    if (role_ == Role::idle) {
        update_interest();
        return;
    }
    // Spread the rate schedules of the clients over one interval (golden-ratio phases), so that a
    // thousand connections at 10/s do not all send in the same millisecond.
    if (context_.settings.rate > 0 && !rate_started_) {
        rate_started_ = true;  // a reconnect keeps the schedule: message k stays due at origin + k/rate
        const double interval = 1.0 / context_.settings.rate;
        const double phase = std::fmod(static_cast<double>(id_) * 0.6180339887, 1.0) * interval;
        rate_origin_ = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(phase));
    }
    last_progress_ = now;
    fill(now);
    flush();
    maybe_finish();
}

void LoadClient::fill(Clock::time_point now) {
    const auto& s = context_.settings;
    if (s.mode == TrafficMode::chargen) {
        return;  // nothing is sent
    }
    const std::size_t in_flight_limit = s.mode == TrafficMode::discard ? std::max(s.pipeline, discard_batch) : s.pipeline;
    while (!stopping_ && state_ == State::running && queued_ < quota_ && in_flight_.size() < in_flight_limit &&
           (s.reconnect_every == 0 || on_connection_ < s.reconnect_every)) {
        Clock::time_point intended = now;
        if (s.rate > 0) {
            // Message k is due at origin + k/rate whatever happened before: latency counts from
            // here, so a stalled server shows up in the numbers (no coordinated omission). It also
            // counts the loop's own lateness: timers wake with millisecond granularity (the
            // backends' wait timeouts are in ms), so sub-millisecond latencies read up to ~1 ms high.
            const auto due = rate_origin_ + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(static_cast<double>(queued_) / s.rate));
            if (due > now) {
                if (!rate_timer_) {
                    rate_timer_ = context_.loop.add_timer_at(due, [this] {
                        rate_timer_.reset();
                        fill(Clock::now());
                        flush();
                    });
                }
                break;
            }
            intended = due;
        }
        if (in_flight_.empty()) {
            last_progress_ = now;
        }
        in_flight_.push_back({message(queued_), intended});
        ++queued_;
        ++on_connection_;
    }
}

void LoadClient::flush() {
    const bool discard = context_.settings.mode == TrafficMode::discard;
    // discard refills as it writes, so a peer that takes everything could keep this connection
    // here forever: a budget per event, as the server has, lets the others have their turn.
    std::size_t budget = discard_write_budget;
    int sends = 0;
    while (state_ == State::running && !half_closed_ && budget > 0 && (!discard || sends++ < discard_sends_per_event)) {
        if (discard) {
            fill(Clock::now());  // messages written are done: make room for the next
        }
        if (unsent_index_ >= in_flight_.size()) {
            break;
        }
        std::array<iovec, 64> iov{};
        std::size_t count = 0;
        for (std::size_t i = unsent_index_; i < in_flight_.size() && count < iov.size(); ++i, ++count) {
            const std::string_view bytes = in_flight_[i].bytes.substr(i == unsent_index_ ? unsent_offset_ : 0);
            iov[count].iov_base = const_cast<char*>(bytes.data());
            iov[count].iov_len = bytes.size();
        }
        msghdr msg{};
        msg.msg_iov = iov.data();
        msg.msg_iovlen = count;
        // MSG_NOSIGNAL: a server that vanished is an error to count, not a SIGPIPE to die of.
        const IoResult sent = retry_eintr([&] { return ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL); });
        if (sent.status == IoStatus::would_block) {
            break;
        }
        if (sent.status != IoStatus::ok) {
            fail(Kind::closed, fmt::format("offset {}: {}", data_offset_, Error::from_errno("send", sent.error).message()));
            return;
        }
        if (Clock::now() >= context_.window_start) {
            context_.result.bytes_sent += sent.bytes;  // (the warm-up's bytes are not counted)
        }
        budget -= std::min(budget, discard ? sent.bytes : std::size_t{0});
        auto left = sent.bytes;
        while (left > 0) {
            const std::size_t rest = in_flight_[unsent_index_].bytes.size() - unsent_offset_;
            const std::size_t step = std::min(rest, left);
            unsent_offset_ += step;
            left -= step;
            if (unsent_offset_ == in_flight_[unsent_index_].bytes.size()) {
                ++unsent_index_;
                unsent_offset_ = 0;
            }
        }
        if (discard) {
            // Nothing comes back: a message is done once the kernel has taken all of it.
            const auto now = Clock::now();
            last_progress_ = now;
            while (unsent_index_ > 0) {
                complete_message(now, in_flight_.front().intended, false, in_flight_.front().bytes.size());
                in_flight_.pop_front();
                --unsent_index_;
            }
        }
    }
    if (discard) {
        // The budget may have run out with every message done: queue the next ones, or the
        // write interest would go and the upload would stop after one budget per connection.
        fill(Clock::now());
    }
    update_interest();
}

void LoadClient::complete_message(Clock::time_point now, Clock::time_point intended, bool timed, std::size_t bytes) {
    if (intended < context_.window_start) {
        return;  // sent during the warm-up
    }
    ++context_.result.messages;
    ++completed_;
    if (context_.settings.mode == TrafficMode::discard) {
        context_.result.payload += bytes;  // (echo counts its bytes as they are verified)
    }
    if (timed) {
        const std::uint64_t ns = to_ns(now - intended);
        context_.result.latency.record(ns);
        context_.interval_latency.record(ns);
    }
}

void LoadClient::take_chargen(std::string_view data, Clock::time_point now) {
    const std::uint64_t before = chargen_.offset();
    const std::uint64_t lines = chargen_.feed(data);
    last_progress_ = now;
    queued_ += lines;
    on_connection_ += lines;
    if (now >= context_.window_start) {
        context_.result.payload += chargen_.offset() - before;
        context_.result.messages += lines;
        completed_ += lines;
    }
    if (chargen_.failed()) {
        fail(Kind::mismatch, chargen_.error());
    }
}

void LoadClient::update_interest() {
    if (state_ != State::running) {
        return;
    }
    const Interest want = unsent_index_ < in_flight_.size() && !half_closed_ ? Interest::both : Interest::read;
    if (auto changed = context_.loop.set_interest(fd_.get(), want); !changed) {
        fail(Kind::closed, changed.error().message());
    }
}

void LoadClient::on_writable() {
    if (state_ == State::connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err != 0) {
            connect_failed(Error::from_errno("connect", err).message(), err);
            return;
        }
        target_.preferred = candidate_;
        target_.connected = true;
        connected();
        return;
    }
    flush();
    maybe_finish();
}

void LoadClient::on_readable() {
    if (state_ == State::running) {
        receive();
    }
}

void LoadClient::receive() {
    auto& buffer = context_.read_buffer;
    for (int i = 0; i < reads_per_event && state_ == State::running; ++i) {
        const IoResult got_bytes = retry_eintr([&] { return ::recv(fd_.get(), buffer.data(), buffer.size(), 0); });
        if (got_bytes.status == IoStatus::would_block) {
            break;
        }
        if (got_bytes.status == IoStatus::reset || got_bytes.status == IoStatus::failed) {
            fail(Kind::closed, fmt::format("offset {}: {}", data_offset_, Error::from_errno("recv", got_bytes.error).message()));
            return;
        }
        if (got_bytes.status == IoStatus::end) {
            if (half_closed_) {
                finish();  // the discard peer read everything we sent, and said nothing
                return;
            }
            // testecho always closes first, so any EOF from the server is early.
            fail(Kind::closed, fmt::format("offset {}: server closed the connection{}", data_offset_,
                                           in_flight_.empty() ? "" : " with echoes outstanding"));
            return;
        }
        const std::size_t n = got_bytes.bytes;
        const auto now = Clock::now();
        if (now >= context_.window_start) {
            context_.result.bytes_received += static_cast<std::uint64_t>(n);
        }
        const std::string_view got(buffer.data(), static_cast<std::size_t>(n));
        if (role_ == Role::idle) {
            fail(Kind::mismatch, fmt::format("offset 0: {} unexpected bytes on an idle connection", n));
            return;
        }
        if (context_.settings.mode == TrafficMode::discard) {
            fail(Kind::mismatch, fmt::format("offset {}: {} bytes came back from a discard peer, which must send nothing",
                                             received_, n));
            return;
        }
        received_ += n;
        if (context_.settings.mode == TrafficMode::chargen) {
            take_chargen(got, now);
            continue;
        }
        if (!stamp_) {
            verify(got, now);
            continue;
        }
        decoded_.clear();
        const bool well_formed = stamp_->feed(got, decoded_);
        verify(decoded_, now);
        if (!well_formed && state_ == State::running) {
            fail(Kind::mismatch, fmt::format("offset {}: {}", data_offset_, stamp_->error()));
            return;
        }
    }
    if (state_ == State::running) {
        fill(Clock::now());
        flush();
        maybe_finish();
    }
}

void LoadClient::verify(std::string_view data, Clock::time_point now) {
    while (!data.empty() && state_ == State::running) {
        // Bytes of the front message written so far and not yet echoed: nothing else may arrive.
        const std::size_t written = in_flight_.empty() ? 0
                                    : unsent_index_ > 0 ? in_flight_.front().bytes.size()
                                                        : unsent_offset_;
        const std::size_t expected = written - std::min(written, echoed_offset_);
        if (expected == 0) {
            fail(Kind::mismatch, fmt::format("offset {}: {} bytes arrived beyond what was sent", data_offset_,
                                             data.size()));
            return;
        }
        InFlight& front = in_flight_.front();
        const std::size_t n = std::min(expected, data.size());
        const std::string_view want = front.bytes.substr(echoed_offset_, n);
        if (std::memcmp(want.data(), data.data(), n) != 0) {
            std::size_t at = 0;
            while (want[at] == data[at]) {
                ++at;
            }
            fail(Kind::mismatch, fmt::format("offset {}: sent 0x{:02x}, received 0x{:02x}", data_offset_ + at,
                                             static_cast<unsigned char>(want[at]),
                                             static_cast<unsigned char>(data[at])));
            return;
        }
        echoed_offset_ += n;
        data_offset_ += n;
        if (front.intended >= context_.window_start) {
            context_.result.payload += n;
        }
        data.remove_prefix(n);
        last_progress_ = now;
        if (echoed_offset_ == front.bytes.size()) {
            complete_message(now, front.intended, true, front.bytes.size());
            in_flight_.pop_front();
            --unsent_index_;
            echoed_offset_ = 0;
        }
    }
}

void LoadClient::maybe_finish() {
    if (state_ != State::running || role_ != Role::active || half_closed_ || !in_flight_.empty()) {
        return;
    }
    if (stopping_ || queued_ >= quota_) {
        finish_active();
        return;
    }
    const std::uint64_t every = context_.settings.reconnect_every;
    if (every > 0 && on_connection_ >= every) {
        reconnect();
    }
}

void LoadClient::finish_active() {
    if (context_.settings.mode != TrafficMode::discard) {
        finish();
        return;
    }
    // The peer's EOF after ours says it read everything; bytes before it are caught as errors.
    half_closed_ = true;
    half_closed_at_ = Clock::now();
    if (::shutdown(fd_.get(), SHUT_WR) != 0) {
        fail(Kind::closed, fmt::format("offset {}: {}", data_offset_, Error::from_errno("shutdown").message()));
        return;
    }
    update_interest();
}

void LoadClient::reconnect() {
    context_.loop.unwatch(fd_.get());
    fd_.reset();
    if (counted_open_) {
        --context_.open;
        counted_open_ = false;
    }
    // The stream starts over on the new connection.
    on_connection_ = 0;
    unsent_index_ = 0;
    unsent_offset_ = 0;
    echoed_offset_ = 0;
    data_offset_ = 0;
    received_ = 0;
    chargen_.reset();
    if (stamp_) {
        stamp_.emplace();
    }
    state_ = State::connecting;
    connect_started_ = Clock::now();
    candidate_ = target_.preferred;
    tried_ = 0;
    connect_candidate();
}

void LoadClient::stop_sending() {
    if (state_ == State::waiting) {
        state_ = State::finished;
        context_.notify(*this, LoadContext::Event::finished);
        return;
    }
    stopping_ = true;
    if (rate_timer_) {
        context_.loop.cancel_timer(*rate_timer_);
        rate_timer_.reset();
    }
    if (state_ == State::running) {
        // A half-written message must still be completed; entries not yet written are dropped.
        const std::size_t keep = unsent_index_ + (unsent_offset_ > 0 ? 1 : 0);
        while (in_flight_.size() > keep) {
            in_flight_.pop_back();
        }
        update_interest();
        maybe_finish();
    }
}

void LoadClient::finish_idle() {
    if (state_ == State::running) {
        ++context_.result.idle_held;
        finish();
    } else if (state_ == State::waiting) {
        state_ = State::finished;
        context_.notify(*this, LoadContext::Event::finished);
    }
}

void LoadClient::check_timeout(Clock::time_point now) {
    const auto limit = context_.timeout;
    if (state_ == State::connecting && now - connect_started_ > limit) {
        fail(Kind::connect, fmt::format("connect: no answer within {:g} s",
                                        std::chrono::duration<double>(limit).count()));
    } else if (half_closed_ && now - half_closed_at_ > limit) {
        fail(Kind::timeout, fmt::format("offset {}: the discard peer did not close within {:g} s of our FIN",
                                        data_offset_, std::chrono::duration<double>(limit).count()));
    } else if (state_ == State::running && !half_closed_ && now - last_progress_ > limit &&
               (!in_flight_.empty() || (role_ == Role::active && context_.settings.mode == TrafficMode::chargen))) {
        const std::string_view what = context_.settings.mode == TrafficMode::echo      ? "no echo"
                                      : context_.settings.mode == TrafficMode::discard ? "the discard peer took no bytes"
                                                                                        : "no chargen bytes";
        fail(Kind::timeout, fmt::format("offset {}: {} within {:g} s",
                                        context_.settings.mode == TrafficMode::chargen ? chargen_.offset() : data_offset_,
                                        what, std::chrono::duration<double>(limit).count()));
    }
}

void LoadClient::expire() {
    if (half_closed_ && state_ == State::running) {
        fail(Kind::timeout, fmt::format("offset {}: the discard peer had not closed when the run ended", data_offset_));
    } else if (state_ == State::running && !in_flight_.empty()) {
        fail(Kind::timeout, fmt::format("offset {}: {} message(s) still unanswered when the run ended", data_offset_,
                                        in_flight_.size()));
    } else if (state_ == State::connecting) {
        fail(Kind::connect, "connect: still pending when the run ended");
    } else if (state_ != State::finished) {
        stop_sending();
    }
}

void LoadClient::fail(Kind kind, const std::string& what) {
    ErrorCounts& errors = context_.result.errors;
    switch (kind) {
    case Kind::connect: ++errors.connect; break;
    case Kind::mismatch: ++errors.mismatch; break;
    case Kind::closed: ++errors.closed; break;
    case Kind::timeout: ++errors.timeout; break;
    }
    static constexpr std::array<std::string_view, 4> kind_names = {"connect", "mismatch", "closed", "timeout"};
    // "connect: connect: ..." would say the kind twice when the failed call names it already.
    const std::string_view kind_name = kind_names[static_cast<std::size_t>(kind)];
    const bool named = std::string_view(what).starts_with(kind_name) && what.size() > kind_name.size() &&
                       what[kind_name.size()] == ':';
    std::string line = fmt::format("conn {} ({}{}) {}{}", id_, target_.name, role_ == Role::idle ? ", idle" : "",
                                   named ? "" : fmt::format("{}: ", kind_name), what);
    if (context_.errors_logged < max_logged_errors) {
        log::warn("{}", line);
    } else if (context_.errors_logged == max_logged_errors) {
        log::warn("more errors: counted, not shown");
    }
    ++context_.errors_logged;
    context_.result.note_error(std::move(line));
    if (state_ == State::connecting) {
        context_.notify(*this, LoadContext::Event::connect_failed);
    }
    finish();
}

void LoadClient::finish() {
    if (state_ == State::finished) {
        return;
    }
    state_ = State::finished;
    if (counted_open_) {
        --context_.open;
        counted_open_ = false;
    }
    if (rate_timer_) {
        context_.loop.cancel_timer(*rate_timer_);
        rate_timer_.reset();
    }
    context_.loop.unwatch(fd_.get());
    fd_.reset();
    in_flight_.clear();
    context_.notify(*this, LoadContext::Event::finished);
}

}  // namespace echoplex::testecho
