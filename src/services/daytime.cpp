// daytime: one line, then a graceful close.
#include "echoplex/services/daytime.hpp"

#include <array>

namespace echoplex::services {

std::string Daytime::line(std::time_t when) {
    std::tm local{};
    ::localtime_r(&when, &local);
    std::array<char, 96> text{};
    const std::size_t len = std::strftime(text.data(), text.size(), "%A, %B %d, %Y %H:%M:%S-%Z\r\n", &local);
    return std::string(text.data(), len);
}

void Daytime::on_open(Session& session) {
    session.send(line(std::time(nullptr)));
    session.finish();
}

}  // namespace echoplex::services
