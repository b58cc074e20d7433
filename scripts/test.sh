#!/usr/bin/env bash
# Builds and runs every test: the suites in a normal build, again under
# AddressSanitizer + UndefinedBehaviorSanitizer, the concurrency suites under
# ThreadSanitizer, and one suite under valgrind memcheck.
#   scripts/test.sh            everything (what CI runs)
#   SC_TEST_QUICK=1 scripts/test.sh   the normal build only
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

jobs=$(nproc)
failures=0
passed=0
run_ctest() { # build-dir, ctest args...
  local dir=$1
  shift
  local log
  log=$(mktemp)
  if (cd "$dir" && ctest --output-on-failure -j"$jobs" "$@") | tee "$log"; then :; else
    failures=$((failures + 1))
  fi
  # Count what ctest reports, for the closing line.
  local line
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1 || true)
  if [[ -n $line ]]; then
    local total failed
    total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
    failed=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
    passed=$((passed + total - failed))
    fail_count=$((${fail_count:-0} + failed))
  else
    fail_count=$((${fail_count:-0} + 1))
  fi
  rm -f "$log"
}
build() { # dir, cmake args...
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}

echo "== normal build (RelWithDebInfo)"
build build
run_ctest build

if [[ -z ${SC_TEST_QUICK:-} ]]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer"
  build build-asan -DCMAKE_BUILD_TYPE=Debug -DSC_SANITIZE=address,undefined \
    -DSC_BUILD_PYTHON=OFF -DSC_BUILD_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    CK_TIMEOUT_MULTIPLIER=4 run_ctest build-asan -L 'unit|concurrency'

  echo "== ThreadSanitizer (concurrency suites)"
  build build-tsan -DCMAKE_BUILD_TYPE=Debug -DSC_SANITIZE=thread \
    -DSC_BUILD_PYTHON=OFF -DSC_BUILD_BENCH=OFF -DSC_BUILD_CLI=OFF
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" \
    CK_TIMEOUT_MULTIPLIER=6 run_ctest build-tsan -L concurrency

  echo "== valgrind memcheck (engine suite)"
  if (cd build && CK_FORK=no SC_TEST_TMPDIR=$PWD/tests/tmp valgrind -q --error-exitcode=9 \
      --leak-check=full --errors-for-leak-kinds=definite ./tests/check_engine); then
    passed=$((passed + 1))
  else
    failures=$((failures + 1))
    fail_count=$((${fail_count:-0} + 1))
  fi
fi

echo "tests: ${passed} passed, ${fail_count:-0} failed"
[[ $failures -eq 0 && ${fail_count:-0} -eq 0 ]]
