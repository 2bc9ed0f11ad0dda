#!/usr/bin/env bash
# Runs the end-to-end and stress suites with every echoplex server under valgrind memcheck (the
# meson test setup 'valgrind': leak check full; any error or leak fails the test that started the
# server), then prints "tests: N passed, N failed". The test programs themselves run natively.
# Usage: scripts/valgrind.sh [BUILD_DIR]   (default build-valgrind; must be built without sanitizers)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-valgrind}"
bash "$root/scripts/deps.sh" valgrind
bash "$root/scripts/build.sh" "$build"
sanitize="$(meson introspect --buildoptions "$build" |
  python3 -c 'import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"))')"
if [ "$sanitize" != "none" ]; then
  echo "valgrind.sh: $build is built with -Db_sanitize=$sanitize; valgrind needs a build without sanitizers" >&2
  exit 2
fi
# Not io_uring: valgrind does not follow what the kernel writes into the ring's buffers behind the
# program's back, and a server under it was seen not to wake for SIGTERM in io_uring_enter. The
# io_uring suites run under AddressSanitizer and UBSan in CI instead.
status=0
meson test -C "$build" --setup=valgrind --suite e2e --suite stress --no-suite io_uring --print-errorlogs || status=$?
python3 "$root/scripts/test_summary.py" "$build/meson-logs/testlog-valgrind.json"
exit "$status"
