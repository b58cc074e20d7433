/* Orders: checkout, payment, cancellation and expiry. Each is one operation
 * of the single writer, and every change of an order's status is a
 * conditional UPDATE ... WHERE status = PENDING, so payment and expiry of the
 * same order can never both win, whatever the timing. The event of each
 * change is written in the same transaction. */
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "metrics.h"

static const char SQL_ORDER_INSERT[] =
    "INSERT INTO sc_order(user_id, status, total, discount, coupon_id,"
    " created_at_ms, expires_at_ms) VALUES(?1, 1, ?2, ?3, ?4, ?5, ?6)";
static const char SQL_LINE_INSERT[] =
    "INSERT INTO sc_order_line(order_id, product_id, qty, price)"
    " VALUES(?1, ?2, ?3, ?4)";
static const char SQL_ORDER_STATE[] =
    "SELECT id, user_id, status, total, discount, coupon_id, expires_at_ms"
    " FROM sc_order WHERE id = ?1";
/* The partial index sc_order_due serves this (its rows are in deadline,
 * then id order). A batch starts after the last row of the one before
 * (?3, ?4), so an order left PENDING (skipped as damaged) is not read
 * again by the same call. */
static const char SQL_ORDERS_DUE[] =
    "SELECT id, user_id, status, total, discount, coupon_id, expires_at_ms"
    " FROM sc_order WHERE status = 1 AND expires_at_ms <= ?1"
    " AND expires_at_ms >= ?3 AND (expires_at_ms > ?3 OR id > ?4)"
    " ORDER BY expires_at_ms, id LIMIT ?2";
static const char SQL_ORDER_CLOSE[] =
    "UPDATE sc_order SET status = ?2, closed_at_ms = ?3"
    " WHERE id = ?1 AND status = 1";
static const char SQL_ORDER_GET[] =
    "SELECT user_id, status, total, discount, expires_at_ms"
    " FROM sc_order WHERE id = ?1";

/* Reads the columns of SQL_ORDER_STATE / SQL_ORDERS_DUE. */
static void order_row_read(sqlite3_stmt *st, order_row *o) {
  o->id = sqlite3_column_int64(st, 0);
  o->user = sqlite3_column_int64(st, 1);
  o->status = sqlite3_column_int(st, 2);
  o->total = sqlite3_column_int64(st, 3);
  o->discount = sqlite3_column_int64(st, 4);
  o->coupon = sqlite3_column_int64(st, 5); /* NULL reads as 0 */
  o->expires_at_ms = sqlite3_column_int64(st, 6);
}

static int order_load(sc__conn *w, sc__op *op, sc_id id, order_row *o) {
  sqlite3_stmt *st = sc__stmt(w, SQL_ORDER_STATE);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "order");
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) order_row_read(st, o);
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) {
    return sc__op_fail(op, SC_NOT_FOUND, "order %lld not found", (long long)id);
  }
  return rc == SQLITE_ROW ? SC_OK : sc__op_fail_sqlite(op, w, rc, "order");
}

static int emit_order_event(sc_db *db, sc__conn *w, sc__op *op,
                            const order_row *o, int type, int64_t now) {
  sc__event_fields ev = {.type = type,
                         .user = o->user,
                         .order = o->id,
                         .coupon = o->coupon,
                         .amount = o->total,
                         .discount = o->discount,
                         .expires_at_ms = o->expires_at_ms,
                         .at_ms = now};
  return sc__outbox_emit(db, w, op, &ev);
}

/* PENDING -> status, conditionally: the one step payment and expiry race
 * for. */
static int order_close(sc__conn *w, sc__op *op, const order_row *o, int status,
                       int64_t now) {
  sqlite3_stmt *st = sc__stmt(w, SQL_ORDER_CLOSE);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "order");
  sqlite3_bind_int64(st, 1, o->id);
  sqlite3_bind_int(st, 2, status);
  sqlite3_bind_int64(st, 3, now);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "order");
  if (sqlite3_changes(w->h) == 1) return SC_OK;
  return sc__op_fail(op, SC_INVALID_STATE, "order %lld is no longer pending",
                     (long long)o->id);
}

