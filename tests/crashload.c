/* The load and checks of the crash suites (see crashload.h). */
#include "crashload.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS CL_THREADS
#define PRODUCTS CL_PRODUCTS
#define USERS_PER_THREAD 8
#define MAX_DEPOSIT 1000
#define CHILD_MAX_MS 4000       /* a child nobody stopped stops by itself */
#define KILL_MOMENT_MAX_MS 3000 /* cl_run_kill_when waits this long at most */
#define NONE SIZE_MAX

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
struct cl_rec {
  int32_t type, thread, op, rc;
  int64_t a, b, c, d; /* op arguments and results, by kind (see below) */
};
typedef cl_rec rec;

static sc_id user_of(int thread, int k) {
  return (sc_id)thread * 1000 + k + 1;
}

/* SC_AMBIGUOUS by name: the check compiles whether or not it exists yet. */
static bool ambiguous(int rc) {
  return strcmp(sc_err_name(rc), "SC_AMBIGUOUS") == 0;
}

/* ---- the child ---------------------------------------------------------- */

typedef struct child_ctx {
  const char *path;
  const cl_world *w;
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
  return n == 0 ? 0 : ids[tu_rng_range(rng, 0, n - 1)];
}

/* Chooses thread t's next operation: the intent record. */
static void choose_op(const cl_world *w, int t, thread_state *ts, uint64_t *rng,
                      int64_t keyno, rec *r) {
  int pick = (int)tu_rng_range(rng, 0, 99);
  sc_id user = user_of(t, (int)tu_rng_range(rng, 0, USERS_PER_THREAD - 1));
  if (pick < 25) {
    *r = (rec){.op = OP_DEPOSIT, .a = user, .c = keyno};
    r->b = tu_rng_range(rng, 1, MAX_DEPOSIT);
  } else if (pick < 40) {
    *r = (rec){.op = OP_ISSUE, .b = user};
    r->a = tu_rng_range(rng, 0, 1) ? w->policy_small : w->policy_big;
  } else if (pick < 45) {
    *r = (rec){.op = OP_RESTOCK, .b = tu_rng_range(rng, 1, 10)};
    r->a = w->products[tu_rng_range(rng, 0, PRODUCTS - 1)];
  } else if (pick < 70) {
    *r = (rec){.op = OP_CHECKOUT, .a = user, .c = keyno};
    if (tu_rng_range(rng, 0, 3) == 0)
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
    /* Only thread 0 pauses, so the pauses are ordered. */
    *r = (rec){
        .op = OP_PAUSE, .a = w->policy_small, .b = tu_rng_range(rng, 0, 1)};
  }
  if ((r->op == OP_PAY || r->op == OP_CANCEL) && r->a == 0) r->op = OP_EXPIRE;
  r->type = REC_INTENT;
  r->thread = t;
}

static int do_checkout(child_ctx *c, uint64_t *rng, rec *r) {
  const cl_world *w = c->w;
  sc_line lines[2];
  size_t n = (size_t)tu_rng_range(rng, 1, 2);
  int first = (int)tu_rng_range(rng, 0, PRODUCTS - 1);
  for (size_t i = 0; i < n; i++) {
    lines[i] = (sc_line){w->products[(first + (int)i) % PRODUCTS],
                         tu_rng_range(rng, 1, 3)};
  }
  char key[64];
  snprintf(key, sizeof key, "crash-co-%llx", (unsigned long long)r->c);
  sc_checkout_req req = {.user = r->a,
                         .lines = lines,
                         .n_lines = n,
                         .coupon = r->d,
                         .ttl_ms = tu_rng_range(rng, 20, 400),
                         .idempotency_key = key};
  return sc_checkout(c->db, &req, &r->b);
}

