/* I/O fault injection: a VFS shim (faultvfs.c), registered as SQLite's
 * default VFS before anything opens a file, fails the 1st, 2nd ... Nth
 * write, sync or read of a scenario (open, deposits, coupons, checkouts,
 * payments, close), once or from N on, until a run no longer reaches N.
 * Every call must return SC_OK, SC_IOERR or (a commit whose fsync failed)
 * SC_AMBIGUOUS; after persistent faults stop, the same handle must work
 * again, unless an fsync failed: then it refuses writes with SC_AMBIGUOUS
 * and reads go on, and a reopened handle works. The file, reopened without
 * faults, must pass sc_verify (integrity_check included) and hold every
 * acknowledged operation, while every operation that failed otherwise is
 * absent; an ambiguous one may be either.
 *
 * Then the same with the process exiting right after the fault (a forked
 * child that never closes its handle), so that what reached the log without
 * a good fsync is recovered by the next open: an ambiguous commit may come
 * back, any other failure must not. */
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultvfs.h"
#include "internal.h" /* SC__ERRMSG_MAX */
#include "test_util.h"

/* faultvfs.c is compiled into this suite: tests/CMakeLists.txt builds one
 * executable per check_*.c with the shared helpers only. */
#include "faultvfs.c"

#define OPS 16
#define USER 7
#define AFTER_REOPEN (OPS + 4) /* a deposit's number, after the scenario */

enum { K_DEPOSIT, K_ISSUE, K_CHECKOUT, K_PAY };

typedef struct op_log {
  int kind, rc;
  int i;    /* its number: the kind and the idempotency key derive from it */
  sc_id id; /* coupon, order, or the order paid */
} op_log;

typedef struct run {
  sc_id policy, product;
  op_log ops[OPS + 2];
  int n;
  int open_rc, close_rc;
} run;

static const char *kind_name(int k) {
  static const char *names[] = {"deposit", "issue", "checkout", "pay"};
  return names[k];
}

static bool accepted(int rc) {
  return rc == SC_OK || rc == SC_IOERR || rc == SC_AMBIGUOUS;
}

static void key_of(char *buf, size_t n, const char *tag, int i) {
  snprintf(buf, n, "%s-%d", tag, i);
}

