// ProxyGate: a Protocol in front of another that first reads the PROXY protocol header a load
// balancer sends (HAProxy's send-proxy, send-proxy-v2), and only then opens the protocol behind
// it. The header is consumed, never echoed; the client it names becomes the connection's peer
// (logged, in place of the balancer's address). A header that is invalid, missing, or not
// complete within the deadline closes the connection, counted and logged once without its bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "echoplex/net/protocol.hpp"

namespace echoplex {

class ProxyGate final : public Protocol {
public:
    // `rejected` counts the connections this gate closes (shared by a server's gates).
    ProxyGate(ProtocolPtr inner, std::chrono::milliseconds deadline, std::uint64_t& rejected);

    void on_open(Session& session) override;
    void on_input(Session& session, ByteQueue& input) override;
    void on_input_end(Session& session, ByteQueue& input) override;
    void on_output_space(Session& session) override;
    void on_close() override;

private:
    enum class State : std::uint8_t { waiting, passed, rejected };
    void reject(Session& session, std::string_view problem);
    void cancel_deadline() noexcept;

    ProtocolPtr inner_;
    std::chrono::milliseconds deadline_;
    std::uint64_t& rejected_;
    Session* session_ = nullptr;
    std::optional<TimerId> timer_;
    State state_ = State::waiting;
};

}  // namespace echoplex
