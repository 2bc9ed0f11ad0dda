// poll(2) backend.
#include "poll_backend.hpp"

#include <limits>

#include "wait_timeout.hpp"

namespace echoplex::detail {
namespace {

short poll_events(Interest want) noexcept {
    short events = 0;
    if (wants_read(want)) {
        events |= POLLIN;
    }
    if (wants_write(want)) {
        events |= POLLOUT;
    }
    return events;
}

}  // namespace

int PollBackend::fd_limit() const noexcept { return std::numeric_limits<int>::max(); }

Result<void> PollBackend::watch(int fd, Interest want) {
    if (fd < 0) {
        return Error{"poll", make_error_code(errc::fd_out_of_range)};
    }
    const auto slot = static_cast<std::size_t>(fd);
    if (slot >= position_.size()) {
        position_.resize(slot + 1, not_watched);
    }
    // poll(2) reports POLLHUP/POLLERR even with events == 0; a negative fd makes the kernel
    // skip the entry entirely, which is what Interest::none promises. (~fd keeps the number.)
    const int polled_fd = want == Interest::none ? ~fd : fd;
    if (position_[slot] == not_watched) {
        position_[slot] = static_cast<int>(entries_.size());
        entries_.push_back(pollfd{polled_fd, poll_events(want), 0});
    } else {
        pollfd& entry = entries_[static_cast<std::size_t>(position_[slot])];
        entry.fd = polled_fd;
        entry.events = poll_events(want);
    }
    return {};
}

void PollBackend::unwatch(int fd) noexcept {
    if (fd < 0 || static_cast<std::size_t>(fd) >= position_.size() ||
        position_[static_cast<std::size_t>(fd)] == not_watched) {
        return;
    }
    const auto index = static_cast<std::size_t>(position_[static_cast<std::size_t>(fd)]);
    const pollfd last = entries_.back();
    entries_[index] = last;
    const int last_fd = last.fd < 0 ? ~last.fd : last.fd;
    position_[static_cast<std::size_t>(last_fd)] = static_cast<int>(index);
    entries_.pop_back();
    position_[static_cast<std::size_t>(fd)] = not_watched;
}

Result<std::span<const Readiness>> PollBackend::wait(std::optional<std::chrono::milliseconds> timeout) {
    ready_.clear();
    const int n = ::poll(entries_.data(), static_cast<nfds_t>(entries_.size()), timeout_ms(timeout));
    if (n < 0) {
        if (errno == EINTR) {
            return std::span<const Readiness>{};
        }
        return Error::from_errno("poll");
    }
    for (std::size_t i = 0, left = static_cast<std::size_t>(n); i < entries_.size() && left > 0; ++i) {
        const pollfd& entry = entries_[i];
        if (entry.revents == 0) {
            continue;
        }
        --left;
        // POLLNVAL (fd closed without unwatch) is reported like an error so the owner's next
        // read/write fails with EBADF and it unwatches; ignoring it would spin the loop.
        const bool trouble = (entry.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
        const bool r = (entry.events & POLLIN) != 0 && (trouble || (entry.revents & POLLIN) != 0);
        const bool w = (entry.events & POLLOUT) != 0 && (trouble || (entry.revents & POLLOUT) != 0);
        if (r || w) {
            ready_.push_back({entry.fd, r, w});
        }
    }
    return std::span<const Readiness>(ready_);
}

}  // namespace echoplex::detail
