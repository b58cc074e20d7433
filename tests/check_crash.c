/* Crash test: a forked child runs the mixed load of crashload.h on several
 * threads and reports every operation through a pipe; the parent SIGKILLs
 * it at a random moment, reopens the file and checks that every
 * acknowledged operation is there, that no operation reported as failed
 * left a trace, that operations in flight at the kill are either wholly
 * there or wholly absent, and that sc_verify and PRAGMA integrity_check
 * pass. The OS keeps its page cache across a kill, so this cannot catch a
 * missing fsync: check_powerloss does.
 *
 *   SC_CRASH_ROUNDS=N   rounds (default 20)
 *   SC_CRASH_SEED=S     the first round's seed (default: from the clock);
 *                       round r uses S + r, and every seed is printed. */
#include <stdio.h>
#include <time.h>

#include "crashload.h"

START_TEST(acknowledged_operations_survive_sigkill) {
  int rounds = (int)cl_env_u64("SC_CRASH_ROUNDS", 20);
  uint64_t base = cl_env_u64("SC_CRASH_SEED", (uint64_t)time(NULL));
  cl_summary total = {0};
  for (int round = 0; round < rounds; round++) {
    cl_world w = {.seed = base + (uint64_t)round};
    uint64_t rng = w.seed;
    /* Every fifth round runs with synchronous=NORMAL: it too must survive a
     * process crash (only a power loss may cost it the last commits). */
    int durability = round % 5 == 4 ? SC_DURABILITY_NORMAL : SC_DURABILITY_FULL;
    /* Mostly mid-load; some kills land during open or the first batch. */
    int64_t kill_us = tu_rng_range(&rng, 0, 3) == 0
                          ? tu_rng_range(&rng, 0, 20000)
                          : tu_rng_range(&rng, 20000, 600000);
    printf("crash round %d: seed %llu, %s, kill after %lld us\n", round,
           (unsigned long long)w.seed,
           durability == SC_DURABILITY_FULL ? "FULL" : "NORMAL",
           (long long)kill_us);
    fflush(stdout);
    char *path = tu_db_path("crash");
    cl_setup_world(path, &w);
    cl_log lg;
    cl_run(path, &w, durability, kill_us, NULL, NULL, 0, &lg);
    cl_summary s;
    cl_check(path, &w, &lg, false, &s);
    printf("  %zu records, %lld acknowledged ok, %lld refused\n", lg.n,
           (long long)s.acked, (long long)s.refused);
    cl_summary_add(&total, &s);
    cl_log_free(&lg);
    tu_remove_db(path);
  }
  /* The kills must not all land before any work: the test would prove
   * nothing. */
  ck_assert_int_gt(total.acked, 0);
  cl_summary_print("crash", &total);
}
END_TEST

int main(void) {
  Suite *s = suite_create("crash");
  TCase *tc = tu_tcase("crash");
  tcase_add_test(tc, acknowledged_operations_survive_sigkill);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
