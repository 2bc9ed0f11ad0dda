// MasterMetrics implementation.
#include "master_metrics.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>

#include "echoplex/io/log.hpp"
#include "echoplex/net/bind_socket.hpp"

namespace echoplex {

Result<std::unique_ptr<MasterMetrics>> MasterMetrics::open(const std::string& host, std::uint16_t port,
                                                           services::HttpMetrics::Render render) {
    auto bound = bind_tcp(host, port, BindOptions{});
    if (!bound) {
        return std::move(bound).error();
    }
    return std::unique_ptr<MasterMetrics>(
        new MasterMetrics(std::move(bound->fd), std::move(bound->address), std::move(render)));
}

MasterMetrics::MasterMetrics(UniqueFd listener, std::string address, services::HttpMetrics::Render render)
    : listener_(std::move(listener)), address_(std::move(address)), responder_(std::move(render)) {}

MasterMetrics::~MasterMetrics() {
    stop();
    while (!scrapes_.empty()) {
        finish(scrapes_.begin()->first);
    }
}

void MasterMetrics::watch(WorkerGroup& group) {
    group_ = &group;
    group.watch(listener_.get(), POLLIN, [this](short) { accept_all(); });
}

void MasterMetrics::stop() noexcept {
    if (group_ != nullptr && listener_) {
        group_->unwatch(listener_.get());
    }
    listener_.reset();
}

void MasterMetrics::forget_in_child() noexcept {
    group_ = nullptr;  // the child's copy of the group is not ours to change
    listener_.reset();
    scrapes_.clear();
}

void MasterMetrics::accept_all() {
    for (;;) {
        UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
                log::warn("--metrics: {}", Error::from_errno("accept4").message());
            }
            return;  // EMFILE and the like: the next scrape tries again
        }
        if (scrapes_.size() >= max_clients) {
            continue;  // closed at once: a scraper retries
        }
        const int n = fd.get();
        Scrape& scrape = scrapes_[n];
        scrape.fd = std::move(fd);
        scrape.deadline = Clock::now() + client_deadline;
        group_->watch(n, POLLIN, [this, n](short revents) { on_ready(n, revents); });
        if (!sweeping_) {
            sweeping_ = true;
            group_->after(std::chrono::duration_cast<std::chrono::milliseconds>(client_deadline), [this] { sweep(); });
        }
    }
}

void MasterMetrics::on_ready(int fd, short revents) {
    const auto it = scrapes_.find(fd);
    if (it == scrapes_.end()) {
        return;
    }
    Scrape& scrape = it->second;
    if ((revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !scrape.eof && !receive(scrape)) {
        finish(fd);
        return;
    }
    if (scrape.answered) {
        if (!send_some(scrape)) {
            finish(fd);
            return;
        }
        if (scrape.sent == scrape.response.size()) {
            if (scrape.eof) {
                finish(fd);  // answered, and the client has finished too
                return;
            }
            // Everything sent: FIN, then read until the client's EOF, so that closing with its
            // bytes unread does not reset the connection under our response.
            ::shutdown(fd, SHUT_WR);
        }
    }
    const bool more_to_send = scrape.answered && scrape.sent < scrape.response.size();
    const short want = static_cast<short>((scrape.eof ? 0 : POLLIN) | (more_to_send ? POLLOUT : 0));
    group_->watch(fd, want, [this, fd](short r) { on_ready(fd, r); });
}

bool MasterMetrics::receive(Scrape& scrape) {
    std::array<char, 4096> buffer{};
    // Bounded: a client that sends without pause cannot hold the master here (the rest is read
    // on the next wakeup, the deadline ends it).
    for (int reads = 0; reads < 16; ++reads) {
        const ssize_t got = ::recv(scrape.fd.get(), buffer.data(), buffer.size(), 0);
        if (got < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        if (got == 0) {
            scrape.eof = true;
            if (!scrape.answered) {
                // The client stopped before its head ended (one that sent nothing gets nothing).
                scrape.answered = true;
                if (!scrape.received.empty()) {
                    scrape.response = services::HttpMetrics::bad_request_response();
                }
            }
            return true;
        }
        if (scrape.answered) {
            continue;  // after the head: read and dropped
        }
        scrape.received.append(buffer.data(), static_cast<std::size_t>(got));
        const auto end = services::HttpMetrics::head_end(scrape.received);
        if (end != std::string::npos) {
            scrape.answered = true;
            scrape.response = responder_.respond(std::string_view(scrape.received).substr(0, end));
            scrape.received.clear();
        } else if (scrape.received.size() > services::HttpMetrics::max_request) {
            scrape.answered = true;
            scrape.response = services::HttpMetrics::too_large_response();
            scrape.received.clear();
        }
    }
    return true;
}

bool MasterMetrics::send_some(Scrape& scrape) {
    while (scrape.sent < scrape.response.size()) {
        const ssize_t put = ::send(scrape.fd.get(), scrape.response.data() + scrape.sent,
                                   scrape.response.size() - scrape.sent, MSG_NOSIGNAL);
        if (put < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        scrape.sent += static_cast<std::size_t>(put);
    }
    return true;
}

void MasterMetrics::finish(int fd) noexcept {
    if (group_ != nullptr) {
        group_->unwatch(fd);
    }
    scrapes_.erase(fd);
}

void MasterMetrics::sweep() {
    const auto now = Clock::now();
    for (auto it = scrapes_.begin(); it != scrapes_.end();) {
        const int fd = it->first;
        ++it;
        if (scrapes_.at(fd).deadline <= now) {
            finish(fd);
        }
    }
    sweeping_ = !scrapes_.empty();
    if (sweeping_) {
        group_->after(std::chrono::seconds(1), [this] { sweep(); });
    }
}

}  // namespace echoplex
