/* Asynchronous calls: callbacks on the loop thread, once per accepted
 * request and never for a refused one; results as the blocking calls give
 * them; arguments copied; closing cancels what the writer has not started
 * (and that changes nothing), never what it has. */
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "internal.h"
#include "test_util.h"

typedef struct ctx {
  uv_loop_t loop;
  sc_db *db;
  sc_async *a;
  pthread_t loop_thread;
  int calls, ok, wrong_thread, closes;
  int by_status[SC_STATUS_COUNT_];
  bool closed;
} ctx;

typedef struct call {
  sc_async_req req;
  ctx *c;
  int times; /* callbacks seen for this request */
  sc_id id;
} call;

static void count_cb(sc_async_req *req, int status) {
  call *k = req->data;
  ctx *c = k->c;
  ck_assert_int_eq(req->status, status);
  ck_assert(!c->closed);
  if (!pthread_equal(pthread_self(), c->loop_thread)) c->wrong_thread++;
  k->times++;
  k->id = req->id;
  c->calls++;
  if (status >= 0 && status < SC_STATUS_COUNT_) c->by_status[status]++;
  if (status == SC_OK) {
    c->ok++;
  } else {
    ck_assert_str_ne(sc_errmsg(NULL), ""); /* the detail is there */
  }
}

static void on_close(sc_async *a, void *ud) {
  ctx *c = ud;
  ck_assert_ptr_eq(a, c->a);
  c->closes++;
  c->closed = true;
}

static void ctx_open(ctx *c, sc_db *db) {
  memset(c, 0, sizeof *c);
  c->db = db;
  c->loop_thread = pthread_self();
  ck_assert_int_eq(uv_loop_init(&c->loop), 0);
  ck_assert_sc(sc_async_open(db, &c->loop, &c->a), SC_OK);
  ck_assert_ptr_nonnull(c->a);
}

/* Closes the handle, runs the loop until it is freed, closes the loop. */
static void ctx_close(ctx *c) {
  if (!c->closed) ck_assert_sc(sc_async_close(c->a, on_close, c), SC_OK);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(c->closes, 1);
  ck_assert_int_eq(uv_loop_close(&c->loop), 0);
  ck_assert_int_eq(c->wrong_thread, 0);
}

static sc_id make_policy(sc_db *db, int64_t max_count) {
  sc_coupon_policy_spec spec = {.name = "a", .max_count = max_count};
  sc_id id = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &id), SC_OK);
  return id;
}

/* Runs the loop until n callbacks came. */
static void run_until_calls(ctx *c, int n) {
  while (c->calls < n)
    uv_run(&c->loop, UV_RUN_ONCE);
}

START_TEST(each_accepted_request_is_called_back_once_on_the_loop) {
  char *path = tu_db_path("as-issue");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 600);
  ctx c;
  ctx_open(&c, db);
  enum { N = 1000 };
  call *calls = calloc(N, sizeof *calls);
  for (int i = 0; i < N; i++) {
    calls[i].c = &c;
    calls[i].req.data = &calls[i];
    ck_assert_sc(
        sc_coupon_issue_async(c.a, &calls[i].req, policy, i + 1, count_cb),
        SC_OK);
  }
  run_until_calls(&c, N);
  ck_assert_int_eq(c.ok, 600);
  ck_assert_int_eq(c.by_status[SC_SOLD_OUT], 400);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(calls[i].times, 1);
    if (calls[i].req.status == SC_OK) {
      ck_assert_int_gt(calls[i].id, 0);
    } else {
      ck_assert_int_eq(calls[i].id, 0);
    }
  }
  ctx_close(&c);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(calls[i].times, 1);
  free(calls);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 600);
  ck_assert_int_eq(tu_count(path, "SELECT count(DISTINCT id) FROM sc_coupon"),
                   600);
  tu_remove_db(path);
}
END_TEST

/* ---- checkout and pay ---------------------------------------------------- */

typedef struct order_flow {
  call checkout, pay, replay;
  sc_async *a;
  sc_id product;
} order_flow;

static void paid_cb(sc_async_req *req, int status) {
  count_cb(req, status);
}

/* The checkout's callback pays the order: a callback may submit. */
static void checked_out_cb(sc_async_req *req, int status) {
  count_cb(req, status);
  order_flow *f = (order_flow *)((char *)req - offsetof(order_flow, checkout));
  ck_assert_sc(status, SC_OK);
  ck_assert_sc(sc_order_pay_async(f->a, &f->pay.req, req->id, paid_cb), SC_OK);
}

