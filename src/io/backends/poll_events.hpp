// poll(2)'s event mask for an Interest: shared by the poll backend and io_uring's poll submissions.
#pragma once

#include <poll.h>

#include "echoplex/io/backend.hpp"

namespace echoplex::detail {

inline short poll_events(Interest want) noexcept {
    short events = 0;
    if (wants_read(want)) {
        events |= POLLIN;
    }
    if (wants_write(want)) {
        events |= POLLOUT;
    }
    return events;
}

}  // namespace echoplex::detail
