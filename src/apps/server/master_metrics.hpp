// MasterMetrics: --metrics under --workers. The master runs no event loop (none may cross the
// forks of replacement workers), so its /metrics listener and the scrapes it accepts are plain
// non-blocking descriptors in the WorkerGroup's wait, answered with the same responder as one
// process (services::HttpMetrics): one request per connection, its head bounded, a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "echoplex/io/error.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "echoplex/net/worker_group.hpp"
#include "echoplex/services/http_metrics.hpp"

namespace echoplex {

class MasterMetrics {
public:
    // At most this many scrapes at once; more are closed as they are accepted.
    static constexpr std::size_t max_clients = 16;
    // A scrape that has not sent its request and taken its response by then is closed.
    static constexpr std::chrono::seconds client_deadline{5};

    // Binds host:port and listens; nothing is served before watch().
    static Result<std::unique_ptr<MasterMetrics>> open(const std::string& host, std::uint16_t port,
                                                       services::HttpMetrics::Render render);
    MasterMetrics(const MasterMetrics&) = delete;
    MasterMetrics& operator=(const MasterMetrics&) = delete;
    ~MasterMetrics();

    // Serves from `group`'s wait until stop() or destruction.
    void watch(WorkerGroup& group);
    // Stops accepting; scrapes under way are answered.
    void stop() noexcept;
    // In a worker, after fork: closes its copies of every descriptor, watching nothing.
    void forget_in_child() noexcept;

    const std::string& address() const noexcept { return address_; }

private:
    using Clock = std::chrono::steady_clock;
    struct Scrape {
        UniqueFd fd;
        std::string received;
        std::string response;
        std::size_t sent = 0;
        bool answered = false;  // the response is made: send it, then read until EOF
        bool eof = false;       // the client has finished sending
        Clock::time_point deadline;
    };

    MasterMetrics(UniqueFd listener, std::string address, services::HttpMetrics::Render render);
    void accept_all();
    void on_ready(int fd, short revents);
    // Reads what is there, answering once the head is complete; false on an error.
    bool receive(Scrape& scrape);
    // Sends what the kernel takes; false on an error.
    bool send_some(Scrape& scrape);
    void finish(int fd) noexcept;
    void sweep();

    UniqueFd listener_;
    std::string address_;
    services::HttpMetrics responder_;
    std::map<int, Scrape> scrapes_;
    WorkerGroup* group_ = nullptr;
    bool sweeping_ = false;
};

}  // namespace echoplex
