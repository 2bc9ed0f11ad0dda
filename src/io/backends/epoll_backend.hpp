// epoll(7) backend (Linux), level-triggered so that it keeps the same contract as select and poll.
#pragma once

#include <sys/epoll.h>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/unique_fd.hpp"

namespace echoplex::detail {

class EpollBackend final : public Backend {
public:
    // epoll_create1 can fail (EMFILE, ENOMEM), so construction goes through create().
    static Result<std::unique_ptr<Backend>> create();

    BackendKind kind() const noexcept override { return BackendKind::epoll; }
    int fd_limit() const noexcept override;
    Result<void> modify(int fd, Interest old_interest, Interest new_interest) override;
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override;

private:
    explicit EpollBackend(UniqueFd epoll_fd);

    UniqueFd epoll_fd_;
    std::vector<epoll_event> events_;
    std::vector<Readiness> ready_;
};

}  // namespace echoplex::detail