static int submit_checkout(order_flow *f, call *k, sc_async_cb cb) {
  /* Lines and key on the heap, freed as soon as the call returns: the
   * library must have copied them. */
  sc_line *lines = malloc(2 * sizeof *lines);
  char *key = strdup("checkout-key-1");
  lines[0] = (sc_line){.product = f->product, .qty = 2};
  lines[1] = (sc_line){.product = f->product + 1, .qty = 1};
  sc_checkout_req creq = {.user = 7,
                          .lines = lines,
                          .n_lines = 2,
                          .ttl_ms = 60000,
                          .idempotency_key = key};
  int rc = sc_checkout_async(f->a, &k->req, &creq, cb);
  memset(lines, 0xff, 2 * sizeof *lines);
  memset(key, 'x', strlen(key));
  free(lines);
  free(key);
  return rc;
}

START_TEST(checkout_then_pay_from_the_callback) {
  char *path = tu_db_path("as-order");
  sc_db *db = tu_open(path, NULL);
  sc_id p1, p2;
  ck_assert_sc(sc_product_create(db, "a", 100, 10, &p1), SC_OK);
  ck_assert_sc(sc_product_create(db, "b", 50, 10, &p2), SC_OK);
  ck_assert_int_eq(p2, p1 + 1);
  ck_assert_sc(sc_account_deposit(db, 7, 1000, NULL), SC_OK);
  ctx c;
  ctx_open(&c, db);
  order_flow f = {.a = c.a, .product = p1};
  f.checkout.c = f.pay.c = f.replay.c = &c;
  f.checkout.req.data = &f.checkout;
  f.pay.req.data = &f.pay;
  f.replay.req.data = &f.replay;
  ck_assert_sc(submit_checkout(&f, &f.checkout, checked_out_cb), SC_OK);
  run_until_calls(&c, 2);
  ck_assert_int_eq(f.checkout.times, 1);
  ck_assert_int_eq(f.pay.times, 1);
  ck_assert_sc(f.pay.req.status, SC_OK);
  sc_id order = f.checkout.id;
  ck_assert_int_gt(order, 0);
  /* The same key again: the first order, nothing new. */
  ck_assert_sc(submit_checkout(&f, &f.replay, count_cb), SC_OK);
  run_until_calls(&c, 3);
  ck_assert_sc(f.replay.req.status, SC_OK);
  ck_assert_int_eq(f.replay.id, order);
  /* Pay and cancel results are the blocking calls' results. */
  call again = {.c = &c}, cancel = {.c = &c};
  again.req.data = &again;
  cancel.req.data = &cancel;
  ck_assert_sc(sc_order_pay_async(c.a, &again.req, order, count_cb), SC_OK);
  ck_assert_sc(sc_order_cancel_async(c.a, &cancel.req, order, count_cb), SC_OK);
  run_until_calls(&c, 5);
  ck_assert_sc(again.req.status, SC_OK); /* paying twice */
  ck_assert_sc(cancel.req.status, SC_INVALID_STATE);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "paid"));
  ctx_close(&c);
  sc_order o;
  ck_assert_sc(sc_order_get(db, order, &o), SC_OK);
  ck_assert_int_eq(o.status, SC_ORDER_CONFIRMED);
  ck_assert_int_eq(o.total, 250);
  sc_account acct;
  ck_assert_sc(sc_account_get(db, 7, &acct), SC_OK);
  ck_assert_int_eq(acct.balance, 750);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_order"), 1);
  tu_remove_db(path);
}
END_TEST

/* ---- refused submissions ------------------------------------------------- */

