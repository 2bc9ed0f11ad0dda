// The one translation unit that holds doctest's runner; every test executable links it.
//
// A suite registered for a backend this machine's kernel refuses (io_uring disabled by sysctl,
// blocked by seccomp, short of locked memory) reports itself skipped with meson's exit code 77
// and the reason, instead of failing every case: compiled in is not the same as allowed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>
#include <cstdlib>

#include "echoplex/io/backend.hpp"
#include "support/doctest.hpp"

namespace {

constexpr int meson_skip = 77;

}  // namespace

int main(int argc, char** argv) {
    if (const char* name = std::getenv("ECHOPLEX_BACKEND"); name != nullptr && *name != '\0') {
        if (const auto kind = echoplex::parse_backend_kind(name)) {
            auto backend = echoplex::make_backend(*kind);
            if (!backend) {
                std::printf("skipped: the %s backend cannot run here: %s\n", name, backend.error().message().c_str());
                return meson_skip;
            }
        }
    }
    doctest::Context context(argc, argv);
    return context.run();
}
