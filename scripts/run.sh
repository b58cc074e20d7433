#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs a flash sale on an
# embedded shop.db in the working directory.
#   scripts/run.sh [threads]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
cmake -S "$here" -B "$here/build" -G Ninja >/dev/null
cmake --build "$here/build" -j"$(nproc)" --target flash_sale
"$here/build/examples/flash_sale" "${1:-64}" shop.db
