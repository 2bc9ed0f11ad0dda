// doctest's header lives at <doctest/doctest.h> on Debian and at <doctest.h> in the 2.4.9 wrap.
#pragma once

// doctest forward-declares std::ostream; the full header lets it print std::error_code.
#include <ostream>

#if __has_include(<doctest/doctest.h>)
#include <doctest/doctest.h>
#else
#include <doctest.h>
#endif
