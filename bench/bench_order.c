/* Checkout, and checkout + pay, durable (synchronous=FULL), no think time:
 *   one hot product at 64 and 500 caller threads,
 *   10,000 products at 64 caller threads,
 * each as
 *   (a) libshopcore with group commit (the default),
 *   (b) libshopcore with batch_max = 1 (one commit per operation),
 *   (c) plain SQLite: each thread its own connection, one BEGIN IMMEDIATE
 *       transaction per operation running the same statements (reserve,
 *       hold, order, line, event; then read, confirm, consume, debit,
 *       ledger, event),
 * all in one run, with the ratios a/c and a/b; then the single-writer
 * bound (run_bound: the same statements on one connection, 1,000
 * operations per transaction) and (a) as a share of it. Every caller
 * thread is its own user.
 *
 *   bench_order [--seconds S] [--hot-threads 64,500] [--spread-threads 64]
 *               [--no-verify] [--no-bound] [--pay-only]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define MAX_THREADS 1024
#define SPREAD_PRODUCTS 10000
#define STOCK (INT64_C(1) << 40)
#define BALANCE (INT64_C(1) << 50)
#define PRICE 100

typedef struct scenario {
  const char *name; /* "hot" or "spread" */
  int products;
  int pay; /* 0: checkout only; 1: checkout then pay */
} scenario;

/* ---- seeding: the same rows for every variant --------------------------- */

/* Products and one funded account per caller, through the library (so
 * every deposit has its ledger row and event), without fsync to be quick. */
static void seed(const char *path, int products, int users) {
  sc_options o;
  sc_options_init(&o);
  o.durability = SC_DURABILITY_NORMAL;
  sc_db *db = NULL;
  if (sc_open(path, &o, &db) != SC_OK) {
    fprintf(stderr, "open %s: %s\n", path, sc_errmsg(NULL));
    exit(1);
  }
  for (int p = 0; p < products; p++) {
    sc_id id;
    if (sc_product_create(db, "item", PRICE, STOCK, &id) != SC_OK ||
        id != p + 1) {
      fprintf(stderr, "product: %s\n", sc_errmsg(db));
      exit(1);
    }
  }
  for (int u = 1; u <= users; u++) {
    if (sc_account_deposit(db, u, BALANCE, NULL) != SC_OK) {
      fprintf(stderr, "deposit: %s\n", sc_errmsg(db));
      exit(1);
    }
  }
  sc_close(db);
}

/* ---- (a) and (b): the library ------------------------------------------- */

typedef struct lib_ctx {
  sc_db *db;
  const scenario *sc;
} lib_ctx;

static int lib_call(int t, int64_t i, void *ud) {
  lib_ctx *c = ud;
  sc_line line = {1 + i % c->sc->products, 1};
  sc_checkout_req req = {.user = t + 1, .lines = &line, .n_lines = 1};
  sc_id order = 0;
  int rc = sc_checkout(c->db, &req, &order);
  if (rc == SC_OK && c->sc->pay) rc = sc_order_pay(c->db, order);
  return rc != SC_OK;
}

static void verify(sc_db *db, const char *variant) {
  char *report = NULL;
  int rc = sc_verify(db, &report);
  printf("   sc_verify after %s: %s%s", variant, sc_err_name(rc),
         rc == SC_OK ? "\n" : ": ");
  if (rc != SC_OK) printf("%s", report ? report : sc_errmsg(db));
  sc_free(report);
}

static bu_result run_lib(const scenario *sc, const char *variant, int batch_max,
                         int threads, double seconds, bool check) {
  char path[1024];
  bu_db_path(path, sizeof path, "order-lib");
  seed(path, sc->products, threads);
  sc_options o;
  sc_options_init(&o);
  o.batch_max = batch_max;
  lib_ctx c = {.sc = sc};
  if (sc_open(path, &o, &c.db) != SC_OK) {
    fprintf(stderr, "open: %s\n", sc_errmsg(NULL));
    exit(1);
  }
  char bench[48];
  snprintf(bench, sizeof bench, "%s_%s", sc->pay ? "checkout_pay" : "checkout",
           sc->name);
  sc_metrics_reset(c.db);
  bu_cpu before = bu_cpu_now(c.db);
  bu_result r = bu_run(bench, variant, threads, seconds, lib_call, &c);
  bu_print(&r);
  bu_print_writer(c.db, sc->pay ? "checkout or pay" : "checkout", &before,
                  r.ops * (sc->pay ? 2 : 1));
  if (check) verify(c.db, variant);
  sc_close(c.db);
  bu_remove_db(path);
  return r;
}

/* ---- (c) plain SQLite --------------------------------------------------- */

