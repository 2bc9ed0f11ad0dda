#!/usr/bin/env bash
# Installs what is missing, then configures (offline: --wrap-mode=nodownload) and builds.
# Usage: scripts/build.sh [BUILD_DIR] [meson setup options...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
shift || true
bash "$root/scripts/deps.sh"
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" "$@" >/dev/null
else
  meson setup "$build" "$root" --wrap-mode=nodownload "$@" >/dev/null
fi
ninja -C "$build" >/dev/null
