// discard (RFC 863): everything received is read and dropped; nothing is ever sent.
#pragma once

#include "echoplex/net/protocol.hpp"

namespace echoplex::services {

class Discard final : public SharedProtocol {
public:
    void on_input(Session& session, ByteQueue& input) override {
        (void)session;
        input.clear();
    }
};

}  // namespace echoplex::services
