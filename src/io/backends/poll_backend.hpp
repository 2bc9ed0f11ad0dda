// poll(2) backend: no descriptor ceiling, cost proportional to the number of watched descriptors.
#pragma once

#include <poll.h>

#include "echoplex/io/backend.hpp"

namespace echoplex::detail {

class PollBackend final : public Backend {
public:
    BackendKind kind() const noexcept override { return BackendKind::poll; }
    int fd_limit() const noexcept override;
    Result<void> watch(int fd, Interest want) override;
    void unwatch(int fd) noexcept override;
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override;

private:
    static constexpr int not_watched = -1;

    std::vector<pollfd> entries_;  // dense; removal swaps with the last entry
    std::vector<int> position_;    // fd -> index in entries_, or not_watched
    std::vector<Readiness> ready_;
};

}  // namespace echoplex::detail
