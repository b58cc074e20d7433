#!/usr/bin/env bash
# The main job: installs what is missing, builds everything into build/
# (scripts/build.sh: afterwards `cmake --install build --prefix P` installs
# a complete copy), and runs a flash sale on an embedded shop.db in the
# working directory (`shopcore simulate`): 1,000 coupons, one hot product
# with little stock, 100 virtual users for 10 seconds. It ends with a
# load-test report (requests, outcomes, latency percentiles) and
# `shopcore verify`; the exit status is non-zero if an invariant broke.
#   scripts/run.sh [shopcore simulate options, e.g. --users 500 --duration 30]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
"$here/scripts/build.sh" "$here/build"
if (($# == 0)); then set -- --users 100 --duration 10; fi
exec "$here/build/cli/shopcore" simulate "$@"