/* Ends a PENDING order without payment (cancelled or expired): its stock,
 * balance hold and coupon go back. */
static int order_release(sc_db *db, sc__conn *w, sc__op *op, const order_row *o,
                         int status, int event, int64_t now) {
  int rc = order_close(w, op, o, status, now);
  if (rc == SC_OK) rc = sc__stock_release_order(w, op, o->id);
  if (rc == SC_OK) rc = sc__account_release(w, op, o->user, o->total);
  if (rc == SC_OK && o->coupon != 0) rc = sc__coupon_release(w, op, o->id);
  if (rc == SC_OK) rc = emit_order_event(db, w, op, o, event, now);
  return rc;
}

/* ---- checkout ----------------------------------------------------------- */

/* Checks every line and prices the order; changes nothing. */
static int check_lines(sc__conn *w, checkout_op *op, int64_t *subtotal) {
  int64_t sum = 0, amount;
  for (size_t i = 0; i < op->n; i++) {
    line_item *it = &op->items[i];
    int rc = sc__stock_check(w, &op->base, it->product, it->qty, it->expected,
                             &it->price);
    if (rc != SC_OK) return rc;
    if (!sc__mul_i64(it->price, it->qty, &amount) ||
        !sc__add_i64(sum, amount, &sum)) {
      return sc__op_fail(&op->base, SC_INVALID,
                         "sc_checkout: the total overflows at product %lld "
                         "(price %lld x qty %lld)",
                         (long long)it->product, (long long)it->price,
                         (long long)it->qty);
    }
  }
  *subtotal = sum;
  return SC_OK;
}

static int reserve_lines(sc__conn *w, checkout_op *op) {
  for (size_t i = 0; i < op->n; i++) {
    int rc =
        sc__stock_reserve(w, &op->base, op->items[i].product, op->items[i].qty);
    if (rc != SC_OK) return rc;
  }
  return SC_OK;
}

static int insert_order(sc__conn *w, checkout_op *op, order_row *o,
                        int64_t now) {
  sqlite3_stmt *st = sc__stmt(w, SQL_ORDER_INSERT);
  if (st == NULL)
    return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "order");
  sqlite3_bind_int64(st, 1, o->user);
  sqlite3_bind_int64(st, 2, o->total);
  sqlite3_bind_int64(st, 3, o->discount);
  if (o->coupon != 0) sqlite3_bind_int64(st, 4, o->coupon);
  sqlite3_bind_int64(st, 5, now);
  sqlite3_bind_int64(st, 6, o->expires_at_ms);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(&op->base, w, rc, "order");
  o->id = op->order = sqlite3_last_insert_rowid(w->h);
  return SC_OK;
}

static int insert_lines(sc__conn *w, checkout_op *op) {
  for (size_t i = 0; i < op->n; i++) {
    sqlite3_stmt *st = sc__stmt(w, SQL_LINE_INSERT);
    if (st == NULL)
      return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "line");
    sqlite3_bind_int64(st, 1, op->order);
    sqlite3_bind_int64(st, 2, op->items[i].product);
    sqlite3_bind_int64(st, 3, op->items[i].qty);
    sqlite3_bind_int64(st, 4, op->items[i].price);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return sc__op_fail_sqlite(&op->base, w, rc, "line");
  }
  return SC_OK;
}

/* Validate, then apply: checks the lines, prices them, checks the coupon
 * and the balance, and only then reserves, holds and writes the order, so
 * a refusal writes nothing. */
