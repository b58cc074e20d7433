/* Asynchronous write calls for hosts on a libuv loop. A request is queued to
 * the writer like any blocking call; the thread completing it (the
 * completer, or the writer for a small batch), once the commit
 * holding it is durable, puts it on the handle's done list and wakes the
 * loop with uv_async_send; the loop thread calls the callbacks. So a
 * callback always runs on the loop thread, exactly once per accepted
 * request, and never when submitting failed.
 *
 * Closing the handle cancels what the writer has not started: such a
 * request completes with SC_CANCELED and changed nothing. What it has
 * started completes with its real result: a canceled status never hides a
 * committed change. */
#include <string.h>
#include <uv.h>

#include "internal.h"
#include "pg/pg.h"

typedef struct async_op async_op;

struct sc_async {
  sc_db *db;
  uv_loop_t *loop;
  uv_async_t wake;
  pthread_mutex_t lock; /* the done list */
  async_op *done_head, *done_tail;
  async_op *inflight; /* loop thread: submitted, not yet called back */
  bool closing;
  void (*close_cb)(sc_async *a, void *ud);
  void *close_ud;
};

/* The request's operation: the module's own (prepared) wrapped in one that
 * can be canceled before it runs. */
struct async_op {
  sc__op base;
  sc__prepared inner;
  sc_async *async;
  sc_async_req *req;
  sc_async_cb cb;
  atomic_bool canceled;
  async_op *prev, *next; /* inflight list */
  async_op *done_next;   /* done list */
};

/* ---- the writer and the completer -----------------------------------------
 */

static int async_run(sc_db *db, sc__conn *w, sc__op *base) {
  async_op *op = (async_op *)base;
  if (atomic_load(&op->canceled)) {
    return sc__op_fail(base, SC_CANCELED,
                       "canceled: its async handle was closed before it ran");
  }
  sc__op *in = op->inner.op;
  int rc = in->run(db, w, in);
  if (rc != SC_OK) memcpy(base->errmsg, in->errmsg, sizeof base->errmsg);
  return rc;
}

/* On PostgreSQL the batch runs the inner operation's call itself. */
static sc__op *async_unwrap(sc__op *base, int *status) {
  async_op *op = (async_op *)base;
  if (atomic_load(&op->canceled)) {
    *status = sc__op_fail(base, SC_CANCELED,
                          "canceled: its async handle was closed before it "
                          "ran");
    base->status = *status;
    return NULL;
  }
  return op->inner.op;
}

const sc__op_pg sc__pg_async = {.name = "async", .unwrap = async_unwrap};

/* On the completing thread (see sc__op_done_fn). The loop frees the handle only
 * after it took op off the list, and this thread has let go of the lock (and of
 * the handle) by then. */
static void async_done(sc__op *base) {
  async_op *op = (async_op *)base;
  sc_async *a = op->async;
  pthread_mutex_lock(&a->lock);
  if (a->done_tail != NULL) {
    a->done_tail->done_next = op;
  } else {
    a->done_head = op;
  }
  a->done_tail = op;
  uv_async_send(&a->wake);
  pthread_mutex_unlock(&a->lock);
}

/* ---- the loop thread ------------------------------------------------------
 */

static void inflight_unlink(sc_async *a, async_op *op) {
  if (op->prev != NULL) {
    op->prev->next = op->next;
  } else {
    a->inflight = op->next;
  }
  if (op->next != NULL) op->next->prev = op->prev;
}

static void handle_closed(uv_handle_t *h) {
  sc_async *a = h->data;
  if (a->close_cb != NULL) a->close_cb(a, a->close_ud);
  pthread_mutex_destroy(&a->lock);
  sc__free(a);
}

static void maybe_close(sc_async *a) {
  if (a->closing && a->inflight == NULL &&
      !uv_is_closing((uv_handle_t *)&a->wake)) {
    uv_close((uv_handle_t *)&a->wake, handle_closed);
  }
}

/* Completes one request: the result into req, the op freed, then the
 * callback, with sc_errmsg() giving the detail of a failure. */
static void complete(sc_async *a, async_op *op) {
  inflight_unlink(a, op);
  sc_async_req *req = op->req;
  sc_async_cb cb = op->cb;
  int status = op->base.status;
  req->status = status;
  req->id = status == SC_OK && op->inner.result ? *op->inner.result : 0;
  req->op_ = NULL;
  if (status != SC_OK) sc__set_errmsg(op->base.errmsg);
  op->inner.free(op->inner.op);
  sc__free(op);
  cb(req, status);
}

static void woken(uv_async_t *handle) {
  sc_async *a = handle->data;
  pthread_mutex_lock(&a->lock);
  async_op *op = a->done_head;
  a->done_head = a->done_tail = NULL;
  pthread_mutex_unlock(&a->lock);
  while (op != NULL) {
    async_op *next = op->done_next;
    complete(a, op);
    op = next;
  }
  maybe_close(a);
}

