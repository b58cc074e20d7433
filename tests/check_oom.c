/* Out-of-memory injection. Both the library's allocator (sc_set_allocator)
 * and SQLite's (SQLITE_CONFIG_MALLOC, installed at the start of main, before
 * SQLite initialises) go through one counter; a scenario runs with the 1st,
 * 2nd, ... Nth allocation failing until a run completes without reaching N.
 * Every call must return SC_OK or SC_NOMEM (see accepted() for the one
 * exception and why), never crash; a failed call retried without faults must
 * then succeed (a failure does not wedge the handle); after sc_close no
 * memory of the library or of SQLite is left; and the file, reopened without
 * faults, passes sc_verify and holds every acknowledged operation.
 *
 * Two modes: a single failure at N (SQLite's "transient" OOM), and every
 * allocation failing from N on until the call returns ("persistent").
 *   SC_OOM_STRIDE=k   try every k-th N only (default 1: every allocation). */
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <limits.h>
#include <unistd.h>

#include "test_util.h"

/* ---- counting, failing allocators --------------------------------------- */

/* A header in front of each block keeps its size (SQLite's xSize needs it)
 * and keeps the block 16-byte aligned. */
#define HDR 16

static atomic_long n_allocs;   /* allocations since arming */
static atomic_long fail_at;    /* 0 = never fail */
static atomic_bool persistent; /* fail every allocation from fail_at on */
static atomic_long n_injected; /* failures injected since arming */
static atomic_long lib_live, sql_live; /* blocks not yet freed */

static bool should_fail(void) {
  long at = atomic_load(&fail_at);
  if (at == 0) return false;
  long n = atomic_fetch_add(&n_allocs, 1) + 1;
  if (n == at || (n > at && atomic_load(&persistent))) {
    atomic_fetch_add(&n_injected, 1);
    return true;
  }
  return false;
}

static void *hdr_alloc(size_t size, atomic_long *live) {
  if (should_fail()) return NULL;
  char *p = malloc(size + HDR);
  if (p == NULL) return NULL;
  memcpy(p, &size, sizeof size);
  atomic_fetch_add(live, 1);
  return p + HDR;
}

static void hdr_free(void *q, atomic_long *live) {
  if (q == NULL) return;
  atomic_fetch_sub(live, 1);
  free((char *)q - HDR);
}

static size_t hdr_size(void *q) {
  size_t size = 0;
  if (q != NULL) memcpy(&size, (char *)q - HDR, sizeof size);
  return size;
}

static void *hdr_realloc(void *q, size_t size, atomic_long *live) {
  if (q == NULL) return hdr_alloc(size, live);
  if (should_fail()) return NULL; /* the old block stays valid */
  char *p = realloc((char *)q - HDR, size + HDR);
  if (p == NULL) return NULL;
  memcpy(p, &size, sizeof size);
  return p + HDR;
}

static void *lib_malloc(size_t n) {
  return hdr_alloc(n, &lib_live);
}
static void *lib_realloc(void *p, size_t n) {
  return hdr_realloc(p, n, &lib_live);
}
static void lib_free(void *p) {
  hdr_free(p, &lib_live);
}

static void *sql_malloc(int n) {
  return hdr_alloc((size_t)n, &sql_live);
}
static void sql_free(void *p) {
  hdr_free(p, &sql_live);
}
static void *sql_realloc(void *p, int n) {
  return hdr_realloc(p, (size_t)n, &sql_live);
}
static int sql_size(void *p) {
  return (int)hdr_size(p);
}
static int sql_roundup(int n) {
  return (n + 7) & ~7;
}
static int sql_init(void *ud) {
  (void)ud;
  return SQLITE_OK;
}
static void sql_shutdown(void *ud) {
  (void)ud;
}

static void install_allocators(void) {
  static const sqlite3_mem_methods methods = {
      sql_malloc,  sql_free, sql_realloc,  sql_size,
      sql_roundup, sql_init, sql_shutdown, NULL};
  if (sqlite3_config(SQLITE_CONFIG_MALLOC, &methods) != SQLITE_OK) {
    fprintf(stderr, "SQLITE_CONFIG_MALLOC refused: SQLite already started\n");
    exit(2);
  }
  sc_allocator a = {lib_malloc, lib_realloc, lib_free};
  sc_set_allocator(&a);
}

static void arm(long n, bool persist) {
  atomic_store(&n_allocs, 0);
  atomic_store(&n_injected, 0);
  atomic_store(&persistent, persist);
  atomic_store(&fail_at, n);
}

