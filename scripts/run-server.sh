#!/usr/bin/env bash
# Quick start: installs what is missing, builds, and runs the echoplex server in the foreground
# on the book's ports (50007 and 50008). Extra arguments go to the server, e.g. --backend=poll.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh" "$root/build"
exec "$root/build/src/echoplex" "$@"