START_TEST(refused_submissions_are_never_called_back) {
  char *path = tu_db_path("as-bad");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 10);
  ctx c;
  ctx_open(&c, db);
  call k = {.c = &c};
  k.req.data = &k;
  ck_assert_sc(sc_coupon_issue_async(NULL, &k.req, policy, 1, count_cb),
               SC_MISUSE);
  ck_assert_sc(sc_coupon_issue_async(c.a, NULL, policy, 1, count_cb),
               SC_MISUSE);
  ck_assert_sc(sc_coupon_issue_async(c.a, &k.req, policy, 1, NULL), SC_MISUSE);
  ck_assert_sc(sc_coupon_issue_async(c.a, &k.req, policy, 0, count_cb),
               SC_INVALID);
  ck_assert_sc(sc_coupon_issue_async(c.a, &k.req, -1, 1, count_cb),
               SC_NOT_FOUND);
  sc_line line = {.product = 1, .qty = 0};
  sc_checkout_req creq = {.user = 7, .lines = &line, .n_lines = 1};
  ck_assert_sc(sc_checkout_async(c.a, &k.req, &creq, count_cb), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "qty"));
  ck_assert_sc(sc_checkout_async(c.a, &k.req, NULL, count_cb), SC_MISUSE);
  creq.n_lines = 0;
  ck_assert_sc(sc_checkout_async(c.a, &k.req, &creq, count_cb), SC_INVALID);
  ck_assert_sc(sc_order_pay_async(c.a, &k.req, 0, count_cb), SC_NOT_FOUND);
  ck_assert_sc(sc_order_cancel_async(c.a, &k.req, -4, count_cb), SC_NOT_FOUND);
  sc_async *none = (sc_async *)0x1;
  ck_assert_sc(sc_async_open(NULL, &c.loop, &none), SC_MISUSE);
  ck_assert_ptr_null(none);
  ck_assert_sc(sc_async_open(db, NULL, &none), SC_MISUSE);
  ck_assert_sc(sc_async_open(db, &c.loop, NULL), SC_MISUSE);
  ck_assert_sc(sc_async_close(NULL, NULL, NULL), SC_MISUSE);
  /* Once closing, calls are refused and close is not repeated. */
  ck_assert_sc(sc_async_close(c.a, on_close, &c), SC_OK);
  ck_assert_sc(sc_async_close(c.a, on_close, &c), SC_MISUSE);
  ck_assert_sc(sc_coupon_issue_async(c.a, &k.req, policy, 1, count_cb),
               SC_CLOSED);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(c.closes, 1);
  ck_assert_int_eq(uv_loop_close(&c.loop), 0);
  ck_assert_int_eq(c.calls, 0);
  ck_assert_int_eq(k.times, 0);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 0);
  tu_remove_db(path);
}
END_TEST

/* ---- closing with requests in flight ------------------------------------- */

/* An operation that holds the writer until the gate opens. */
typedef struct gate_op {
  sc__op base;
  sem_t *entered, *gate;
} gate_op;

static int gate_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  (void)w;
  gate_op *op = (gate_op *)base;
  sem_post(op->entered);
  while (sem_wait(op->gate) != 0) {
  }
  return SC_OK;
}

typedef struct gate {
  sc_db *db;
  sem_t entered, open;
  pthread_t thread;
} gate;

static void *gate_main(void *arg) {
  gate *g = arg;
  gate_op op = {.base = {.run = gate_run, .kind = SC__OP_ADMIN},
                .entered = &g->entered,
                .gate = &g->open};
  ck_assert_sc(sc__op_execute(g->db, &op.base), SC_OK);
  return NULL;
}

static void gate_close_writer(gate *g, sc_db *db) {
  g->db = db;
  sem_init(&g->entered, 0, 0);
  sem_init(&g->open, 0, 0);
  ck_assert_int_eq(pthread_create(&g->thread, NULL, gate_main, g), 0);
  while (sem_wait(&g->entered) != 0) {
  }
}

static void gate_open(gate *g) {
  sem_post(&g->open);
  pthread_join(g->thread, NULL);
  sem_destroy(&g->entered);
  sem_destroy(&g->open);
}

START_TEST(close_cancels_what_the_writer_has_not_started) {
  char *path = tu_db_path("as-cancel");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 1000);
  ctx c;
  ctx_open(&c, db);
  /* Requests that ran before the close keep their results. */
  call done[10];
  for (int i = 0; i < 10; i++) {
    done[i] = (call){.c = &c};
    done[i].req.data = &done[i];
    ck_assert_sc(
        sc_coupon_issue_async(c.a, &done[i].req, policy, i + 1, count_cb),
        SC_OK);
  }
  run_until_calls(&c, 10);
  /* The writer is held: these wait in its queue when the handle closes. */
  gate g;
  gate_close_writer(&g, db);
  call *queued = calloc(200, sizeof *queued);
  for (int i = 0; i < 200; i++) {
    queued[i].c = &c;
    queued[i].req.data = &queued[i];
    ck_assert_sc(
        sc_coupon_issue_async(c.a, &queued[i].req, policy, 100 + i, count_cb),
        SC_OK);
  }
  ck_assert_sc(sc_async_close(c.a, on_close, &c), SC_OK);
  gate_open(&g);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(c.closes, 1);
  ck_assert_int_eq(uv_loop_close(&c.loop), 0);
  ck_assert_int_eq(c.calls, 210);
  ck_assert_int_eq(c.ok, 10);
  ck_assert_int_eq(c.by_status[SC_CANCELED], 200);
  for (int i = 0; i < 200; i++) {
    ck_assert_int_eq(queued[i].times, 1);
    ck_assert_int_eq(queued[i].req.status, SC_CANCELED);
  }
  free(queued);
  tu_assert_verify(db);
  sc_close(db);
  /* The canceled ones changed nothing. */
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 10);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 10);
  tu_remove_db(path);
}
END_TEST

