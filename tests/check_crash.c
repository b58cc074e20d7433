/* Crash test: a forked child runs the mixed load of crashload.h on several
 * threads and reports every operation through a pipe; the parent SIGKILLs
 * it at a random moment, reopens the file and checks that every
 * acknowledged operation is there, that no operation reported as failed
 * left a trace, that operations in flight at the kill are either wholly
 * there or wholly absent, and that sc_verify and PRAGMA integrity_check
 * pass. The OS keeps its page cache across a kill, so this cannot catch a
 * missing fsync: check_powerloss does.
 *
 * In half the rounds the fault VFS (faultvfs.c) first fails one sync or one
 * write of the child, at random: an operation failed with SC_IOERR must
 * have left no trace, an SC_AMBIGUOUS one (its commit's fsync failed, or
 * the handle refused writes since) may be there or not and counts only if
 * it is, and after the child's next reopen writes work again.
 *
 * A second test kills such a child while it holds the write turn
 * (lib/sqlite/turn.c) in the middle of a batch, beside other processes writing
 * the same file: they go on within their busy timeout, and the same checks
 * hold.
 *
 *   SC_CRASH_ROUNDS=N   rounds (default 20)
 *   SC_CRASH_SEED=S     the first round's seed (default: from the clock);
 *                       round r uses S + r, and every seed is printed. */
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crashload.h"
#include "faultvfs.h"
#include "sqlite/turn.h"

/* faultvfs.c is compiled into this suite (one executable per check_*.c). */
#include "faultvfs.c"

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The child's fault: one sync or write fails (armed before it opens). */
typedef struct child_fault {
  int kind; /* FV_SYNC or FV_WRITE */
  long at;
} child_fault;

static void arm_fault(void *ud) {
  const child_fault *f = ud;
  if (fv_register() != SQLITE_OK) _exit(24);
  fv_arm(f->kind, f->at, false);
}

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
    /* Every other round fails one sync or one write of the child early on,
     * and the kill comes after it. */
    child_fault f = {0};
    if (round % 4 == 1)
      f = (child_fault){FV_SYNC, (long)tu_rng_range(&rng, 1, 10)};
    if (round % 4 == 3)
      f = (child_fault){FV_WRITE, (long)tu_rng_range(&rng, 1, 100)};
    w.faulted = f.kind != 0;
    /* Mostly mid-load; some kills land during open or the first batch. */
    int64_t kill_us = tu_rng_range(&rng, 0, 3) == 0 && !w.faulted
                          ? tu_rng_range(&rng, 0, 20000)
                          : tu_rng_range(&rng, 20000, 600000);
    char what[32] = "no fault";
    if (f.kind != 0) {
      snprintf(what, sizeof what, "failing %s %ld",
               f.kind == FV_SYNC ? "sync" : "write", f.at);
    }
    printf("crash round %d: seed %llu, %s, %s, kill after %lld us\n", round,
           (unsigned long long)w.seed,
           durability == SC_DURABILITY_FULL ? "FULL" : "NORMAL", what,
           (long long)kill_us);
    fflush(stdout);
    char *path = tu_db_path("crash");
    cl_setup_world(path, &w);
    cl_log lg;
    cl_run(path, &w, durability, kill_us, w.faulted ? arm_fault : NULL, &f, 0,
           &lg);
    cl_summary s;
    cl_check(path, &w, &lg, false, &s);
    printf(
        "  %zu records, %lld acknowledged ok, %lld refused (%lld SC_IOERR, "
        "%lld SC_AMBIGUOUS)\n",
        lg.n, (long long)s.acked, (long long)s.refused, (long long)s.ioerr,
        (long long)s.ambiguous);
    cl_summary_add(&total, &s);
    cl_log_free(&lg);
    tu_remove_db(path);
  }
  /* The kills must not all land before any work: the test would prove
   * nothing. */
  ck_assert_int_gt(total.acked, 0);
  /* Nor may the faults all miss (a full run has ten fault rounds). */
  if (rounds >= 20) ck_assert_int_gt(total.ioerr + total.ambiguous, 0);
  cl_summary_print("crash", &total);
}
END_TEST

