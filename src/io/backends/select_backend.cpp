// select(2) backend.
#include "select_backend.hpp"

#include <sys/time.h>

#include <algorithm>

namespace echoplex::detail {

SelectBackend::SelectBackend() {
    FD_ZERO(&read_set_);
    FD_ZERO(&write_set_);
}

Interest SelectBackend::in_sets(int fd) const noexcept {
    Interest in = Interest::none;
    if (FD_ISSET(fd, &read_set_)) {
        in = in | Interest::read;
    }
    if (FD_ISSET(fd, &write_set_)) {
        in = in | Interest::write;
    }
    return in;
}

Result<void> SelectBackend::modify(int fd, Interest old_interest, Interest new_interest) {
    // FD_SET on fd >= FD_SETSIZE writes past the fd_set (glibc's fortified build aborts with
    // "bit out of range"): refuse such descriptors with a typed error instead.
    if (fd < 0 || fd >= FD_SETSIZE) {
        return Error{"select", make_error_code(errc::fd_out_of_range)};
    }
    if (in_sets(fd) != old_interest) {
        return Error{"select", make_error_code(errc::bad_argument), "(old interest does not match the fd_sets)"};
    }
    if (old_interest == new_interest) {
        return {};
    }
    if (wants_read(new_interest)) {
        FD_SET(fd, &read_set_);
    } else {
        FD_CLR(fd, &read_set_);
    }
    if (wants_write(new_interest)) {
        FD_SET(fd, &write_set_);
    } else {
        FD_CLR(fd, &write_set_);
    }
    if (new_interest != Interest::none) {
        max_fd_ = std::max(max_fd_, fd);
    } else if (fd == max_fd_) {
        // The sets themselves say which lower descriptor is still in: walk down to it.
        while (max_fd_ >= 0 && in_sets(max_fd_) == Interest::none) {
            --max_fd_;
        }
    }
    return {};
}

Result<std::span<const Readiness>> SelectBackend::wait(std::optional<std::chrono::milliseconds> timeout) {
    ready_.clear();
    fd_set readable = read_set_;
    fd_set writable = write_set_;
    timeval tv{};
    timeval* tvp = nullptr;
    if (timeout) {
        const auto ms = std::max<std::int64_t>(timeout->count(), 0);
        tv.tv_sec = static_cast<time_t>(ms / 1000);
        tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
        tvp = &tv;
    }
    const int n = ::select(max_fd_ + 1, &readable, &writable, nullptr, tvp);
    if (n < 0) {
        if (errno == EINTR) {
            return std::span<const Readiness>{};
        }
        return Error::from_errno("select");
    }
    // A scan up to max_fd_ is inherent to select: the kernel did the same walk.
    for (int fd = 0, left = n; fd <= max_fd_ && left > 0; ++fd) {
        const bool r = FD_ISSET(fd, &readable);
        const bool w = FD_ISSET(fd, &writable);
        if (r || w) {
            ready_.push_back({fd, r, w});
            left -= static_cast<int>(r) + static_cast<int>(w);
        }
    }
    return std::span<const Readiness>(ready_);
}

}  // namespace echoplex::detail