static void disarm(void) {
  atomic_store(&fail_at, 0);
}

/* ---- what a call may return under faults ---------------------------------
 * SC_NOMEM is the contract. SC_OK when the failed allocation was optional
 * (SQLite retries some, e.g. a smaller page-cache block) or hit another
 * thread. */
static bool accepted(int rc) {
  return rc == SC_OK || rc == SC_NOMEM;
}

#define CHECK_CALL(expr)                                             \
  do {                                                               \
    int ck_rc_ = (expr);                                             \
    ck_assert_msg(accepted(ck_rc_), "N=%ld: %s: %s (%s)",            \
                  atomic_load(&fail_at), #expr, sc_err_name(ck_rc_), \
                  sc_errmsg(NULL));                                  \
    if (ck_rc_ != SC_OK) ck_assert_str_ne(sc_errmsg(NULL), "");      \
    last_rc = ck_rc_;                                                \
  } while (0)

static int last_rc;

/* ---- scenarios ------------------------------------------------------------
 * A step is called under faults; if it fails it is called again with faults
 * off, which must succeed (the handle still works) and is then what the
 * later steps build on. So each run does the whole scenario. */

#define STEP(expr)                   \
  do {                               \
    CHECK_CALL(expr);                \
    if (last_rc != SC_OK) {          \
      long saved = fail_at;          \
      disarm();                      \
      ck_assert_sc(expr, SC_OK);     \
      atomic_store(&fail_at, saved); \
    }                                \
  } while (0)

typedef struct acked {
  sc_id policy, coupon, product, order, order2;
  bool deposited, paid, cancelled;
} acked;

static void sc_options_oom(sc_options *o) {
  sc_options_init(o);
  /* Durability is beside the point here; synchronous=NORMAL spares fsyncs
   * over the thousands of runs. */
  o->durability = SC_DURABILITY_NORMAL;
}

/* Opens under faults: a failed open must leave out NULL; then opens without
 * faults. */
static sc_db *open_step(const char *path) {
  sc_options o;
  sc_options_oom(&o);
  sc_db *db = (sc_db *)0x1;
  CHECK_CALL(sc_open(path, &o, &db));
  if (last_rc != SC_OK) {
    ck_assert_ptr_null(db);
    long saved = fail_at;
    disarm();
    ck_assert_sc(sc_open(path, &o, &db), SC_OK);
    atomic_store(&fail_at, saved);
  }
  ck_assert_ptr_nonnull(db);
  return db;
}

static void close_step(sc_db *db) {
  /* sc_close frees the handle whatever it returns. */
  CHECK_CALL(sc_close(db));
}

static void scenario_coupons(const char *path, acked *a) {
  sc_db *db = open_step(path);
  sc_coupon_policy_spec spec = {
      .name = "oom", .max_count = 10, .per_user_limit = 2};
  STEP(sc_coupon_policy_create(db, &spec, &a->policy));
  STEP(sc_coupon_issue(db, a->policy, 7, &a->coupon));
  STEP(sc_coupon_policy_pause(db, a->policy, 1));
  STEP(sc_coupon_policy_pause(db, a->policy, 0));
  sc_coupon_policy p;
  STEP(sc_coupon_policy_get(db, a->policy, &p));
  ck_assert_int_eq(p.issued_count, 1);
  char *report = NULL;
  int rc = sc_verify(db, &report);
  ck_assert_msg(accepted(rc), "N=%ld: sc_verify: %s: %s", atomic_load(&fail_at),
                sc_err_name(rc), report ? report : sc_errmsg(NULL));
  sc_free(report);
  report = NULL;
  if (rc != SC_OK) STEP(sc_verify(db, &report));
  sc_free(report);
  close_step(db);
}

