// Backend names, the list compiled into this build, and make_backend().
#include <array>

#include "echoplex/config.h"
#include "echoplex/io/backend.hpp"
#include "poll_backend.hpp"
#include "select_backend.hpp"
#if ECHOPLEX_HAVE_EPOLL
#include "epoll_backend.hpp"
#endif
#if ECHOPLEX_HAVE_IO_URING
#include "uring_backend.hpp"
#endif

namespace echoplex {
namespace {

// Best first: the first entry is the default.
constexpr std::array compiled_in = {
#if ECHOPLEX_HAVE_EPOLL
    BackendKind::epoll,
#endif
    BackendKind::poll,
    BackendKind::select,
#if ECHOPLEX_HAVE_IO_URING
    // Last: compiled in is not the same as allowed by the kernel, so it is never the default.
    BackendKind::io_uring,
#endif
};

}  // namespace

std::string_view backend_name(BackendKind kind) noexcept {
    switch (kind) {
    case BackendKind::epoll: return "epoll";
    case BackendKind::poll: return "poll";
    case BackendKind::select: return "select";
    case BackendKind::io_uring: return "io_uring";
    }
    return "unknown";
}

std::optional<BackendKind> parse_backend_kind(std::string_view name) noexcept {
    for (const BackendKind kind : {BackendKind::epoll, BackendKind::poll, BackendKind::select, BackendKind::io_uring}) {
        if (backend_name(kind) == name) {
            return kind;
        }
    }
    return std::nullopt;
}

std::span<const BackendKind> available_backends() noexcept { return compiled_in; }

Result<std::unique_ptr<Backend>> make_backend(BackendKind kind) {
    switch (kind) {
    case BackendKind::epoll:
#if ECHOPLEX_HAVE_EPOLL
        return detail::EpollBackend::create();
#else
        break;
#endif
    case BackendKind::poll: return std::unique_ptr<Backend>(std::make_unique<detail::PollBackend>());
    case BackendKind::select: return std::unique_ptr<Backend>(std::make_unique<detail::SelectBackend>());
    case BackendKind::io_uring:
#if ECHOPLEX_HAVE_IO_URING
        return detail::UringBackend::create();
#else
        break;
#endif
    }
    return Error{"make_backend", make_error_code(errc::backend_unavailable), std::string(backend_name(kind))};
}

}  // namespace echoplex