/* One operation of the scenario: i decides the kind. */
static void one_op(sc_db *db, run *r, int i, sc_id *last_order) {
  op_log *o = &r->ops[r->n++];
  char key[32];
  o->i = i;
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

/* After a commit whose fsync failed (SC_AMBIGUOUS), the handle refuses
 * every write with SC_AMBIGUOUS, and reads go on. */
static bool check_poisoned(sc_db *db, const run *r) {
  int first = -1;
  for (int i = 0; i < r->n && first < 0; i++) {
    if (r->ops[i].rc == SC_AMBIGUOUS) first = i;
  }
  if (first < 0) return false;
  for (int i = first; i < r->n; i++) {
    const op_log *o = &r->ops[i];
    if (o->kind == K_PAY && o->id == 0) continue; /* nothing was called */
    ck_assert_msg(o->rc == SC_AMBIGUOUS, "%s %d after an ambiguous commit: %s",
                  kind_name(o->kind), i, sc_err_name(o->rc));
  }
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, r->policy, &p), SC_OK);
  return true;
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
  bool poisoned = check_poisoned(db, r);
  if (persist) {
    /* The disk comes back: the same handle must work again, unless an fsync
     * failed; then only a reopened one does. */
    fv_disarm();
    one_op(db, r, OPS, &last_order); /* a deposit */
    int want = poisoned ? SC_AMBIGUOUS : SC_OK;
    ck_assert_msg(r->ops[r->n - 1].rc == want, "after the faults: %s (%s)",
                  sc_err_name(r->ops[r->n - 1].rc), sc_errmsg(NULL));
    if (poisoned) {
      ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "reopen"));
      ck_assert_sc(sc_close(db), SC_OK);
      db = tu_open(path, NULL);
      one_op(db, r, AFTER_REOPEN, &last_order); /* a deposit */
      ck_assert_msg(r->ops[r->n - 1].rc == SC_OK, "after reopening: %s (%s)",
                    sc_err_name(r->ops[r->n - 1].rc), sc_errmsg(NULL));
    }
  }
  /* Single faults may land in the final checkpoint of sc_close too. */
  r->close_rc = sc_close(db);
  ck_assert_msg(r->close_rc == SC_OK || r->close_rc == SC_IOERR, "sc_close: %s",
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
      key_of(key, sizeof key, "dep", o->i);
      return q_key(h, 2, key) != 0;
    case K_ISSUE:
      return q_id(h, "SELECT count(*) FROM sc_coupon WHERE id = ?1", o->id);
    case K_CHECKOUT:
      key_of(key, sizeof key, "co", o->i);
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
    /* An ambiguous commit may or may not be there. */
    if (o->rc == SC_AMBIGUOUS) continue;
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
      "operations and %ld closes failed (SC_IOERR, SC_AMBIGUOUS)\n",
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
 * acknowledged may be missing, none failed may be there (an ambiguous one
 * may). */

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
    int64_t there = 0;
    for (int i = 0; i < DEP_EACH; i++) {
      char key[32];
      snprintf(key, sizeof key, "b-%d-%d", t, i);
      int rc = b->rc[t][i];
      bool is_there = q_key(h, 2, key) != 0;
      ck_assert_msg(accepted(rc), "deposit: %s", sc_err_name(rc));
      ck_assert_msg(rc == SC_AMBIGUOUS || is_there == (rc == SC_OK),
                    "deposit %s (%s) is %s", key, sc_err_name(rc),
                    rc == SC_OK ? "lost" : "there though it failed");
      there += is_there;
      *failed += rc != SC_OK;
    }
    int64_t balance = q_id(h,
                           "SELECT coalesce((SELECT balance FROM sc_account"
                           " WHERE user_id = ?1), 0)",
                           100 + t);
    ck_assert_int_eq(balance, there);
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

/* ---- a fault in a purge
 * ------------------------------------------------------ 1,500 delivered events
 * take two batches. The Nth write, sync or read fails: the call returns SC_OK
 * or SC_IOERR, the batches it reports purged are exactly those gone from the
 * reopened file (a batch that failed left nothing), the file verifies, and a
 * purge without faults finishes. */

#define PURGE_EVENTS 1000

static void make_delivered(const char *path) {
  sc_db *db = tu_open(path, NULL);
  for (int i = 0; i < PURGE_EVENTS; i++) {
    ck_assert_sc(sc_account_deposit(db, 1 + i % 50, 1, NULL), SC_OK);
  }
  for (;;) {
    sc_event *ev = NULL;
    int n = 0;
    ck_assert_sc(sc_outbox_claim(db, 1000, 60000, &ev, &n), SC_OK);
    for (int i = 0; i < n; i++) {
      ck_assert_sc(sc_outbox_ack(db, ev[i].id, ev[i].claim), SC_OK);
    }
    sc_events_free(ev, n);
    if (n == 0) break;
  }
  ck_assert_sc(sc_close(db), SC_OK);
}

static int64_t events_in(const char *path) {
  return tu_count(path, "SELECT count(*) FROM sc_outbox");
}

static void purge_fail_each(int kind) {
  char *base = tu_db_path("iop-base");
  char *path = tu_db_path("iop");
  make_delivered(base);
  long n = 1, failed = 0;
  for (;; n++) {
    tu_remove_db(path);
    path = tu_db_path("iop");
    copy_file(base, path);
    sc_db *db = tu_open(path, NULL);
    int64_t purged = -1;
    fv_arm(kind, n, false);
    int rc = sc_outbox_purge(db, INT64_MAX, &purged);
    fv_disarm();
    long hit = fv_injected();
    ck_assert_msg(accepted(rc), "purge N=%ld: %s (%s)", n, sc_err_name(rc),
                  sc_errmsg(NULL));
    failed += rc != SC_OK;
    ck_assert_int_ge(purged, 0);
    int close_rc = sc_close(db);
    ck_assert_msg(accepted(close_rc), "close: %s", sc_err_name(close_rc));
    /* An ambiguous batch (a failed fsync) may or may not be gone. */
    int64_t left = events_in(path);
    ck_assert_msg(left == PURGE_EVENTS - purged ||
                      (rc == SC_AMBIGUOUS &&
                       left >= PURGE_EVENTS - purged - SC__PURGE_BATCH_MAX &&
                       left < PURGE_EVENTS - purged),
                  "purge N=%ld: %s, %lld reported purged, %lld left", n,
                  sc_err_name(rc), (long long)purged, (long long)left);
    if (rc == SC_OK) ck_assert_int_eq(purged, PURGE_EVENTS - 1);
    db = tu_open(path, NULL);
    tu_assert_verify(db);
    ck_assert_sc(sc_outbox_purge(db, INT64_MAX, NULL), SC_OK);
    tu_assert_verify(db);
    ck_assert_sc(sc_close(db), SC_OK);
    ck_assert_int_eq(events_in(path), 1);
    if (hit == 0) break;
  }
  printf("iofault purge %s: %ld runs, %ld purges failed\n",
         kind == FV_WRITE  ? "write"
         : kind == FV_SYNC ? "sync"
                           : "read",
         n, failed);
  /* A single failed read makes the writer replay the batch, whose second
   * read succeeds: the purge then succeeds. */
  if (kind != FV_READ) ck_assert_int_gt(failed, 0);
  tu_remove_db(path);
  tu_remove_db(base);
}

START_TEST(purge_under_each_fault) {
  purge_fail_each(FV_WRITE);
  purge_fail_each(FV_SYNC);
  purge_fail_each(FV_READ);
}
END_TEST

/* ---- a fault, then the process exits -------------------------------------
 * A forked child makes the calls and exits without closing its handle; the
 * parent reopens the file, and SQLite's recovery takes whatever commit
 * record reached the log, synced or not. */

/* What the child saw, in memory shared with the parent. */
typedef struct seen {
  int setup_rc;
  int issue_rc[2];
  int write_after_rc, read_after_rc;
  char issue_msg[SC__ERRMSG_MAX], write_after_msg[SC__ERRMSG_MAX];
} seen;

typedef struct exit_case {
  char *path;
  sc_id policy;
  int kind; /* FV_SYNC or FV_WRITE */
  seen *seen;
} exit_case;

static void exit_case_init(exit_case *c, const char *tag, int64_t max_count) {
  c->path = tu_db_path(tag);
  c->seen = mmap(NULL, sizeof *c->seen, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(c->seen, MAP_FAILED);
  memset(c->seen, 0, sizeof *c->seen);
  sc_db *db = tu_open(c->path, NULL);
  sc_coupon_policy_spec spec = {
      .name = "exit", .max_count = max_count, .per_user_limit = 10};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &c->policy), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
}

static void exit_case_free(exit_case *c) {
  munmap(c->seen, sizeof *c->seen);
  tu_remove_db(c->path);
}

/* Opens the file in the child and commits once without faults, so that the
 * log has its header and the next commit syncs only its own frames. */
static sc_db *child_open(exit_case *c) {
  sc_db *db = NULL;
  c->seen->setup_rc = sc_open(c->path, NULL, &db);
  if (c->seen->setup_rc == SC_OK) {
    c->seen->setup_rc = sc_account_deposit(db, USER, 100, "warm-up");
  }
  return c->seen->setup_rc == SC_OK ? db : NULL;
}

static int child_issue_once(int i, void *ud) {
  (void)i;
  exit_case *c = ud;
  seen *s = c->seen;
  sc_db *db = child_open(c);
  if (db == NULL) return 1;
  fv_arm(FV_SYNC, 1, false);
  s->issue_rc[0] = sc_coupon_issue(db, c->policy, USER, NULL);
  snprintf(s->issue_msg, sizeof s->issue_msg, "%s", sc_errmsg(db));
  fv_disarm();
  /* The disk is fine again, but the handle does not trust it. */
  s->write_after_rc = sc_account_deposit(db, USER, 1, "after");
  snprintf(s->write_after_msg, sizeof s->write_after_msg, "%s", sc_errmsg(db));
  sc_coupon_policy p;
  s->read_after_rc = sc_coupon_policy_get(db, c->policy, &p);
  return 0; /* exits with the handle open */
}

static int64_t issued(sc_db *db, sc_id policy) {
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  return p.issued_count;
}

START_TEST(an_issue_whose_fsync_fails_is_ambiguous_then_writes_are_refused) {
  exit_case c;
  exit_case_init(&c, "iof-exit", 10);
  tu_fork_race(1, child_issue_once, &c);
  seen *s = c.seen;
  ck_assert_sc(s->setup_rc, SC_OK);
  /* Reopened: the issue may or may not have come back, and the file is
   * sound either way. Any status but SC_AMBIGUOUS would promise it did
   * not. */
  sc_db *db = tu_open(c.path, NULL);
  tu_assert_verify(db);
  int64_t n = issued(db, c.policy);
  printf("iofault: an issue whose fsync failed, then exit: %s (%s), %s\n",
         sc_err_name(s->issue_rc[0]), s->issue_msg,
         n ? "it came back" : "it is gone");
  ck_assert_msg(s->issue_rc[0] == SC_AMBIGUOUS || n == 0,
                "an issue reported %s is there after reopening",
                sc_err_name(s->issue_rc[0]));
  ck_assert_sc(s->issue_rc[0], SC_AMBIGUOUS);
  ck_assert_int_le(n, 1);
  ck_assert_ptr_nonnull(strstr(s->issue_msg, "unknown"));
  ck_assert_ptr_nonnull(strstr(s->issue_msg, "idempotency key"));
  ck_assert_ptr_nonnull(strstr(s->issue_msg, "read first"));
  /* The handle refused the next write, which therefore is not there, and
   * went on reading. */
  ck_assert_sc(s->write_after_rc, SC_AMBIGUOUS);
  ck_assert_ptr_nonnull(strstr(s->write_after_msg, "reopen"));
  ck_assert_sc(s->read_after_rc, SC_OK);
  sc_account a;
  ck_assert_sc(sc_account_get(db, USER, &a), SC_OK);
  ck_assert_int_eq(a.balance, 100);
  /* A reopened handle writes again. */
  ck_assert_sc(sc_coupon_issue(db, c.policy, USER, NULL), SC_OK);
  ck_assert_int_eq(issued(db, c.policy), n + 1);
  ck_assert_sc(sc_close(db), SC_OK);
  exit_case_free(&c);
}
END_TEST

/* Two users race for the last coupon in one batch whose commit fails. */
typedef struct issuer {
  pthread_t thread;
  sc_db *db;
  sc_id policy, user;
  int rc;
} issuer;

static void *issuer_main(void *arg) {
  issuer *u = arg;
  u->rc = sc_coupon_issue(u->db, u->policy, u->user, NULL);
  return NULL;
}

static int child_two_issues(int i, void *ud) {
  (void)i;
  exit_case *c = ud;
  sc_db *db = child_open(c);
  if (db == NULL) return 1;
  tu_gate *gate = tu_gate_close(db);
  issuer users[2];
  for (int u = 0; u < 2; u++) {
    users[u] = (issuer){.db = db, .policy = c->policy, .user = 100 + u};
    if (pthread_create(&users[u].thread, NULL, issuer_main, &users[u]) != 0) {
      return 2;
    }
    tu_wait_queued(db, u + 1); /* user 100 first */
  }
  /* The gate's own batch writes nothing; the next commit is the issues'. */
  fv_arm(c->kind, 1, false);
  tu_gate_open(gate);
  for (int u = 0; u < 2; u++) {
    pthread_join(users[u].thread, NULL);
    c->seen->issue_rc[u] = users[u].rc;
  }
  fv_disarm();
  return 0; /* exits with the handle open */
}

/* The first issue takes the last coupon and the second is sold out, inside
 * the batch; the commit fails. Both must hear the batch's status: the
 * refusal rested on an issue that did not commit. */
static void two_issues_in_a_failed_batch(int kind) {
  exit_case c = {.kind = kind};
  exit_case_init(&c, "iof-batch-exit", 1);
  tu_fork_race(1, child_two_issues, &c);
  seen *s = c.seen;
  ck_assert_sc(s->setup_rc, SC_OK);
  int want = kind == FV_SYNC ? SC_AMBIGUOUS : SC_IOERR;
  ck_assert_sc(s->issue_rc[0], want);
  ck_assert_sc(s->issue_rc[1], want);
  sc_db *db = tu_open(c.path, NULL);
  tu_assert_verify(db);
  int64_t n = issued(db, c.policy);
  printf(
      "iofault: two issues, one coupon, the batch's %s failed, then exit: "
      "%s, %s; %lld issued\n",
      kind == FV_SYNC ? "fsync" : "write", sc_err_name(s->issue_rc[0]),
      sc_err_name(s->issue_rc[1]), (long long)n);
  if (kind == FV_SYNC) {
    ck_assert_int_le(n, 1); /* ambiguous: either */
  } else {
    /* A failure other than SC_AMBIGUOUS changed nothing, even after the
     * crash; so the refused user's retry is not a second chance. */
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tu_count(c.path, "SELECT count(*) FROM sc_coupon"), 0);
    ck_assert_int_eq(tu_count(c.path,
                              "SELECT count(*) FROM sc_outbox"
                              " WHERE type = 1"),
                     0);
    ck_assert_sc(sc_coupon_issue(db, c.policy, 101, NULL), SC_OK);
    ck_assert_sc(sc_coupon_issue(db, c.policy, 100, NULL), SC_SOLD_OUT);
  }
  ck_assert_sc(sc_close(db), SC_OK);
  exit_case_free(&c);
}

START_TEST(a_batch_whose_fsync_fails_is_ambiguous_for_all) {
  two_issues_in_a_failed_batch(FV_SYNC);
}
END_TEST

START_TEST(a_batch_whose_write_fails_fails_all_and_stays_out) {
  two_issues_in_a_failed_batch(FV_WRITE);
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
  tcase_add_test(tc, purge_under_each_fault);
  tcase_add_test(
      tc, an_issue_whose_fsync_fails_is_ambiguous_then_writes_are_refused);
  tcase_add_test(tc, a_batch_whose_fsync_fails_is_ambiguous_for_all);
  tcase_add_test(tc, a_batch_whose_write_fails_fails_all_and_stays_out);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
