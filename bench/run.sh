#!/usr/bin/env bash
# The benchmark in one command. Installs the Debian packages it is missing, builds echoplex, testecho
# and the bench servers in a release build (build-bench/), then runs bench/bench.py, which writes
# docs/bench/report.md, its SVG plots and results.json, and the Benchmarks section of README.md.
# Usage: bench/run.sh [--quick] [--runs N] [--duration S] [--only grid,idle,peers,memory] ... (--help)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"

# The peers, the plots, pinning and profiling. python3-uvloop ships echoserver.py and echoclient.py.
bash "$root/scripts/deps.sh" python3-uvloop python3-matplotlib libboost-dev socat util-linux valgrind strace

options=(-Dbuildtype=release -Db_ndebug=true -Dbench=true)
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" "${options[@]}" >/dev/null
else
  meson setup "$build" "$root" --wrap-mode=nodownload "${options[@]}" >/dev/null
fi
targets=(src/echoplex src/testecho bench/thread_echo)
for t in bench/bare_epoll_echo bench/asio_echo; do
  grep -q "^build $t:" "$build/build.ninja" && targets+=("$t")
done
ninja -C "$build" "${targets[@]}" >/dev/null

# Up to 10,000 idle connections plus the load: use the whole hard descriptor limit.
ulimit -n "$(ulimit -Hn)"
# Debian's interpreter: it has python3-uvloop and python3-matplotlib whatever else is on PATH.
python=/usr/bin/python3
[ -x "$python" ] || python=python3
BENCH_COMMAND="bench/run.sh${*:+ $*}" exec "$python" "$root/bench/bench.py" --build "$build" "$@"
