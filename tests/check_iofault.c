/* I/O fault injection: a VFS shim (faultvfs.c), registered as SQLite's
 * default VFS before anything opens a file, fails the 1st, 2nd ... Nth
 * write, sync or read of a scenario (open, deposits, coupons, checkouts,
 * payments, close), once or from N on, until a run no longer reaches N.
 * Every call must return SC_OK or SC_IOERR; after persistent faults stop,
 * the same handle must work again; and the file, reopened without faults,
 * must pass sc_verify (integrity_check included) and hold every
 * acknowledged operation, while every operation that failed is absent. */
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultvfs.h"
#include "test_util.h"

/* faultvfs.c is compiled into this suite: tests/CMakeLists.txt builds one
 * executable per check_*.c with the shared helpers only. */
#include "faultvfs.c"

#define OPS 16
#define USER 7

enum { K_DEPOSIT, K_ISSUE, K_CHECKOUT, K_PAY };

typedef struct op_log {
  int kind, rc;
  sc_id id; /* coupon, order, or the order paid */
} op_log;

typedef struct run {
  sc_id policy, product;
  op_log ops[OPS + 1];
  int n;
  int open_rc, close_rc;
} run;

static const char *kind_name(int k) {
  static const char *names[] = {"deposit", "issue", "checkout", "pay"};
  return names[k];
}

static bool accepted(int rc) {
  return rc == SC_OK || rc == SC_IOERR;
}

static void key_of(char *buf, size_t n, const char *tag, int i) {
  snprintf(buf, n, "%s-%d", tag, i);
}

/* One operation of the scenario: i decides the kind. */
static void one_op(sc_db *db, run *r, int i, sc_id *last_order) {
  op_log *o = &r->ops[r->n++];
  char key[32];
  o->kind = i % 4;
  switch (o->kind) {
    case K_DEPOSIT:
      key_of(key, sizeof key, "dep", i);
      o->rc = sc_account_deposit(db, USER, i + 1, key);
      break;
    case K_ISSUE:
      o->rc = sc_coupon_issue(db, r->policy, USER, &o->id);
      break;
    case K_CHECKOUT: {
      key_of(key, sizeof key, "co", i);
      sc_line line = {r->product, 1};
      sc_checkout_req req = {
          .user = USER, .lines = &line, .n_lines = 1, .idempotency_key = key};
      o->rc = sc_checkout(db, &req, &o->id);
      if (o->rc == SC_OK) *last_order = o->id;
      break;
    }
    case K_PAY:
      o->id = *last_order;
      o->rc = o->id ? sc_order_pay(db, o->id) : SC_OK;
      break;
  }
  ck_assert_msg(accepted(o->rc), "%s %d: %s (%s)", kind_name(o->kind), i,
                sc_err_name(o->rc), sc_errmsg(NULL));
  if (o->rc != SC_OK) ck_assert_str_ne(sc_errmsg(NULL), "");
}

/* Runs the scenario under whatever faults are armed. */
static void scenario(const char *path, run *r, bool persist) {
  sc_db *db = NULL;
  r->open_rc = sc_open(path, NULL, &db);
  ck_assert_msg(accepted(r->open_rc) || r->open_rc == SC_CORRUPT,
                "sc_open: %s (%s)", sc_err_name(r->open_rc), sc_errmsg(NULL));
  if (r->open_rc != SC_OK) {
    ck_assert_ptr_null(db);
    return;
  }
  sc_id last_order = 0;
  for (int i = 0; i < OPS; i++)
    one_op(db, r, i, &last_order);
  if (persist) {
    /* The disk comes back: the same handle must work again. */
    fv_disarm();
    one_op(db, r, OPS, &last_order); /* a deposit */
    ck_assert_msg(r->ops[r->n - 1].rc == SC_OK, "after the faults: %s (%s)",
                  sc_err_name(r->ops[r->n - 1].rc), sc_errmsg(NULL));
  }
  /* Single faults may land in the final checkpoint of sc_close too. */
  r->close_rc = sc_close(db);
  ck_assert_msg(accepted(r->close_rc), "sc_close: %s",
                sc_err_name(r->close_rc));
}