/* ---- the public calls -----------------------------------------------------
 */

int sc_async_open(sc_db *db, uv_loop_t *loop, sc_async **out) {
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_async_open: out is NULL");
  *out = NULL;
  SC__CHECK_DB(db);
  if (loop == NULL) return sc__fail(SC_MISUSE, "sc_async_open: loop is NULL");
  sc_async *a = sc__calloc(1, sizeof *a);
  if (a == NULL) return sc__fail(SC_NOMEM, "sc_async_open: out of memory");
  a->db = db;
  a->loop = loop;
  int rc = uv_async_init(loop, &a->wake, woken);
  if (rc != 0) {
    sc__free(a);
    return sc__fail(SC_ERROR, "sc_async_open: uv_async_init: %s",
                    uv_strerror(rc));
  }
  a->wake.data = a;
  pthread_mutex_init(&a->lock, NULL);
  *out = a;
  return SC_OK;
}

int sc_async_close(sc_async *a, void (*close_cb)(sc_async *a, void *ud),
                   void *ud) {
  if (a == NULL) return sc__fail(SC_MISUSE, "sc_async_close: a is NULL");
  if (a->closing) {
    return sc__fail(SC_MISUSE, "sc_async_close: the handle is already closing");
  }
  a->closing = true;
  a->close_cb = close_cb;
  a->close_ud = ud;
  for (async_op *op = a->inflight; op != NULL; op = op->next) {
    atomic_store(&op->canceled, true);
  }
  maybe_close(a);
  return SC_OK;
}

/* Queues a prepared operation for req; on failure nothing is left and no
 * callback will come. */
static int submit(sc_async *a, sc_async_req *req, sc_async_cb cb,
                  sc__prepared *p) {
  async_op *op = sc__calloc(1, sizeof *op);
  if (op == NULL) {
    p->free(p->op);
    return sc__fail(SC_NOMEM, "async: out of memory");
  }
  op->base.run = async_run;
  op->base.pg = &sc__pg_async;
  op->base.done = async_done;
  op->base.kind = p->op->kind;
  op->inner = *p;
  op->async = a;
  op->req = req;
  op->cb = cb;
  req->status = SC_OK;
  req->id = 0;
  req->op_ = op;
  /* Linked first: the completion may come before sc__op_submit returns. */
  op->next = a->inflight;
  if (a->inflight != NULL) a->inflight->prev = op;
  a->inflight = op;
  int rc = sc__call_enter(a->db);
  if (rc == SC_OK) {
    /* Never wait for room on the loop thread: a full queue is SC_BUSY. */
    rc = sc__op_try_submit(a->db, &op->base);
    sc__call_leave(a->db);
  }
  if (rc != SC_OK) {
    inflight_unlink(a, op);
    req->op_ = NULL;
    p->free(p->op);
    sc__free(op);
  }
  return rc;
}

/* The checks every *_async call shares. */
static int check_async(sc_async *a, sc_async_req *req, sc_async_cb cb,
                       const char *fn) {
  if (a == NULL || req == NULL || cb == NULL) {
    return sc__fail(SC_MISUSE, "%s: the handle, req or cb is NULL", fn);
  }
  if (a->closing) return sc__fail(SC_CLOSED, "%s: the handle is closing", fn);
  return SC_OK;
}

int sc_coupon_issue_async(sc_async *a, sc_async_req *req, sc_id policy,
                          sc_id user, sc_async_cb cb) {
  int rc = check_async(a, req, cb, "sc_coupon_issue_async");
  sc__prepared p;
  if (rc == SC_OK) rc = sc__coupon_issue_prepare(a->db, policy, user, &p);
  return rc == SC_OK ? submit(a, req, cb, &p) : rc;
}

int sc_checkout_async(sc_async *a, sc_async_req *req,
                      const sc_checkout_req *creq, sc_async_cb cb) {
  int rc = check_async(a, req, cb, "sc_checkout_async");
  sc__prepared p;
  if (rc == SC_OK) rc = sc__checkout_prepare(a->db, creq, &p);
  return rc == SC_OK ? submit(a, req, cb, &p) : rc;
}

int sc_order_pay_async(sc_async *a, sc_async_req *req, sc_id order,
                       sc_async_cb cb) {
  int rc = check_async(a, req, cb, "sc_order_pay_async");
  sc__prepared p;
  if (rc == SC_OK) rc = sc__order_pay_prepare(a->db, order, &p);
  return rc == SC_OK ? submit(a, req, cb, &p) : rc;
}

int sc_order_cancel_async(sc_async *a, sc_async_req *req, sc_id order,
                          sc_async_cb cb) {
  int rc = check_async(a, req, cb, "sc_order_cancel_async");
  sc__prepared p;
  if (rc == SC_OK) rc = sc__order_cancel_prepare(a->db, order, &p);
  return rc == SC_OK ? submit(a, req, cb, &p) : rc;
}
