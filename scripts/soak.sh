#!/usr/bin/env bash
# The reliability suites with their big counts, for a long run beside CI
# (the default tests keep each suite to seconds). Builds in build-soak
# (normal) and, with SC_SOAK_ASAN=1, build-soak-asan too.
#   scripts/soak.sh              about 15 minutes (normal build)
#   SC_SOAK_SCALE=4 scripts/soak.sh   four times the counts
#   SC_SOAK_FUZZ=600 scripts/soak.sh  also fuzz each libFuzzer target that
#                                     long (seconds; needs clang)
# What it runs, with the default scale of 1:
#   check_crash    500 SIGKILL rounds (SC_CRASH_ROUNDS)
#   check_powerloss 1,000 simulated power losses (SC_POWERLOSS_ROUNDS)
#   check_oom      every allocation of each scenario (SC_OOM_STRIDE=1)
#   check_model    20 seeds x 1,500 rounds (180,000 calls per seed)
#   check_bank     5,000 calls per thread (SC_BANK_OPS)
#   check_iofault  as in CI: it already fails every write, sync and read
#   check_worker   with a 120 s retention soak (SC_RETENTION_SECONDS): 4
#                  threads change state flat out, the worker delivers and
#                  purges at a 200 ms retention, the database file must stop
#                  growing
# Seeds are printed; a failing one reruns with SC_MODEL_SEED, SC_CRASH_SEED or
# SC_POWERLOSS_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${SC_SOAK_SCALE:-1}
failures=0
passed=0

build() { # dir, cmake args...
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DSC_BUILD_PYTHON=OFF -DSC_BUILD_BENCH=OFF \
    -DSC_BUILD_CLI=OFF -DSC_BUILD_EXAMPLES=OFF "$@" >/dev/null
  cmake --build "$dir" -j2 --target check_crash check_powerloss check_oom \
    check_model check_bank check_iofault check_worker
}

run() { # name, command...
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failures=$((failures + 1))
    echo "!! $name FAILED"
  fi
}

soak() { # build dir
  local t=$1/tests
  export SC_TEST_TMPDIR=$PWD/$1/tests/tmp
  mkdir -p "$SC_TEST_TMPDIR"
  run "crash ($1)" env SC_CRASH_ROUNDS=$((500 * scale)) "$t/check_crash"
  run "powerloss ($1)" env SC_POWERLOSS_ROUNDS=$((1000 * scale)) \
    "$t/check_powerloss"
  run "oom ($1)" env SC_OOM_STRIDE=1 "$t/check_oom"
  run "iofault ($1)" "$t/check_iofault"
  run "bank ($1)" env SC_BANK_OPS=$((5000 * scale)) "$t/check_bank"
  run "retention ($1)" env SC_RETENTION_SECONDS=$((120 * scale)) \
    CK_TIMEOUT_MULTIPLIER=$((scale + 1)) "$t/check_worker"
  local base=${SC_SOAK_SEED:-$(date +%s)}
  for ((i = 0; i < 20 * scale; i++)); do
    run "model seed $((base + i)) ($1)" env SC_MODEL_SEED=$((base + i)) \
      SC_MODEL_ROUNDS=1500 "$t/check_model"
  done
}

build build-soak
soak build-soak

if [[ -n ${SC_SOAK_ASAN:-} ]]; then
  build build-soak-asan -DCMAKE_BUILD_TYPE=Debug \
    -DSC_SANITIZE=address,undefined
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 soak build-soak-asan
fi

if [[ -n ${SC_SOAK_FUZZ:-} ]]; then
  for target in decode api; do
    run "fuzz $target" env SC_FUZZ_TARGET=$target SC_FUZZ_DIR=build-soak-fuzz \
      scripts/fuzz.sh "$SC_SOAK_FUZZ"
  done
fi

echo "soak: ${passed} passed, ${failures} failed"
[[ $failures -eq 0 ]]
