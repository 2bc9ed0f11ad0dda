// poll(2) backend.
#include "poll_backend.hpp"

#include <limits>

#include "poll_events.hpp"
#include "wait_timeout.hpp"

namespace echoplex::detail {

int PollBackend::fd_limit() const noexcept { return std::numeric_limits<int>::max(); }

Result<void> PollBackend::modify(int fd, Interest old_interest, Interest new_interest) {
    if (fd < 0) {
        return Error{"poll", make_error_code(errc::fd_out_of_range)};
    }
    const auto slot = static_cast<std::size_t>(fd);
    // The entry's events (poll's argument, never 0 for a listed fd) show a wrong old_interest,
    // which would otherwise index entries_ with not_listed.
    const bool listed = slot < position_.size() && position_[slot] != not_listed;
    const short had = listed ? entries_[static_cast<std::size_t>(position_[slot])].events : short{0};
    if (had != poll_events(old_interest)) {
        return Error{"poll", make_error_code(errc::bad_argument), "(old interest does not match the pollfd entry)"};
    }
    if (old_interest == new_interest) {
        return {};
    }
    if (old_interest == Interest::none) {
        if (slot >= position_.size()) {
            position_.resize(slot + 1, not_listed);
        }
        position_[slot] = static_cast<int>(entries_.size());
        entries_.push_back(pollfd{fd, poll_events(new_interest), 0});
    } else if (new_interest == Interest::none) {
        // poll(2) reports POLLHUP/POLLERR even with events == 0, so "none" leaves the array.
        // Removal moves the last entry into the hole.
        const auto index = static_cast<std::size_t>(position_[slot]);
        const pollfd last = entries_.back();
        entries_[index] = last;
        position_[static_cast<std::size_t>(last.fd)] = static_cast<int>(index);
        entries_.pop_back();
        position_[slot] = not_listed;
    } else {
        entries_[static_cast<std::size_t>(position_[slot])].events = poll_events(new_interest);
    }
    return {};
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
        // POLLNVAL (fd closed while still listed) is reported like an error so the owner's next
        // read/write fails with EBADF and it removes fd; ignoring it would spin the loop.
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
