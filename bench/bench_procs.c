/* Several processes on one database file: 1, 2, 4 and 8 processes x 16
 * threads issue coupons (durable, synchronous=FULL) on one file, all
 * started together, and each process's share of the total, its p99 and the
 * total are printed; beside them, one process with as many threads as the
 * 4-process run has in all (64), the rate the processes together should
 * reach. The write turn (lib/sqlite/turn.c) is what keeps the shares even.
 *
 *   bench_procs [--seconds S] [--threads T] [--procs 1,2,4,8]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_PROCS 16

typedef struct proc_ctx {
  sc_db *db;
  sc_id policy;
  int64_t user_base;
} proc_ctx;

static int issue(int t, int64_t i, void *ud) {
  (void)t;
  proc_ctx *c = ud;
  return sc_coupon_issue(c->db, c->policy, c->user_base + i + 1, NULL);
}

static void die(const char *what, sc_db *db) {
  fprintf(stderr, "bench_procs: %s: %s\n", what, sc_errmsg(db));
  exit(1);
}

static sc_id setup(const char *path) {
  sc_db *db = NULL;
  if (sc_open(path, NULL, &db) != SC_OK) die("open", NULL);
  sc_coupon_policy_spec spec = {.name = "bench", .max_count = INT64_MAX / 2};
  sc_id policy = 0;
  if (sc_coupon_policy_create(db, &spec, &policy) != SC_OK) die("policy", db);
  sc_close(db);
  return policy;
}

/* A child: opens the file, says it is ready, waits for the start, runs,
 * and writes its result to the pipe. */
static void child(const char *path, sc_id policy, int k, int threads,
                  double seconds, int ready_fd, int go_fd, int out_fd) {
  proc_ctx c = {.policy = policy, .user_base = (int64_t)(k + 1) << 40};
  if (sc_open(path, NULL, &c.db) != SC_OK) die("open", NULL);
  char b = 'r';
  if (write(ready_fd, &b, 1) != 1 || read(go_fd, &b, 1) != 1) _exit(2);
  bu_result r = bu_run("procs", "", threads, seconds, issue, &c);
  sc_close(c.db);
  if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(3);
  _exit(0);
}

/* Runs procs processes x threads on a fresh file; fills res[0..procs). */
static void run(int procs, int threads, double seconds, bu_result *res) {
  if (procs < 1 || procs > MAX_PROCS) exit(1);
  char path[1024];
  bu_db_path(path, sizeof path, "procs");
  sc_id policy = setup(path);
  int ready[2], go[2], out[2];
  if (pipe(ready) || pipe(go) || pipe(out)) exit(1);
  pid_t pids[MAX_PROCS];
  for (int k = 0; k < procs; k++) {
    pids[k] = fork();
    if (pids[k] < 0) exit(1);
    if (pids[k] == 0) {
      child(path, policy, k, threads, seconds, ready[1], go[0], out[1]);
    }
  }
  char b;
  for (int k = 0; k < procs; k++) {
    if (read(ready[0], &b, 1) != 1) exit(1);
  }
  char start[MAX_PROCS];
  memset(start, 'g', sizeof start);
  if (write(go[1], start, (size_t)procs) != (ssize_t)procs) exit(1);
  for (int k = 0; k < procs; k++) {
    /* Results arrive in finishing order; each is one atomic pipe write. */
    if (read(out[0], &res[k], sizeof res[k]) != (ssize_t)sizeof res[k]) {
      fprintf(stderr, "bench_procs: a child failed\n");
      exit(1);
    }
  }
  for (int k = 0; k < procs; k++) {
    int status;
    waitpid(pids[k], &status, 0);
  }
  close(ready[0]), close(ready[1]), close(go[0]), close(go[1]);
  close(out[0]), close(out[1]);
  bu_remove_db(path);
}

/* Prints one run: each process's rate, share and p99, then the total. */
static double report(int procs, int threads, const bu_result *res,
                     double baseline) {
  double total = 0, min_share = 1, max_p99 = 0;
  for (int k = 0; k < procs; k++)
    total += res[k].ops_per_s;
  printf("%d process%s x %d threads:\n", procs, procs == 1 ? "" : "es",
         threads);
  for (int k = 0; k < procs; k++) {
    double share = total > 0 ? res[k].ops_per_s / total : 0;
    if (share < min_share) min_share = share;
    if (res[k].p99_ms > max_p99) max_p99 = res[k].p99_ms;
    printf(
        "  process %d: %9.0f issues/s  share %5.1f%%  p50 %7.2f ms"
        "  p99 %7.2f ms  max %7.2f ms  errors %lld\n",
        k + 1, res[k].ops_per_s, 100 * share, res[k].p50_ms, res[k].p99_ms,
        res[k].max_ms, (long long)res[k].errors);
  }
  printf(
      "  total %9.0f issues/s = %.2fx the baseline;"
      " smallest share %.1f%%, largest p99 %.2f ms\n",
      total, baseline > 0 ? total / baseline : 0, 100 * min_share, max_p99);
  double p50 = 0, p95 = 0;
  int64_t errors = 0;
  for (int k = 0; k < procs; k++) {
    if (res[k].p50_ms > p50) p50 = res[k].p50_ms;
    if (res[k].p95_ms > p95) p95 = res[k].p95_ms;
    errors += res[k].errors;
  }
  /* run_all.py's record: threads counts every process's callers; the
   * percentiles are the worst process's. */
  printf(
      "BENCH_JSON {\"bench\":\"coupon_issue_procs\",\"variant\":\"%s\","
      "\"procs\":%d,\"threads\":%d,\"ops_per_s\":%.1f,\"errors\":%lld,"
      "\"p50_ms\":%.4f,\"p95_ms\":%.4f,\"p99_ms\":%.4f,"
      "\"vs_one_process\":%.3f,\"min_share\":%.4f}\n",
      baseline > 0 ? "processes" : "one_process", procs, procs * threads, total,
      (long long)errors, p50, p95, max_p99, baseline > 0 ? total / baseline : 0,
      min_share);
  fflush(stdout);
  return total;
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 3.0);
  int threads = 16, one = 16;
  bu_arg_list(argc, argv, "--threads", &threads, 1, &one, 1);
  int procs[8];
  const int dflt[] = {1, 2, 4, 8};
  int n = bu_arg_list(argc, argv, "--procs", procs, 8, dflt, 4);
  printf("== coupon issuance, durable, several processes on one file\n");
  /* The baseline: all the threads of the 4-process run in one process. */
  bu_result res[MAX_PROCS];
  run(1, 4 * threads, seconds, res);
  printf("baseline: ");
  double baseline = report(1, 4 * threads, res, 0);
  for (int i = 0; i < n; i++) {
    if (procs[i] < 1 || procs[i] > MAX_PROCS) continue;
    run(procs[i], threads, seconds, res);
    report(procs[i], threads, res, baseline);
  }
  double load[3] = {0};
  if (getloadavg(load, 3) == 3) {
    printf("load average: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
  }
  return 0;
}
