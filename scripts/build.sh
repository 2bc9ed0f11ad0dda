#!/usr/bin/env bash
# Installs what is missing, then configures (offline: --wrap-mode=nodownload) and builds, saying
# on stderr how far the build is (a first build takes minutes) and showing any error in full.
# Usage: scripts/build.sh [BUILD_DIR] [meson setup options...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
shift || true
bash "$root/scripts/deps.sh"
if [ -f "$build/build.ninja" ]; then
  out="$(meson configure "$build" "$@" 2>&1)" || { echo "$out" >&2; exit 1; }
else
  echo "echoplex: configuring $build" >&2
  out="$(meson setup "$build" "$root" --wrap-mode=nodownload "$@" 2>&1)" || { echo "$out" >&2; exit 1; }
fi
start=$SECONDS
# ninja's "[N/M] ..." lines become a line every 25 steps; everything else it says (a compiler's
# error, "build stopped") goes to stderr as it is.
ninja -C "$build" | awk -v build="$build" '
  /^\[[0-9]+\/[0-9]+\]/ {
    split(substr($1, 2, length($1) - 2), step, "/")
    if (step[1] == 1) printf "echoplex: building %s (%s steps)\n", build, step[2] > "/dev/stderr"
    else if (step[1] % 25 == 0 || step[1] == step[2]) printf "echoplex: %s of %s steps\n", step[1], step[2] > "/dev/stderr"
    next
  }
  /^ninja: (no work to do|Entering directory)/ { next }
  { print > "/dev/stderr" }'
if ((SECONDS - start > 5)); then
  echo "echoplex: built in $((SECONDS - start)) s" >&2
fi
