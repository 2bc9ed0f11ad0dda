// ProxyGate implementation.
#include "echoplex/net/proxy_gate.hpp"

#include <array>
#include <utility>

#include "echoplex/io/log.hpp"
#include "echoplex/net/proxy_header.hpp"

namespace echoplex {
namespace {

// The first bytes of `input`, as many as the parser looks at.
std::string prefix_of(const ByteQueue& input) {
    std::array<iovec, proxy_prefix_max> pieces{};
    const std::size_t count = input.peek(pieces.data(), pieces.size(), proxy_prefix_max);
    std::string prefix;
    for (std::size_t i = 0; i < count; ++i) {
        prefix.append(static_cast<const char*>(pieces[i].iov_base), pieces[i].iov_len);
    }
    return prefix;
}

}  // namespace

ProxyGate::ProxyGate(ProtocolPtr inner, std::chrono::milliseconds deadline, std::uint64_t& rejected)
    : inner_(std::move(inner)), deadline_(deadline), rejected_(rejected) {}

void ProxyGate::on_open(Session& session) {
    // Nothing is answered before the header is complete: the protocol behind opens then.
    session_ = &session;
    timer_ = session.loop().add_timer(deadline_, [this] {
        timer_.reset();
        reject(*session_, "no complete PROXY header within " + std::to_string(deadline_.count()) + " ms");
    });
}

void ProxyGate::on_input(Session& session, ByteQueue& input) {
    if (state_ == State::passed) {
        inner_->on_input(session, input);
        return;
    }
    if (state_ == State::rejected) {
        input.clear();  // closing: nothing more is looked at
        return;
    }
    const ProxyParse parsed = parse_proxy_header(prefix_of(input), input.size());
    switch (parsed.status) {
    case ProxyParseStatus::incomplete:
        return;  // the rest comes later (the input limit bounds what may wait)
    case ProxyParseStatus::invalid:
        input.clear();
        reject(session, parsed.problem);
        return;
    case ProxyParseStatus::complete:
        break;
    }
    input.consume(parsed.header.length);
    cancel_deadline();
    state_ = State::passed;
    if (parsed.header.has_addresses) {
        if (log::enabled(log::Level::debug)) {  // peer() may ask the socket: only when it is logged
            log::debug("{} forwards {} (to {})", session.peer(), parsed.header.source, parsed.header.destination);
        }
        session.set_peer(parsed.header.source);
    }
    inner_->on_open(session);
    if (!input.empty()) {
        inner_->on_input(session, input);
    }
}

void ProxyGate::on_input_end(Session& session, ByteQueue& input) {
    if (state_ == State::passed) {
        inner_->on_input_end(session, input);
    } else if (state_ == State::waiting) {
        input.clear();
        reject(session, "the connection ended before its PROXY header was complete");
    }
}

void ProxyGate::on_output_space(Session& session) {
    if (state_ == State::passed) {
        inner_->on_output_space(session);
    }
}

void ProxyGate::on_close() {
    cancel_deadline();
    if (state_ == State::passed) {
        inner_->on_close();
    }
    session_ = nullptr;
}

void ProxyGate::reject(Session& session, std::string_view problem) {
    cancel_deadline();
    state_ = State::rejected;
    ++rejected_;
    log::warn("refused {}: {}", session.peer(), problem);
    session.close(std::string("PROXY header: ") + std::string(problem));
}

void ProxyGate::cancel_deadline() noexcept {
    if (timer_ && session_ != nullptr) {
        session_->loop().cancel_timer(*timer_);
    }
    timer_.reset();
}

}  // namespace echoplex