START_TEST(a_full_queue_is_refused_without_blocking_the_loop) {
  /* A large busy_timeout_ms: a call that waited for room would hang here
   * while the writer is held, instead of returning SC_BUSY at once. */
  char *path = tu_db_path("as-full");
  sc_options o;
  sc_options_init(&o);
  o.queue_max = 4;
  o.busy_timeout_ms = 60000;
  sc_db *db = tu_open(path, &o);
  sc_id policy = make_policy(db, 100);
  ctx c;
  ctx_open(&c, db);
  gate g;
  gate_close_writer(&g, db);
  call k[6];
  int accepted = 0, busy = 0;
  for (int i = 0; i < 6; i++) {
    k[i] = (call){.c = &c};
    k[i].req.data = &k[i];
    int rc = sc_coupon_issue_async(c.a, &k[i].req, policy, i + 1, count_cb);
    if (rc == SC_OK) accepted++;
    if (rc == SC_BUSY) {
      busy++;
      ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "queue"));
    }
  }
  ck_assert_int_eq(accepted, 4);
  ck_assert_int_eq(busy, 2);
  gate_open(&g);
  run_until_calls(&c, 4);
  ck_assert_int_eq(c.ok, 4);
  for (int i = 4; i < 6; i++)
    ck_assert_int_eq(k[i].times, 0);
  ctx_close(&c);
  ck_assert_int_eq(c.calls, 4); /* no callback for the refused ones */
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 4);
  tu_remove_db(path);
}
END_TEST

/* A callback closes the handle while others are still coming: those that
 * the writer already ran keep their results, and every one is called. */
static void closing_cb(sc_async_req *req, int status) {
  call *k = req->data;
  count_cb(req, status);
  if (k->c->calls == 1)
    ck_assert_sc(sc_async_close(k->c->a, on_close, k->c), SC_OK);
}

START_TEST(a_callback_may_close_the_handle) {
  char *path = tu_db_path("as-cbclose");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 1000);
  ctx c;
  ctx_open(&c, db);
  call *k = calloc(300, sizeof *k);
  for (int i = 0; i < 300; i++) {
    k[i].c = &c;
    k[i].req.data = &k[i];
    ck_assert_sc(
        sc_coupon_issue_async(c.a, &k[i].req, policy, i + 1, closing_cb),
        SC_OK);
  }
  uv_run(&c.loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(c.closes, 1);
  ck_assert_int_eq(uv_loop_close(&c.loop), 0);
  ck_assert_int_eq(c.calls, 300);
  ck_assert_int_eq(c.ok + c.by_status[SC_CANCELED], 300);
  for (int i = 0; i < 300; i++)
    ck_assert_int_eq(k[i].times, 1);
  free(k);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), c.ok);
  tu_remove_db(path);
}
END_TEST

Suite *async_suite(void) {
  Suite *s = suite_create("async");
  TCase *tc = tu_tcase("async");
  tcase_add_test(tc, each_accepted_request_is_called_back_once_on_the_loop);
  tcase_add_test(tc, checkout_then_pay_from_the_callback);
  tcase_add_test(tc, refused_submissions_are_never_called_back);
  tcase_add_test(tc, a_callback_may_close_the_handle);
  /* They hold the writer with an operation of the test's own, which runs
   * on the SQLite writer only: not run against PostgreSQL. */
  if (!tu_pg_mode()) {
    tcase_add_test(tc, close_cancels_what_the_writer_has_not_started);
    tcase_add_test(tc, a_full_queue_is_refused_without_blocking_the_loop);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(async_suite());
}
