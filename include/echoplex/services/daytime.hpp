// daytime (RFC 867): one line with the date and time, then close. The RFC leaves the format
// open and suggests "Weekday, Month Day, Year HH:MM:SS-Zone"; that is what is sent, CRLF-ended.
#pragma once

#include <ctime>
#include <string>

#include "echoplex/net/protocol.hpp"

namespace echoplex::services {

class Daytime final : public Protocol {
public:
    // The line for `when` in local time: "Tuesday, December 01, 2026 19:30:00-UTC\r\n".
    static std::string line(std::time_t when);

    void on_open(Session& session) override;
    void on_input(Session& session, ByteQueue& input) override {
        (void)session;
        input.clear();
    }
};

}  // namespace echoplex::services
