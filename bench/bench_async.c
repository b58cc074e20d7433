/* Async capacity: how many coupon issues per second one libuv loop thread
 * gets through sc_coupon_issue_async with 4,096 in flight, durable
 * (synchronous=FULL). Every callback submits the next issue, so the writer
 * never waits for callers: this is the writer's own limit. In the same run,
 * the single-writer SQLite limits (run_limit): one connection doing an
 * issue's writes (the conditional UPDATE, the coupon INSERT, the event
 * INSERT) at 512 and 1,000 issues per transaction, then all of the
 * library's statements (its two checks too); the library's rate as a share
 * of each, and the earlier baseline without the event.
 *
 *   bench_async [--seconds S] [--inflight N]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bench_util.h"

#define PLAIN_PER_TXN 1000

typedef struct run {
  sc_db *db;
  sc_async *async;
  sc_id policy;
  int64_t deadline_ns, next_user, done, errors;
  int inflight;
} run;

static void issued(sc_async_req *req, int status);

static void issue_next(run *r, sc_async_req *req) {
  int rc =
      sc_coupon_issue_async(r->async, req, r->policy, ++r->next_user, issued);
  if (rc != SC_OK) {
    fprintf(stderr, "sc_coupon_issue_async: %s\n", sc_errmsg(r->db));
    exit(1);
  }
  r->inflight++;
}

static void issued(sc_async_req *req, int status) {
  run *r = req->data;
  r->inflight--;
  if (status == SC_OK) {
    r->done++;
  } else {
    r->errors++;
  }
  if (bu_now_ns() < r->deadline_ns) issue_next(r, req);
}

/* A coupon-issued payload the library wrote in run_lib (its exact bytes). */
static unsigned char event_payload[256];
static int event_payload_len = 64;

