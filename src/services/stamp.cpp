// stamp: the book's reply, one per chunk read.
#include "echoplex/services/stamp.hpp"

#include <array>
#include <ctime>

namespace echoplex::services {

void Stamp::on_input(Session& session, ByteQueue& input) {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    ::localtime_r(&now, &local);
    std::array<char, 32> stamp{};
    const std::size_t len = std::strftime(stamp.data(), stamp.size(), " at %a %b %e %H:%M:%S %Y", &local);
    session.send("Echo=>");
    session.send(input);
    session.send(std::string_view(stamp.data(), len));
}

}  // namespace echoplex::services
