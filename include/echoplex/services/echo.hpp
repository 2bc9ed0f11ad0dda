// echo (RFC 862): every byte received is sent back, in order.
#pragma once

#include "echoplex/net/protocol.hpp"

namespace echoplex::services {

class Echo final : public SharedProtocol {
public:
    void on_input(Session& session, ByteQueue& input) override { session.send(input); }
};

}  // namespace echoplex::services
