/* Money conservation, after Jepsen's bank test. Worker threads deposit
 * (each deposit with its own idempotency key), check out, pay, cancel and
 * expire orders on shared accounts, while a reader thread keeps taking
 * snapshots. At every snapshot:
 *
 *   sum of balances == deposits in the snapshot - totals of CONFIRMED orders
 *   sum of held     == totals of PENDING orders
 *
 * where the amounts are the test's own record of what it asked for (a
 * deposit's amount by its key, an order's total from prices and
 * quantities), not the library's; and every deposit and payment
 * acknowledged before the snapshot began is in it.
 *
 * The public API reads one account per call (sc_account_get), each on its
 * own snapshot, so a consistent view of all accounts at once is read
 * through a separate plain SQLite connection in one read transaction (WAL
 * gives it one snapshot), or on PostgreSQL (check_bank_pg) a connection of
 * the test's own in one REPEATABLE READ transaction. sc_stats_get, the
 * library's own one-snapshot totals, is checked alongside, and at the end, with
 * nothing in flight, every account is compared through sc_account_get.
 *
 *   SC_BANK_OPS=N   calls per worker thread (default 400) */
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

#define WORKERS 6
#define USERS 12
#define PRODUCTS 4
#define MAX_DEPOSITS 65536
#define MAX_ORDERS 65536
#define MAX_PENDING 64

typedef struct bank {
  sc_db *db;
  char *path;
  int ops;
  sc_id products[PRODUCTS];
  int64_t prices[PRODUCTS];
  /* The test's record, written before each call that may commit it. */
  _Atomic int64_t deposit_amount[MAX_DEPOSITS]; /* by key number */
  _Atomic int64_t deposit_user[MAX_DEPOSITS];
  atomic_int n_deposits;
  _Atomic int64_t order_total[MAX_ORDERS]; /* by order id, 0 = unknown */
  _Atomic int64_t order_user[MAX_ORDERS];
  /* Acknowledged so far: what any later snapshot must hold. */
  _Atomic int64_t acked_deposits, acked_payments;
  /* Orders to pay or cancel, shared by the workers. */
  pthread_mutex_t lock;
  sc_id pending[MAX_PENDING];
  int n_pending;
  atomic_bool done;
  atomic_int workers_left;
  char failure[512];
  atomic_bool failed;
  int64_t snapshots, stats_reads;
  atomic_llong outcomes[SC_STATUS_COUNT_];
} bank;

__attribute__((format(printf, 2, 3))) static void bank_fail(bank *b,
                                                            const char *fmt,
                                                            ...) {
  if (atomic_exchange(&b->failed, true)) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->failure, sizeof b->failure, fmt, ap);
  va_end(ap);
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int64_t rnd(uint64_t *s, int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

static void count(bank *b, int rc) {
  if (rc >= 0 && rc < SC_STATUS_COUNT_) atomic_fetch_add(&b->outcomes[rc], 1);
}

/* ---- the workers ----------------------------------------------------------
 */

static void do_deposit(bank *b, uint64_t *rng) {
  int k = atomic_fetch_add(&b->n_deposits, 1);
  if (k >= MAX_DEPOSITS) return;
  sc_id user = rnd(rng, 1, USERS);
  int64_t amount = rnd(rng, 50, 500);
  atomic_store(&b->deposit_amount[k], amount);
  atomic_store(&b->deposit_user[k], user);
  char key[32];
  snprintf(key, sizeof key, "bank-%d", k);
  int rc = sc_account_deposit(b->db, user, amount, key);
  count(b, rc);
  if (rc != SC_OK) bank_fail(b, "deposit %s: %s", key, sc_err_name(rc));
  atomic_fetch_add(&b->acked_deposits, amount);
}

static void do_checkout(bank *b, uint64_t *rng) {
  sc_line lines[2];
  int n = (int)rnd(rng, 1, 2), first = (int)rnd(rng, 0, PRODUCTS - 1);
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    int p = (first + i) % PRODUCTS;
    lines[i] = (sc_line){b->products[p], rnd(rng, 1, 3)};
    total += b->prices[p] * lines[i].qty;
  }
  sc_id user = rnd(rng, 1, USERS), order = 0;
  sc_checkout_req req = {.user = user,
                         .lines = lines,
                         .n_lines = (size_t)n,
                         .ttl_ms = rnd(rng, 20, 2000)};
  int rc = sc_checkout(b->db, &req, &order);
  count(b, rc);
  if (rc == SC_INSUFFICIENT_BALANCE || rc == SC_NOT_FOUND) return;
  if (rc != SC_OK || order <= 0 || order >= MAX_ORDERS) {
    bank_fail(b, "checkout: %s (order %lld)", sc_err_name(rc),
              (long long)order);
    return;
  }
  /* Recorded only now, but before anyone can pay it: the id was unknown. */
  atomic_store(&b->order_user[order], user);
  atomic_store(&b->order_total[order], total);
  pthread_mutex_lock(&b->lock);
  if (b->n_pending < MAX_PENDING) b->pending[b->n_pending++] = order;
  pthread_mutex_unlock(&b->lock);
}

