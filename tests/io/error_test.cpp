// Error formatting and Result: the call, the message and the errno name reach the edge.
#include "echoplex/io/error.hpp"

#include "support/doctest.hpp"

namespace echoplex {
namespace {

TEST_CASE("a system error names the call, the message and the errno symbol") {
    const Error e = Error::from_errno("bind", EADDRINUSE);
    CHECK(e.message() == "bind: Address already in use (EADDRINUSE)");
    Error with_context = e;
    with_context.context = "127.0.0.1:50007";
    CHECK(with_context.message() == "bind 127.0.0.1:50007: Address already in use (EADDRINUSE)");
}

TEST_CASE("echoplex's own conditions compare as error codes") {
    const Error e{"select", make_error_code(errc::fd_out_of_range)};
    CHECK(e.code == errc::fd_out_of_range);
    CHECK(e.code != errc::bad_argument);
    CHECK(e.message() == "select: descriptor out of range for this backend");
}

TEST_CASE("a name that cannot be resolved reads as the resolver's reason, once") {
    const Error e{"getaddrinfo", make_error_code(errc::resolve_failed), "nosuch.invalid: Name or service not known"};
    CHECK(e.code == errc::resolve_failed);
    CHECK(e.code != errc::bad_argument);
    CHECK(e.message() == "getaddrinfo nosuch.invalid: Name or service not known");
    // Without the resolver's text, the generic message stands in for it.
    const Error bare{"getaddrinfo", make_error_code(errc::resolve_failed)};
    CHECK(bare.message() == "getaddrinfo: cannot resolve address");
}

TEST_CASE("Result holds a value or an error") {
    Result<int> ok = 42;
    REQUIRE(ok.has_value());
    CHECK(*ok == 42);
    Result<int> bad = Error::from_errno("read", EBADF);
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().code == std::errc::bad_file_descriptor);
    Result<void> done;
    CHECK(done.has_value());
    Result<void> failed = Error::from_errno("close", EIO);
    CHECK_FALSE(failed.has_value());
    CHECK(failed.error().code.value() == EIO);
}

}  // namespace
}  // namespace echoplex