/* Claims one deliverable event and acks it: r->a is the event (0: none). */
static int claim_and_ack(child_ctx *c, rec *r) {
  sc_event *ev = NULL;
  int n = 0;
  int rc = sc_outbox_claim(c->db, 1, 60000, &ev, &n);
  r->a = n == 1 ? ev[0].id : 0;
  int64_t token = n == 1 ? ev[0].claim : 0;
  sc_events_free(ev, n);
  if (rc == SC_OK && r->a != 0) rc = sc_outbox_ack(c->db, r->a, token);
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
 * the parent kills it, child_init's doing ends it, or CHILD_MAX_MS passes.
 * Only plain exits here: the child must not run Check's assertions. */
static _Noreturn void child_main(const char *path, const cl_world *w, int fd,
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
    /* An injected fault may fail one open; the next one works. */
    if (sc_open(path, &o, &c.db) != SC_OK &&
        (!w->faulted || sc_open(path, &o, &c.db) != SC_OK)) {
      _exit(21);
    }
    int64_t epoch_ms = tu_rng_range(&rng, 20, 400);
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

/* ---- the parent: setting up, running, reading the records --------------- */

void cl_setup_world(const char *path, cl_world *w) {
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

/* The parent must keep reading while the child runs, or the child would
 * block on a full pipe and the kill would land on an idle process. */
void cl_drain(int fd, cl_bytes *b, int64_t deadline_ns) {
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

/* Splits the bytes into records and pairs each intent with its result
 * (a thread has one operation at a time; sc_close is the main thread's). */
static void parse_records(cl_bytes *b, cl_log *lg) {
  ck_assert_msg(b->len % sizeof(rec) == 0, "a torn record (%zu bytes)", b->len);
  lg->recs = (rec *)b->buf;
  lg->n = b->len / sizeof(rec);
  lg->pair = malloc((lg->n + 1) * sizeof *lg->pair);
  ck_assert_ptr_nonnull(lg->pair);
  size_t open[THREADS + 1];
  for (int i = 0; i <= THREADS; i++)
    open[i] = NONE;
  for (size_t i = 0; i < lg->n; i++) {
    rec *r = &lg->recs[i];
    int slot = r->op == OP_REOPEN ? THREADS : r->thread;
    ck_assert_int_le(slot, THREADS);
    lg->pair[i] = NONE;
    if (r->type == REC_INTENT) {
      ck_assert_msg(open[slot] == NONE, "two intents of thread %d", slot);
      open[slot] = i;
    } else {
      ck_assert_msg(open[slot] != NONE && lg->recs[open[slot]].op == r->op,
                    "a result without its intent");
      lg->pair[i] = open[slot];
      lg->pair[open[slot]] = i;
      open[slot] = NONE;
    }
  }
}

/* Stops the child and asks kill_now while it cannot move: true leaves it
 * stopped for the kill, so the moment kill_now saw (a lock held, say) cannot
 * pass between the look and the kill; false lets it run on. */
static bool stopped_at_the_moment(pid_t pid,
                                  bool (*kill_now)(void *ud, pid_t child),
                                  void *ud) {
  ck_assert_int_eq(kill(pid, SIGSTOP), 0);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, WUNTRACED), pid);
  ck_assert_msg(WIFSTOPPED(status),
                "the child ended (status 0x%x) before the moment to kill it",
                status);
  if (kill_now(ud, pid)) return true;
  ck_assert_int_eq(kill(pid, SIGCONT), 0);
  return false;
}

static void run_child(const char *path, const cl_world *w, int durability,
                      int64_t kill_after_us,
                      bool (*kill_now)(void *ud, pid_t child),
                      int64_t *killed_at_ns, void (*child_init)(void *ud),
                      void *ud, int exit_status, cl_log *lg) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    if (child_init != NULL) child_init(ud);
    child_main(path, w, fds[1], durability);
  }
  close(fds[1]);
  cl_bytes b = {0};
  if (kill_after_us >= 0) {
    cl_drain(fds[0], &b, now_ns() + kill_after_us * 1000);
    int64_t give_up = now_ns() + (int64_t)KILL_MOMENT_MAX_MS * 1000000;
    while (kill_now != NULL && !stopped_at_the_moment(pid, kill_now, ud)) {
      ck_assert_msg(now_ns() < give_up, "the moment to kill never came");
      cl_drain(fds[0], &b, now_ns() + 200000);
    }
    kill(pid, SIGKILL);
    if (killed_at_ns != NULL) *killed_at_ns = now_ns();
  }
  cl_drain(fds[0], &b, 0);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  close(fds[0]);
  if (kill_after_us >= 0) {
    ck_assert_msg(
        WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
        "the child failed on its own (status 0x%x)", status);
  } else {
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == exit_status,
                  "the child ended with status 0x%x, not exit %d", status,
                  exit_status);
  }
  parse_records(&b, lg);
}