static void keep_payload(const char *path) {
  sqlite3 *h = bu_sqlite_open(path);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h,
                         "SELECT payload FROM sc_outbox WHERE type = ?1"
                         " ORDER BY id DESC LIMIT 1",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_int(st, 1, SC_EVENT_COUPON_ISSUED);
    if (sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_bytes(st, 0) <= (int)sizeof event_payload) {
      event_payload_len = sqlite3_column_bytes(st, 0);
      memcpy(event_payload, sqlite3_column_blob(st, 0),
             (size_t)event_payload_len);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
}

static bu_result run_lib(double seconds, int inflight) {
  char path[1024];
  bu_db_path(path, sizeof path, "async-lib");
  run r = {0};
  if (sc_open(path, NULL, &r.db) != SC_OK) {
    fprintf(stderr, "open: %s\n", sc_errmsg(NULL));
    exit(1);
  }
  sc_coupon_policy_spec spec = {.name = "bench", .max_count = INT64_MAX / 2};
  uv_loop_t loop;
  uv_loop_init(&loop);
  if (sc_coupon_policy_create(r.db, &spec, &r.policy) != SC_OK ||
      sc_async_open(r.db, &loop, &r.async) != SC_OK) {
    fprintf(stderr, "setup: %s\n", sc_errmsg(r.db));
    exit(1);
  }
  sc_async_req *reqs = calloc((size_t)inflight, sizeof *reqs);
  sc_metrics_reset(r.db);
  bu_cpu before = bu_cpu_now(r.db);
  r.deadline_ns = before.wall + (int64_t)(seconds * 1e9);
  for (int i = 0; i < inflight; i++) {
    reqs[i].data = &r;
    issue_next(&r, &reqs[i]);
  }
  while (r.inflight > 0)
    uv_run(&loop, UV_RUN_ONCE);
  bu_result res = {.threads = 1,
                   .ops = r.done + r.errors,
                   .errors = r.errors,
                   .seconds = (double)(bu_now_ns() - before.wall) / 1e9};
  snprintf(res.bench, sizeof res.bench, "coupon_issue_async");
  snprintf(res.variant, sizeof res.variant, "inflight_%d", inflight);
  res.ops_per_s = (double)r.done / res.seconds;
  bu_print(&res);
  bu_print_writer(r.db, "issue", &before, res.ops);
  sc_async_close(r.async, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  sc_close(r.db);
  free(reqs);
  keep_payload(path);
  bu_remove_db(path);
  return res;
}

/* ---- the single-writer limit --------------------------------------------
 * One connection with the writer's settings, on a file the library made
 * (the same schema, indexes and AUTOINCREMENT counters), running an issue's
 * statements in a loop, a commit (and its fsync) every per_txn issues: no
 * queue, no callbacks, no library. What a single writer of this schema can
 * do at best, so the library's rate is a share of it. */

enum {
  LIMIT_EVENTS = 1, /* the outbox event too, as the library writes it */
  LIMIT_READS = 2,  /* the library's checks first (policy, user's count) */
};

enum { CHECK, HELD, CLAIM, INSERT, EVENT, N_LIMIT };
static const char *const LIMIT_SQL[N_LIMIT] = {
    [CHECK] =
        "SELECT max_count, issued_count, per_user_limit, paused,"
        " starts_at_ms, ends_at_ms FROM sc_coupon_policy WHERE id = ?1",
    [HELD] =
        "SELECT count(*) FROM sc_coupon WHERE policy_id = ?1"
        " AND user_id = ?2",
    [CLAIM] =
        "UPDATE sc_coupon_policy SET issued_count = issued_count + 1"
        " WHERE id = ?1 AND issued_count < max_count",
    [INSERT] =
        "INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms)"
        " VALUES(?1, ?2, ?3)",
    [EVENT] =
        "INSERT INTO sc_outbox(type, agg_kind, agg_id, seq,"
        " created_at_ms, payload, available_at_ms)"
        " VALUES(?1, 1, ?2, 1, ?3, ?4, ?3)",
};

static int step_ids(sqlite3_stmt *st, int64_t a, int64_t b, int64_t c) {
  sqlite3_bind_int64(st, 1, a);
  if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_int64(st, 2, b);
  if (sqlite3_bind_parameter_count(st) >= 3) sqlite3_bind_int64(st, 3, c);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc;
}

/* One issue's statements; false when one failed. */
static bool limit_issue(sqlite3 *h, sqlite3_stmt **st, int flags,
                        int64_t policy, int64_t user, int64_t now) {
  if ((flags & LIMIT_READS) &&
      (step_ids(st[CHECK], policy, 0, 0) != SQLITE_ROW ||
       step_ids(st[HELD], policy, user, 0) != SQLITE_ROW)) {
    return false;
  }
  if (step_ids(st[CLAIM], policy, 0, 0) != SQLITE_DONE ||
      sqlite3_changes(h) != 1 ||
      step_ids(st[INSERT], policy, user, now) != SQLITE_DONE) {
    return false;
  }
  if (!(flags & LIMIT_EVENTS)) return true;
  sqlite3_stmt *ev = st[EVENT];
  sqlite3_bind_int(ev, 1, SC_EVENT_COUPON_ISSUED);
  sqlite3_bind_int64(ev, 2, sqlite3_last_insert_rowid(h));
  sqlite3_bind_int64(ev, 3, now);
  sqlite3_bind_blob(ev, 4, event_payload, event_payload_len, SQLITE_STATIC);
  int rc = sqlite3_step(ev);
  sqlite3_reset(ev);
  return rc == SQLITE_DONE;
}

static bu_result run_limit(const char *variant, double seconds, int per_txn,
                           int flags) {
  char path[1024];
  bu_db_path(path, sizeof path, "async-plain");
  sc_db *db;
  sc_id policy;
  sc_coupon_policy_spec spec = {.name = "bench", .max_count = INT64_MAX / 2};
  if (sc_open(path, NULL, &db) != SC_OK ||
      sc_coupon_policy_create(db, &spec, &policy) != SC_OK) {
    exit(1);
  }
  sc_close(db);
  sqlite3 *h = bu_sqlite_open_writer(path);
  sqlite3_stmt *st[N_LIMIT];
  for (int k = 0; k < N_LIMIT; k++) {
    if (sqlite3_prepare_v2(h, LIMIT_SQL[k], -1, &st[k], NULL) != SQLITE_OK) {
      fprintf(stderr, "prepare: %s\n", sqlite3_errmsg(h));
      exit(1);
    }
  }
  int64_t t0 = bu_now_ns(), cpu0 = bu_self_cpu_ns();
  int64_t end = t0 + (int64_t)(seconds * 1e9), n = 0, failed = 0;
  while (bu_now_ns() < end) {
    sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    int64_t now = bu_now_ns() / 1000000;
    for (int i = 0; i < per_txn; i++) {
      n++;
      failed += !limit_issue(h, st, flags, policy, n, now);
    }
    if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) exit(1);
  }
  bu_result res = {.threads = 1,
                   .ops = n,
                   .errors = failed,
                   .seconds = (double)(bu_now_ns() - t0) / 1e9};
  snprintf(res.bench, sizeof res.bench, "coupon_issue_async");
  snprintf(res.variant, sizeof res.variant, "%s_%d", variant, per_txn);
  res.ops_per_s = (double)(n - failed) / res.seconds;
  bu_print(&res);
  printf("   %s: %.2f us of CPU per issue, %d issues per commit\n", res.variant,
         (double)(bu_self_cpu_ns() - cpu0) / 1e3 / (double)n, per_txn);
  for (int k = 0; k < N_LIMIT; k++)
    sqlite3_finalize(st[k]);
  sqlite3_close(h);
  bu_remove_db(path);
  return res;
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 2.0);
  int inflight = 4096;
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--inflight") == 0) inflight = atoi(argv[i + 1]);
  }
  if (inflight <= 0 || inflight > 4096) inflight = 4096;
  bu_print_header(
      "async capacity: coupon issuance on one libuv loop thread,"
      " durable (synchronous=FULL)");
  bu_result a = run_lib(seconds, inflight);
  /* The earlier baseline (no event), then the limit of the library's
   * writes and of all its statements. */
  bu_result b = run_limit("plain", seconds, PLAIN_PER_TXN, 0);
  bu_print_ratio("async_vs_plain_single_writer", &a, &b);
  bu_result w512 = run_limit("limit_writes", seconds, 512, LIMIT_EVENTS);
  bu_result w1000 =
      run_limit("limit_writes", seconds, PLAIN_PER_TXN, LIMIT_EVENTS);
  bu_result all = run_limit("limit_statements", seconds, PLAIN_PER_TXN,
                            LIMIT_EVENTS | LIMIT_READS);
  bu_print_bound("single_writer_writes_512", &a, &w512);
  bu_print_bound("single_writer_writes_1000", &a, &w1000);
  bu_print_bound("single_writer_statements_1000", &a, &all);
  printf("   target: >= 300,000 issues/s: %s\n",
         a.ops_per_s >= 300000 ? "met" : "NOT met");
  return 0;
}