static int64_t q_key(sqlite3 *h, int scope, const char *key) {
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(
      sqlite3_prepare_v2(h,
                         "SELECT coalesce((SELECT result_id FROM sc_idempotency"
                         " WHERE scope = ?1 AND key = ?2), 0)",
                         -1, &st, NULL),
      SQLITE_OK);
  sqlite3_bind_int(st, 1, scope);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static int64_t q_id(sqlite3 *h, const char *sql, int64_t id) {
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
  sqlite3_bind_int64(st, 1, id);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Whether the effect of operation i is in the file. */
static bool present(sqlite3 *h, const run *r, int i) {
  const op_log *o = &r->ops[i];
  char key[32];
  switch (o->kind) {
    case K_DEPOSIT:
      key_of(key, sizeof key, "dep", i);
      return q_key(h, 2, key) != 0;
    case K_ISSUE:
      return q_id(h, "SELECT count(*) FROM sc_coupon WHERE id = ?1", o->id);
    case K_CHECKOUT:
      key_of(key, sizeof key, "co", i);
      return q_key(h, 1, key) != 0;
    default:
      return o->id == 0 || q_id(h, "SELECT status FROM sc_order WHERE id = ?1",
                                o->id) == SC_ORDER_CONFIRMED;
  }
}

static void check_file(const char *path, const run *r) {
  sc_db *db = tu_open(path, NULL);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  for (int i = 0; i < r->n; i++) {
    const op_log *o = &r->ops[i];
    /* A failed issue has no coupon id to look for. */
    if (o->kind == K_ISSUE && o->rc != SC_OK) continue;
    /* A failed payment of a paid order leaves it paid. */
    if (o->kind == K_PAY && o->rc != SC_OK) continue;
    bool there = present(h, r, i);
    ck_assert_msg(there == (o->rc == SC_OK), "%s %d (%s) is %s",
                  kind_name(o->kind), i, sc_err_name(o->rc),
                  there ? "there though it failed" : "lost");
  }
  sqlite3_close(h);
}

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

/* A file with a policy, a product and money, made without faults. */
static void make_base(const char *path, run *proto) {
  sc_db *db = tu_open(path, NULL);
  sc_coupon_policy_spec spec = {
      .name = "io", .max_count = 1000, .per_user_limit = 1000};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &proto->policy), SC_OK);
  ck_assert_sc(sc_product_create(db, "io", 10, 1000, &proto->product), SC_OK);
  ck_assert_sc(sc_account_deposit(db, USER, 100000, NULL), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
}

static void fail_each(int kind, bool persist) {
  char *base = tu_db_path("io-base");
  char *path = tu_db_path("io");
  run proto = {0};
  make_base(base, &proto);
  long n = 1, faults = 0, open_failed = 0, close_failed = 0, op_failed = 0;
  for (;; n++) {
    tu_remove_db(path);
    path = tu_db_path("io");
    copy_file(base, path);
    run r = proto;
    fv_arm(kind, n, persist);
    scenario(path, &r, persist);
    fv_disarm();
    long hit = fv_injected();
    faults += hit;
    open_failed += r.open_rc != SC_OK;
    close_failed += r.close_rc != SC_OK;
    for (int i = 0; i < r.n; i++)
      op_failed += r.ops[i].rc != SC_OK;
    check_file(path, &r);
    if (hit == 0) break;
  }
  printf(
      "iofault %s %s: %ld runs, %ld faults injected; %ld opens, %ld "
      "operations and %ld closes failed with SC_IOERR\n",
      kind == FV_WRITE  ? "write"
      : kind == FV_SYNC ? "sync"
                        : "read",
      persist ? "persistent" : "single", n, faults, open_failed, op_failed,
      close_failed);
  ck_assert_int_gt(faults, 0);
  /* A single failed read during an operation makes the writer replay its
   * batch, and the replay reads again: the operation succeeds. */
  if (persist || kind != FV_READ) ck_assert_int_gt(op_failed, 0);
  tu_remove_db(path);
  tu_remove_db(base);
}

/* ---- a fault in a batch of many operations --------------------------------
 * Threads deposit at once, so the writer commits many deposits per batch; a
 * fault fails the whole batch, and every operation in it must fail: none
 * acknowledged may be missing, none failed may be there. */

#define DEP_THREADS 8
#define DEP_EACH 12

typedef struct batch_run {
  sc_db *db;
  int rc[DEP_THREADS][DEP_EACH];
} batch_run;

static void deposit_many(int t, void *ud) {
  batch_run *b = ud;
  for (int i = 0; i < DEP_EACH; i++) {
    char key[32];
    snprintf(key, sizeof key, "b-%d-%d", t, i);
    b->rc[t][i] = sc_account_deposit(b->db, 100 + t, 1, key);
  }
}

static void check_batches(const char *path, const batch_run *b, long *failed) {
  sc_db *db = tu_open(path, NULL);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  for (int t = 0; t < DEP_THREADS; t++) {
    int64_t acked = 0;
    for (int i = 0; i < DEP_EACH; i++) {
      char key[32];
      snprintf(key, sizeof key, "b-%d-%d", t, i);
      int rc = b->rc[t][i];
      ck_assert_msg(accepted(rc), "deposit: %s", sc_err_name(rc));
      ck_assert_msg((q_key(h, 2, key) != 0) == (rc == SC_OK),
                    "deposit %s (%s) is %s", key, sc_err_name(rc),
                    rc == SC_OK ? "lost" : "there though it failed");
      acked += rc == SC_OK;
      *failed += rc != SC_OK;
    }
    int64_t balance = q_id(h,
                           "SELECT coalesce((SELECT balance FROM sc_account"
                           " WHERE user_id = ?1), 0)",
                           100 + t);
    ck_assert_int_eq(balance, acked);
  }
  sqlite3_close(h);
}

static void fail_each_in_batches(int kind) {
  long n = 1, failed = 0;
  for (;; n++) {
    char *path = tu_db_path("io-batch");
    sc_db *db = tu_open(path, NULL);
    batch_run b = {.db = db};
    fv_arm(kind, n, false);
    tu_race(DEP_THREADS, deposit_many, &b);
    int close_rc = sc_close(db);
    fv_disarm();
    ck_assert_msg(accepted(close_rc), "sc_close: %s", sc_err_name(close_rc));
    check_batches(path, &b, &failed);
    tu_remove_db(path);
    if (fv_injected() == 0) break;
  }
  printf(
      "iofault %s in batches: %ld runs, %ld deposits failed with their "
      "batch\n",
      kind == FV_WRITE ? "write" : "sync", n, failed);
  ck_assert_int_gt(failed, 0);
}

START_TEST(write_in_batches) {
  fail_each_in_batches(FV_WRITE);
}
END_TEST
START_TEST(sync_in_batches) {
  fail_each_in_batches(FV_SYNC);
}
END_TEST

START_TEST(write_single) {
  fail_each(FV_WRITE, false);
}
END_TEST
START_TEST(write_persistent) {
  fail_each(FV_WRITE, true);
}
END_TEST
START_TEST(sync_single) {
  fail_each(FV_SYNC, false);
}
END_TEST
START_TEST(sync_persistent) {
  fail_each(FV_SYNC, true);
}
END_TEST
START_TEST(read_single) {
  fail_each(FV_READ, false);
}
END_TEST
START_TEST(read_persistent) {
  fail_each(FV_READ, true);
}
END_TEST

START_TEST(a_claim_whose_commit_fails_leaks_nothing) {
  /* The claim copies the payloads, then its batch fails to commit: the call
   * fails and the copies are freed (LeakSanitizer checks under ASan). */
  char *path = tu_db_path("iof-claim");
  sc_db *db = tu_open(path, NULL);
  for (int u = 1; u <= 3; u++) {
    ck_assert_sc(sc_account_deposit(db, u, 10, NULL), SC_OK);
  }
  sc_event *ev = (sc_event *)0x1;
  int n = -1;
  fv_arm(FV_WRITE, 1, false);
  ck_assert_sc(sc_outbox_claim(db, 10, 30000, &ev, &n), SC_IOERR);
  fv_disarm();
  ck_assert_ptr_eq(ev, (sc_event *)0x1); /* untouched on failure */
  ck_assert_int_eq(n, -1);
  /* Nothing was leased: all three are claimable at once. */
  ck_assert_sc(sc_outbox_claim(db, 10, 30000, &ev, &n), SC_OK);
  ck_assert_int_eq(n, 3);
  sc_events_free(ev, n);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

int main(void) {
  if (fv_register() != SQLITE_OK) return 2;
  /* Hundreds of runs copy and open a file: tmpfs spares the disk. The shim
   * fails syncs whatever the file system. */
  if (getenv("SC_IOFAULT_TMPDIR") != NULL) {
    setenv("SC_TEST_TMPDIR", getenv("SC_IOFAULT_TMPDIR"), 1);
  } else if (access("/dev/shm", W_OK) == 0) {
    setenv("SC_TEST_TMPDIR", "/dev/shm", 1);
  }
  Suite *s = suite_create("iofault");
  TCase *tc = tu_tcase("iofault");
  tcase_add_test(tc, write_single);
  tcase_add_test(tc, write_persistent);
  tcase_add_test(tc, sync_single);
  tcase_add_test(tc, sync_persistent);
  tcase_add_test(tc, read_single);
  tcase_add_test(tc, read_persistent);
  tcase_add_test(tc, write_in_batches);
  tcase_add_test(tc, sync_in_batches);
  tcase_add_test(tc, a_claim_whose_commit_fails_leaks_nothing);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
