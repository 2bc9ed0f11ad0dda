// chargen (RFC 864): lines of 72 characters from the 95 printable ASCII characters, each line
// starting one character further on, CRLF-terminated, sent for as long as the client reads.
// Input is dropped. A client that stops reading is held by backpressure: lines are made only
// when the connection has room for them, so memory stays bounded.
#pragma once

#include <cstddef>
#include <string>

#include "echoplex/net/protocol.hpp"

namespace echoplex::services {

class Chargen final : public Protocol {
public:
    static constexpr std::size_t line_length = 72;  // characters, before the CRLF
    static constexpr std::size_t alphabet = 95;     // ' ' (32) to '~' (126)

    // Line `n` of the pattern (0-based), with its CRLF.
    static std::string line(std::size_t n);

    void on_open(Session& session) override;
    void on_input(Session& session, ByteQueue& input) override;
    void on_output_space(Session& session) override;

private:
    void produce(Session& session);
    std::size_t next_line_ = 0;
};

}  // namespace echoplex::services
