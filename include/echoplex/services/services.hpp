// The classic small services by name: the one list the server's --port NAME, its help and its
// startup line use.
#pragma once

#include <span>
#include <string_view>

#include "echoplex/net/protocol.hpp"

namespace echoplex::services {

struct Service {
    std::string_view name;     // "echo", as typed after --port PORT/
    std::string_view summary;  // one line for --help
    ProtocolFactory factory;
};

// echo, stamp, discard, chargen, daytime.
std::span<const Service> all();

// The service named `name`, or nullptr.
const Service* find(std::string_view name);

}  // namespace echoplex::services