static sc_id take_pending(bank *b, uint64_t *rng) {
  sc_id order = 0;
  pthread_mutex_lock(&b->lock);
  if (b->n_pending > 0) {
    int i = (int)rnd(rng, 0, b->n_pending - 1);
    order = b->pending[i];
    b->pending[i] = b->pending[--b->n_pending];
  }
  pthread_mutex_unlock(&b->lock);
  return order;
}

static void do_pay_or_cancel(bank *b, uint64_t *rng, bool pay) {
  sc_id order = take_pending(b, rng);
  if (order == 0) return;
  int rc = pay ? sc_order_pay(b->db, order) : sc_order_cancel(b->db, order);
  count(b, rc);
  if (rc == SC_OK && pay) {
    atomic_fetch_add(&b->acked_payments, atomic_load(&b->order_total[order]));
  } else if (rc != SC_OK && rc != SC_EXPIRED && rc != SC_INVALID_STATE) {
    bank_fail(b, "%s %lld: %s", pay ? "pay" : "cancel", (long long)order,
              sc_err_name(rc));
  }
}

static void worker(int t, void *ud) {
  bank *b = ud;
  uint64_t rng = (uint64_t)time(NULL) * 31 + (uint64_t)t;
  for (int i = 0; i < b->ops && !atomic_load(&b->failed); i++) {
    int pick = (int)rnd(&rng, 0, 99);
    if (pick < 25) {
      do_deposit(b, &rng);
    } else if (pick < 60) {
      do_checkout(b, &rng);
    } else if (pick < 85) {
      do_pay_or_cancel(b, &rng, true);
    } else if (pick < 95) {
      do_pay_or_cancel(b, &rng, false);
    } else {
      int n = 0;
      int rc = sc_orders_expire_due(b->db, &n);
      count(b, rc);
      if (rc != SC_OK) bank_fail(b, "expire: %s", sc_err_name(rc));
    }
  }
  atomic_fetch_sub(&b->workers_left, 1);
}

/* ---- the reader -------------------------------------------------------------
 */

/* The reader's connection: a plain SQLite connection (WAL gives a read
 * transaction one snapshot), or on PostgreSQL one of the test's own
 * (a REPEATABLE READ transaction has one snapshot). */
typedef struct snap_conn {
  sqlite3 *h;
  PGconn *pg;
} snap_conn;

typedef void (*row_fn)(bank *b, const char *const *cols, void *ud);

/* Runs sql, handing each row's first three columns (as text) to fn. */
static void query(bank *b, snap_conn *c, const char *sql, row_fn fn, void *ud) {
  if (c->pg != NULL) {
    PGresult *r = PQexec(c->pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      bank_fail(b, "%s: %s", sql, PQresultErrorMessage(r));
    }
    for (int row = 0; row < PQntuples(r); row++) {
      const char *cols[3] = {NULL, NULL, NULL};
      for (int col = 0; col < PQnfields(r) && col < 3; col++)
        cols[col] = PQgetvalue(r, row, col);
      fn(b, cols, ud);
    }
    PQclear(r);
    return;
  }
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(c->h, sql, -1, &st, NULL) != SQLITE_OK) {
    bank_fail(b, "%s: %s", sql, sqlite3_errmsg(c->h));
  }
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    const char *cols[3] = {NULL, NULL, NULL};
    for (int col = 0; col < sqlite3_column_count(st) && col < 3; col++)
      cols[col] = (const char *)sqlite3_column_text(st, col);
    fn(b, cols, ud);
  }
  sqlite3_finalize(st);
}