/* ---- a holder of the write turn killed mid-batch ------------------------ */

#define SURVIVORS 2
#define SURVIVOR_THREADS 4
#define SURVIVOR_BUSY_MS 3000
#define SURVIVOR_USERS 500000 /* apart from the victim's users */
#define SLOW_SYNC_MS 20       /* the victim's batches hold the turn that long */

/* A survivor's sample, sent every few ms: its acknowledged and failed
 * issues so far. */
typedef struct sample {
  int32_t proc, last;
  int64_t at_ns, ok, failed;
} sample;

typedef struct survivor {
  sc_db *db;
  sc_id policy;
  int proc, out_fd, stop_fd;
  atomic_bool stop;
  atomic_llong ok, failed;
} survivor;

static void survivor_report(survivor *s, bool last) {
  sample m = {.proc = s->proc,
              .last = last,
              .at_ns = now_ns(),
              .ok = atomic_load(&s->ok),
              .failed = atomic_load(&s->failed)};
  if (write(s->out_fd, &m, sizeof m) != (ssize_t)sizeof m) _exit(30);
}

static void survivor_thread(int t, void *ud) {
  survivor *s = ud;
  if (t == SURVIVOR_THREADS) { /* the sampler: until the stop pipe closes */
    for (;;) {
      struct pollfd p = {.fd = s->stop_fd, .events = POLLIN};
      if (poll(&p, 1, 5) != 0) break;
      survivor_report(s, false);
    }
    atomic_store(&s->stop, true);
    return;
  }
  sc_id user = SURVIVOR_USERS + (sc_id)s->proc * 10000 + t * 1000;
  for (int64_t i = 0; !atomic_load(&s->stop); i++) {
    if (sc_coupon_issue(s->db, s->policy, user + i % 1000, NULL) == SC_OK) {
      atomic_fetch_add(&s->ok, 1);
    } else {
      atomic_fetch_add(&s->failed, 1);
    }
  }
}

static void survivor_main(const char *path, sc_id policy, int proc, int out_fd,
                          int stop_fd) {
  static survivor s;
  s = (survivor){
      .policy = policy, .proc = proc, .out_fd = out_fd, .stop_fd = stop_fd};
  sc_options o;
  sc_options_init(&o);
  o.busy_timeout_ms = SURVIVOR_BUSY_MS;
  if (sc_open(path, &o, &s.db) != SC_OK) _exit(31);
  tu_race(SURVIVOR_THREADS + 1, survivor_thread, &s);
  survivor_report(&s, true); /* every thread has returned */
  if (sc_close(s.db) != SC_OK) _exit(32);
  _exit(0);
}

/* The victim: the crash load on a slow disk, so that a batch holds the turn
 * for a while. */
static void slow_disk(void *ud) {
  (void)ud;
  if (fv_register() != SQLITE_OK) _exit(24);
  fv_slow_syncs(SLOW_SYNC_MS);
}

/* The moment to kill: the victim, stopped, holds the turn (its holder is
 * set only while it holds the lock under it). */
static bool victim_holds_turn(void *ud, pid_t victim) {
  pid_t holder = 0;
  uint32_t deaths = 0;
  ck_assert_sc(sc__turn_peek(ud, &holder, &deaths), SC_OK);
  return holder == victim;
}

