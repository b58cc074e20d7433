#!/usr/bin/env bash
# Installs the Debian packages libshopcore needs to build and test, if any is
# missing. Safe to run again: it does nothing when all are there.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config
  libsqlite3-dev libuv1-dev libmsgpack-dev check
  libhttp-parser-dev libjansson-dev wrk
  swig python3-dev valgrind clang libclang-rt-14-dev sqlite3
  chromium  # chromium: the CLI test loads simulate's HTML report headless
  postgresql postgresql-common libpq-dev)
# postgresql, postgresql-common, libpq-dev: the PostgreSQL backend and its
# tests, run in a throwaway cluster (scripts/pg-cluster.sh).
# libhttp-parser-dev, libjansson-dev: examples/http_shop; wrk: its load test.
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