static int checkout_new(sc_db *db, sc__conn *w, checkout_op *op) {
  sc__op *base = &op->base;
  int64_t now = sc__now_ms(db), subtotal = 0;
  order_row o = {.user = op->user, .coupon = op->coupon};
  if (!sc__add_i64(now, op->ttl_ms, &o.expires_at_ms)) {
    return sc__op_fail(base, SC_INVALID, "sc_checkout: ttl_ms %lld overflows",
                       (long long)op->ttl_ms);
  }
  int rc = check_lines(w, op, &subtotal);
  if (rc == SC_OK && o.coupon != 0) {
    rc = sc__coupon_discount(w, base, o.coupon, o.user, now, subtotal,
                             &o.discount);
  }
  o.total = subtotal - o.discount;
  if (rc == SC_OK) rc = sc__account_check_hold(w, base, o.user, o.total);
  if (rc != SC_OK) return rc;
  /* Nothing below refuses: a failure here is an error, not a refusal. */
  rc = reserve_lines(w, op);
  if (rc == SC_OK) rc = sc__account_hold(w, base, o.user, o.total);
  if (rc == SC_OK) rc = insert_order(w, op, &o, now);
  if (rc == SC_OK) rc = insert_lines(w, op);
  if (rc == SC_OK && o.coupon != 0)
    rc = sc__coupon_hold(w, base, o.coupon, o.id);
  if (rc == SC_OK && op->key != NULL) {
    rc = sc__idem_record(w, base, SC__IDEM_CHECKOUT, op->key, op->request,
                         op->request_len, o.id, now);
  }
  if (rc == SC_OK) {
    rc = emit_order_event(db, w, base, &o, SC_EVENT_ORDER_CREATED, now);
  }
  /* Told before the commit, so the worker's commit hook sees the deadline
   * of this very batch. Should the commit fail, the worker merely wakes
   * early and finds nothing due. */
  if (rc == SC_OK) sc__note_deadline(db, o.expires_at_ms);
  return rc;
}

static int checkout_run(sc_db *db, sc__conn *w, sc__op *base) {
  checkout_op *op = (checkout_op *)base;
  if (op->key != NULL) {
    int rc = sc__idem_find(w, base, SC__IDEM_CHECKOUT, op->key, op->request,
                           op->request_len, &op->order);
    if (rc == SC_OK) return SC_OK; /* a replay: the first order, no change */
    if (rc != SC_NOT_FOUND) return rc;
  }
  return checkout_new(db, w, op);
}

/* Checks what can be checked without the database. */
static int check_request(const sc_checkout_req *req) {
  const char *fn = "sc_checkout";
  if (req->user <= 0) {
    return sc__fail(SC_INVALID, "%s: user %lld must be > 0", fn,
                    (long long)req->user);
  }
  if (req->n_lines == 0 || req->lines == NULL) {
    return sc__fail(SC_INVALID, "%s: the order has no lines", fn);
  }
  if (req->n_lines > SC_CHECKOUT_LINES_MAX) {
    return sc__fail(SC_INVALID, "%s: %zu lines, more than %d per checkout", fn,
                    req->n_lines, SC_CHECKOUT_LINES_MAX);
  }
  if (req->ttl_ms < 0) {
    return sc__fail(SC_INVALID, "%s: ttl_ms %lld is negative", fn,
                    (long long)req->ttl_ms);
  }
  if (req->coupon < 0) {
    return sc__fail(SC_NOT_FOUND, "coupon %lld not found",
                    (long long)req->coupon);
  }
  int rc = sc__check_text(fn, "the idempotency key", req->idempotency_key,
                          SC_KEY_MAX, true);
  if (rc != SC_OK) return rc;
  for (size_t i = 0; i < req->n_lines; i++) {
    const sc_line *l = &req->lines[i];
    if (l->qty <= 0) {
      return sc__fail(SC_INVALID, "%s: line %zu: qty %lld must be > 0", fn, i,
                      (long long)l->qty);
    }
    if (l->product <= 0) {
      return sc__fail(SC_NOT_FOUND, "product %lld not found",
                      (long long)l->product);
    }
    if (req->expected_versions != NULL && req->expected_versions[i] < 0) {
      return sc__fail(SC_INVALID, "%s: line %zu: expected version %lld < 0", fn,
                      i, (long long)req->expected_versions[i]);
    }
  }
  return SC_OK;
}

