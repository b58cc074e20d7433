#!/usr/bin/env bash
# Builds and runs every test:
#   1. the suites in a normal build (RelWithDebInfo), Python and CLI included;
#   2. the C suites, the CLI tests and http_shop's tests again under
#      AddressSanitizer + UndefinedBehaviorSanitizer;
#   2b. the PostgreSQL suites (label pg) of both builds, in one throwaway
#      cluster (scripts/pg-cluster.sh);
#   3. the concurrency suites under ThreadSanitizer;
#   4. short libFuzzer runs of the payload decoder, of API call sequences
#      and of http_shop's request path (long campaigns: scripts/fuzz.sh;
#      long soaks: scripts/soak.sh);
#   5. the engine, codec, async and worker suites under valgrind memcheck.
# Ends with one line "tests: N passed, M failed" (N and M count ctest tests
# and the valgrind runs). SC_TEST_QUICK=1 runs step 1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

jobs=$(nproc)
passed=0
failed=0

# Adds the counts of a ctest log to the totals. A test that did not run
# (skipped) counts as neither.
count_ctest_log() { # log
  local line total bad skipped
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$1" | tail -1 || true)
  skipped=$(grep -cE "Not Run|\*\*\*Skipped" "$1" || true)
  if [[ -z $line ]]; then # ctest itself failed: count the run as one failure
    failed=$((failed + 1))
    return
  fi
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
  passed=$((passed + total - bad - skipped))
  failed=$((failed + bad))
}

# Runs ctest in a build directory and adds its counts to the totals.
run_ctest() { # build-dir, ctest args...
  local dir=$1 log
  shift
  log=$(mktemp)
  (cd "$dir" && ctest --output-on-failure -j"$jobs" "$@") 2>&1 | tee "$log" || true
  count_ctest_log "$log"
  rm -f "$log"
}

# The PostgreSQL suites (label pg) of each build directory given, all in
# one throwaway cluster of their own (scripts/pg-cluster.sh), which exports
# PGHOST, PGPORT, ... for the tests (and SC_TEST_PG_CTL: check_pg crashes
# and restarts the server) and drops the cluster afterwards. A
# cluster that cannot start leaves no log: each build counts as a failure.
run_pg_suites() { # build-dir...
  local logs dir
  logs=$(mktemp -d)
  # shellcheck disable=SC2016 # expanded by the inner shell
  scripts/pg-cluster.sh -o fsync=off bash -c '
    logs=$1; jobs=$2; shift 2
    for dir in "$@"; do
      (cd "$dir" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        CK_TIMEOUT_MULTIPLIER=4 ctest --output-on-failure -j"$jobs" -L pg) \
        >"$logs/$(basename "$dir")" 2>&1 || true
    done' pg "$logs" "$jobs" "$@" || true
  for dir in "$@"; do
    cat "$logs/$(basename "$dir")" 2>/dev/null || true
    count_ctest_log "$logs/$(basename "$dir")"
  done
  rm -rf "$logs"
}

build() { # dir, cmake args...: the build scripts/run.sh makes
  scripts/build.sh "$@"
}

echo "== 1. normal build"
build build
run_ctest build -LE pg

if [[ -z ${SC_TEST_QUICK:-} ]]; then
  echo "== 2. AddressSanitizer + UndefinedBehaviorSanitizer"
  # Examples stay on for http_shop: its tests (label http) run here too.
  build build-asan -DCMAKE_BUILD_TYPE=Debug -DSC_SANITIZE=address,undefined \
    -DSC_BUILD_PYTHON=OFF -DSC_BUILD_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    CK_TIMEOUT_MULTIPLIER=4 run_ctest build-asan -L 'unit|concurrency|cli|http' \
    -E cli_report_chromium

  echo "== 2b. PostgreSQL backend (normal and ASan builds, one cluster)"
  run_pg_suites build build-asan

  echo "== 3. ThreadSanitizer (concurrency suites)"
  build build-tsan -DCMAKE_BUILD_TYPE=Debug -DSC_SANITIZE=thread \
    -DSC_BUILD_PYTHON=OFF -DSC_BUILD_BENCH=OFF -DSC_BUILD_CLI=OFF \
    -DSC_BUILD_EXAMPLES=OFF
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" \
    CK_TIMEOUT_MULTIPLIER=6 run_ctest build-tsan -L concurrency

  echo "== 4. libFuzzer targets (short runs: decoder, API call sequences, HTTP)"
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DSC_BUILD_FUZZ=ON \
    -DSC_BUILD_PYTHON=OFF -DSC_BUILD_BENCH=OFF -DSC_BUILD_CLI=OFF \
    -DSC_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build build-fuzz -j"$jobs" --target fuzz_decode fuzz_api fuzz_http
  run_ctest build-fuzz -L fuzz

  echo "== 5. valgrind memcheck (engine, codec, async and worker suites)"
  # Suites that fork are left out: a forked child exits holding memory its
  # parent allocated, which valgrind counts against it.
  for suite in check_engine check_codec check_async check_worker; do
    if (cd build && CK_FORK=no SC_TEST_TMPDIR=$PWD/tests/tmp valgrind -q \
        --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
        ./tests/$suite); then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
    fi
  done
fi

if [[ -n ${SC_TEST_QUICK:-} ]]; then
  echo "== PostgreSQL backend (one cluster)"
  run_pg_suites build
fi

echo "tests: ${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