START_TEST(a_killed_turn_holder_leaves_the_others_writing) {
  uint64_t seed = cl_env_u64("SC_CRASH_SEED", (uint64_t)time(NULL));
  cl_world w = {.seed = seed};
  uint64_t rng = seed;
  int64_t kill_us = tu_rng_range(&rng, 200000, 500000);
  printf("killed holder: seed %llu, kill after %lld us\n",
         (unsigned long long)seed, (long long)kill_us);
  char *path = tu_db_path("crash-turn");
  cl_setup_world(path, &w);
  int out[2], stop[2];
  ck_assert_int_eq(pipe(out), 0);
  ck_assert_int_eq(pipe(stop), 0);
  pid_t pids[SURVIVORS];
  for (int k = 0; k < SURVIVORS; k++) {
    pids[k] = fork();
    ck_assert_int_ge(pids[k], 0);
    if (pids[k] == 0) {
      close(out[0]);
      close(stop[1]);
      survivor_main(path, w.policy_big, k, out[1], stop[0]);
    }
  }
  close(out[1]);
  close(stop[0]);
  /* The victim starts once every survivor is writing. */
  cl_bytes b = {0};
  for (bool all = false; !all;) {
    cl_drain(out[0], &b, now_ns() + 5000000);
    all = true;
    for (int k = 0; k < SURVIVORS; k++) {
      bool writing = false;
      for (size_t i = 0; i + sizeof(sample) <= b.len; i += sizeof(sample)) {
        const sample *m = (const sample *)(b.buf + i);
        writing = writing || (m->proc == k && m->ok > 0);
      }
      all = all && writing;
    }
  }
  cl_log lg;
  int64_t killed_at = 0;
  cl_run_kill_when(path, &w, SC_DURABILITY_FULL, kill_us, victim_holds_turn,
                   slow_disk, path, &lg, &killed_at);
  /* The survivors keep the pipe flowing; a second after the kill they stop. */
  cl_drain(out[0], &b, killed_at + 1000 * 1000000LL);
  close(stop[1]);
  cl_drain(out[0], &b, 0);
  close(out[0]);
  for (int k = 0; k < SURVIVORS; k++) {
    int status = 0;
    ck_assert_int_eq(waitpid(pids[k], &status, 0), pids[k]);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "survivor %d ended with status 0x%x", k, status);
  }
  pid_t holder = 0;
  uint32_t deaths = 0;
  ck_assert_sc(sc__turn_peek(path, &holder, &deaths), SC_OK);
  ck_assert_msg(deaths >= 1, "the victim was not killed holding the turn");

  /* Each survivor acknowledged issues after the kill, the first within its
   * busy timeout, and none of its issues failed. */
  ck_assert_int_eq(b.len % sizeof(sample), 0);
  const sample *ms = (const sample *)b.buf;
  size_t n = b.len / sizeof(sample);
  int64_t total_ok = 0;
  for (int k = 0; k < SURVIVORS; k++) {
    int64_t ok_at_kill = -1, resumed_ns = 0;
    const sample *last = NULL;
    for (size_t i = 0; i < n; i++) {
      if (ms[i].proc != k) continue;
      if (ms[i].at_ns <= killed_at) ok_at_kill = ms[i].ok;
      if (ms[i].at_ns > killed_at && ok_at_kill >= 0 && resumed_ns == 0 &&
          ms[i].ok > ok_at_kill) {
        resumed_ns = ms[i].at_ns;
      }
      last = &ms[i];
    }
    ck_assert_ptr_nonnull(last);
    ck_assert_int_eq(last->last, 1);
    ck_assert_msg(resumed_ns != 0, "survivor %d wrote nothing after the kill",
                  k);
    printf(
        "  survivor %d: %lld issues, the first after the kill %.1f ms"
        " after it\n",
        k, (long long)last->ok, (double)(resumed_ns - killed_at) / 1e6);
    ck_assert_int_lt(resumed_ns - killed_at, SURVIVOR_BUSY_MS * 1000000LL);
    ck_assert_int_eq(last->failed, 0);
    total_ok += last->ok;
  }
  free(b.buf);
  /* The victim's acknowledged operations are all there. */
  cl_summary s;
  cl_check(path, &w, &lg, false, &s);
  printf("  victim: %zu records, %lld acknowledged ok\n", lg.n,
         (long long)s.acked);
  ck_assert_int_gt(s.acked, 0);
  char sql[128];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM sc_coupon WHERE user_id >= %d",
           SURVIVOR_USERS);
  ck_assert_int_eq(tu_count(path, sql), total_ok);
  cl_log_free(&lg);
  tu_remove_db(path);
}
END_TEST

int main(void) {
  Suite *s = suite_create("crash");
  TCase *tc = tu_tcase("crash");
  tcase_add_test(tc, acknowledged_operations_survive_sigkill);
  tcase_add_test(tc, a_killed_turn_holder_leaves_the_others_writing);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