static int by_product(const void *a, const void *b) {
  sc_id x = ((const line_item *)a)->product,
        y = ((const line_item *)b)->product;
  return (x > y) - (x < y);
}

/* The request as bytes: user, coupon, ttl, whether versions are expected,
 * the line count, then product, qty and expected version of each line in
 * product order, so the same lines in another order are the same request. */
static void encode_request(checkout_op *op, const sc_checkout_req *req) {
  unsigned char *p = op->request;
  sc__idem_put_i64(p, req->user);
  sc__idem_put_i64(p + 8, req->coupon);
  sc__idem_put_i64(p + 16, req->ttl_ms);
  sc__idem_put_i64(p + 24, req->expected_versions != NULL);
  sc__idem_put_i64(p + 32, (int64_t)op->n);
  p += 40;
  for (size_t i = 0; i < op->n; i++, p += 24) {
    sc__idem_put_i64(p, op->items[i].product);
    sc__idem_put_i64(p + 8, op->items[i].qty);
    sc__idem_put_i64(p + 16, op->items[i].expected);
  }
}

/* Copies the lines sorted by product (refusing one product twice) and
 * encodes the request when it is keyed. */
static int checkout_prepare(sc_db *db, checkout_op *op,
                            const sc_checkout_req *req) {
  op->n = req->n_lines;
  op->items = op->small_items;
  op->request = op->small_request;
  /* The request is bound as one blob, whose length is an int. */
  _Static_assert(REQUEST_LEN(SC_CHECKOUT_LINES_MAX) <= INT32_MAX,
                 "a request of the most lines must fit a blob");
  if (op->n > SMALL_LINES) {
    op->items = sc__calloc(op->n, sizeof *op->items);
    op->request = req->idempotency_key ? sc__malloc(REQUEST_LEN(op->n)) : NULL;
    if (op->items == NULL ||
        (req->idempotency_key != NULL && op->request == NULL)) {
      return sc__fail(SC_NOMEM, "sc_checkout: out of memory");
    }
  }
  for (size_t i = 0; i < op->n; i++) {
    op->items[i] = (line_item){
        .product = req->lines[i].product,
        .qty = req->lines[i].qty,
        .expected = req->expected_versions ? req->expected_versions[i] : -1};
  }
  qsort(op->items, op->n, sizeof *op->items, by_product);
  for (size_t i = 1; i < op->n; i++) {
    if (op->items[i].product == op->items[i - 1].product) {
      return sc__fail(SC_INVALID, "sc_checkout: product %lld is on two lines",
                      (long long)op->items[i].product);
    }
  }
  op->user = req->user;
  op->coupon = req->coupon;
  op->ttl_ms = req->ttl_ms ? req->ttl_ms : db->opts.default_order_ttl_ms;
  op->key = req->idempotency_key;
  if (op->key != NULL) {
    op->request_len = REQUEST_LEN(op->n);
    encode_request(op, req);
  }
  return SC_OK;
}

static void checkout_free(checkout_op *op) {
  if (op->items != op->small_items) sc__free(op->items);
  if (op->request != op->small_request) sc__free(op->request);
}

/* Checks req and builds its operation (the blocking and the asynchronous
 * checkout share it); fn names the caller in messages. */
static int checkout_op_new(sc_db *db, const sc_checkout_req *req,
                           const char *fn, checkout_op **out) {
  int rc = check_request(req);
  if (rc != SC_OK) return rc;
  checkout_op *op = sc__calloc(1, sizeof *op);
  if (op == NULL) return sc__fail(SC_NOMEM, "%s: out of memory", fn);
  op->base.run = checkout_run;
  op->base.pg = &sc__pg_checkout;
  op->base.kind = SC__OP_CHECKOUT;
  rc = checkout_prepare(db, op, req);
  if (rc != SC_OK) {
    checkout_free(op);
    sc__free(op);
    return rc;
  }
  *out = op;
  return SC_OK;
}

