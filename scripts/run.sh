#!/usr/bin/env bash
# The main job: installs what is missing, builds the shopcore program, and
# runs the seeds' flash sale (`shopcore simulate`) on an embedded shop.db in
# the working directory: 100 virtual users for 10 seconds, then a k6-like
# report and sc_verify (the exit status is non-zero if an invariant broke).
#   scripts/run.sh [shopcore simulate options, e.g. --users 500 --duration 30]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
cmake -S "$here" -B "$here/build" -G Ninja >/dev/null
cmake --build "$here/build" -j"$(nproc)" --target shopcore_cli
if (($# == 0)); then set -- --users 100 --duration 10; fi
exec "$here/build/cli/shopcore" simulate "$@"
