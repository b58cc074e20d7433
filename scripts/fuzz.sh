#!/usr/bin/env bash
# Long fuzzing campaigns of the libFuzzer targets (the default tests only
# run each for a few seconds).
#   scripts/fuzz.sh                 fuzz_decode for 10 minutes
#   scripts/fuzz.sh 3600            ... for an hour
#   SC_FUZZ_TARGET=api scripts/fuzz.sh   fuzz_api (sequences of API calls)
#   SC_FUZZ_TARGET=http scripts/fuzz.sh  fuzz_http (http_shop's request path)
#   SC_FUZZ_JOBS=2 scripts/fuzz.sh  parallel jobs (default 1)
#   SC_FUZZ_DIR=dir                 build directory (default build-fuzz)
# The corpus grows in build-fuzz/corpus-decode (seeded from
# tests/fuzz/corpus/decode); crashes and their reproducers land in
# build-fuzz/artifacts/. Reproduce one with:
#   build-fuzz/tests/fuzz/fuzz_decode build-fuzz/artifacts/crash-...
# Worth keeping: copy small new inputs into tests/fuzz/corpus/decode after
#   build-fuzz/tests/fuzz/fuzz_decode -merge=1 tests/fuzz/corpus/decode \
#     build-fuzz/corpus-decode
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
target=${SC_FUZZ_TARGET:-decode}
jobs=${SC_FUZZ_JOBS:-1}
dir=${SC_FUZZ_DIR:-build-fuzz}
cmake -S . -B "$dir" -G Ninja -DCMAKE_C_COMPILER=clang -DSC_BUILD_FUZZ=ON \
  -DSC_BUILD_PYTHON=OFF -DSC_BUILD_BENCH=OFF -DSC_BUILD_CLI=OFF \
  -DSC_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$dir" --target "fuzz_$target" -j2
mkdir -p "$dir/corpus-$target" "$dir/artifacts"
seeds=$PWD/tests/fuzz/corpus/$target
cd "$dir" # parallel jobs write their fuzz-N.log here
parallel=()
((jobs > 1)) && parallel=(-jobs="$jobs" -workers="$jobs")
# fuzz_api runs the whole library (threads, SQLite's page cache) per input.
limits=(-rss_limit_mb=512 -malloc_limit_mb=64)
[[ $target == api ]] && limits=(-rss_limit_mb=1024 -len_control=0)
tests/fuzz/"fuzz_$target" -max_total_time="$seconds" "${parallel[@]}" \
  "${limits[@]}" -max_len=2048 \
  -artifact_prefix=artifacts/ "corpus-$target" "$seeds"