int sc_checkout(sc_db *db, const sc_checkout_req *req, sc_id *order_out) {
  SC__CHECK_DB(db);
  if (req == NULL || order_out == NULL) {
    return sc__fail(SC_MISUSE, "sc_checkout: req or order_out is NULL");
  }
  checkout_op *op;
  int rc = checkout_op_new(db, req, "sc_checkout", &op);
  if (rc != SC_OK) return rc;
  rc = sc__op_execute(db, &op->base);
  if (rc == SC_OK) *order_out = op->order;
  checkout_free(op);
  sc__free(op);
  return rc;
}

/* ---- pay and cancel ----------------------------------------------------- */

static int pay_refusal(sc__op *op, const order_row *o, int64_t now) {
  long long id = (long long)o->id;
  switch (o->status) {
    case SC_ORDER_CANCELLED:
      return sc__op_fail(op, SC_INVALID_STATE, "order %lld is cancelled", id);
    case SC_ORDER_EXPIRED:
      return sc__op_fail(op, SC_EXPIRED, "order %lld has expired", id);
    default:
      return sc__op_fail(op, SC_EXPIRED,
                         "order %lld was payable until %lld; it is %lld", id,
                         (long long)o->expires_at_ms, (long long)now);
  }
}

static int pay_run(sc_db *db, sc__conn *w, sc__op *base) {
  order_op *op = (order_op *)base;
  order_row o;
  int rc = order_load(w, base, op->order, &o);
  if (rc != SC_OK) return rc;
  if (o.status == SC_ORDER_CONFIRMED) return SC_OK; /* paid: no change */
  int64_t now = sc__now_ms(db);
  if (o.status != SC_ORDER_PENDING || now >= o.expires_at_ms) {
    return pay_refusal(base, &o, now);
  }
  rc = order_close(w, base, &o, SC_ORDER_CONFIRMED, now);
  if (rc == SC_OK) rc = sc__stock_consume_order(w, base, o.id);
  if (rc == SC_OK) rc = sc__account_debit(db, w, base, o.user, o.total, o.id);
  if (rc == SC_OK && o.coupon != 0) rc = sc__coupon_use(w, base, o.id);
  if (rc == SC_OK) {
    rc = emit_order_event(db, w, base, &o, SC_EVENT_ORDER_PAID, now);
  }
  return rc;
}

static int cancel_run(sc_db *db, sc__conn *w, sc__op *base) {
  order_op *op = (order_op *)base;
  order_row o;
  int rc = order_load(w, base, op->order, &o);
  if (rc != SC_OK) return rc;
  if (o.status == SC_ORDER_CANCELLED) return SC_OK; /* no change */
  if (o.status != SC_ORDER_PENDING) {
    return sc__op_fail(base, SC_INVALID_STATE, "order %lld is %s",
                       (long long)o.id,
                       o.status == SC_ORDER_CONFIRMED ? "paid" : "expired");
  }
  return order_release(db, w, base, &o, SC_ORDER_CANCELLED,
                       SC_EVENT_ORDER_CANCELLED, sc__now_ms(db));
}

/* The PostgreSQL call of a pay or cancel operation. */
static const struct sc__op_pg *order_pg(int kind) {
  return kind == SC__OP_ORDER_PAY ? &sc__pg_order_pay : &sc__pg_order_cancel;
}

static int order_execute(sc_db *db, sc_id order, sc__op_run_fn run, int kind) {
  SC__CHECK_DB(db);
  if (order <= 0) {
    return sc__fail(SC_NOT_FOUND, "order %lld not found", (long long)order);
  }
  order_op op = {.base = {.run = run, .pg = order_pg(kind), .kind = kind},
                 .order = order};
  return sc__op_execute(db, &op.base);
}

int sc_order_pay(sc_db *db, sc_id order) {
  return order_execute(db, order, pay_run, SC__OP_ORDER_PAY);
}

