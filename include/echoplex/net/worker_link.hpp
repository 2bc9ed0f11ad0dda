// WorkerLink: a worker's end of its WorkerGroup channel, on the worker's event loop.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"

namespace echoplex {

class WorkerLink final : public IoHandler {
public:
    using CommandFn = std::function<void(char command)>;
    using GoneFn = std::function<void()>;

    // Watches `control_fd`: each byte the master sends goes to on_command, in order; EOF or an
    // error (the master is gone) to on_master_gone, once, and the pipe is no longer watched.
    static Result<std::unique_ptr<WorkerLink>> watch(EventLoop& loop, int control_fd, CommandFn on_command,
                                                     GoneFn on_master_gone);
    WorkerLink(const WorkerLink&) = delete;
    WorkerLink& operator=(const WorkerLink&) = delete;
    ~WorkerLink();

    void on_readable() override;
    void on_writable() override {}

private:
    WorkerLink(EventLoop& loop, int control_fd, CommandFn on_command, GoneFn on_master_gone);

    EventLoop& loop_;
    int fd_;
    bool watched_ = false;
    CommandFn on_command_;
    GoneFn on_master_gone_;
};

// Writes `line` and a '\n' to a report pipe without ever blocking the worker's loop: a line up to
// PIPE_BUF bytes goes in one write or not at all (false: the master is not reading, or is gone).
// The pipe must be non-blocking (set_nonblocking, once).
bool report_line(int report_fd, std::string_view line) noexcept;

}  // namespace echoplex
