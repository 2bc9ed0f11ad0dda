#!/usr/bin/env bash
# Installs the Debian packages echoplex needs, only those that are missing. Sourced or run by the
# other scripts, so a newcomer on a fresh Debian 12 machine never types an apt line.
# Usage: scripts/deps.sh [EXTRA_PACKAGE...]   (extras: e.g. scripts/fuzz.sh's clang and libFuzzer)
set -euo pipefail

packages=(meson ninja-build pkg-config cmake g++ libfmt-dev doctest-dev liburing-dev python3)
packages+=("$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "echoplex: installing missing packages: ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "echoplex: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
