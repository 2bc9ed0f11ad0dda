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
    Result<void> watch(int fd, Interest want) override;
    void unwatch(int fd) noexcept override;
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override;

private:
    // select(2) overwrites its sets, so these masters are copied before every call.
    fd_set read_set_;
    fd_set write_set_;
    std::vector<Interest> interest_;  // indexed by fd; none = not in either set
    int max_fd_ = -1;                 // highest fd with some interest, -1 if none
    std::vector<Readiness> ready_;
};

}  // namespace echoplex::detail
