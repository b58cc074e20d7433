/* Async capacity: how many coupon issues per second one libuv loop thread
 * gets through sc_coupon_issue_async with 4,096 in flight, durable
 * (synchronous=FULL). Every callback submits the next issue, so the writer
 * never waits for callers: this is the writer's own limit. In the same run,
 * the single-writer SQLite limit: one connection issuing the same
 * conditional UPDATE + INSERT, 1,000 issues per transaction (no events, no
 * queue), and the ratio.
 *
 *   bench_async [--seconds S] [--inflight N]
 */
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
  bu_remove_db(path);
  return res;
}

/* The baseline: one connection, the same two statements, a commit (and its
 * fsync) every PLAIN_PER_TXN issues. */
static bu_result run_plain(double seconds) {
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
  sqlite3 *h = bu_sqlite_open(path);
  sqlite3_stmt *claim, *insert;
  sqlite3_prepare_v2(h,
                     "UPDATE sc_coupon_policy SET issued_count ="
                     " issued_count + 1 WHERE id = ?1"
                     " AND issued_count < max_count",
                     -1, &claim, NULL);
  sqlite3_prepare_v2(h,
                     "INSERT INTO sc_coupon(policy_id, user_id,"
                     " issued_at_ms) VALUES(?1, ?2, 0)",
                     -1, &insert, NULL);
  int64_t t0 = bu_now_ns(), end = t0 + (int64_t)(seconds * 1e9), n = 0;
  while (bu_now_ns() < end) {
    sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int i = 0; i < PLAIN_PER_TXN; i++) {
      sqlite3_bind_int64(claim, 1, policy);
      sqlite3_step(claim);
      sqlite3_reset(claim);
      sqlite3_bind_int64(insert, 1, policy);
      sqlite3_bind_int64(insert, 2, ++n);
      sqlite3_step(insert);
      sqlite3_reset(insert);
    }
    sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
  }
  bu_result res = {
      .threads = 1, .ops = n, .seconds = (double)(bu_now_ns() - t0) / 1e9};
  snprintf(res.bench, sizeof res.bench, "coupon_issue_async");
  snprintf(res.variant, sizeof res.variant, "plain_%d_per_txn", PLAIN_PER_TXN);
  res.ops_per_s = (double)n / res.seconds;
  bu_print(&res);
  sqlite3_finalize(claim);
  sqlite3_finalize(insert);
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
  bu_result b = run_plain(seconds);
  bu_print_ratio("async_vs_plain_single_writer", &a, &b);
  printf("   target: >= 300,000 issues/s: %s\n",
         a.ops_per_s >= 300000 ? "met" : "NOT met");
  return 0;
}
