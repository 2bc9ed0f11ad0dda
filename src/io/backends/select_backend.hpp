// select(2) backend: portable everywhere, limited to descriptors below FD_SETSIZE.
#pragma once

#include <sys/select.h>

#include "echoplex/io/backend.hpp"

namespace echoplex::detail {

class SelectBackend final : public Backend {
public:
    SelectBackend();

    BackendKind kind() const noexcept override { return BackendKind::select; }
    int fd_limit() const noexcept override { return FD_SETSIZE; }
    Result<void> modify(int fd, Interest old_interest, Interest new_interest) override;
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override;

private:
    Interest in_sets(int fd) const noexcept;  // which of the two sets hold fd (in range)

    // select(2)'s arguments; it overwrites them, so these masters are copied before every call.
    fd_set read_set_;
    fd_set write_set_;
    int max_fd_ = -1;  // highest fd in either set, -1 if none
    std::vector<Readiness> ready_;
};

}  // namespace echoplex::detail
