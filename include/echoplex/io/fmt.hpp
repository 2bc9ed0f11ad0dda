// fmt, as every echoplex file includes it.
//
// fmt 9.1 (Debian 12's libfmt-dev) trips GCC 12's -Wstringop-overflow at -O3 inside its own
// format-spec parser (fill_t::data_, fmt/core.h:2096): a known false positive (fmtlib/fmt#3334;
// fmt's own build silences it, fmtlib/fmt#3054), which -Werror turns into a failed release build.
// GCC judges a diagnostic by the pragma state at its location, so this silences that one warning
// for fmt's lines only; our code keeps it.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
#include <fmt/format.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
