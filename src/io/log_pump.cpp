// LogPump implementation.
#include "echoplex/io/log_pump.hpp"

#include <algorithm>

#include "echoplex/io/log.hpp"

namespace echoplex {

LogPump::LogPump(EventLoop& loop) : loop_(loop) {
    log::prepare();
    log::set_wake([this] { arm(); });
    arm();  // lines queued before the loop existed
}

LogPump::~LogPump() {
    log::set_wake(nullptr);
    for (const auto& w : watches_) {
        if (w->active) {
            loop_.unwatch(w->fd());
        }
    }
}

void LogPump::arm() {
    log::for_each_pending([this](int fd) {
        auto it = std::find_if(watches_.begin(), watches_.end(), [fd](const auto& w) { return w->fd() == fd; });
        if (it == watches_.end()) {
            watches_.push_back(std::make_unique<Watch>(*this, fd));
            it = watches_.end() - 1;
        }
        Watch& w = **it;
        // A descriptor the backend cannot watch (select beyond FD_SETSIZE) is left to the next
        // log call and to the flush at exit.
        if (!w.active && loop_.watch(fd, w, Interest::write)) {
            w.active = true;
        }
    });
}

void LogPump::Watch::on_writable() {
    log::write_queued(fd_);
    bool still = false;
    log::for_each_pending([&](int fd) { still = still || fd == fd_; });
    if (!still && active) {
        pump_.loop_.unwatch(fd_);
        active = false;
    }
}

}  // namespace echoplex
