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

Result<void> EpollBackend::watch(int fd, Interest want) {
    if (fd < 0) {
        return Error{"epoll_ctl", make_error_code(errc::fd_out_of_range)};
    }
    const auto slot = static_cast<std::size_t>(fd);
    if (slot >= registered_.size()) {
        registered_.resize(slot + 1, Interest::none);
    }
    const Interest had = registered_[slot];
    if (had == want) {
        return {};
    }
    // epoll always reports EPOLLHUP/EPOLLERR, even for an empty mask; level-triggered, a hung-up
    // descriptor with no interest would wake every wait. So "none" leaves the kernel's list.
    if (want == Interest::none) {
        if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr) < 0) {
            return Error::from_errno("epoll_ctl(DEL)");
        }
    } else {
        epoll_event ev{};
        ev.events = epoll_mask(want);
        ev.data.fd = fd;
        const bool add = had == Interest::none;
        if (::epoll_ctl(epoll_fd_.get(), add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) < 0) {
            return Error::from_errno(add ? "epoll_ctl(ADD)" : "epoll_ctl(MOD)");
        }
    }
    registered_[slot] = want;
    return {};
}

void EpollBackend::unwatch(int fd) noexcept {
    if (fd < 0 || static_cast<std::size_t>(fd) >= registered_.size()) {
        return;
    }
    auto& had = registered_[static_cast<std::size_t>(fd)];
    if (had != Interest::none) {
        // Fails only if the caller already closed fd, in which case the kernel dropped it.
        ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
        had = Interest::none;
    }
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
        const Interest want = registered_[static_cast<std::size_t>(ev.data.fd)];
        const bool trouble = (ev.events & (EPOLLERR | EPOLLHUP)) != 0;
        const bool r = wants_read(want) && (trouble || (ev.events & EPOLLIN) != 0);
        const bool w = wants_write(want) && (trouble || (ev.events & EPOLLOUT) != 0);
        if (r || w) {
            ready_.push_back({ev.data.fd, r, w});
        }
    }
    if (static_cast<std::size_t>(n) == events_.size() && events_.size() < max_events) {
        events_.resize(events_.size() * 2);
    }
    return std::span<const Readiness>(ready_);
}

}  // namespace echoplex::detail
