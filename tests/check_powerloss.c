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
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

/* ---- the shim's own model, file by file ---------------------------------- */

typedef struct model_case {
  const char *path;
  int mode;
  double keep;
} model_case;

static sqlite3_file *model_open(sqlite3_vfs *vfs, const char *path) {
  sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
  int out = 0;
  if (f == NULL ||
      vfs->xOpen(vfs, path, f,
                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_WAL,
                 &out) != SQLITE_OK) {
    _exit(40);
  }
  return f;
}

static void model_write(sqlite3_file *f, char c, int n, int64_t off) {
  char buf[8192];
  memset(buf, c, (size_t)n);
  if (f->pMethods->xWrite(f, buf, n, off) != SQLITE_OK) _exit(41);
}

/* In a child: "a" is written 4 KiB of 'A' and synced, then overwritten
 * with 'B', extended and truncated, unsynced; "b" is created and written,
 * never synced; "c" is written, synced and deleted without a directory
 * sync; then power is lost. */
static void model_child(void *ud) {
  const model_case *mc = ud;
  /* Zero-filled: SQLite passes names followed by two NULs. The unix VFS
   * gives a WAL the mode of its database, which must exist. */
  char a[600] = {0}, b[600] = {0}, c[600] = {0};
  int fd = open(mc->path, O_WRONLY | O_CREAT, 0644);
  if (fd < 0) _exit(46);
  close(fd);
  snprintf(a, sizeof a, "%s-a", mc->path);
  snprintf(b, sizeof b, "%s-b", mc->path);
  snprintf(c, sizeof c, "%s-c", mc->path);
  if (pl_register() != 0) _exit(30);
  pl_configure(mc->mode, 1, mc->keep, 0);
  sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
  sqlite3_file *fa = model_open(vfs, a);
  model_write(fa, 'A', 4096, 0);
  if (fa->pMethods->xSync(fa, SQLITE_SYNC_FULL) != SQLITE_OK) _exit(42);
  model_write(fa, 'B', 1000, 100);
  model_write(fa, 'B', 4096, 8192);
  if (fa->pMethods->xTruncate(fa, 6000) != SQLITE_OK) _exit(43);
  sqlite3_file *fb = model_open(vfs, b);
  model_write(fb, 'b', 512, 0);
  sqlite3_file *fc = model_open(vfs, c);
  model_write(fc, 'c', 700, 0);
  if (fc->pMethods->xSync(fc, SQLITE_SYNC_FULL) != SQLITE_OK) _exit(44);
  fc->pMethods->xClose(fc);
  if (vfs->xDelete(vfs, c, 0) != SQLITE_OK) _exit(45);
  pl_power_loss();
}

/* The file's bytes as a string of runs, "A4096", "A100B1000A2996"... */
static void runs_of(const char *path, char *out, size_t cap) {
  FILE *f = fopen(path, "rb");
  out[0] = '\0';
  if (f == NULL) {
    snprintf(out, cap, "missing");
    return;
  }
  int prev = -1, c;
  long n = 0;
  size_t len = 0;
  while ((c = fgetc(f)) != EOF || prev != -1) {
    if (c != prev && prev != -1) {
      len +=
          (size_t)snprintf(out + len, cap - len, "%c%ld", prev ? prev : '0', n);
      n = 0;
    }
    if (c == EOF) break;
    prev = c;
    n++;
  }
  fclose(f);
}

static void run_model(model_case *mc, char *a, char *b, char *c, size_t cap) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) model_child(mc);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == PL_EXIT_CODE,
                "status 0x%x", status);
  char path[600];
  snprintf(path, sizeof path, "%s-a", mc->path);
  runs_of(path, a, cap);
  unlink(path);
  snprintf(path, sizeof path, "%s-b", mc->path);
  runs_of(path, b, cap);
  unlink(path);
  snprintf(path, sizeof path, "%s-c", mc->path);
  runs_of(path, c, cap);
  unlink(path);
}

START_TEST(power_loss_keeps_synced_images_only) {
  char *path = tu_db_path("plmodel");
  model_case mc = {.path = path, .mode = PL_DROP_ALL};
  char a[256], b[256], c[256];
  run_model(&mc, a, b, c, sizeof a);
  /* Unsynced overwrite, extension and truncation all undone; the created
   * file is gone with its directory entry; the deleted one is back. */
  ck_assert_str_eq(a, "A4096");
  ck_assert_str_eq(b, "missing");
  ck_assert_str_eq(c, "c700");
  /* Everything pending survives when each sector is kept: the writes and
   * then the truncation, in order ("b" and "c" may or may not keep their
   * directory change, by the seed). */
  mc.mode = PL_SUBSET;
  mc.keep = 1.0;
  run_model(&mc, a, b, c, sizeof a);
  ck_assert_str_eq(a,
                   "A100B1000A2996"
                   "0"
                   "1904");
  ck_assert_msg(strcmp(b, "missing") == 0 || strcmp(b, "b512") == 0, "%s", b);
  ck_assert_msg(strcmp(c, "missing") == 0 || strcmp(c, "c700") == 0, "%s", c);
  tu_remove_db(path);
}
END_TEST

int main(void) {
  Suite *s = suite_create("powerloss");
  TCase *tc = tu_tcase("powerloss");
  tcase_add_test(tc, power_loss_keeps_synced_images_only);
  tcase_add_test(tc, acknowledged_operations_survive_power_loss);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
