#!/usr/bin/env bash
# The benchmark in one command. Installs the Debian packages it is missing, builds echoplex, testecho
# and the bench servers in a release build (build-bench/), then runs bench/bench.py, which writes
# docs/bench/report.md, its SVG plots and the Benchmarks section of README.md, and keeps its results
# in build-bench/results.json (--quick: everything in build-bench/bench-quick/, README.md untouched).
# With --profile it runs bench/profile_echoplex.py instead (docs/bench/profile.md).
# Usage: bench/run.sh [--profile] [--quick] [--runs N] [--duration S] [--only EXPERIMENTS] ... (--help)
# A run of some experiments (--only) keeps the others' results from build-bench/results.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"
python=/usr/bin/python3  # Debian's interpreter: it has python3-uvloop and python3-matplotlib
[ -x "$python" ] || python=python3

# --profile picks the profiler; every other option goes to the script that runs.
script="$root/bench/bench.py"
args=()
for arg in "$@"; do
  if [ "$arg" = "--profile" ]; then script="$root/bench/profile_echoplex.py"; else args+=("$arg"); fi
done
# --help needs no packages and no build.
for arg in ${args[@]+"${args[@]}"}; do
  case "$arg" in
    -h|--help) exec "$python" "$script" --help ;;
  esac
done

# The peers, the plots, pinning and profiling (perf is used when it works: Debian's linux-perf).
# python3-uvloop ships echoserver.py and echoclient.py.
bash "$root/scripts/deps.sh" python3-uvloop python3-matplotlib libboost-dev socat util-linux valgrind strace

options=(-Dbuildtype=release -Db_ndebug=true -Dbench=true)
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" "${options[@]}" >/dev/null
else
  meson setup "$build" "$root" --wrap-mode=nodownload "${options[@]}" >/dev/null
fi
# A reconfigured build.ninja is written only when ninja next runs: regenerate it before asking
# it which optional targets exist.
ninja -C "$build" build.ninja >/dev/null
targets=(src/echoplex src/testecho bench/thread_echo)
for t in bench/bare_epoll_echo bench/asio_echo; do
  grep -q "^build $t:" "$build/build.ninja" && targets+=("$t")
done
ninja -C "$build" "${targets[@]}" >/dev/null

# Up to 10,000 idle connections plus the load: use the whole hard descriptor limit.
ulimit -n "$(ulimit -Hn)"
BENCH_COMMAND="bench/run.sh${*:+ $*}" exec "$python" "$script" --build "$build" ${args[@]+"${args[@]}"}
