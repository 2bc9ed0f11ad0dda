// LogPump: writes the log's queued output (log.hpp) from an event loop, when stderr or stdout is
// writable again, so that a reader that falls behind never makes the loop wait.
#pragma once

#include <memory>
#include <vector>

#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/io_handler.hpp"

namespace echoplex {

class LogPump {
public:
    // One per loop, for its lifetime; the log calls it when output is left queued.
    explicit LogPump(EventLoop& loop);
    LogPump(const LogPump&) = delete;
    LogPump& operator=(const LogPump&) = delete;
    ~LogPump();

private:
    class Watch final : public IoHandler {
    public:
        Watch(LogPump& pump, int fd) : pump_(pump), fd_(fd) {}
        void on_readable() override {}
        void on_writable() override;
        int fd() const noexcept { return fd_; }
        bool active = false;  // watched for writability now

    private:
        LogPump& pump_;
        int fd_;
    };

    void arm();

    EventLoop& loop_;
    std::vector<std::unique_ptr<Watch>> watches_;  // one per descriptor that had output queued
};

}  // namespace echoplex