static void scenario_orders(const char *path, acked *a) {
  sc_db *db = open_step(path);
  STEP(sc_account_deposit(db, 7, 10000, "oom-deposit"));
  a->deposited = true;
  STEP(sc_product_create(db, "p", 100, 50, &a->product));
  STEP(sc_product_restock(db, a->product, 5));
  sc_coupon_policy_spec spec = {
      .name = "oom", .max_count = 10, .discount_percent = 10};
  STEP(sc_coupon_policy_create(db, &spec, &a->policy));
  STEP(sc_coupon_issue(db, a->policy, 7, &a->coupon));
  sc_line line = {a->product, 3};
  sc_checkout_req req = {.user = 7,
                         .lines = &line,
                         .n_lines = 1,
                         .coupon = a->coupon,
                         .idempotency_key = "oom-checkout"};
  STEP(sc_checkout(db, &req, &a->order));
  STEP(sc_order_pay(db, a->order));
  a->paid = true;
  req.coupon = 0;
  req.idempotency_key = NULL;
  STEP(sc_checkout(db, &req, &a->order2));
  STEP(sc_order_cancel(db, a->order2));
  a->cancelled = true;
  int expired = 0;
  STEP(sc_orders_expire_due(db, &expired));
  sc_stock s;
  STEP(sc_stock_get(db, a->product, &s));
  sc_account acc;
  STEP(sc_account_get(db, 7, &acc));
  sc_order o;
  STEP(sc_order_get(db, a->order, &o));
  ck_assert_int_eq(o.status, SC_ORDER_CONFIRMED);
  close_step(db);
}

/* Without faults: the file is sound and holds what was acknowledged. */
static void check_file(const char *path, const acked *a) {
  sc_db *db = tu_open(path, NULL);
  tu_assert_verify(db);
  sc_coupon_policy p;
  if (a->policy) {
    ck_assert_sc(sc_coupon_policy_get(db, a->policy, &p), SC_OK);
    ck_assert_int_eq(p.issued_count, 1);
    ck_assert_int_eq(p.paused, 0);
  }
  if (a->deposited) {
    sc_account acc;
    ck_assert_sc(sc_account_get(db, 7, &acc), SC_OK);
    ck_assert_int_eq(acc.balance, 10000 - 270); /* 300 less 10% */
    ck_assert_int_eq(acc.held, 0);
  }
  if (a->order2) {
    sc_order o;
    ck_assert_sc(sc_order_get(db, a->order2, &o), SC_OK);
    ck_assert_int_eq(o.status, SC_ORDER_CANCELLED);
    sc_stock s;
    ck_assert_sc(sc_stock_get(db, a->product, &s), SC_OK);
    ck_assert_int_eq(s.total, 52);
    ck_assert_int_eq(s.reserved, 0);
  }
  ck_assert_sc(sc_close(db), SC_OK);
}

typedef void (*scenario_fn)(const char *path, acked *a);

/* Copies a prepared file so each run starts from the same state. */
static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  ck_assert_ptr_nonnull(in);
  ck_assert_ptr_nonnull(out);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
    ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
  }
  fclose(in);
  ck_assert_int_eq(fclose(out), 0);
}

static long env_long(const char *name, long dflt) {
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 0) : dflt;
}

/* Runs with the default stride: about this many runs per test. */
#define DEFAULT_RUNS 150

/* How many allocations the scenario makes, counted on a run that fails
 * none (which also makes SQLite's lazily created globals, so they do not
 * count as leaks later). */
static long count_allocations(scenario_fn fn, bool fresh, const char *base,
                              char **path) {
  tu_remove_db(*path);
  *path = tu_db_path("oom");
  if (!fresh) copy_file(base, *path);
  acked a = {0};
  arm(LONG_MAX, false);
  fn(*path, &a);
  long n = atomic_load(&n_allocs);
  disarm();
  check_file(*path, &a);
  return n;
}

/* Runs the scenario with the 1st, 2nd ... allocation failing until a run
 * completes without reaching the failure. fresh: each run starts from no
 * file at all (the scenario creates it). By default only every k-th N is
 * tried, from a random offset (printed; SC_OOM_OFFSET repeats it), so that
 * the suite stays quick and successive runs cover different allocations;
 * SC_OOM_STRIDE=1 tries them all. */
