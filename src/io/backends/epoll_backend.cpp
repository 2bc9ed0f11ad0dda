// epoll(7) backend.
#include "epoll_backend.hpp"

#include <algorithm>
#include <limits>

#include "wait_timeout.hpp"

namespace echoplex::detail {
namespace {

// The event buffer starts small and doubles whenever a wait fills it, up to this many
// events per wait (the loop's per-wait budget; the rest are reported on the next wait).
constexpr std::size_t initial_events = 64;
constexpr std::size_t max_events = 4096;

std::uint32_t epoll_mask(Interest want) noexcept {
    std::uint32_t mask = 0;
    if (wants_read(want)) {
        mask |= EPOLLIN;
    }
    if (wants_write(want)) {
        mask |= EPOLLOUT;
    }
    return mask;
}

// The kernel hands epoll_event.data back untouched with every report, so it carries both the
// descriptor and the interest it was registered with: wait() filters EPOLLERR/EPOLLHUP to the
// requested directions without a table of its own. fd >= 0 fits the low 32 bits.
constexpr std::uint64_t pack(int fd, Interest want) noexcept {
    return static_cast<std::uint32_t>(fd) | std::uint64_t{static_cast<std::uint8_t>(want)} << 32U;
}
constexpr int unpacked_fd(std::uint64_t data) noexcept { return static_cast<int>(data & 0xffff'ffffU); }
constexpr Interest unpacked_interest(std::uint64_t data) noexcept {
    return static_cast<Interest>(static_cast<std::uint8_t>(data >> 32U));
}

}  // namespace

Result<std::unique_ptr<Backend>> EpollBackend::create() {
    UniqueFd fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!fd) {
        return Error::from_errno("epoll_create1");
    }
    return std::unique_ptr<Backend>(new EpollBackend(std::move(fd)));
}

EpollBackend::EpollBackend(UniqueFd epoll_fd) : epoll_fd_(std::move(epoll_fd)), events_(initial_events) {}

int EpollBackend::fd_limit() const noexcept { return std::numeric_limits<int>::max(); }

Result<void> EpollBackend::modify(int fd, Interest old_interest, Interest new_interest) {
    if (fd < 0) {
        return Error{"epoll_ctl", make_error_code(errc::fd_out_of_range)};
    }
    if (old_interest == new_interest) {
        return {};
    }
    // epoll always reports EPOLLHUP/EPOLLERR, even for an empty mask; level-triggered, a hung-up
    // descriptor with no interest would wake every wait. So "none" is out of the kernel's list.
    if (new_interest == Interest::none) {
        // DEL fails with EBADF if the number is closed, and with ENOENT if it is not in the list:
        // never added, a wrong old_interest, or closed and reused for another file. Closing took
        // the old registration out only if no duplicate of that open file was left; otherwise it
        // is still in the list, still reported under its old data, and a DEL of the number no
        // longer reaches it (epoll(7), Q6). Hence the contract: remove before close.
        if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr) < 0) {
            return Error::from_errno("epoll_ctl(DEL)");
        }
        return {};
    }
    epoll_event ev{};
    ev.events = epoll_mask(new_interest);
    ev.data.u64 = pack(fd, new_interest);
    const bool add = old_interest == Interest::none;
    if (::epoll_ctl(epoll_fd_.get(), add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) < 0) {
        return Error::from_errno(add ? "epoll_ctl(ADD)" : "epoll_ctl(MOD)");
    }
    return {};
}

Result<std::span<const Readiness>> EpollBackend::wait(std::optional<std::chrono::milliseconds> timeout) {
    ready_.clear();
    const int n = ::epoll_wait(epoll_fd_.get(), events_.data(), static_cast<int>(events_.size()), timeout_ms(timeout));
    if (n < 0) {
        if (errno == EINTR) {
            return std::span<const Readiness>{};
        }
        return Error::from_errno("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
        const epoll_event& ev = events_[static_cast<std::size_t>(i)];
        const int fd = unpacked_fd(ev.data.u64);
        const Interest want = unpacked_interest(ev.data.u64);
        const bool trouble = (ev.events & (EPOLLERR | EPOLLHUP)) != 0;
        const bool r = wants_read(want) && (trouble || (ev.events & EPOLLIN) != 0);
        const bool w = wants_write(want) && (trouble || (ev.events & EPOLLOUT) != 0);
        if (r || w) {
            ready_.push_back({fd, r, w});
        }
    }
    if (static_cast<std::size_t>(n) == events_.size() && events_.size() < max_events) {
        events_.resize(events_.size() * 2);
    }
    return std::span<const Readiness>(ready_);
}

}  // namespace echoplex::detail