/* The library's statements, as an application would run them itself. */
enum {
  RESERVE,
  HOLD,
  ORDER,
  LINE,
  EVENT,
  STATE,
  CONFIRM,
  CONSUME,
  DEBIT,
  LEDGER,
  STOCK_READ,
  RESERVE_GUARDED,
  N_PLAIN
};
static const char *const PLAIN_SQL[N_PLAIN] = {
    [RESERVE] =
        "UPDATE sc_product SET reserved = reserved + ?2,"
        " version = version + 1"
        " WHERE id = ?1 AND total - reserved >= ?2 RETURNING price",
    [HOLD] =
        "UPDATE sc_account SET held = held + ?2"
        " WHERE user_id = ?1 AND balance - held >= ?2",
    [ORDER] =
        "INSERT INTO sc_order(user_id, status, total, discount,"
        " created_at_ms, expires_at_ms) VALUES(?1, 1, ?2, 0, 0, ?3)",
    [LINE] =
        "INSERT INTO sc_order_line(order_id, product_id, qty, price)"
        " VALUES(?1, ?2, ?3, ?4)",
    [EVENT] =
        "INSERT INTO sc_outbox(type, agg_kind, agg_id, seq,"
        " created_at_ms, payload, available_at_ms) VALUES(?1, 2, ?2,"
        " (SELECT coalesce(max(seq), 0) + 1 FROM sc_outbox"
        "  WHERE agg_kind = 2 AND agg_id = ?2), 0, ?3, 0)",
    [STATE] = "SELECT user_id, total FROM sc_order WHERE id = ?1",
    [CONFIRM] =
        "UPDATE sc_order SET status = 2, closed_at_ms = 1"
        " WHERE id = ?1 AND status = 1",
    [CONSUME] =
        "UPDATE sc_product SET total = total - l.qty,"
        " reserved = reserved - l.qty FROM sc_order_line l"
        " WHERE l.order_id = ?1 AND sc_product.id = l.product_id",
    [DEBIT] =
        "UPDATE sc_account SET balance = balance - ?2,"
        " held = held - ?2 WHERE user_id = ?1 AND held >= ?2",
    [LEDGER] =
        "INSERT INTO sc_ledger(user_id, amount, kind, order_id, at_ms)"
        " VALUES(?1, ?2, 2, ?3, 0)",
    /* The library's way (lib/stock.c): read the row, then the guarded
     * UPDATE, no RETURNING (an ephemeral table per execution). The
     * single-writer bound uses these, so it does not pay what the
     * library does not. */
    [STOCK_READ] =
        "SELECT total, reserved, version, price FROM sc_product WHERE id = ?1",
    [RESERVE_GUARDED] =
        "UPDATE sc_product SET reserved = reserved + ?2,"
        " version = version + 1 WHERE id = ?1 AND total - reserved >= ?2",
};

/* An event payload of the library's size (a msgpack map of ~9 fields). */
static const char PAYLOAD[72] = "\x89\xa4type\x02\xa1v\x01";

typedef struct plain_conn {
  sqlite3 *h;
  sqlite3_stmt *st[N_PLAIN];
  bool guarded; /* reserve as the library does: STOCK, RESERVE_GUARDED */
} plain_conn;

typedef struct plain_ctx {
  plain_conn *conns;
  const scenario *sc;
} plain_ctx;

/* Steps statement k with n int64 parameters; returns the SQLite code and
 * leaves the first two result columns in out (may be NULL) on a row. */
static int step(plain_conn *p, int k, const int64_t *v, int n, int64_t *out) {
  sqlite3_stmt *st = p->st[k];
  for (int i = 0; i < n; i++)
    sqlite3_bind_int64(st, i + 1, v[i]);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && out != NULL) {
    out[0] = sqlite3_column_int64(st, 0);
    if (sqlite3_column_count(st) > 1) out[1] = sqlite3_column_int64(st, 1);
  }
  sqlite3_reset(st);
  return rc;
}

/* Runs a statement that must change exactly one row. */
static int change1(plain_conn *p, int k, const int64_t *v, int n) {
  return step(p, k, v, n, NULL) == SQLITE_DONE && sqlite3_changes(p->h) == 1;
}

