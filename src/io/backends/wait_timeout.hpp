// The timeout argument of poll(2) and epoll_wait(2): -1 blocks, otherwise milliseconds clamped to int.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

namespace echoplex::detail {

inline int timeout_ms(std::optional<std::chrono::milliseconds> timeout) noexcept {
    if (!timeout) {
        return -1;
    }
    return static_cast<int>(std::clamp<std::int64_t>(timeout->count(), 0, std::numeric_limits<int>::max()));
}

}  // namespace echoplex::detail