static bool run(snap_conn *c, const char *sql) {
  if (c->pg != NULL) {
    PGresult *r = PQexec(c->pg, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
  }
  return sqlite3_exec(c->h, sql, NULL, NULL, NULL) == SQLITE_OK;
}

static void first_i64(bank *b, const char *const *cols, void *ud) {
  (void)b;
  *(int64_t *)ud = cols[0] ? strtoll(cols[0], NULL, 10) : -1;
}

static int64_t one_i64(bank *b, snap_conn *c, const char *sql) {
  int64_t v = -1;
  query(b, c, sql, first_i64, &v);
  return v;
}

static void add_deposit(bank *b, const char *const *cols, void *ud) {
  int k = atoi(cols[0] + 5);
  *(int64_t *)ud += atomic_load(&b->deposit_amount[k]);
}

/* Deposits in the snapshot, by the test's record of each key's amount. */
static int64_t snapshot_deposits(bank *b, snap_conn *c) {
  int64_t sum = 0;
  query(b, c,
        "SELECT key FROM sc_idempotency WHERE scope = 2"
        " AND key LIKE 'bank-%'",
        add_deposit, &sum);
  return sum;
}

typedef struct order_sums {
  int64_t paid, pending;
} order_sums;

static void add_order(bank *b, const char *const *cols, void *ud) {
  order_sums *o = ud;
  sc_id id = strtoll(cols[0], NULL, 10);
  int status = atoi(cols[1]);
  int64_t total = strtoll(cols[2], NULL, 10);
  int64_t mine = id < MAX_ORDERS ? atomic_load(&b->order_total[id]) : -1;
  /* A PENDING order may be newer than the record of its checkout. */
  if (mine == 0 && status == 1) mine = total;
  if (mine != total) {
    bank_fail(b, "order %lld: total %lld, asked for %lld", (long long)id,
              (long long)total, (long long)mine);
  }
  *(status == 2 ? &o->paid : &o->pending) += total;
}

/* Totals of the snapshot's CONFIRMED and PENDING orders, by the test's
 * record; the library's own total must agree with it. */
static void snapshot_orders(bank *b, snap_conn *c, int64_t *paid,
                            int64_t *pending) {
  order_sums o = {0, 0};
  query(b, c, "SELECT id, status, total FROM sc_order WHERE status IN (1, 2)",
        add_order, &o);
  *paid = o.paid;
  *pending = o.pending;
}

static void one_snapshot(bank *b, snap_conn *c) {
  /* Read before the snapshot: all of it must be in the snapshot. */
  int64_t acked_in = atomic_load(&b->acked_deposits);
  int64_t acked_out = atomic_load(&b->acked_payments);
  if (!run(c, c->pg ? "BEGIN ISOLATION LEVEL REPEATABLE READ" : "BEGIN")) {
    bank_fail(b, "BEGIN failed");
    return;
  }
  int64_t balances =
      one_i64(b, c, "SELECT coalesce(sum(balance), 0) FROM sc_account");
  int64_t held = one_i64(b, c, "SELECT coalesce(sum(held), 0) FROM sc_account");
  int64_t deposits = snapshot_deposits(b, c), paid = 0, pending = 0;
  snapshot_orders(b, c, &paid, &pending);
  run(c, "COMMIT");
  b->snapshots++;
  if (balances != deposits - paid) {
    bank_fail(b,
              "snapshot %lld: balances %lld != deposits %lld - payments %lld",
              (long long)b->snapshots, (long long)balances, (long long)deposits,
              (long long)paid);
  }
  if (held != pending) {
    bank_fail(b, "snapshot %lld: held %lld != pending totals %lld",
              (long long)b->snapshots, (long long)held, (long long)pending);
  }
  if (deposits < acked_in || paid < acked_out) {
    bank_fail(b,
              "snapshot %lld lacks acknowledged money: deposits %lld < %lld or "
              "payments %lld < %lld",
              (long long)b->snapshots, (long long)deposits, (long long)acked_in,
              (long long)paid, (long long)acked_out);
  }
}

/* sc_stats_get: the library's own totals, on its own snapshot. */
static void one_stats(bank *b) {
  int64_t acked_in = atomic_load(&b->acked_deposits);
  sc_stats s;
  int rc = sc_stats_get(b->db, &s);
  if (rc != SC_OK) {
    bank_fail(b, "sc_stats_get: %s", sc_err_name(rc));
    return;
  }
  b->stats_reads++;
  int n = atomic_load(&b->n_deposits);
  int64_t asked = 0;
  for (int k = 0; k < n && k < MAX_DEPOSITS; k++) {
    asked += atomic_load(&b->deposit_amount[k]);
  }
  /* Every deposit in the stats' snapshot was counted in n, read after. */
  if (s.held_total < 0 || s.held_total > s.balance_total ||
      s.balance_total > asked || acked_in < 0) {
    bank_fail(b, "stats: balance %lld, held %lld, deposits asked %lld",
              (long long)s.balance_total, (long long)s.held_total,
              (long long)asked);
  }
}

static void *reader(void *arg) {
  bank *b = arg;
  snap_conn c = {NULL, NULL};
  if (tu_pg_mode()) {
    c.pg = tu_pg_connect(b->path);
  } else if (sqlite3_open_v2(b->path, &c.h, SQLITE_OPEN_READONLY, NULL) !=
             SQLITE_OK) {
    bank_fail(b, "reader: cannot open");
    return NULL;
  }
  if (c.h != NULL) sqlite3_busy_timeout(c.h, 10000);
  while (atomic_load(&b->workers_left) > 0 && !atomic_load(&b->failed)) {
    one_snapshot(b, &c);
    one_stats(b);
  }
  one_snapshot(b, &c);
  sqlite3_close(c.h);
  PQfinish(c.pg);
  return NULL;
}

/* ---- the run
 * ------------------------------------------------------------------ */

static void setup(bank *b) {
  b->path = tu_db_path("bank");
  b->db = tu_open(b->path, NULL);
  pthread_mutex_init(&b->lock, NULL);
  for (int p = 0; p < PRODUCTS; p++) {
    b->prices[p] = 10 + 7 * p;
    ck_assert_sc(sc_product_create(b->db, "b", b->prices[p], 1000000000,
                                   &b->products[p]),
                 SC_OK);
  }
}

/* With nothing in flight, every account through the public API. */
static void final_accounts(bank *b) {
  int64_t want_balance[USERS + 1] = {0}, want_held[USERS + 1] = {0};
  int n = atomic_load(&b->n_deposits);
  for (int k = 0; k < n && k < MAX_DEPOSITS; k++) {
    want_balance[atomic_load(&b->deposit_user[k])] +=
        atomic_load(&b->deposit_amount[k]);
  }
  for (sc_id id = 1; id < MAX_ORDERS; id++) {
    int64_t total = atomic_load(&b->order_total[id]);
    if (total == 0) continue;
    sc_order o;
    ck_assert_sc(sc_order_get(b->db, id, &o), SC_OK);
    ck_assert_int_eq(o.total, total);
    sc_id u = atomic_load(&b->order_user[id]);
    if (o.status == SC_ORDER_CONFIRMED) want_balance[u] -= total;
    if (o.status == SC_ORDER_PENDING) want_held[u] += total;
  }
  for (sc_id u = 1; u <= USERS; u++) {
    sc_account a;
    int rc = sc_account_get(b->db, u, &a);
    if (rc == SC_NOT_FOUND) {
      ck_assert_int_eq(want_balance[u], 0);
      continue;
    }
    ck_assert_sc(rc, SC_OK);
    ck_assert_int_eq(a.balance, want_balance[u]);
    ck_assert_int_eq(a.held, want_held[u]);
  }
}

START_TEST(money_is_conserved_at_every_snapshot) {
  bank *b = calloc(1, sizeof *b);
  ck_assert_ptr_nonnull(b);
  const char *ops = getenv("SC_BANK_OPS");
  b->ops = ops && *ops ? atoi(ops) : 400;
  setup(b);
  atomic_store(&b->workers_left, WORKERS);
  pthread_t r;
  ck_assert_int_eq(pthread_create(&r, NULL, reader, b), 0);
  tu_race(WORKERS, worker, b);
  pthread_join(r, NULL);
  ck_assert_msg(!atomic_load(&b->failed), "%s", b->failure);
  final_accounts(b);
  tu_assert_verify(b->db);
  printf(
      "bank: %d deposits, %lld snapshots and %lld sc_stats_get reads "
      "conserved money; ok %lld, insufficient balance %lld, expired %lld, "
      "invalid state %lld\n",
      atomic_load(&b->n_deposits), (long long)b->snapshots,
      (long long)b->stats_reads, (long long)b->outcomes[SC_OK],
      (long long)b->outcomes[SC_INSUFFICIENT_BALANCE],
      (long long)b->outcomes[SC_EXPIRED],
      (long long)b->outcomes[SC_INVALID_STATE]);
  ck_assert_int_gt(b->snapshots, 2);
  ck_assert_int_gt(atomic_load(&b->acked_payments), 0);
  ck_assert_sc(sc_close(b->db), SC_OK);
  tu_remove_db(b->path);
  free(b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("bank");
  TCase *tc = tu_tcase("bank");
  tcase_add_test(tc, money_is_conserved_at_every_snapshot);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