static int plain_event(plain_conn *p, int type, int64_t order) {
  sqlite3_stmt *st = p->st[EVENT];
  sqlite3_bind_int(st, 1, type);
  sqlite3_bind_int64(st, 2, order);
  sqlite3_bind_blob(st, 3, PAYLOAD, sizeof PAYLOAD, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE;
}

static int plain_checkout(plain_conn *p, int64_t user, int64_t product,
                          int64_t *order) {
  int64_t price[2] = {-1, 0};
  if (p->guarded) {
    int64_t row[2] = {0, 0}; /* total, reserved; then the price */
    if (step(p, STOCK_READ, &product, 1, row) != SQLITE_ROW ||
        row[0] - row[1] < 1 ||
        !change1(p, RESERVE_GUARDED, (int64_t[]){product, 1}, 2)) {
      return 0;
    }
    price[0] = PRICE; /* the row's price: every product is seeded at it */
  } else if (step(p, RESERVE, (int64_t[]){product, 1}, 2, price) !=
             SQLITE_ROW) {
    return 0;
  }
  if (!change1(p, HOLD, (int64_t[]){user, price[0]}, 2) ||
      !change1(p, ORDER, (int64_t[]){user, price[0], 900000}, 3)) {
    return 0;
  }
  *order = sqlite3_last_insert_rowid(p->h);
  return change1(p, LINE, (int64_t[]){*order, product, 1, price[0]}, 4) &&
         plain_event(p, SC_EVENT_ORDER_CREATED, *order);
}

static int plain_pay(plain_conn *p, int64_t order) {
  int64_t row[2] = {0, 0}; /* user, total */
  if (step(p, STATE, &order, 1, row) != SQLITE_ROW) return 0;
  return change1(p, CONFIRM, &order, 1) &&
         step(p, CONSUME, &order, 1, NULL) == SQLITE_DONE &&
         change1(p, DEBIT, (int64_t[]){row[0], row[1]}, 2) &&
         change1(p, LEDGER, (int64_t[]){row[0], -row[1], order}, 3) &&
         plain_event(p, SC_EVENT_ORDER_PAID, order);
}

/* One transaction per operation, as the library's batch_max = 1 would do,
 * but with SQLite's own locking between the callers' connections. */
static int plain_txn_end(plain_conn *p, int ok) {
  if (ok && sqlite3_exec(p->h, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) {
    return 1;
  }
  sqlite3_exec(p->h, "ROLLBACK", NULL, NULL, NULL);
  return 0;
}

static int plain_call(int t, int64_t i, void *ud) {
  plain_ctx *c = ud;
  plain_conn *p = &c->conns[t];
  int64_t order = 0;
  if (sqlite3_exec(p->h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    return 1;
  }
  int ok = plain_txn_end(
      p, plain_checkout(p, t + 1, 1 + i % c->sc->products, &order));
  if (!ok || !c->sc->pay) return !ok;
  if (sqlite3_exec(p->h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    return 1;
  }
  return !plain_txn_end(p, plain_pay(p, order));
}

static bu_result run_plain(const scenario *sc, int threads, double seconds) {
  char path[1024], bench[48];
  bu_db_path(path, sizeof path, "order-plain");
  seed(path, sc->products, threads);
  plain_ctx c = {.sc = sc, .conns = calloc((size_t)threads, sizeof *c.conns)};
  for (int t = 0; t < threads; t++) {
    c.conns[t].h = bu_sqlite_open(path);
    for (int k = 0; k < N_PLAIN; k++) {
      if (sqlite3_prepare_v2(c.conns[t].h, PLAIN_SQL[k], -1, &c.conns[t].st[k],
                             NULL) != SQLITE_OK) {
        fprintf(stderr, "prepare: %s\n", sqlite3_errmsg(c.conns[t].h));
        exit(1);
      }
    }
  }
  snprintf(bench, sizeof bench, "%s_%s", sc->pay ? "checkout_pay" : "checkout",
           sc->name);
  bu_result r = bu_run(bench, "plain_sqlite", threads, seconds, plain_call, &c);
  for (int t = 0; t < threads; t++) {
    for (int k = 0; k < N_PLAIN; k++)
      sqlite3_finalize(c.conns[t].st[k]);
    sqlite3_close(c.conns[t].h);
  }
  free(c.conns);
  bu_remove_db(path);
  return r;
}

/* ---- the single-writer bound ---------------------------------------------
 * One connection with the library writer's settings, on the seeded file,
 * running checkout then pay for the same users and products in a loop,
 * 1,000 operations (500 checkouts and their payments) per transaction:
 * the same statements with no queue, no callers and no library, so the
 * most one writer of this schema does on this machine. */

#define BOUND_PER_TXN 1000

static bu_result run_bound(const scenario *sc, int users, double seconds) {
  char path[1024], bench[48];
  bu_db_path(path, sizeof path, "order-bound");
  seed(path, sc->products, users);
  plain_conn p = {.h = bu_sqlite_open_writer(path), .guarded = true};
  for (int k = 0; k < N_PLAIN; k++) {
    if (sqlite3_prepare_v2(p.h, PLAIN_SQL[k], -1, &p.st[k], NULL) !=
        SQLITE_OK) {
      fprintf(stderr, "prepare: %s\n", sqlite3_errmsg(p.h));
      exit(1);
    }
  }
  int per_txn = sc->pay ? BOUND_PER_TXN / 2 : BOUND_PER_TXN;
  int64_t t0 = bu_now_ns(), cpu0 = bu_self_cpu_ns();
  int64_t end = t0 + (int64_t)(seconds * 1e9), n = 0, failed = 0;
  while (bu_now_ns() < end) {
    sqlite3_exec(p.h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int i = 0; i < per_txn; i++, n++) {
      int64_t order = 0;
      bool ok = plain_checkout(&p, 1 + n % users, 1 + n % sc->products, &order);
      if (ok && sc->pay) ok = plain_pay(&p, order);
      failed += !ok;
    }
    if (sqlite3_exec(p.h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) exit(1);
  }
  bu_result r = {.threads = 1,
                 .ops = n,
                 .errors = failed,
                 .seconds = (double)(bu_now_ns() - t0) / 1e9};
  snprintf(bench, sizeof bench, "%s_%s", sc->pay ? "checkout_pay" : "checkout",
           sc->name);
  snprintf(r.bench, sizeof r.bench, "%s", bench);
  snprintf(r.variant, sizeof r.variant, "single_writer_%d", BOUND_PER_TXN);
  r.ops_per_s = (double)(n - failed) / r.seconds;
  bu_print(&r);
  printf(
      "   %s: %.2f us of CPU per %s, %d operations per commit\n", r.variant,
      (double)(bu_self_cpu_ns() - cpu0) / 1e3 / (double)n / (sc->pay ? 2 : 1),
      sc->pay ? "checkout or pay" : "checkout", BOUND_PER_TXN);
  for (int k = 0; k < N_PLAIN; k++)
    sqlite3_finalize(p.st[k]);
  sqlite3_close(p.h);
  bu_remove_db(path);
  return r;
}

/* ---- the run ------------------------------------------------------------ */

/* The target for the hot product at 500 callers. */
static void print_target(const bu_result *r) {
  bool met =
      r->ops_per_s >= 50000 && r->p95_ms < 20 && r->p99_ms < 3 * r->p50_ms;
  printf(
      "   target at %d threads (>= 50,000/s, p95 < 20 ms, p99 < 3x p50 = "
      "%.3f ms): %s\n",
      r->threads, 3 * r->p50_ms, met ? "met" : "NOT met");
}

static void run_scenario(const scenario *sc, int threads, double seconds,
                         bool check, bool bound) {
  if (threads > MAX_THREADS) return;
  bu_result a = run_lib(sc, "group_commit", 0, threads, seconds, check);
  bu_result b = run_lib(sc, "batch_max_1", 1, threads, seconds, false);
  bu_result c = run_plain(sc, threads, seconds);
  bu_print(&c);
  bu_print_ratio("group_commit_vs_plain", &a, &c);
  bu_print_ratio("group_commit_vs_batch1", &a, &b);
  if (sc->products == 1 && threads >= 500) print_target(&a);
  if (bound) {
    bu_result d = run_bound(sc, threads, seconds);
    bu_print_bound("single_writer", &a, &d);
  }
}

/* A list of thread counts after flag, parsed like bu_arg_threads. */
static int threads_arg(int argc, char **argv, const char *flag, int *out,
                       const int *dflt, int n_dflt) {
  char *fake[3] = {argv[0], "--threads", NULL};
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], flag) == 0) fake[2] = argv[i + 1];
  }
  return bu_arg_threads(fake[2] ? 3 : 1, fake, out, 8, dflt, n_dflt);
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 2.0);
  bool check = !bu_arg_flag(argc, argv, "--no-verify");
  bool bound = !bu_arg_flag(argc, argv, "--no-bound");
  bool pay_only = bu_arg_flag(argc, argv, "--pay-only");
  static const int hot_dflt[] = {64, 500}, spread_dflt[] = {64};
  int hot[8], spread[8];
  int n_hot = threads_arg(argc, argv, "--hot-threads", hot, hot_dflt, 2);
  int n_spread =
      threads_arg(argc, argv, "--spread-threads", spread, spread_dflt, 1);
  for (int pay = pay_only; pay <= 1; pay++) {
    scenario hot_sc = {"hot", 1, pay};
    scenario spread_sc = {"10k_products", SPREAD_PRODUCTS, pay};
    bu_print_header(pay ? "checkout + pay, durable (synchronous=FULL)"
                        : "checkout, durable (synchronous=FULL)");
    for (int k = 0; k < n_hot; k++) {
      run_scenario(&hot_sc, hot[k], seconds, check, bound);
    }
    for (int k = 0; k < n_spread; k++) {
      run_scenario(&spread_sc, spread[k], seconds, check, bound);
    }
  }
  return 0;
}
