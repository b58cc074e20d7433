/* Power-loss test: a forked child opens the database through the power-loss
 * VFS (powerlossvfs.h, registered as SQLite's default VFS in the child only)
 * and runs the mixed load of crashload.h on several threads, reporting every
 * operation through a pipe. At a random moment (a timer, or just before the
 * nth write, truncation, sync or delete of a database or WAL file) power is
 * lost: every write not yet fsynced is dropped, or a random subset of them
 * survives at 512-byte sector granularity, some sectors torn; created or
 * deleted files may or may not keep their directory entry; the -shm index is
 * gone. The parent then reopens the file with the normal VFS and checks it
 * (crashload.h): with SC_DURABILITY_FULL every acknowledged operation is
 * there; with SC_DURABILITY_NORMAL the last commits may be lost, but only as
 * a whole and only the last ones; in both, nothing refused left a trace,
 * operations in flight are all or nothing, and sc_verify and
 * integrity_check pass. Rounds alternate FULL and NORMAL.
 *
 *   SC_POWERLOSS_ROUNDS=N       rounds (default 60)
 *   SC_POWERLOSS_SEED=S         the first round's seed (default: the clock);
 *                               round r uses S + r, and each is printed
 *   SC_POWERLOSS_IGNORE_SYNC=1  the disk lies about fsync (see
 *                               powerlossvfs.h): FULL rounds must then fail,
 *                               which shows that the checks bite */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "crashload.h"
#include "powerlossvfs.h"

typedef struct loss_plan {
  int mode;
  uint64_t seed;
  double keep, torn;
  long nth_call;    /* 0: the timer only */
  int64_t after_us; /* the timer */
} loss_plan;

static void *power_timer(void *arg) {
  const loss_plan *p = arg;
  usleep((useconds_t)p->after_us);
  pl_power_loss();
}

/* Runs first in the child: every file it opens from here goes through the
 * shim, and power goes out by the plan. */
static void child_init(void *ud) {
  const loss_plan *p = ud;
  if (pl_register() != 0) _exit(30);
  pl_configure(p->mode, p->seed, p->keep, p->torn);
  pl_arm(p->nth_call);
  pthread_t t;
  if (pthread_create(&t, NULL, power_timer, ud) != 0) _exit(31);
}

static const char *mode_name(const loss_plan *p) {
  return p->mode == PL_DROP_ALL ? "drop all" : "subset";
}

START_TEST(acknowledged_operations_survive_power_loss) {
  int rounds = (int)cl_env_u64("SC_POWERLOSS_ROUNDS", 60);
  uint64_t base = cl_env_u64("SC_POWERLOSS_SEED", (uint64_t)time(NULL));
  cl_summary total = {0}, normal = {0};
  int normal_rounds = 0;
  for (int round = 0; round < rounds; round++) {
    cl_world w = {.seed = base + (uint64_t)round};
    uint64_t rng = w.seed;
    int durability = round % 2 ? SC_DURABILITY_NORMAL : SC_DURABILITY_FULL;
    loss_plan plan = {.seed = tu_rng_next(&rng)};
    plan.mode = tu_rng_range(&rng, 0, 2) == 0 ? PL_DROP_ALL : PL_SUBSET;
    plan.keep = (double)tu_rng_range(&rng, 1, 9) / 10;
    plan.torn = tu_rng_range(&rng, 0, 1) ? 0.05 : 0;
    /* Mostly mid-load; some losses land during open or the first batch. */
    plan.after_us = tu_rng_range(&rng, 0, 3) == 0
                        ? tu_rng_range(&rng, 0, 20000)
                        : tu_rng_range(&rng, 20000, 300000);
    /* Half the rounds lose power at an I/O call: mid-commit, right before
     * an fsync, inside a checkpoint. */
    if (tu_rng_range(&rng, 0, 1)) plan.nth_call = tu_rng_range(&rng, 1, 4000);
    printf(
        "powerloss round %d: seed %llu, %s, %s (keep %.1f, torn %.2f), "
        "at I/O call %ld or after %lld us\n",
        round, (unsigned long long)w.seed,
        durability == SC_DURABILITY_FULL ? "FULL" : "NORMAL", mode_name(&plan),
        plan.keep, plan.torn, plan.nth_call, (long long)plan.after_us);
    fflush(stdout);
    char *path = tu_db_path("powerloss");
    cl_setup_world(path, &w);
    cl_log lg;
    cl_run(path, &w, durability, -1, child_init, &plan, PL_EXIT_CODE, &lg);
    cl_summary s;
    cl_check(path, &w, &lg, durability == SC_DURABILITY_NORMAL, &s);
    printf("  %zu records, %lld acknowledged ok, %lld refused, %lld lost\n",
           lg.n, (long long)s.acked, (long long)s.refused, (long long)s.lost);
    cl_summary_add(&total, &s);
    if (durability == SC_DURABILITY_NORMAL) {
      cl_summary_add(&normal, &s);
      normal_rounds++;
    }
    cl_log_free(&lg);
    tu_remove_db(path);
  }
  /* The losses must not all land before any work: the test would prove
   * nothing. */
  ck_assert_int_gt(total.acked, 0);
  /* Nor may the simulation keep what was never synced: NORMAL commits
   * without fsync, so over enough rounds some acknowledged ones are lost. */
  if (normal_rounds >= 10) ck_assert_int_gt(normal.lost, 0);
  cl_summary_print("powerloss", &total);
}
END_TEST

int main(void) {
  Suite *s = suite_create("powerloss");
  TCase *tc = tu_tcase("powerloss");
  tcase_add_test(tc, acknowledged_operations_survive_power_loss);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
