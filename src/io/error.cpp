// Formatting of errors and echoplex's own error category.
#include "echoplex/io/error.hpp"

#include <cstring>

#include "echoplex/io/fmt.hpp"

namespace echoplex {
namespace {

class EchoplexCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "echoplex"; }
    std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
        case errc::fd_out_of_range: return "descriptor out of range for this backend";
        case errc::backend_unavailable: return "backend not available on this platform";
        case errc::bad_argument: return "invalid argument";
        case errc::resolve_failed: return "cannot resolve address";
        case errc::timed_out: return "timed out";
        }
        return "unknown echoplex error";
    }
};

}  // namespace

const std::error_category& echoplex_category() noexcept {
    static const EchoplexCategory category;
    return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), echoplex_category()}; }

std::string Error::message() const {
    std::string where(call);
    if (!context.empty()) {
        where += where.empty() ? context : " " + context;
    }
    if (code.category() == std::system_category()) {
        // strerrorname_np (glibc >= 2.32) gives the symbolic name users search for.
        const char* symbol = ::strerrorname_np(code.value());
        return fmt::format("{}: {} ({})", where, code.message(), symbol != nullptr ? symbol : "?");
    }
    if (code == errc::resolve_failed && !context.empty()) {
        // The resolver's own words ("Name or service not known") are in the context and say
        // more than ours; printing both would read "...: not known: cannot resolve address".
        return where;
    }
    return fmt::format("{}: {}", where, code.message());
}

}  // namespace echoplex