int sc_order_cancel(sc_db *db, sc_id order) {
  return order_execute(db, order, cancel_run, SC__OP_ORDER_CANCEL);
}

/* ---- prepared for the *_async calls (async.c) ---------------------------- */

static void checkout_op_free(sc__op *base) {
  checkout_op *op = (checkout_op *)base;
  sc__free((char *)op->key);
  checkout_free(op);
  sc__free(op);
}

/* As sc_checkout, but the idempotency key is copied too: the request may
 * be gone by the time the writer runs the operation. */
int sc__checkout_prepare(sc_db *db, const sc_checkout_req *req,
                         sc__prepared *out) {
  SC__CHECK_DB(db);
  if (req == NULL) return sc__fail(SC_MISUSE, "sc_checkout_async: req is NULL");
  checkout_op *op;
  int rc = checkout_op_new(db, req, "sc_checkout_async", &op);
  if (rc != SC_OK) return rc;
  if (op->key != NULL) {
    op->key = sc__strdup(op->key);
    if (op->key == NULL) {
      checkout_op_free(&op->base);
      return sc__fail(SC_NOMEM, "sc_checkout_async: out of memory");
    }
  }
  *out = (sc__prepared){&op->base, &op->order, checkout_op_free};
  return SC_OK;
}

static void order_op_free(sc__op *op) {
  sc__free(op);
}

static int order_prepare(sc_db *db, sc_id order, sc__op_run_fn run, int kind,
                         sc__prepared *out) {
  SC__CHECK_DB(db);
  if (order <= 0) {
    return sc__fail(SC_NOT_FOUND, "order %lld not found", (long long)order);
  }
  order_op *op = sc__calloc(1, sizeof *op);
  if (op == NULL) return sc__fail(SC_NOMEM, "order: out of memory");
  *op = (order_op){.base = {.run = run, .pg = order_pg(kind), .kind = kind},
                   .order = order};
  *out = (sc__prepared){&op->base, NULL, order_op_free};
  return SC_OK;
}

int sc__order_pay_prepare(sc_db *db, sc_id order, sc__prepared *out) {
  return order_prepare(db, order, pay_run, SC__OP_ORDER_PAY, out);
}

int sc__order_cancel_prepare(sc_db *db, sc_id order, sc__prepared *out) {
  return order_prepare(db, order, cancel_run, SC__OP_ORDER_CANCEL, out);
}

int sc_order_get(sc_db *db, sc_id order, sc_order *out) {
  SC__CHECK_DB(db);
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_order_get: out is NULL");
  int64_t cols[5];
  int rc = sc__read_row(db, SQL_ORDER_GET, order, cols, 5, "order");
  if (rc != SC_OK) return rc;
  out->user = cols[0];
  out->status = (int)cols[1];
  out->total = cols[2];
  out->discount = cols[3];
  out->expires_at_ms = cols[4];
  return SC_OK;
}

/* ---- expiry ------------------------------------------------------------- */

/* The earliest deadline still ahead: a due order left PENDING is one the
 * round could not expire (damaged), and waking for it again at once would
 * spin. */
static const char SQL_NEXT_DEADLINE[] =
    "SELECT coalesce(min(expires_at_ms), 0) FROM sc_order"
    " WHERE status = 1 AND expires_at_ms > ?1";
static const char SQL_EXPIRE_SAVEPOINT[] = "SAVEPOINT sc_expire";
static const char SQL_EXPIRE_RELEASE[] = "RELEASE sc_expire";
static const char SQL_EXPIRE_UNDO[] = "ROLLBACK TO sc_expire";
static const char SQL_EXPIRE_ONE[] = "SAVEPOINT sc_expire_one";
static const char SQL_EXPIRE_ONE_RELEASE[] = "RELEASE sc_expire_one";
static const char SQL_EXPIRE_ONE_UNDO[] = "ROLLBACK TO sc_expire_one";

static void expire_pass_start(expire_pass *p, int64_t due_at) {
  *p = (expire_pass){.due_at = due_at, .from = {INT64_MIN, 0}};
}

