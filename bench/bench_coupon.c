/* Coupon issuance, durable (synchronous=FULL), at 1, 16, 64 and 500 caller
 * threads:
 *   (a) libshopcore with group commit (the default),
 *   (b) libshopcore with batch_max = 1 (one commit per issue),
 *   (c) plain SQLite: each thread its own connection, one transaction per
 *       issue doing the same conditional UPDATE + INSERT,
 * all in one run, with the ratios a/c and a/b.
 *
 *   bench_coupon [--seconds S] [--threads 1,16,64,500]
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"

#define MAX_THREADS 1024

typedef struct lib_ctx {
  sc_db *db;
  sc_id policy;
} lib_ctx;

static int lib_issue(int t, int64_t i, void *ud) {
  (void)t;
  lib_ctx *c = ud;
  return sc_coupon_issue(c->db, c->policy, i + 1, NULL);
}

static sc_id create_policy(sc_db *db) {
  sc_coupon_policy_spec spec = {.name = "bench", .max_count = INT64_MAX / 2};
  sc_id policy = 0;
  if (sc_coupon_policy_create(db, &spec, &policy) != SC_OK) {
    fprintf(stderr, "policy: %s\n", sc_errmsg(db));
    exit(1);
  }
  return policy;
}

static bu_result run_lib(const char *variant, int batch_max, int threads,
                         double seconds) {
  char path[1024];
  bu_db_path(path, sizeof path, "coupon-lib");
  sc_options o;
  sc_options_init(&o);
  o.batch_max = batch_max;
  lib_ctx c;
  if (sc_open(path, &o, &c.db) != SC_OK) {
    fprintf(stderr, "open: %s\n", sc_errmsg(NULL));
    exit(1);
  }
  c.policy = create_policy(c.db);
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

static bu_result run_plain(int threads, double seconds) {
  char path[1024];
  bu_db_path(path, sizeof path, "coupon-plain");
  sc_db *db;
  if (sc_open(path, NULL, &db) != SC_OK) exit(1); /* same schema */
  plain_ctx c = {.policy = create_policy(db)};
  sc_close(db);
  c.conns = calloc((size_t)threads, sizeof *c.conns);
  for (int t = 0; t < threads; t++) {
    c.conns[t].h = bu_sqlite_open(path);
    sqlite3_prepare_v2(c.conns[t].h, SQL_CLAIM, -1, &c.conns[t].claim, NULL);
    sqlite3_prepare_v2(c.conns[t].h, SQL_INSERT, -1, &c.conns[t].insert, NULL);
  }
  bu_result r =
      bu_run("coupon_issue", "plain_sqlite", threads, seconds, plain_issue, &c);
  for (int t = 0; t < threads; t++) {
    sqlite3_finalize(c.conns[t].claim);
    sqlite3_finalize(c.conns[t].insert);
    sqlite3_close(c.conns[t].h);
  }
  free(c.conns);
  bu_remove_db(path);
  return r;
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 2.0);
  static const int dflt[] = {1, 16, 64, 500};
  int threads[16];
  int n = bu_arg_threads(argc, argv, threads, 16, dflt, 4);
  bu_print_header("coupon issuance, durable (synchronous=FULL)");
  for (int k = 0; k < n; k++) {
    if (threads[k] > MAX_THREADS) continue;
    bu_result a = run_lib("group_commit", 0, threads[k], seconds);
    bu_result b = run_lib("batch_max_1", 1, threads[k], seconds);
    bu_result c = run_plain(threads[k], seconds);
    bu_print(&c);
    bu_print_ratio("group_commit_vs_plain", &a, &c);
    bu_print_ratio("group_commit_vs_batch1", &a, &b);
  }
  return 0;
}
