#!/usr/bin/env bash
# Builds the benchmarks, the Python bindings and the shopcore program, then
# runs every benchmark (bench/run_all.py); results in bench/results/.
#   bench/run_all.sh [run_all.py options: --seconds S --sim-users N ...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${SC_BUILD_DIR:-$here/build}
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2
exec python3 "$here/bench/run_all.py" --build "$build" "$@"
