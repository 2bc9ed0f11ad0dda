// stamp: the book's echo server. Each chunk received comes back as "Echo=>DATA at TIME", TIME
// as Python's time.ctime() prints it ("Sun Jun 18 23:49:23 2000"), in local time.
#pragma once

#include "echoplex/net/protocol.hpp"

namespace echoplex::services {

class Stamp final : public Protocol {
public:
    void on_input(Session& session, ByteQueue& input) override;
};

}  // namespace echoplex::services
