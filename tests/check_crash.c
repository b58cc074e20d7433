/* Crash test: a forked child runs a mixed load on several threads and
 * reports every operation to the parent through a pipe, first its intent
 * (before the call) and then its result (after the call returns, before the
 * thread starts its next call). The parent SIGKILLs the child at a random
 * moment, reopens the file and checks that every acknowledged operation is
 * there, that no operation reported as failed left a trace, that operations
 * in flight at the kill are either wholly there or wholly absent, and that
 * sc_verify and PRAGMA integrity_check pass.
 *
 * Some rounds add an I/O fault before the kill: the fault VFS (faultvfs.c)
 * fails one sync or one write of the child, at random. An operation the
 * fault failed with SC_IOERR must have left no trace; one that got
 * SC_AMBIGUOUS (its commit's fsync failed, or the handle refused writes
 * since) may be there or not, and the checks count it only if it is; after
 * the child's next reopen, writes must work again.
 *
 *   SC_CRASH_ROUNDS=N   rounds (default 20)
 *   SC_CRASH_SEED=S     the first round's seed (default: from the clock);
 *                       round r uses S + r, and every seed is printed. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faultvfs.h"
#include "test_util.h"

/* faultvfs.c is compiled into this suite as into check_iofault. */
#include "faultvfs.c"

#define THREADS 4
#define USERS_PER_THREAD 8
#define PRODUCTS 4
#define MAX_DEPOSIT 1000
#define CHILD_MAX_MS 4000 /* a child nobody killed stops by itself */

/* ---- the record a child sends for each operation ------------------------ */

enum { REC_INTENT = 1, REC_RESULT = 2 };
enum {
  OP_DEPOSIT = 1,
  OP_ISSUE,
  OP_RESTOCK,
  OP_PAUSE,
  OP_CHECKOUT,
  OP_PAY,
  OP_CANCEL,
  OP_EXPIRE,
  OP_REOPEN, /* sc_close then sc_open: a kill may land in the checkpoint */
  OP_ACK,    /* claim one outbox event and ack it */
  OP_KINDS_
};

/* 48 bytes: a write of one record to a pipe is atomic (< PIPE_BUF), so the
 * threads' records interleave but never tear, even under SIGKILL. */
typedef struct rec {
  int32_t type, thread, op, rc;
  int64_t a, b, c, d; /* op arguments and results, by kind (see below) */
} rec;

