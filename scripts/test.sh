#!/usr/bin/env bash
# Builds and runs every test with `meson test`, then prints "tests: N passed, N failed".
# Usage: scripts/test.sh [BUILD_DIR] [meson setup options...]   (exit status: meson test's)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
# haproxy for the deploy/haproxy.cfg suite (tests/deploy/haproxy_test.cpp), systemd for
# systemd-socket-activate and systemd-analyze (tests/apps/server/systemd_test.cpp), prometheus for
# promtool (tests/apps/server/metrics_test.cpp), python3-matplotlib for scripts/plot-run.py
# (tests/scripts/plot_run_test.py); those suites skip what is missing.
bash "$root/scripts/deps.sh" haproxy systemd prometheus python3-matplotlib
bash "$root/scripts/build.sh" "$@"
status=0
meson test -C "$build" --print-errorlogs || status=$?
python3 "$root/scripts/test_summary.py" "$build/meson-logs/testlog.json"
exit "$status"