/* After a batch that committed: the next one starts after its last row. */
static void expire_pass_next(expire_pass *p) {
  p->from = p->to;
}

/* Reads the batch first: the rows change as each order is expired. */
static int load_due(sc__conn *w, sc__op *op, expire_pass *p, order_row *rows) {
  sqlite3_stmt *st = sc__stmt(w, SQL_ORDERS_DUE);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "expire");
  sqlite3_bind_int64(st, 1, p->due_at);
  sqlite3_bind_int(st, 2, EXPIRE_BATCH);
  sqlite3_bind_int64(st, 3, p->from.ms);
  sqlite3_bind_int64(st, 4, p->from.id);
  int rc, n = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < EXPIRE_BATCH) {
    order_row_read(st, &rows[n++]);
  }
  sqlite3_reset(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    return sc__op_fail_sqlite(op, w, rc, "expire");
  }
  p->loaded = n;
  p->to = n > 0 ? (expire_mark){rows[n - 1].expires_at_ms, rows[n - 1].id}
                : p->from;
  return SC_OK;
}

/* A release that failed for the row's sake (a hand-edited hold, stock or
 * coupon: SC_CORRUPT, a refused constraint ...), not for the database's
 * (I/O, memory, a lock) and with the transaction still there. */
static bool release_damaged(sc__conn *w, int status) {
  return status != SC_NOMEM && status != SC_IOERR && status != SC_BUSY &&
         !sqlite3_get_autocommit(w->h);
}

static int expire_one(sc_db *db, sc__conn *w, sc__op *op, const order_row *o,
                      int64_t now) {
  return order_release(db, w, op, o, SC_ORDER_EXPIRED, SC_EVENT_ORDER_EXPIRED,
                       now);
}

/* The slow path, once a batch met a damaged order: each order in a
 * savepoint of its own (a page copy per page it touches), so a damaged one
 * is rolled back alone, left PENDING and counted. */
static int expire_each(sc_db *db, sc__conn *w, sc__op *op, expire_pass *p,
                       const order_row *rows, int64_t now) {
  for (int i = 0; i < p->loaded; i++) {
    int events_before = db->batch_events;
    int rc = sc__exec(w, SQL_EXPIRE_ONE);
    if (rc != SQLITE_OK) return sc__op_fail_sqlite(op, w, rc, "expire");
    rc = expire_one(db, w, op, &rows[i], now);
    if (rc != SC_OK && !release_damaged(w, rc)) return rc;
    if (rc != SC_OK) {
      db->batch_events = events_before;
      if ((rc = sc__exec(w, SQL_EXPIRE_ONE_UNDO)) != SQLITE_OK) {
        return sc__op_fail_sqlite(op, w, rc, "expire");
      }
      p->skipped++;
    } else {
      p->expired++;
    }
    if ((rc = sc__exec(w, SQL_EXPIRE_ONE_RELEASE)) != SQLITE_OK) {
      return sc__op_fail_sqlite(op, w, rc, "expire");
    }
  }
  op->errmsg[0] = '\0';
  return SC_OK;
}

/* Expires the next batch of p's due orders. A damaged order does not stop
 * the others: the batch is rolled back and run again one order at a time,
 * leaving the damaged ones PENDING (sc_verify names them) and counted in
 * the metrics. */
