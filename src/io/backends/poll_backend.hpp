// poll(2) backend: no descriptor ceiling, cost proportional to the number of watched descriptors.
#pragma once

#include <poll.h>

#include "echoplex/io/backend.hpp"

namespace echoplex::detail {

class PollBackend final : public Backend {
public:
    BackendKind kind() const noexcept override { return BackendKind::poll; }
    int fd_limit() const noexcept override;
    Result<void> modify(int fd, Interest old_interest, Interest new_interest) override;
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override;

private:
    static constexpr int not_listed = -1;

    // poll(2)'s argument: one entry per descriptor whose interest is not none, dense (removal
    // moves the last entry into the hole). position_ finds an fd's entry in it.
    std::vector<pollfd> entries_;
    std::vector<int> position_;  // fd -> index in entries_, or not_listed
    std::vector<Readiness> ready_;
};

}  // namespace echoplex::detail
