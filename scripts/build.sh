#!/usr/bin/env bash
# Configures and builds every target into a build directory (default build/):
# the library (shared and static), the shopcore program, the Python package,
# the examples, the benchmarks and the tests. After it, `cmake --install DIR`
# installs a complete copy. scripts/run.sh and scripts/test.sh build with it,
# and tests/install repeats it from scratch in a temporary directory.
#   scripts/build.sh [BUILD_DIR [cmake options...]]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$here/build}
shift $(($# > 0 ? 1 : 0))
cmake -S "$here" -B "$dir" -G Ninja "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