void cl_run(const char *path, const cl_world *w, int durability,
            int64_t kill_after_us, void (*child_init)(void *ud), void *ud,
            int exit_status, cl_log *lg) {
  run_child(path, w, durability, kill_after_us, NULL, NULL, child_init, ud,
            exit_status, lg);
}

void cl_run_kill_when(const char *path, const cl_world *w, int durability,
                      int64_t kill_after_us,
                      bool (*kill_now)(void *ud, pid_t child),
                      void (*child_init)(void *ud), void *ud, cl_log *lg,
                      int64_t *killed_at_ns) {
  run_child(path, w, durability, kill_after_us, kill_now, killed_at_ns,
            child_init, ud, 0, lg);
}

void cl_log_free(cl_log *lg) {
  free(lg->recs);
  free(lg->pair);
  *lg = (cl_log){0};
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

/* Whether the file holds an idempotency key, by the format the child made
 * it with; *id (if set) gets the result id stored with it. */
static bool key_found(sqlite3 *h, int scope, const char *fmt, int64_t keyno,
                      int64_t *id) {
  char key[64];
  snprintf(key, sizeof key, fmt, (unsigned long long)keyno);
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_prepare_v2(h,
                                      "SELECT result_id FROM sc_idempotency"
                                      " WHERE scope = ?1 AND key = ?2",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_int(st, 1, scope);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  ck_assert_msg(rc == SQLITE_ROW || rc == SQLITE_DONE, "%s", sqlite3_errmsg(h));
  if (id != NULL) *id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW;
}

static bool deposit_present(sqlite3 *h, int64_t keyno) {
  return key_found(h, 2, "crash-%llx", keyno, NULL);
}

/* The order a checkout's key holds (0: none). */
static int64_t checkout_result(sqlite3 *h, int64_t keyno) {
  int64_t id = 0;
  key_found(h, 1, "crash-co-%llx", keyno, &id);
  return id;
}

static bool coupon_present(sqlite3 *h, const rec *r) {
  return q_i64(h,
               "SELECT count(*) FROM sc_coupon WHERE id = ?1"
               " AND policy_id = ?2 AND user_id = ?3",
               r->c, r->a, r->b) == 1;
}

/* What the records say the file must hold. */
typedef struct expect {
  int64_t deposited[THREADS][USERS_PER_THREAD]; /* deposits present */
  int64_t restock_lo[PRODUCTS], restock_hi[PRODUCTS];
  unsigned pause_allowed; /* bit v: paused == v is allowed */
  /* Per order id: what the records say of its final state. */
  unsigned char *order_flags;
  size_t n_orders;
  cl_summary sum;
} expect;

enum {
  MUST_EXIST = 1,
  MUST_CONFIRMED = 2,
  MUST_CANCELLED = 4,
  NOT_CONFIRMED = 8,
  CLOSED = 16
};

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

static void check_checkout(sqlite3 *h, const rec *r, bool required, expect *e) {
  int64_t id = checkout_result(h, r->c);
  if (r->rc != SC_OK) {
    ck_assert_msg(r->rc == SC_OUT_OF_STOCK ||
                      r->rc == SC_INSUFFICIENT_BALANCE ||
                      r->rc == SC_COUPON_UNAVAILABLE || r->rc == SC_NOT_FOUND,
                  "checkout: %s", sc_err_name(r->rc));
    ck_assert_msg(id == 0, "refused checkout left order %lld", (long long)id);
    return;
  }
  if (id == 0 && !required) {
    e->sum.lost++;
    return;
  }
  ck_assert_msg(id == r->b, "acknowledged order %lld is lost (key holds %lld)",
                (long long)r->b, (long long)id);
  ck_assert_int_eq(q_i64(h,
                         "SELECT count(*) FROM sc_order WHERE id = ?1"
                         " AND user_id = ?2",
                         r->b, r->a, 0),
                   1);
  order_flag(e, r->b, MUST_EXIST);
}

/* A payment or cancel: what its result says of the order's final state. A
 * refusal rests on earlier commits, which a lossy run may have lost. */
static void check_order_op(const rec *r, bool required, expect *e) {
  unsigned char must = required ? MUST_EXIST : 0;
  if (r->op == OP_PAY) {
    ck_assert_msg(
        r->rc == SC_OK || r->rc == SC_EXPIRED || r->rc == SC_INVALID_STATE,
        "pay: %s", sc_err_name(r->rc));
    if (r->rc == SC_EXPIRED) must |= NOT_CONFIRMED; /* never confirmable */
    if (required && r->rc == SC_OK) must |= MUST_CONFIRMED;
    if (required && r->rc == SC_INVALID_STATE) must |= MUST_CANCELLED;
  } else {
    ck_assert_msg(r->rc == SC_OK || r->rc == SC_INVALID_STATE, "cancel: %s",
                  sc_err_name(r->rc));
    if (required) must |= r->rc == SC_OK ? MUST_CANCELLED : CLOSED;
  }
  order_flag(e, r->a, must);
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
    if (st == 0) {
      ck_assert_msg(!(f & MUST_EXIST), "order %zu is lost", id);
      continue;
    }
    if (f & MUST_CONFIRMED) ck_assert_int_eq(st, SC_ORDER_CONFIRMED);
    if (f & MUST_CANCELLED) ck_assert_int_eq(st, SC_ORDER_CANCELLED);
    if (f & NOT_CONFIRMED) ck_assert_int_ne(st, SC_ORDER_CONFIRMED);
    if (f & CLOSED) ck_assert_int_ne(st, SC_ORDER_PENDING);
  }
}

static int product_index(const cl_world *w, sc_id p) {
  for (int i = 0; i < PRODUCTS; i++) {
    if (w->products[i] == p) return i;
  }
  ck_abort_msg("unknown product %lld", (long long)p);
  return -1;
}

/* A deposit whose key is there counts, whole, toward the balance. */
static bool count_deposit(sqlite3 *h, const rec *r, expect *e) {
  bool present = deposit_present(h, r->c);
  if (present) e->deposited[r->a / 1000][r->a % 1000 - 1] += r->b;
  return present;
}

/* An operation in flight or reported ambiguous: all or nothing, which the
 * totals check (a deposit or restock counts whole or not at all). */
static void note_uncertain(sqlite3 *h, const cl_world *w, const rec *r,
                           expect *e) {
  e->sum.uncertain++;
  if (r->type == REC_RESULT) e->sum.ambiguous++;
  switch (r->op) {
    case OP_DEPOSIT:
      count_deposit(h, r, e);
      break;
    case OP_RESTOCK:
      e->restock_hi[product_index(w, r->a)] += r->b;
      break;
    case OP_PAUSE:
      e->pause_allowed |= 1u << r->b;
      break;
    case OP_CHECKOUT: {
      int64_t id = checkout_result(h, r->c);
      if (id != 0) order_flag(e, id, MUST_EXIST);
      break;
    }
    default:
      break;
  }
}

/* Checks one result record against the file; required: the operation must
 * be there if it was acknowledged (always, unless a lossy run may have lost
 * it). */
/* An operation an injected fault failed with SC_IOERR changed nothing. */
static void check_ioerr(sqlite3 *h, const cl_world *w, const rec *r,
                        expect *e) {
  ck_assert_msg(w->faulted, "op %d: SC_IOERR without a fault", r->op);
  e->sum.refused++;
  e->sum.ioerr++;
  if (r->op == OP_DEPOSIT) {
    ck_assert_msg(!deposit_present(h, r->c),
                  "deposit %llx failed (SC_IOERR) but is there",
                  (unsigned long long)r->c);
  } else if (r->op == OP_CHECKOUT) {
    ck_assert_msg(checkout_result(h, r->c) == 0,
                  "checkout %llx failed (SC_IOERR) but is there",
                  (unsigned long long)r->c);
  }
}

static void check_result(sqlite3 *h, const cl_world *w, const rec *r,
                         bool required, expect *e) {
  if (r->op == OP_REOPEN) {
    /* An injected fault may land in the final checkpoint. */
    ck_assert_msg(r->rc == SC_OK || (w->faulted && r->rc == SC_IOERR),
                  "sc_close: %s", sc_err_name(r->rc));
    return;
  }
  if (r->rc == SC_IOERR) {
    check_ioerr(h, w, r, e);
    return;
  }
  if (r->rc == SC_OK && (r->op != OP_ACK || r->a != 0))
    e->sum.ok_by_op[r->op]++;
  if (r->rc == SC_OK) e->sum.acked++;
  if (r->rc != SC_OK) e->sum.refused++;
  switch (r->op) {
    case OP_DEPOSIT:
      ck_assert_sc(r->rc, SC_OK); /* no deposit of this load may fail */
      if (!count_deposit(h, r, e)) {
        ck_assert_msg(!required, "acknowledged deposit %llx is lost",
                      (unsigned long long)r->c);
        e->sum.lost++;
      }
      break;
    case OP_ISSUE:
      if (r->rc == SC_OK) {
        if (!coupon_present(h, r)) {
          ck_assert_msg(!required, "acknowledged coupon %lld is lost",
                        (long long)r->c);
          e->sum.lost++;
        }
      } else if (r->rc == SC_SOLD_OUT) {
        if (required) {
          ck_assert_int_eq(q_i64(h,
                                 "SELECT max_count - issued_count FROM"
                                 " sc_coupon_policy WHERE id = ?1",
                                 r->a, 0, 0),
                           0);
        }
      } else if (r->rc == SC_LIMIT_REACHED) {
        if (required) {
          ck_assert_int_ge(q_i64(h,
                                 "SELECT count(*) FROM sc_coupon"
                                 " WHERE policy_id = ?1 AND user_id = ?2",
                                 r->a, r->b, 0),
                           3);
        }
      } else {
        ck_assert_msg(r->rc == SC_PAUSED, "issue: %s", sc_err_name(r->rc));
      }
      break;
    case OP_RESTOCK:
      ck_assert_sc(r->rc, SC_OK);
      if (required) e->restock_lo[product_index(w, r->a)] += r->b;
      e->restock_hi[product_index(w, r->a)] += r->b;
      break;
    case OP_PAUSE:
      ck_assert_sc(r->rc, SC_OK);
      /* Pauses are thread 0's, in order: a required one is the floor. */
      if (required) e->pause_allowed = 0;
      e->pause_allowed |= 1u << r->b;
      break;
    case OP_CHECKOUT:
      check_checkout(h, r, required, e);
      break;
    case OP_PAY:
    case OP_CANCEL:
      check_order_op(r, required, e);
      break;
    case OP_EXPIRE:
      ck_assert_sc(r->rc, SC_OK);
      break;
    case OP_ACK:
      ck_assert_sc(r->rc, SC_OK);
      if (r->a != 0 && required) { /* state 1: delivered */
        ck_assert_msg(q_i64(h, "SELECT state FROM sc_outbox WHERE id = ?1",
                            r->a, 0, 0) == 1,
                      "acknowledged ack of event %lld is lost",
                      (long long)r->a);
      }
      break;
  }
}

/* Balances, stock and the pause flag agree with the operations present. */
static void check_totals(sqlite3 *h, const cl_world *w, const expect *e) {
  for (int t = 0; t < THREADS; t++) {
    for (int k = 0; k < USERS_PER_THREAD; k++) {
      sc_id user = user_of(t, k);
      /* Money paid for confirmed orders left the balance. */
      int64_t got = q_i64(h,
                          "SELECT coalesce((SELECT balance FROM sc_account"
                          " WHERE user_id = ?1), 0) + (SELECT coalesce("
                          "sum(total), 0) FROM sc_order WHERE user_id = ?1"
                          " AND status = 2)",
                          user, 0, 0);
      ck_assert_msg(got == e->deposited[t][k],
                    "user %lld: balance + paid %lld, deposits present %lld",
                    (long long)user, (long long)got,
                    (long long)e->deposited[t][k]);
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
    int64_t lo = w->initial_stock + e->restock_lo[i];
    int64_t hi = w->initial_stock + e->restock_hi[i];
    ck_assert_msg(got >= lo && got <= hi,
                  "product %lld: total %lld, restocks say %lld..%lld",
                  (long long)w->products[i], (long long)got, (long long)lo,
                  (long long)hi);
  }
  int paused =
      (int)q_i64(h, "SELECT paused FROM sc_coupon_policy WHERE id = ?1",
                 w->policy_small, 0, 0);
  ck_assert_msg(e->pause_allowed & (1u << paused),
                "policy paused %d, allowed (bits) %u", paused,
                e->pause_allowed);
}

/* Whether an operation is uncertain: in flight at the end, or ambiguous. */
static bool uncertain_at(const cl_log *lg, size_t i) {
  const rec *r = &lg->recs[i];
  if (r->type == REC_INTENT) return lg->pair[i] == NONE;
  return ambiguous(r->rc);
}

/* A lossy run keeps a prefix of the commits: if an operation is there,
 * every one acknowledged before it was submitted is there too. Returns the
 * record index of the latest intent of an operation found there (deposits,
 * coupons and checkouts, which can be told apart). */
static size_t horizon(sqlite3 *h, const cl_log *lg) {
  size_t hz = 0;
  for (size_t i = 0; i < lg->n; i++) {
    const rec *r = &lg->recs[i];
    bool done = r->type == REC_RESULT && (r->rc == SC_OK || ambiguous(r->rc));
    bool open = r->type == REC_INTENT && lg->pair[i] == NONE;
    if (!done && !open) continue;
    size_t intent = open ? i : lg->pair[i];
    bool there = false;
    if (r->op == OP_DEPOSIT) there = deposit_present(h, r->c);
    if (r->op == OP_CHECKOUT) there = checkout_result(h, r->c) != 0;
    if (r->op == OP_ISSUE && r->rc == SC_OK) there = coupon_present(h, r);
    if (there && intent > hz) hz = intent;
  }
  return hz;
}

void cl_check(const char *path, const cl_world *w, const cl_log *lg, bool lossy,
              cl_summary *out) {
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
  expect *e = calloc(1, sizeof *e);
  ck_assert_ptr_nonnull(e);
  e->pause_allowed = 1u << 0; /* created unpaused */
  size_t hz = lossy ? horizon(h, lg) : NONE;
  for (size_t i = 0; i < lg->n; i++) {
    const rec *r = &lg->recs[i];
    if (uncertain_at(lg, i)) {
      note_uncertain(h, w, r, e);
    } else if (r->type == REC_RESULT) {
      check_result(h, w, r, i < hz, e);
    }
  }
  check_totals(h, w, e);
  check_orders(h, e);
  *out = e->sum;
  free(e->order_flags);
  free(e);
  sqlite3_close(h);
}

void cl_summary_add(cl_summary *total, const cl_summary *round) {
  total->acked += round->acked;
  total->refused += round->refused;
  total->uncertain += round->uncertain;
  total->ioerr += round->ioerr;
  total->ambiguous += round->ambiguous;
  total->lost += round->lost;
  for (int k = 0; k < OP_KINDS_; k++)
    total->ok_by_op[k] += round->ok_by_op[k];
}

void cl_summary_print(const char *suite, const cl_summary *t) {
  printf(
      "%s: acknowledged ok over all rounds: %lld deposits, %lld "
      "coupons, %lld checkouts, %lld payments, %lld cancels, %lld expiry "
      "sweeps, %lld claimed and acked events; %lld refused, %lld in flight "
      "or ambiguous (%lld ambiguous), %lld SC_IOERR, %lld acknowledged but "
      "lost (NORMAL)\n",
      suite, (long long)t->ok_by_op[OP_DEPOSIT],
      (long long)t->ok_by_op[OP_ISSUE], (long long)t->ok_by_op[OP_CHECKOUT],
      (long long)t->ok_by_op[OP_PAY], (long long)t->ok_by_op[OP_CANCEL],
      (long long)t->ok_by_op[OP_EXPIRE], (long long)t->ok_by_op[OP_ACK],
      (long long)t->refused, (long long)t->uncertain, (long long)t->ambiguous,
      (long long)t->ioerr, (long long)t->lost);
}

uint64_t cl_env_u64(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  return v && *v ? strtoull(v, NULL, 0) : dflt;
}
