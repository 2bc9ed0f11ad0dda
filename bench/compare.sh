#!/usr/bin/env bash
# Before and after in one run: builds the echoplex server of REV and of the working tree (release
# builds, as bench/run.sh makes), then bench/compare.py measures both, interleaved.
# Usage: bench/compare.sh REV [bench/compare.py options]   e.g. bench/compare.sh cf05f65 --rounds 5
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: bench/compare.sh REV [--sizes 64,1k,16k,1m] [--connections 8,100] [--rounds N] [--duration S] [--out FILE]" >&2
  exit 2
fi
rev="$1"
shift
git -C "$root" rev-parse --verify --quiet "$rev^{commit}" >/dev/null || { echo "compare.sh: '$rev' is not a commit here" >&2; exit 2; }
bash "$root/scripts/deps.sh" valgrind strace util-linux

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
options=(--wrap-mode=nodownload -Dbuildtype=release -Db_ndebug=true)
mkdir "$work/tree"
git -C "$root" archive "$rev" | tar -x -C "$work/tree"
meson setup "$work/build" "$work/tree" "${options[@]}" >/dev/null
ninja -C "$work/build" src/echoplex >/dev/null

build="$root/build-bench"
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" -Dbuildtype=release -Db_ndebug=true >/dev/null
else
  meson setup "$build" "$root" "${options[@]}" >/dev/null
fi
ninja -C "$build" src/echoplex src/testecho >/dev/null

python=/usr/bin/python3
[ -x "$python" ] || python=python3
"$python" "$root/bench/compare.py" --before "$work/build/src/echoplex" --after "$build/src/echoplex" \
  --testecho "$build/src/testecho" --label-before "$(git -C "$root" rev-parse --short "$rev")" \
  --label-after "$(git -C "$root" describe --always --dirty)" "$@"