typedef struct world {
  uint64_t seed;
  int fault_kind; /* FV_SYNC, FV_WRITE, or 0: none */
  long fault_at;  /* the child's fault_at-th call of that kind fails */
  sc_id policy_small, policy_big; /* max 40, limit 3; max 1e6, limit 1e6 */
  sc_id products[PRODUCTS];
  int64_t initial_stock;
} world;

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int64_t rng_range(uint64_t *s, int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

static sc_id user_of(int thread, int k) {
  return (sc_id)thread * 1000 + k + 1;
}

/* ---- the child ---------------------------------------------------------- */

typedef struct child_ctx {
  const char *path;
  const world *w;
  int fd;
  int durability;
  sc_db *db;
  _Atomic int64_t deadline_ns;
  int64_t epoch; /* keeps idempotency keys unique across epochs */
  struct thread_state *threads;
} child_ctx;

static void send_rec(child_ctx *c, const rec *r) {
  ssize_t n;
  do {
    n = write(c->fd, r, sizeof *r);
  } while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof *r) _exit(20);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* What a thread remembers of its own earlier results, across epochs. */
#define KEEP 64
typedef struct thread_state {
  sc_id orders[KEEP];  /* its latest orders, any state */
  sc_id coupons[KEEP]; /* coupons of policy_big it was issued */
  int n_orders, n_coupons;
} thread_state;

static void keep(sc_id *ids, int *n, sc_id id) {
  if (*n < KEEP) {
    ids[(*n)++] = id;
  } else {
    memmove(ids, ids + 1, (KEEP - 1) * sizeof *ids);
    ids[KEEP - 1] = id;
  }
}

static sc_id pick_id(const sc_id *ids, int n, uint64_t *rng) {
  return n == 0 ? 0 : ids[rng_range(rng, 0, n - 1)];
}

/* Chooses thread t's next operation: the intent record. */
static void choose_op(const world *w, int t, thread_state *ts, uint64_t *rng,
                      int64_t keyno, rec *r) {
  int pick = (int)rng_range(rng, 0, 99);
  sc_id user = user_of(t, (int)rng_range(rng, 0, USERS_PER_THREAD - 1));
  if (pick < 25) {
    *r = (rec){.op = OP_DEPOSIT, .a = user, .c = keyno};
    r->b = rng_range(rng, 1, MAX_DEPOSIT);
  } else if (pick < 40) {
    *r = (rec){.op = OP_ISSUE, .b = user};
    r->a = rng_range(rng, 0, 1) ? w->policy_small : w->policy_big;
  } else if (pick < 45) {
    *r = (rec){.op = OP_RESTOCK, .b = rng_range(rng, 1, 10)};
    r->a = w->products[rng_range(rng, 0, PRODUCTS - 1)];
  } else if (pick < 70) {
    *r = (rec){.op = OP_CHECKOUT, .a = user, .c = keyno};
    if (rng_range(rng, 0, 3) == 0)
      r->d = pick_id(ts->coupons, ts->n_coupons, rng);
  } else if (pick < 85) {
    *r = (rec){.op = OP_PAY, .a = pick_id(ts->orders, ts->n_orders, rng)};
  } else if (pick < 92) {
    *r = (rec){.op = OP_CANCEL, .a = pick_id(ts->orders, ts->n_orders, rng)};
  } else if (pick < 95) {
    *r = (rec){.op = OP_EXPIRE};
  } else if (pick < 98 || t != 0) {
    *r = (rec){.op = OP_ACK};
  } else {
    /* Only thread 0 pauses, so the last pause is well defined. */
    *r = (rec){.op = OP_PAUSE, .a = w->policy_small, .b = rng_range(rng, 0, 1)};
  }
  if ((r->op == OP_PAY || r->op == OP_CANCEL) && r->a == 0) r->op = OP_EXPIRE;
  r->type = REC_INTENT;
  r->thread = t;
}

static int do_checkout(child_ctx *c, uint64_t *rng, rec *r) {
  const world *w = c->w;
  sc_line lines[2];
  size_t n = (size_t)rng_range(rng, 1, 2);
  int first = (int)rng_range(rng, 0, PRODUCTS - 1);
  for (size_t i = 0; i < n; i++) {
    lines[i] = (sc_line){w->products[(first + (int)i) % PRODUCTS],
                         rng_range(rng, 1, 3)};
  }
  char key[64];
  snprintf(key, sizeof key, "crash-co-%llx", (unsigned long long)r->c);
  sc_checkout_req req = {.user = r->a,
                         .lines = lines,
                         .n_lines = n,
                         .coupon = r->d,
                         .ttl_ms = rng_range(rng, 20, 400),
                         .idempotency_key = key};
  return sc_checkout(c->db, &req, &r->b);
}

/* Claims one deliverable event and acks it: r->a is the event (0: none). */
static int claim_and_ack(child_ctx *c, rec *r) {
  sc_event *ev = NULL;
  int n = 0;
  int rc = sc_outbox_claim(c->db, 1, 60000, &ev, &n);
  r->a = n == 1 ? ev[0].id : 0;
  sc_events_free(ev, n);
  if (rc == SC_OK && r->a != 0) rc = sc_outbox_ack(c->db, r->a);
  return rc;
}

/* Makes the call of the intent r, completing r with its result. */
static void run_op(child_ctx *c, uint64_t *rng, rec *r) {
  char key[64];
  int expired = 0;
  switch (r->op) {
    case OP_DEPOSIT:
      snprintf(key, sizeof key, "crash-%llx", (unsigned long long)r->c);
      r->rc = sc_account_deposit(c->db, r->a, r->b, key);
      break;
    case OP_ISSUE:
      r->rc = sc_coupon_issue(c->db, r->a, r->b, &r->c);
      break;
    case OP_RESTOCK:
      r->rc = sc_product_restock(c->db, r->a, r->b);
      break;
    case OP_PAUSE:
      r->rc = sc_coupon_policy_pause(c->db, r->a, (int)r->b);
      break;
    case OP_CHECKOUT:
      r->rc = do_checkout(c, rng, r);
      break;
    case OP_PAY:
      r->rc = sc_order_pay(c->db, r->a);
      break;
    case OP_CANCEL:
      r->rc = sc_order_cancel(c->db, r->a);
      break;
    case OP_EXPIRE:
      r->rc = sc_orders_expire_due(c->db, &expired);
      r->b = expired;
      break;
    case OP_ACK:
      r->rc = claim_and_ack(c, r);
      break;
  }
  r->type = REC_RESULT;
}

/* One random operation of thread t, reported before and after the call. */
static void child_one_op(child_ctx *c, int t, uint64_t *rng, int64_t n) {
  thread_state *ts = &c->threads[t];
  rec r;
  choose_op(c->w, t, ts, rng, c->epoch << 40 | (int64_t)t << 32 | n, &r);
  send_rec(c, &r);
  run_op(c, rng, &r);
  send_rec(c, &r);
  if (r.op == OP_CHECKOUT && r.rc == SC_OK)
    keep(ts->orders, &ts->n_orders, r.b);
  if (r.op == OP_ISSUE && r.rc == SC_OK && r.a == c->w->policy_big) {
    keep(ts->coupons, &ts->n_coupons, r.c);
  }
}

static void child_thread(int t, void *ud) {
  child_ctx *c = ud;
  uint64_t rng = c->w->seed * 131 + (uint64_t)t;
  for (int64_t n = 0; now_ns() < atomic_load(&c->deadline_ns); n++) {
    child_one_op(c, t, &rng, n);
  }
}

/* Runs epochs of load, closing and reopening the handle between them, until
 * the parent kills it (or CHILD_MAX_MS passes). Only plain exits here: the
 * child must not run Check's assertions. */
static void child_main(const char *path, const world *w, int fd,
                       int durability) {
  static struct thread_state threads[THREADS];
  child_ctx c = {.path = path,
                 .w = w,
                 .fd = fd,
                 .durability = durability,
                 .threads = threads};
  sc_options o;
  sc_options_init(&o);
  o.durability = durability;
  int64_t stop = now_ns() + (int64_t)CHILD_MAX_MS * 1000000;
  uint64_t rng = w->seed ^ 0x5eed;
  for (; now_ns() < stop; c.epoch++) {
    /* The single fault may land in an open; the next one then works. */
    if (sc_open(path, &o, &c.db) != SC_OK && sc_open(path, &o, &c.db) != SC_OK)
      _exit(21);
    if (c.epoch == 0 && w->fault_kind != 0) {
      fv_arm(w->fault_kind, w->fault_at, false);
    }
    int64_t epoch_ms = rng_range(&rng, 20, 400);
    atomic_store(&c.deadline_ns, now_ns() + epoch_ms * 1000000);
    tu_race(THREADS, child_thread, &c);
    rec r = {.type = REC_INTENT, .op = OP_REOPEN};
    send_rec(&c, &r);
    r.rc = sc_close(c.db);
    r.type = REC_RESULT;
    send_rec(&c, &r);
  }
  _exit(0);
}

/* ---- the parent: setting up, killing, reading the records --------------- */

static void setup_world(const char *path, world *w) {
  sc_db *db = tu_open(path, NULL);
  sc_coupon_policy_spec small = {
      .name = "small", .max_count = 40, .per_user_limit = 3};
  sc_coupon_policy_spec big = {
      .name = "big", .max_count = 1000000, .per_user_limit = 1000000};
  ck_assert_sc(sc_coupon_policy_create(db, &small, &w->policy_small), SC_OK);
  ck_assert_sc(sc_coupon_policy_create(db, &big, &w->policy_big), SC_OK);
  w->initial_stock = 100;
  for (int i = 0; i < PRODUCTS; i++) {
    ck_assert_sc(sc_product_create(db, "item", 10 + i, w->initial_stock,
                                   &w->products[i]),
                 SC_OK);
  }
  ck_assert_sc(sc_close(db), SC_OK);
}

typedef struct log {
  rec *recs;
  size_t n;
  rec inflight[THREADS + 1]; /* the last intent without a result; op 0: none */
} log_t;

typedef struct bytes {
  char *buf;
  size_t len, cap;
} bytes;

/* Reads what the child wrote until EOF or until deadline_ns (0 = EOF only):
 * the parent must keep reading while the child runs, or the child would
 * block on a full pipe and the kill would land on an idle process. */
static void drain(int fd, bytes *b, int64_t deadline_ns) {
  for (;;) {
    int wait_ms = -1;
    if (deadline_ns != 0) {
      int64_t left = deadline_ns - now_ns();
      if (left <= 0) return;
      wait_ms = (int)(left / 1000000) + 1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    ck_assert_int_ge(ready, 0);
    if (ready == 0) continue;
    if (b->len == b->cap) {
      b->cap = b->cap ? b->cap * 2 : 65536;
      b->buf = realloc(b->buf, b->cap);
      ck_assert_ptr_nonnull(b->buf);
    }
    ssize_t n = read(fd, b->buf + b->len, b->cap - b->len);
    if (n < 0 && errno == EINTR) continue;
    ck_assert_int_ge(n, 0);
    if (n == 0) return;
    b->len += (size_t)n;
  }
}

/* Splits the bytes into records and finds each thread's operation in flight
 * (an intent with no result). */
static void parse_records(bytes *b, log_t *lg) {
  ck_assert_msg(b->len % sizeof(rec) == 0, "a torn record (%zu bytes)", b->len);
  lg->recs = (rec *)b->buf;
  lg->n = b->len / sizeof(rec);
  memset(lg->inflight, 0, sizeof lg->inflight);
  for (size_t i = 0; i < lg->n; i++) {
    rec *r = &lg->recs[i];
    int slot = r->op == OP_REOPEN ? THREADS : r->thread;
    ck_assert_int_le(slot, THREADS);
    if (r->type == REC_INTENT) {
      lg->inflight[slot] = *r;
    } else {
      ck_assert_int_eq(lg->inflight[slot].op, r->op);
      lg->inflight[slot].op = 0;
    }
  }
}

/* Forks the child, lets it run for a random while, kills it; fails the test
 * if the child ended by itself with a failure. */
static void run_and_kill(const char *path, const world *w, int durability,
                         int64_t kill_after_us, log_t *lg) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    child_main(path, w, fds[1], durability);
  }
  close(fds[1]);
  bytes b = {0};
  drain(fds[0], &b, now_ns() + kill_after_us * 1000);
  kill(pid, SIGKILL);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(
      WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
      "the child failed on its own (status 0x%x)", status);
  drain(fds[0], &b, 0);
  close(fds[0]);
  parse_records(&b, lg);
}