static void fail_each_allocation(scenario_fn fn, bool fresh, bool persist) {
  char *base = tu_db_path("oom-base");
  char *path = tu_db_path("oom");
  if (!fresh) { /* a file with the schema, made without faults */
    sc_db *db = tu_open(base, NULL);
    ck_assert_sc(sc_close(db), SC_OK);
  }
  long total = count_allocations(fn, fresh, base, &path);
  long lib0 = atomic_load(&lib_live), sql0 = atomic_load(&sql_live);
  long stride = env_long("SC_OOM_STRIDE", total / DEFAULT_RUNS + 1);
  if (stride < 1) stride = 1;
  long first = env_long("SC_OOM_OFFSET", 1 + (long)(time(NULL) % stride));
  long runs = 0, injected = 0;
  for (long n = first;; n += stride) {
    tu_remove_db(path);
    path = tu_db_path("oom");
    if (!fresh) copy_file(base, path);
    acked a = {0};
    arm(n, persist);
    fn(path, &a);
    disarm();
    long hit = atomic_load(&n_injected);
    runs++;
    injected += hit;
    ck_assert_msg(atomic_load(&lib_live) == lib0,
                  "N=%ld: %ld library blocks leaked", n,
                  atomic_load(&lib_live) - lib0);
    ck_assert_msg(atomic_load(&sql_live) == sql0,
                  "N=%ld: %ld SQLite blocks leaked", n,
                  atomic_load(&sql_live) - sql0);
    check_file(path, &a);
    if (hit == 0) break; /* the scenario no longer reaches N */
  }
  printf(
      "oom %s: about %ld allocations; N = %ld, %ld, ... (stride %ld): "
      "%ld runs, %ld failures injected\n",
      persist ? "persistent" : "single", total, first, first + stride, stride,
      runs, injected);
  if (first <= total) ck_assert_int_gt(injected, 0);
  tu_remove_db(path);
  tu_remove_db(base);
}

START_TEST(open_fresh_file_single) {
  fail_each_allocation(scenario_coupons, true, false);
}
END_TEST

START_TEST(open_fresh_file_persistent) {
  fail_each_allocation(scenario_coupons, true, true);
}
END_TEST

START_TEST(orders_single) {
  fail_each_allocation(scenario_orders, false, false);
}
END_TEST

START_TEST(orders_persistent) {
  fail_each_allocation(scenario_orders, false, true);
}
END_TEST

/* ---- every allocation of one call, on a handle that stays open -----------
 * Exhaustive (stride 1) and quick: the regression test of what the
 * scenarios found. A transaction the writer could not roll back (ROLLBACK
 * was prepared only on first use, which failed for want of memory) stayed
 * open and failed every later batch with "cannot start a transaction within
 * a transaction"; a read connection whose ROLLBACK failed went back to the
 * pool inside its transaction and broke the next sc_verify; integrity_check
 * reported a page it could not read for want of memory ("error code=7") and
 * sc_verify called that corruption; an event payload whose bind failed for
 * want of memory was written as NULL (SC_INVALID). */

typedef struct one_call {
  sc_db *db;
  sc_id product, policy, order;
  int64_t key;
} one_call;

typedef int (*call_fn)(one_call *c);

static int call_deposit(one_call *c) {
  char key[32];
  snprintf(key, sizeof key, "k%lld", (long long)++c->key);
  return sc_account_deposit(c->db, 7, 100, key);
}

static int call_issue(one_call *c) {
  return sc_coupon_issue(c->db, c->policy, 7, NULL);
}

static int call_checkout(one_call *c) {
  sc_line line = {c->product, 1};
  sc_checkout_req req = {.user = 7, .lines = &line, .n_lines = 1};
  sc_id order = 0;
  return sc_checkout(c->db, &req, &order);
}

/* Pays a fresh order, made without faults. */
static int call_pay(one_call *c) {
  disarm();
  sc_line line = {c->product, 1};
  sc_checkout_req req = {.user = 7, .lines = &line, .n_lines = 1};
  ck_assert_sc(sc_checkout(c->db, &req, &c->order), SC_OK);
  return SC_OK;
}

static int call_verify(one_call *c) {
  char *report = NULL;
  int rc = sc_verify(c->db, &report);
  if (rc == SC_OK) ck_assert_str_eq(report, "ok\n");
  sc_free(report);
  return rc;
}

static int call_reads(one_call *c) {
  sc_stock s;
  sc_account a;
  int rc = sc_stock_get(c->db, c->product, &s);
  if (rc == SC_OK) rc = sc_account_get(c->db, 7, &a);
  return rc;
}

/* Claims what is waiting and acks it: the outbox's allocations (the event
 * array, the payload copies) and its two writes. */
static int call_outbox(one_call *c) {
  sc_event *ev = NULL;
  int n = 0;
  int rc = sc_outbox_claim(c->db, 8, 60000, &ev, &n);
  for (int i = 0; rc == SC_OK && i < n; i++) {
    sc_event_data d;
    ck_assert_sc(sc_event_decode(ev[i].payload, ev[i].payload_len, &d), SC_OK);
    rc = sc_outbox_ack(c->db, ev[i].id, ev[i].claim);
  }
  sc_events_free(ev, n);
  return rc;
}

