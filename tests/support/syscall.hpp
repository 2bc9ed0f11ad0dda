// The test helpers' one way to fail on a system call: throw std::system_error naming the call.
// (Helpers may throw; the library may not.)
#pragma once

#include <cerrno>
#include <system_error>

namespace echoplex::test {

[[noreturn]] inline void fail(const char* what, int err = errno) {
    throw std::system_error(err, std::system_category(), what);
}

// `rc` if it is not negative; otherwise throws naming `what` and errno.
inline int checked(int rc, const char* what) {
    if (rc < 0) {
        fail(what);
    }
    return rc;
}

}  // namespace echoplex::test