/* ---- the parent: checking the reopened file ----------------------------- */

static int64_t q_i64(sqlite3 *h, const char *sql, int64_t p1, int64_t p2,
                     int64_t p3) {
  sqlite3_stmt *st = NULL;
  ck_assert_msg(sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK, "%s",
                sqlite3_errmsg(h));
  int np = sqlite3_bind_parameter_count(st);
  if (np >= 1) sqlite3_bind_int64(st, 1, p1);
  if (np >= 2) sqlite3_bind_int64(st, 2, p2);
  if (np >= 3) sqlite3_bind_int64(st, 3, p3);
  int rc = sqlite3_step(st);
  ck_assert_msg(rc == SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(h));
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static int64_t deposit_key_present(sqlite3 *h, int64_t keyno) {
  char key[64];
  snprintf(key, sizeof key, "crash-%llx", (unsigned long long)keyno);
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_prepare_v2(h,
                                      "SELECT count(*) FROM sc_idempotency"
                                      " WHERE scope = 2 AND key = ?1",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

/* What the records say the file must hold, summed per user and product. */
typedef struct expect {
  bool faulted; /* the round injected a fault */
  /* acknowledged, and ambiguous ones found there */
  int64_t deposited[THREADS][USERS_PER_THREAD];
  int64_t restocked[PRODUCTS];
  int64_t restock_slack[PRODUCTS]; /* ambiguous restocks */
  int last_pause;                  /* -1: no pause acknowledged */
  int pause_maybe; /* an ambiguous pause since the last one: -1 none */
  int64_t acked, failed, ioerr, ambiguous;
  int64_t ok_by_op[OP_KINDS_];
  /* Per order id: what the acknowledged results say of its final state. */
  unsigned char *order_flags;
  size_t n_orders;
} expect;

enum { MUST_CONFIRMED = 1, MUST_CANCELLED = 2, NOT_CONFIRMED = 4, CLOSED = 8 };

static void order_flag(expect *e, sc_id order, unsigned char flag) {
  ck_assert_int_gt(order, 0);
  if ((size_t)order >= e->n_orders) {
    size_t n = (size_t)order * 2 + 16;
    e->order_flags = realloc(e->order_flags, n);
    ck_assert_ptr_nonnull(e->order_flags);
    memset(e->order_flags + e->n_orders, 0, n - e->n_orders);
    e->n_orders = n;
  }
  e->order_flags[order] |= flag;
}

static int64_t checkout_key_result(sqlite3 *h, int64_t keyno) {
  char key[64];
  snprintf(key, sizeof key, "crash-co-%llx", (unsigned long long)keyno);
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_prepare_v2(h,
                                      "SELECT result_id FROM sc_idempotency"
                                      " WHERE scope = 1 AND key = ?1",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_finalize(st);
  return id;
}

static void check_checkout(sqlite3 *h, const rec *r, expect *e) {
  int64_t id = checkout_key_result(h, r->c);
  if (r->rc == SC_AMBIGUOUS) {
    if (id != 0) order_flag(e, id, 0); /* there, so it is an order */
    return;
  }
  if (r->rc != SC_OK) {
    ck_assert_msg(r->rc == SC_OUT_OF_STOCK ||
                      r->rc == SC_INSUFFICIENT_BALANCE ||
                      r->rc == SC_COUPON_UNAVAILABLE || r->rc == SC_NOT_FOUND ||
                      r->rc == SC_IOERR,
                  "checkout: %s", sc_err_name(r->rc));
    ck_assert_msg(id == 0, "refused checkout left order %lld", (long long)id);
    return;
  }
  ck_assert_msg(id == r->b, "acknowledged order %lld is lost (key holds %lld)",
                (long long)r->b, (long long)id);
  ck_assert_int_eq(q_i64(h,
                         "SELECT count(*) FROM sc_order WHERE id = ?1"
                         " AND user_id = ?2",
                         r->b, r->a, 0),
                   1);
  order_flag(e, r->b, 0);
}

static void check_order_op(const rec *r, expect *e) {
  if (r->op == OP_PAY) {
    ck_assert_msg(
        r->rc == SC_OK || r->rc == SC_EXPIRED || r->rc == SC_INVALID_STATE,
        "pay: %s", sc_err_name(r->rc));
    order_flag(e, r->a,
               r->rc == SC_OK        ? MUST_CONFIRMED
               : r->rc == SC_EXPIRED ? NOT_CONFIRMED
                                     : MUST_CANCELLED);
  } else {
    ck_assert_msg(r->rc == SC_OK || r->rc == SC_INVALID_STATE, "cancel: %s",
                  sc_err_name(r->rc));
    order_flag(e, r->a, r->rc == SC_OK ? MUST_CANCELLED : CLOSED);
  }
}

/* Every order's state agrees with what was acknowledged of it. */
static void check_orders(sqlite3 *h, const expect *e) {
  for (size_t id = 1; id < e->n_orders; id++) {
    unsigned char f = e->order_flags[id];
    if (f == 0) continue;
    int st = (int)q_i64(h,
                        "SELECT coalesce((SELECT status FROM sc_order"
                        " WHERE id = ?1), 0)",
                        (int64_t)id, 0, 0);
    ck_assert_msg(st != 0, "order %zu is lost", id);
    if (f & MUST_CONFIRMED) ck_assert_int_eq(st, SC_ORDER_CONFIRMED);
    if (f & MUST_CANCELLED) ck_assert_int_eq(st, SC_ORDER_CANCELLED);
    if (f & NOT_CONFIRMED) ck_assert_int_ne(st, SC_ORDER_CONFIRMED);
    if (f & CLOSED) ck_assert_int_ne(st, SC_ORDER_PENDING);
  }
}

static int product_index(const world *w, sc_id p) {
  for (int i = 0; i < PRODUCTS; i++) {
    if (w->products[i] == p) return i;
  }
  ck_abort_msg("unknown product %lld", (long long)p);
  return -1;
}

/* A result the injected fault explains: SC_IOERR changed nothing;
 * SC_AMBIGUOUS may or may not have. Only in a round with a fault. */
static bool fault_result(const rec *r, expect *e) {
  if (r->rc != SC_IOERR && r->rc != SC_AMBIGUOUS) return false;
  ck_assert_msg(e->faulted, "op %d: %s without a fault", r->op,
                sc_err_name(r->rc));
  return true;
}

/* An operation the fault failed, whose effect can be looked for. */
static void check_fault_result(sqlite3 *h, const world *w, const rec *r,
                               expect *e) {
  bool ambiguous = r->rc == SC_AMBIGUOUS;
  e->ambiguous += ambiguous;
  e->ioerr += !ambiguous;
  switch (r->op) {
    case OP_DEPOSIT: {
      bool there = deposit_key_present(h, r->c) == 1;
      ck_assert_msg(ambiguous || !there,
                    "deposit %llx failed (%s) but is there",
                    (unsigned long long)r->c, sc_err_name(r->rc));
      if (there) e->deposited[r->a / 1000][r->a % 1000 - 1] += r->b;
      break;
    }
    case OP_CHECKOUT:
      check_checkout(h, r, e);
      break;
    case OP_RESTOCK:
      if (ambiguous) e->restock_slack[product_index(w, r->a)] += r->b;
      break;
    case OP_PAUSE:
      if (ambiguous) e->pause_maybe = (int)r->b;
      break;
    default: /* issue, pay, cancel, expire, ack: sc_verify covers them */
      break;
  }
}

/* Checks one result record against the file. */
static void check_result(sqlite3 *h, const world *w, const rec *r, expect *e) {
  if (r->op == OP_REOPEN) {
    /* A fault may land in the final checkpoint. */
    ck_assert_msg(r->rc == SC_OK || (e->faulted && r->rc == SC_IOERR),
                  "sc_close: %s", sc_err_name(r->rc));
    return;
  }
  if (r->rc == SC_OK && (r->op != OP_ACK || r->a != 0)) e->ok_by_op[r->op]++;
  if (r->rc == SC_OK) e->acked++;
  if (r->rc != SC_OK) e->failed++;
  if (fault_result(r, e)) {
    check_fault_result(h, w, r, e);
    return;
  }
  switch (r->op) {
    case OP_DEPOSIT:
      ck_assert_sc(r->rc, SC_OK); /* no deposit of this load may fail */
      ck_assert_msg(deposit_key_present(h, r->c) == 1,
                    "acknowledged deposit %llx is lost",
                    (unsigned long long)r->c);
      e->deposited[r->a / 1000][r->a % 1000 - 1] += r->b;
      break;
    case OP_ISSUE:
      if (r->rc == SC_OK) {
        ck_assert_msg(q_i64(h,
                            "SELECT count(*) FROM sc_coupon WHERE id = ?1"
                            " AND policy_id = ?2 AND user_id = ?3",
                            r->c, r->a, r->b) == 1,
                      "acknowledged coupon %lld is lost", (long long)r->c);
      } else if (r->rc == SC_SOLD_OUT) {
        ck_assert_int_eq(q_i64(h,
                               "SELECT max_count - issued_count FROM"
                               " sc_coupon_policy WHERE id = ?1",
                               r->a, 0, 0),
                         0);
      } else if (r->rc == SC_LIMIT_REACHED) {
        ck_assert_int_ge(q_i64(h,
                               "SELECT count(*) FROM sc_coupon"
                               " WHERE policy_id = ?1 AND user_id = ?2",
                               r->a, r->b, 0),
                         3);
      } else {
        ck_assert_msg(r->rc == SC_PAUSED, "issue: %s", sc_err_name(r->rc));
      }
      break;
    case OP_RESTOCK:
      ck_assert_sc(r->rc, SC_OK);
      e->restocked[product_index(w, r->a)] += r->b;
      break;
    case OP_PAUSE:
      ck_assert_sc(r->rc, SC_OK);
      e->last_pause = (int)r->b;
      e->pause_maybe = -1;
      break;
    case OP_CHECKOUT:
      check_checkout(h, r, e);
      break;
    case OP_PAY:
    case OP_CANCEL:
      check_order_op(r, e);
      break;
    case OP_EXPIRE:
      ck_assert_sc(r->rc, SC_OK);
      break;
    case OP_ACK:
      ck_assert_sc(r->rc, SC_OK);
      if (r->a != 0) { /* state 1: delivered */
        ck_assert_msg(q_i64(h, "SELECT state FROM sc_outbox WHERE id = ?1",
                            r->a, 0, 0) == 1,
                      "acknowledged ack of event %lld is lost",
                      (long long)r->a);
      }
      break;
  }
}

/* An operation in flight at the kill is wholly there or wholly absent: its
 * effect is allowed on top of the acknowledged ones, nothing else. */
static void check_totals(sqlite3 *h, const world *w, const log_t *lg,
                         const expect *e) {
  for (int t = 0; t < THREADS; t++) {
    const rec *f = &lg->inflight[t];
    for (int k = 0; k < USERS_PER_THREAD; k++) {
      sc_id user = user_of(t, k);
      int64_t want = e->deposited[t][k];
      /* Money paid for confirmed orders left the balance. */
      int64_t got = q_i64(h,
                          "SELECT coalesce((SELECT balance FROM sc_account"
                          " WHERE user_id = ?1), 0) + (SELECT coalesce("
                          "sum(total), 0) FROM sc_order WHERE user_id = ?1"
                          " AND status = 2)",
                          user, 0, 0);
      int64_t extra = 0;
      if (f->op == OP_DEPOSIT && f->a == user) {
        extra = deposit_key_present(h, f->c) ? f->b : 0;
      }
      ck_assert_msg(got == want + extra,
                    "user %lld: balance %lld, acknowledged %lld + %lld",
                    (long long)user, (long long)got, (long long)want,
                    (long long)extra);
    }
  }
  for (int i = 0; i < PRODUCTS; i++) {
    /* Units paid for left the stock. */
    int64_t got = q_i64(h,
                        "SELECT total + (SELECT coalesce(sum(l.qty), 0)"
                        " FROM sc_order_line l JOIN sc_order o"
                        " ON o.id = l.order_id WHERE l.product_id = ?1"
                        " AND o.status = 2) FROM sc_product WHERE id = ?1",
                        w->products[i], 0, 0);
    int64_t want = w->initial_stock + e->restocked[i];
    int64_t slack = e->restock_slack[i];
    for (int t = 0; t < THREADS; t++) {
      const rec *f = &lg->inflight[t];
      if (f->op == OP_RESTOCK && f->a == w->products[i]) slack += f->b;
    }
    ck_assert_msg(got >= want && got <= want + slack,
                  "product %lld: total %lld, acknowledged %lld (+%lld)",
                  (long long)w->products[i], (long long)got, (long long)want,
                  (long long)slack);
  }
  int paused =
      (int)q_i64(h, "SELECT paused FROM sc_coupon_policy WHERE id = ?1",
                 w->policy_small, 0, 0);
  const rec *f = &lg->inflight[0];
  bool may_flip =
      (f->op == OP_PAUSE && f->b == paused) || e->pause_maybe == paused;
  if (e->last_pause >= 0) {
    ck_assert_msg(paused == e->last_pause || may_flip,
                  "policy paused %d, last acknowledged %d", paused,
                  e->last_pause);
  }
}

static void check_reopened(const char *path, const world *w, const log_t *lg,
                           expect *e) {
  fv_disarm(); /* the parent's own calls: never faulted */
  sc_db *db = tu_open(path, NULL);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(
      sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL),
      SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  memset(e, 0, sizeof *e);
  e->faulted = w->fault_kind != 0;
  e->last_pause = -1;
  e->pause_maybe = -1;
  for (size_t i = 0; i < lg->n; i++) {
    if (lg->recs[i].type == REC_RESULT) check_result(h, w, &lg->recs[i], e);
  }
  check_totals(h, w, lg, e);
  check_orders(h, e);
  free(e->order_flags);
  sqlite3_close(h);
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  return v && *v ? strtoull(v, NULL, 0) : dflt;
}

START_TEST(acknowledged_operations_survive_sigkill) {
  int rounds = (int)env_u64("SC_CRASH_ROUNDS", 20);
  uint64_t base = env_u64("SC_CRASH_SEED", (uint64_t)time(NULL));
  int64_t total_acked = 0, ok_by_op[OP_KINDS_] = {0};
  int64_t total_ioerr = 0, total_ambiguous = 0;
  for (int round = 0; round < rounds; round++) {
    world w = {.seed = base + (uint64_t)round};
    uint64_t rng = w.seed;
    /* Every fifth round runs with synchronous=NORMAL: it too must survive a
     * process crash (only a power loss may cost it the last commits). */
    int durability = round % 5 == 4 ? SC_DURABILITY_NORMAL : SC_DURABILITY_FULL;
    /* Every other round fails one sync or one write of the child first, a
     * little after its start, then the kill comes. */
    if (round % 4 == 1) {
      w.fault_kind = FV_SYNC;
      w.fault_at = rng_range(&rng, 1, 10);
    } else if (round % 4 == 3) {
      w.fault_kind = FV_WRITE;
      w.fault_at = rng_range(&rng, 1, 100);
    }
    /* Mostly mid-load; some kills land during open or the first batch. */
    int64_t kill_us = rng_range(&rng, 0, 3) == 0 && w.fault_kind == 0
                          ? rng_range(&rng, 0, 20000)
                          : rng_range(&rng, 20000, 600000);
    printf("crash round %d: seed %llu, %s, %s%.0ld, kill after %lld us\n",
           round, (unsigned long long)w.seed,
           durability == SC_DURABILITY_FULL ? "FULL" : "NORMAL",
           w.fault_kind == FV_SYNC    ? "failing sync "
           : w.fault_kind == FV_WRITE ? "failing write "
                                      : "no fault",
           w.fault_at, (long long)kill_us);
    fflush(stdout);
    char *path = tu_db_path("crash");
    setup_world(path, &w);
    log_t lg;
    run_and_kill(path, &w, durability, kill_us, &lg);
    expect e;
    check_reopened(path, &w, &lg, &e);
    printf(
        "  %zu records, %lld acknowledged ok, %lld refused (%lld SC_IOERR, "
        "%lld SC_AMBIGUOUS)\n",
        lg.n, (long long)e.acked, (long long)e.failed, (long long)e.ioerr,
        (long long)e.ambiguous);
    total_acked += e.acked;
    total_ioerr += e.ioerr;
    total_ambiguous += e.ambiguous;
    for (int k = 0; k < OP_KINDS_; k++)
      ok_by_op[k] += e.ok_by_op[k];
    free(lg.recs);
    tu_remove_db(path);
  }
  /* The kills must not all land before any work: the test would prove
   * nothing. */
  ck_assert_int_gt(total_acked, 0);
  /* Nor may the faults all miss (a full run has ten fault rounds). */
  if (rounds >= 20) ck_assert_int_gt(total_ioerr + total_ambiguous, 0);
  printf("crash: failed by the faults: %lld SC_IOERR, %lld SC_AMBIGUOUS\n",
         (long long)total_ioerr, (long long)total_ambiguous);
  printf(
      "crash: acknowledged ok over all rounds: %lld deposits, %lld "
      "coupons, %lld checkouts, %lld payments, %lld cancels, %lld expiry "
      "sweeps, %lld claimed and acked events\n",
      (long long)ok_by_op[OP_DEPOSIT], (long long)ok_by_op[OP_ISSUE],
      (long long)ok_by_op[OP_CHECKOUT], (long long)ok_by_op[OP_PAY],
      (long long)ok_by_op[OP_CANCEL], (long long)ok_by_op[OP_EXPIRE],
      (long long)ok_by_op[OP_ACK]);
}
END_TEST

int main(void) {
  if (fv_register() != SQLITE_OK) return 2;
  Suite *s = suite_create("crash");
  TCase *tc = tu_tcase("crash");
  tcase_add_test(tc, acknowledged_operations_survive_sigkill);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
