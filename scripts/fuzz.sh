#!/usr/bin/env bash
# Fuzzes a connection's queues and write path (tests/fuzz/connection_fuzz.cpp, over readiness or
# over io_uring completions the input scripts) with libFuzzer: installs clang and the libFuzzer
# runtime if missing, builds build-fuzz (clang, -Dfuzz=true:
# coverage, AddressSanitizer, UndefinedBehaviorSanitizer), then fuzzes for SECONDS (default 30)
# from a temporary copy of the seed corpus, so the repository is left as it was. Prints one line
# "fuzz: ..." at the end; exit status 1 on a crash, whose input is kept in build-fuzz/crashes/.
# Usage: scripts/fuzz.sh [SECONDS] [libFuzzer flags...]     e.g. scripts/fuzz.sh 600 -jobs=2
# Replay a saved input, with a trace: ECHOPLEX_FUZZ_TRACE=1 build-fuzz/tests/fuzz/connection_fuzz FILE
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-30}"
shift || true
build="$root/build-fuzz"

# Debian 12's clang 14 finds libFuzzer (and the sanitizer runtimes) in libclang-rt-14-dev, which
# clang only recommends.
bash "$root/scripts/deps.sh" clang libclang-rt-14-dev
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" -Dfuzz=true >/dev/null
else
  CXX=clang++ CC=clang meson setup "$build" "$root" --wrap-mode=nodownload \
    -Dfuzz=true -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$build" tests/fuzz/connection_fuzz >/dev/null

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cp "$root"/tests/fuzz/corpus/* "$corpus"/
mkdir -p "$build/crashes"
log="$build/fuzz.log"
status=0
"$build/tests/fuzz/connection_fuzz" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$build/crashes/" "$@" "$corpus" >"$log" 2>&1 || status=$?

# libFuzzer's own last lines: "#N DONE cov: C ft: F corp: ..." and "Done N runs in S second(s)".
runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n 1)"
cov="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || true)"
if [ "$status" -ne 0 ]; then
  tail -n 40 "$log" >&2
  echo "fuzz: FAILED (libFuzzer exit $status): the input is saved in $build/crashes/, full log $log"
  exit 1
fi
echo "fuzz: no crash, ${runs:-? runs}, ${cov:-cov: ?} (log: $log)"
