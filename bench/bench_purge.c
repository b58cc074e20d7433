/* Outbox retention: sc_outbox_purge of a large backlog of delivered events.
 * The events are written straight into the file (one plain SQLite
 * transaction: what a flash sale leaves behind, one coupon-issued event per
 * coupon, each its own aggregate, the costliest shape for the purge since
 * every event's aggregate number is kept), then purged through the library.
 * Reported: events/s, and how long each batch held the writer (the commit
 * summary of sc_metrics: BEGIN to the durable COMMIT of one batch), which
 * is what other writers wait behind. A second run purges while 16 threads
 * issue coupons, and reports their latency beside a run without the purge.
 *
 *   bench_purge [--events N] [--seconds S]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"

/* An event payload of the library's size (a msgpack map of ~9 fields). */
static const char PAYLOAD[72] = "\x89\xa4type\x01\xa1v\x01";

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU time of the whole process, user and system: on a shared, loaded
 * machine the wall time of a batch is mostly waiting for a core, while its
 * CPU time is what it costs. */
static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die_sqlite(sqlite3 *h, const char *what) {
  fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(h));
  exit(1);
}

/* n delivered coupon-issued events, acked at 1 ms, in one transaction. */
static void fill_delivered(const char *path, long long n) {
  sqlite3 *h = bu_sqlite_open(path);
  sqlite3_stmt *st = NULL;
  if (sqlite3_exec(h, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(h,
                         "INSERT INTO sc_outbox(type, agg_kind, agg_id, seq,"
                         " created_at_ms, payload, state, delivered_at_ms,"
                         " claim) VALUES(1, 1, ?1, 1, 0, ?2, 1, 1, 1)",
                         -1, &st, NULL) != SQLITE_OK) {
    die_sqlite(h, "fill");
  }
  for (long long i = 1; i <= n; i++) {
    sqlite3_bind_int64(st, 1, i);
    sqlite3_bind_blob(st, 2, PAYLOAD, sizeof PAYLOAD, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) die_sqlite(h, "fill");
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    die_sqlite(h, "fill");
  }
  sqlite3_close(h);
}

static sc_db *open_db(const char *path, int durability) {
  sc_options o;
  sc_options_init(&o);
  o.durability = durability;
  sc_db *db = NULL;
  if (sc_open(path, &o, &db) != SC_OK) {
    fprintf(stderr, "open: %s\n", sc_errmsg(NULL));
    exit(1);
  }
  return db;
}

/* A fresh file holding n delivered events; the handle is open on it. */
static sc_db *prepare(const char *tag, long long n, int durability, char *path,
                      size_t cap) {
  bu_db_path(path, cap, tag);
  sc_close(open_db(path, durability)); /* the schema */
  int64_t t0 = now_ns();
  fill_delivered(path, n);
  printf("  %s: %lld delivered events written in %.1f s\n", tag, n,
         (double)(now_ns() - t0) / 1e9);
  return open_db(path, durability);
}

/* Purges everything: events/s and the writer's hold per batch. With
 * SC_DURABILITY_NORMAL a commit does not wait for the disk, so the hold is
 * the purge's own work; with FULL it includes one fsync per batch. */
static void bench_purge_alone(const char *variant, int durability,
                              long long n) {
  char path[1024];
  sc_db *db = prepare("purge-alone", n, durability, path, sizeof path);
  sc_metrics_reset(db);
  int64_t purged = 0;
  int64_t t0 = now_ns();
  double cpu0 = cpu_seconds();
  int rc = sc_outbox_purge(db, INT64_MAX, &purged);
  double cpu = cpu_seconds() - cpu0;
  double seconds = (double)(now_ns() - t0) / 1e9;
  if (rc != SC_OK) {
    fprintf(stderr, "purge: %s\n", sc_errmsg(db));
    exit(1);
  }
  sc_metrics m;
  sc_metrics_get(db, &m);
  bu_result res = {.threads = 1,
                   .seconds = seconds,
                   .ops = purged,
                   .ops_per_s = (double)purged / seconds,
                   .p50_ms = m.commit_ms.p50,
                   .p95_ms = m.commit_ms.p95,
                   .p99_ms = m.commit_ms.p99,
                   .max_ms = m.commit_ms.max,
                   .mean_ms = m.commit_ms.count
                                  ? m.commit_ms.sum / (double)m.commit_ms.count
                                  : 0};
  snprintf(res.bench, sizeof res.bench, "outbox_purge");
  snprintf(res.variant, sizeof res.variant, "%s", variant);
  bu_print(&res);
  printf(
      "  purged %lld events in %llu batches; each batch held the writer "
      "p50 %.2f ms, p99 %.2f ms, max %.2f ms (wall, BEGIN to durable "
      "COMMIT); CPU %.2f ms per batch (ops/s = events/s)\n",
      (long long)purged, (unsigned long long)m.commit_ms.count, m.commit_ms.p50,
      m.commit_ms.p99, m.commit_ms.max,
      m.commit_ms.count ? cpu * 1e3 / (double)m.commit_ms.count : 0);
  sc_close(db);
  bu_remove_db(path);
}

typedef struct issue_ctx {
  sc_db *db;
  sc_id policy;
  sc_id user0; /* one coupon per user: each run takes new users */
} issue_ctx;

static int issue(int t, int64_t i, void *ud) {
  (void)t;
  issue_ctx *c = ud;
  return sc_coupon_issue(c->db, c->policy, c->user0 + i, NULL) != SC_OK;
}

typedef struct purger {
  sc_db *db;
  atomic_bool stop;
  atomic_llong purged;
} purger;

/* Purges in a loop while the producers run; each call ends once a batch
 * comes back short, so the loop goes on until the backlog is gone. */
static void *purge_main(void *arg) {
  purger *p = arg;
  while (!atomic_load(&p->stop)) {
    int64_t n = 0;
    if (sc_outbox_purge(p->db, INT64_MAX, &n) != SC_OK) break;
    atomic_fetch_add(&p->purged, n);
    if (n == 0) break;
  }
  return NULL;
}

/* 16 threads issue coupons, without and then with a purge running. */
static void bench_purge_beside_writers(long long n, double seconds) {
  char path[1024];
  sc_db *db = prepare("purge-beside", n, SC_DURABILITY_FULL, path, sizeof path);
  sc_coupon_policy_spec spec = {
      .name = "bench", .max_count = INT64_MAX / 2, .per_user_limit = 1};
  issue_ctx c = {db, 0, 1};
  if (sc_coupon_policy_create(db, &spec, &c.policy) != SC_OK) exit(1);
  bu_result quiet = bu_run("coupon_issue", "no_purge", 16, seconds, issue, &c);
  bu_print(&quiet);
  c.user0 = INT64_MAX / 4;
  purger p = {.db = db};
  pthread_t t;
  pthread_create(&t, NULL, purge_main, &p);
  bu_result busy =
      bu_run("coupon_issue", "beside_purge", 16, seconds, issue, &c);
  atomic_store(&p.stop, true);
  pthread_join(t, NULL);
  bu_print(&busy);
  printf("  %lld events purged while the producers ran\n",
         (long long)atomic_load(&p.purged));
  bu_print_ratio("coupon_issue ops/s, beside a purge / without", &busy, &quiet);
  sc_close(db);
  bu_remove_db(path);
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 2.0);
  long long events = bu_arg_events(argc, argv, 1000000);
  if (events < 2) {
    fprintf(stderr, "--events must be at least 2\n");
    return 2;
  }
  bu_print_header("outbox: purge of delivered events (p50..max: ms per batch)");
  bench_purge_alone("alone_normal", SC_DURABILITY_NORMAL, events);
  bench_purge_alone("alone_full", SC_DURABILITY_FULL, events);
  bu_print_header("outbox: coupon issues beside a purge");
  bench_purge_beside_writers(events, seconds);
  return 0;
}
