// The table of services.
#include "echoplex/services/services.hpp"

#include <array>
#include <type_traits>

#include "echoplex/services/chargen.hpp"
#include "echoplex/services/daytime.hpp"
#include "echoplex/services/discard.hpp"
#include "echoplex/services/echo.hpp"
#include "echoplex/services/stamp.hpp"

namespace echoplex::services {
namespace {

template <class P>
ProtocolPtr make() {
    if constexpr (std::is_base_of_v<SharedProtocol, P>) {
        return shared_protocol<P>();
    } else {
        return std::make_unique<P>();
    }
}

const std::array<Service, 5> table = {{
    {"echo", "every byte back, in order (RFC 862)", make<Echo>},
    {"stamp", "'Echo=>DATA at TIME' per chunk, as the book's server", make<Stamp>},
    {"discard", "read and drop everything, never reply (RFC 863)", make<Discard>},
    {"chargen", "72-character rotating lines while the client reads (RFC 864)", make<Chargen>},
    {"daytime", "one line with the date and time, then close (RFC 867)", make<Daytime>},
}};

}  // namespace

std::span<const Service> all() { return table; }

const Service* find(std::string_view name) {
    for (const Service& service : table) {
        if (service.name == name) {
            return &service;
        }
    }
    return nullptr;
}

}  // namespace echoplex::services
