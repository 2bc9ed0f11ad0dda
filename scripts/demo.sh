#!/usr/bin/env bash
# Quick start's main job: installs what is missing, builds, starts the echoplex server on two free
# loopback ports, points testecho at both, prints testecho's report, then stops the server with
# SIGTERM (it drains and prints its statistics). Exits with testecho's status: 0 when every echoed
# byte was verified.
# Usage: scripts/demo.sh [testecho options...]   e.g. -c 100 -P 4 -s 1k -d 10 --backend=poll
# Default load: the book's 8 clients, for 5 seconds. --backend=NAME applies to both programs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh" "$root/build"
bin="$root/build/src"

server_args=(--port 0 --port 0)
stop_condition=(-d 5)
for arg in "$@"; do
  case "$arg" in
    --backend=*) server_args+=("$arg") ;;
    -d*|--duration*|-n*|--requests*) stop_condition=() ;;
  esac
done

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Port 0: the kernel picks free ports, so the demo never collides with a server already running
# on the book's 50007/50008. The startup line names the ports really bound.
"$bin/echoplex" "${server_args[@]}" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
  [ -s "$work/server.out" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1  # polling a file the server writes once; bounded to 10 s
done
if ! [ -s "$work/server.out" ]; then
  echo "demo: the server did not start:" >&2
  cat "$work/server.err" >&2
  exit 1
fi
cat "$work/server.out"
ports="$(grep -o ':[0-9]\+' "$work/server.out" | tr -d : | paste -sd, -)"

status=0
"$bin/testecho" --port "$ports" "${stop_condition[@]}" "$@" || status=$?

kill -TERM "$server_pid"
wait "$server_pid" || status=1
server_pid=""
cat "$work/server.err"
exit "$status"
