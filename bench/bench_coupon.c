/* Coupon issuance, durable (synchronous=FULL), at 1, 16, 64 and 500 caller
 * threads:
 *   (a) libshopcore with group commit (the default),
 *   (b) libshopcore with batch_max = 1 (one commit per issue),
 *   (c) plain SQLite: each thread its own connection, one transaction per
 *       issue doing the same conditional UPDATE + INSERT,
 * all in one run, with the ratios a/c and a/b; then the ceiling of any
 * blocking call at that many callers: (a) on a sold-out policy, so each
 * issue is refused after one read (the queue, the writer's batch without
 * a write or an fsync, the completion and the wake-ups, and nothing
 * else), (c) refused likewise, and a bare hand-off between threads with
 * no SQLite (run_bare); (a) as a share of each ceiling.
 *
 *   bench_coupon [--seconds S] [--threads 1,16,64,500] [--no-round-trip]
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"

#define MAX_THREADS 1024

typedef struct lib_ctx {
  sc_db *db;
  sc_id policy;
  int expect; /* SC_OK, or SC_SOLD_OUT for the round trip alone */
} lib_ctx;

static int lib_issue(int t, int64_t i, void *ud) {
  (void)t;
  lib_ctx *c = ud;
  return sc_coupon_issue(c->db, c->policy, i + 1, NULL) != c->expect;
}

/* sold_out: a policy whose one coupon is issued already, so that every
 * issue is refused after one read: the round trip through the queue, the
 * writer's batch (BEGIN, a read, COMMIT with nothing to write, so no
 * fsync) and the completion, with next to no work in it. */
static sc_id create_policy(sc_db *db, bool sold_out) {
  sc_coupon_policy_spec spec = {.name = "bench",
                                .max_count = sold_out ? 1 : INT64_MAX / 2};
  sc_id policy = 0;
  if (sc_coupon_policy_create(db, &spec, &policy) != SC_OK ||
      (sold_out && sc_coupon_issue(db, policy, 1, NULL) != SC_OK)) {
    fprintf(stderr, "policy: %s\n", sc_errmsg(db));
    exit(1);
  }
  return policy;
}

static bu_result run_lib(const char *variant, int batch_max, int threads,
                         double seconds, bool sold_out) {
  char path[1024];
  bu_db_path(path, sizeof path, "coupon-lib");
  sc_options o;
  sc_options_init(&o);
  o.batch_max = batch_max;
  lib_ctx c = {.expect = sold_out ? SC_SOLD_OUT : SC_OK};
  if (sc_open(path, &o, &c.db) != SC_OK) {
    fprintf(stderr, "open: %s\n", sc_errmsg(NULL));
    exit(1);
  }
  c.policy = create_policy(c.db, sold_out);
  sc_metrics_reset(c.db);
  bu_cpu before = bu_cpu_now(c.db);
  bu_result r =
      bu_run("coupon_issue", variant, threads, seconds, lib_issue, &c);
  bu_print(&r);
  bu_print_writer(c.db, "issue", &before, r.ops);
  bu_print_hops(c.db, "coupon_issue", &r);
  sc_close(c.db);
  bu_remove_db(path);
  return r;
}

/* The baseline: what an application without libshopcore would write. */
static const char SQL_CLAIM[] =
    "UPDATE sc_coupon_policy SET issued_count = issued_count + 1"
    " WHERE id = ?1 AND issued_count < max_count";
static const char SQL_INSERT[] =
    "INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms) VALUES(?1, ?2, 0)";

typedef struct plain_conn {
  sqlite3 *h;
  sqlite3_stmt *claim, *insert;
} plain_conn;

typedef struct plain_ctx {
  plain_conn *conns;
  sc_id policy;
  bool sold_out; /* a refusal is the expected outcome */
} plain_ctx;