/* Purges delivered events: the batch's two statements and their commit. */
static int call_purge(one_call *c) {
  return sc_outbox_purge(c->db, INT64_MAX, NULL);
}

/* Something to purge, made without faults: three events, delivered. */
static void deliver_some(one_call *c) {
  disarm();
  for (int i = 0; i < 3; i++)
    ck_assert_sc(call_issue(c), SC_OK);
  for (;;) {
    sc_event *ev = NULL;
    int n = 0;
    ck_assert_sc(sc_outbox_claim(c->db, 100, 60000, &ev, &n), SC_OK);
    for (int i = 0; i < n; i++) {
      ck_assert_sc(sc_outbox_ack(c->db, ev[i].id, ev[i].claim), SC_OK);
    }
    sc_events_free(ev, n);
    if (n == 0) break;
  }
}

static void fail_each_in_call(one_call *c, const char *name, call_fn fn,
                              bool persist) {
  long n = 1;
  for (;; n++) {
    if (fn == call_pay) call_pay(c); /* the order to pay, without faults */
    if (fn == call_purge) deliver_some(c);
    arm(n, persist);
    int rc = fn == call_pay ? sc_order_pay(c->db, c->order) : fn(c);
    disarm();
    ck_assert_msg(accepted(rc), "%s N=%ld: %s (%s)", name, n, sc_err_name(rc),
                  sc_errmsg(NULL));
    bool hit = atomic_load(&n_injected) > 0;
    /* The handle still works, and the file is sound. */
    if (rc != SC_OK) {
      rc = fn == call_pay ? sc_order_pay(c->db, c->order) : fn(c);
      ck_assert_msg(rc == SC_OK, "%s N=%ld, retried: %s (%s)", name, n,
                    sc_err_name(rc), sc_errmsg(NULL));
    }
    if (fn != call_verify) tu_assert_verify(c->db); /* else just done */
    if (!hit) break;
  }
  printf("oom %s %s: %ld allocations failed in turn\n", name,
         persist ? "persistent" : "single", n - 1);
  ck_assert_int_gt(n, 1);
}

static void fail_each_in_calls(bool persist) {
  char *path = tu_db_path("oom-call");
  sc_options o;
  sc_options_oom(&o);
  one_call c = {.db = tu_open(path, &o)};
  sc_coupon_policy_spec spec = {
      .name = "p", .max_count = 100000, .per_user_limit = 100000};
  ck_assert_sc(sc_coupon_policy_create(c.db, &spec, &c.policy), SC_OK);
  ck_assert_sc(sc_product_create(c.db, "p", 1, 100000, &c.product), SC_OK);
  ck_assert_sc(sc_account_deposit(c.db, 7, 1000000, NULL), SC_OK);
  fail_each_in_call(&c, "deposit", call_deposit, persist);
  fail_each_in_call(&c, "issue", call_issue, persist);
  fail_each_in_call(&c, "checkout", call_checkout, persist);
  fail_each_in_call(&c, "pay", call_pay, persist);
  fail_each_in_call(&c, "verify", call_verify, persist);
  fail_each_in_call(&c, "reads", call_reads, persist);
  fail_each_in_call(&c, "outbox", call_outbox, persist);
  fail_each_in_call(&c, "purge", call_purge, persist);
  ck_assert_sc(sc_close(c.db), SC_OK);
  tu_remove_db(path);
}

START_TEST(each_call_single) {
  fail_each_in_calls(false);
}
END_TEST

START_TEST(each_call_persistent) {
  fail_each_in_calls(true);
}
END_TEST

int main(void) {
  install_allocators();
  /* Thousands of runs open, write and close a file: on tmpfs they cost no
   * fsync. Durability is not what this suite tests. */
  if (getenv("SC_OOM_TMPDIR") != NULL) {
    setenv("SC_TEST_TMPDIR", getenv("SC_OOM_TMPDIR"), 1);
  } else if (access("/dev/shm", W_OK) == 0) {
    setenv("SC_TEST_TMPDIR", "/dev/shm", 1);
  }
  Suite *s = suite_create("oom");
  TCase *tc = tu_tcase("oom");
  tcase_add_test(tc, each_call_single);
  tcase_add_test(tc, each_call_persistent);
  tcase_add_test(tc, open_fresh_file_single);
  tcase_add_test(tc, open_fresh_file_persistent);
  tcase_add_test(tc, orders_single);
  tcase_add_test(tc, orders_persistent);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