static int expire_batch(sc_db *db, sc__conn *w, sc__op *op, expire_pass *p,
                        order_row *rows) {
  p->expired = p->skipped = 0;
  int rc = load_due(w, op, p, rows);
  if (rc != SC_OK || p->loaded == 0) return rc;
  int64_t now = sc__now_ms(db);
  int events_before = db->batch_events;
  int src = sc__exec(w, SQL_EXPIRE_SAVEPOINT);
  if (src != SQLITE_OK) return sc__op_fail_sqlite(op, w, src, "expire");
  for (int i = 0; rc == SC_OK && i < p->loaded; i++) {
    rc = expire_one(db, w, op, &rows[i], now);
  }
  if (rc == SC_OK) {
    p->expired = p->loaded;
  } else if (release_damaged(w, rc)) {
    db->batch_events = events_before;
    src = sc__exec(w, SQL_EXPIRE_UNDO);
    if (src != SQLITE_OK) return sc__op_fail_sqlite(op, w, src, "expire");
    rc = expire_each(db, w, op, p, rows, now);
    if (rc == SC_OK) sc__metrics_expire_skipped(db, p->skipped);
  }
  if (rc != SC_OK) return rc;
  src = sc__exec(w, SQL_EXPIRE_RELEASE);
  return src == SQLITE_OK ? SC_OK : sc__op_fail_sqlite(op, w, src, "expire");
}

static int expire_run(sc_db *db, sc__conn *w, sc__op *base) {
  expire_op *op = (expire_op *)base;
  return expire_batch(db, w, base, &op->pass, op->rows);
}

/* ---- expiry rounds, for the worker -------------------------------------- */

static int expire_round_run(sc_db *db, sc__conn *w, sc__op *base) {
  sc__expire_round *r = (sc__expire_round *)base;
  r->expired = 0;
  r->more = false;
  r->next_deadline_ms = 0;
  expire_pass *p = r->pass_;
  int rc = expire_batch(db, w, base, p, r->rows_);
  if (rc != SC_OK) return rc;
  r->expired = p->expired;
  r->more = p->loaded == EXPIRE_BATCH;
  sqlite3_stmt *st = sc__stmt(w, SQL_NEXT_DEADLINE);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "expire");
  sqlite3_bind_int64(st, 1, p->due_at);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) r->next_deadline_ms = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return rc == SQLITE_ROW ? SC_OK : sc__op_fail_sqlite(base, w, rc, "expire");
}

int sc__expire_round_init(sc__expire_round *r) {
  memset(r, 0, sizeof *r);
  r->rows_ = sc__calloc(EXPIRE_BATCH, sizeof(order_row));
  r->pass_ = sc__calloc(1, sizeof(expire_pass));
  if (r->rows_ == NULL || r->pass_ == NULL) {
    sc__expire_round_free(r);
    return SC_NOMEM;
  }
  return SC_OK;
}

/* A round after a full one that committed goes on where that one stopped
 * (its orders due at that one's moment); any other starts a new pass. */
void sc__expire_round_prepare(sc__expire_round *r, int64_t now) {
  expire_pass *p = r->pass_;
  if (r->more && r->base.status == SC_OK) {
    expire_pass_next(p);
  } else {
    expire_pass_start(p, now);
  }
  r->base = (sc__op){.run = expire_round_run,
                     .pg = &sc__pg_expire_round,
                     .kind = SC__OP_ORDERS_EXPIRE};
  r->now = p->due_at;
}

void sc__expire_round_free(sc__expire_round *r) {
  sc__free(r->rows_);
  sc__free(r->pass_);
  r->rows_ = NULL;
  r->pass_ = NULL;
}

int sc_orders_expire_due(sc_db *db, int *expired_out) {
  SC__CHECK_DB(db);
  expire_op *op = sc__calloc(1, sizeof *op);
  if (op == NULL) return sc__fail(SC_NOMEM, "sc_orders_expire_due: no memory");
  expire_pass_start(&op->pass, sc__now_ms(db));
  int64_t total = 0;
  int rc;
  do {
    op->base = (sc__op){.run = expire_run,
                        .pg = &sc__pg_orders_expire,
                        .kind = SC__OP_ORDERS_EXPIRE};
    rc = sc__op_execute(db, &op->base);
    if (rc == SC_OK) {
      total += op->pass.expired;
      expire_pass_next(&op->pass);
    }
  } while (rc == SC_OK && op->pass.loaded == EXPIRE_BATCH);
  sc__free(op);
  if (rc == SC_OK && expired_out != NULL) {
    *expired_out = total > INT32_MAX ? INT32_MAX : (int)total;
  }
  return rc;
}