static int plain_issue(int t, int64_t i, void *ud) {
  plain_ctx *c = ud;
  plain_conn *p = &c->conns[t];
  if (sqlite3_exec(p->h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    return 1;
  }
  sqlite3_bind_int64(p->claim, 1, c->policy);
  int rc = sqlite3_step(p->claim);
  sqlite3_reset(p->claim);
  int ok = rc == SQLITE_DONE && sqlite3_changes(p->h) == 1;
  if (rc == SQLITE_DONE && !ok && c->sold_out) {
    sqlite3_exec(p->h, "ROLLBACK", NULL, NULL, NULL);
    return 0;
  }
  if (ok) {
    sqlite3_bind_int64(p->insert, 1, c->policy);
    sqlite3_bind_int64(p->insert, 2, i + 1);
    ok = sqlite3_step(p->insert) == SQLITE_DONE;
    sqlite3_reset(p->insert);
  }
  if (ok && sqlite3_exec(p->h, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) {
    return 0;
  }
  sqlite3_exec(p->h, "ROLLBACK", NULL, NULL, NULL);
  return 1;
}

static bu_result run_plain(const char *variant, int threads, double seconds,
                           bool sold_out) {
  char path[1024];
  bu_db_path(path, sizeof path, "coupon-plain");
  sc_db *db;
  if (sc_open(path, NULL, &db) != SC_OK) exit(1); /* same schema */
  plain_ctx c = {.policy = create_policy(db, sold_out), .sold_out = sold_out};
  sc_close(db);
  c.conns = calloc((size_t)threads, sizeof *c.conns);
  for (int t = 0; t < threads; t++) {
    c.conns[t].h = bu_sqlite_open(path);
    sqlite3_prepare_v2(c.conns[t].h, SQL_CLAIM, -1, &c.conns[t].claim, NULL);
    sqlite3_prepare_v2(c.conns[t].h, SQL_INSERT, -1, &c.conns[t].insert, NULL);
  }
  bu_result r =
      bu_run("coupon_issue", variant, threads, seconds, plain_issue, &c);
  for (int t = 0; t < threads; t++) {
    sqlite3_finalize(c.conns[t].claim);
    sqlite3_finalize(c.conns[t].insert);
    sqlite3_close(c.conns[t].h);
  }
  free(c.conns);
  bu_remove_db(path);
  return r;
}

/* ---- the bare hand-off -----------------------------------------------
 * The least any blocking design does per call, with no SQLite and no
 * library: the caller queues a request under a mutex, signals a server
 * thread and sleeps on its semaphore; the server takes every request
 * queued and posts each semaphore. Its rate at N callers is the ceiling
 * of a blocking API on this machine's CPUs. */

typedef struct bare_req {
  struct bare_req *next;
  sem_t done;
} bare_req;

typedef struct bare_ctx {
  pthread_mutex_t lock;
  pthread_cond_t nonempty;
  bare_req *head, *reqs;
  bool stop;
} bare_ctx;

static void *bare_server(void *arg) {
  bare_ctx *b = arg;
  for (;;) {
    pthread_mutex_lock(&b->lock);
    while (b->head == NULL && !b->stop)
      pthread_cond_wait(&b->nonempty, &b->lock);
    bare_req *r = b->head;
    b->head = NULL;
    bool stop = b->stop;
    pthread_mutex_unlock(&b->lock);
    for (bare_req *next; r != NULL; r = next) {
      next = r->next;
      sem_post(&r->done);
    }
    if (stop) return NULL;
  }
}

static int bare_call(int t, int64_t i, void *ud) {
  (void)i;
  bare_ctx *b = ud;
  bare_req *r = &b->reqs[t];
  pthread_mutex_lock(&b->lock);
  r->next = b->head;
  b->head = r;
  pthread_cond_signal(&b->nonempty);
  pthread_mutex_unlock(&b->lock);
  while (sem_wait(&r->done) != 0) {
  }
  return 0;
}

static bu_result run_bare(int threads, double seconds) {
  bare_ctx b = {.lock = PTHREAD_MUTEX_INITIALIZER,
                .nonempty = PTHREAD_COND_INITIALIZER,
                .reqs = calloc((size_t)threads, sizeof *b.reqs)};
  for (int t = 0; t < threads; t++)
    sem_init(&b.reqs[t].done, 0, 0);
  pthread_t server;
  pthread_create(&server, NULL, bare_server, &b);
  bu_cpu before = bu_cpu_now(NULL); /* the process's CPU and wake-ups */
  bu_result r =
      bu_run("coupon_issue", "bare_hand_off", threads, seconds, bare_call, &b);
  bu_cpu after = bu_cpu_now(NULL);
  double ops = r.ops > 0 ? (double)r.ops : 1;
  double cpu_us = (double)(after.process - before.process) / 1e3 / ops;
  double wake = (double)(after.wakeups - before.wakeups) / ops;
  pthread_mutex_lock(&b.lock);
  b.stop = true;
  pthread_cond_signal(&b.nonempty);
  pthread_mutex_unlock(&b.lock);
  pthread_join(server, NULL);
  for (int t = 0; t < threads; t++)
    sem_destroy(&b.reqs[t].done);
  free(b.reqs);
  bu_print(&r);
  printf(
      "   per call: process CPU %.2f us, %.2f wake-ups (voluntary context"
      " switches)\n",
      cpu_us, wake);
  return r;
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 2.0);
  static const int dflt[] = {1, 16, 64, 500};
  int threads[16];
  int n = bu_arg_threads(argc, argv, threads, 16, dflt, 4);
  bool round_trip = !bu_arg_flag(argc, argv, "--no-round-trip");
  bu_print_header("coupon issuance, durable (synchronous=FULL)");
  for (int k = 0; k < n; k++) {
    if (threads[k] > MAX_THREADS) continue;
    bu_result a = run_lib("group_commit", 0, threads[k], seconds, false);
    bu_result b = run_lib("batch_max_1", 1, threads[k], seconds, false);
    bu_result c = run_plain("plain_sqlite", threads[k], seconds, false);
    bu_print(&c);
    bu_print_ratio("group_commit_vs_plain", &a, &c);
    bu_print_ratio("group_commit_vs_batch1", &a, &b);
    if (!round_trip) continue;
    bu_result null = run_lib("round_trip", 0, threads[k], seconds, true);
    bu_result pn = run_plain("plain_refused", threads[k], seconds, true);
    bu_print(&pn);
    bu_result bare = run_bare(threads[k], seconds);
    bu_print_bound("blocking_round_trip_ceiling", &a, &null);
    bu_print_bound("bare_hand_off_ceiling", &a, &bare);
    printf(
        "   p50: group_commit %.3f ms, plain_sqlite %.3f ms (%.2fx);"
        " without the fsync: round_trip %.3f ms, plain_refused %.3f ms\n",
        a.p50_ms, c.p50_ms, c.p50_ms > 0 ? a.p50_ms / c.p50_ms : 0, null.p50_ms,
        pn.p50_ms);
  }
  return 0;
}
