// WorkerLink implementation.
#include "echoplex/net/worker_link.hpp"

#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace echoplex {

Result<std::unique_ptr<WorkerLink>> WorkerLink::watch(EventLoop& loop, int control_fd, CommandFn on_command,
                                                      GoneFn on_master_gone) {
    auto link = std::unique_ptr<WorkerLink>(new WorkerLink(loop, control_fd, std::move(on_command), std::move(on_master_gone)));
    set_nonblocking(control_fd);
    if (auto watching = loop.watch(control_fd, *link, Interest::read); !watching) {
        return std::move(watching).error();
    }
    link->watched_ = true;
    return link;
}

WorkerLink::WorkerLink(EventLoop& loop, int control_fd, CommandFn on_command, GoneFn on_master_gone)
    : loop_(loop), fd_(control_fd), on_command_(std::move(on_command)), on_master_gone_(std::move(on_master_gone)) {}

WorkerLink::~WorkerLink() {
    if (watched_) {
        loop_.unwatch(fd_);
    }
}

void WorkerLink::on_readable() {
    char bytes[64];
    for (;;) {
        const ssize_t n = ::read(fd_, bytes, sizeof bytes);
        if (n > 0) {
            for (ssize_t i = 0; i < n; ++i) {
                on_command_(bytes[i]);
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        loop_.unwatch(fd_);
        watched_ = false;
        if (on_master_gone_) {
            auto gone = std::move(on_master_gone_);
            on_master_gone_ = nullptr;
            gone();
        }
        return;
    }
}

bool report_line(int report_fd, std::string_view line) noexcept {
    std::string text;
    try {
        text.reserve(line.size() + 1);
        text.append(line);
        text.push_back('\n');
    } catch (...) {
        return false;
    }
    if (text.size() > PIPE_BUF) {
        return false;  // could be split, and a partial line would mislead the master
    }
    ssize_t n = 0;
    do {
        n = ::write(report_fd, text.data(), text.size());
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(text.size());
}

}  // namespace echoplex
