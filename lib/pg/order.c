/* Checkout, payment, cancellation and expiry on PostgreSQL: each a call of
 * its function (schema.c). A checkout's lines go as three arrays in the
 * operation's product order (sorted), which is the order its function
 * locks the products in. */
#include "../ops.h"
#include "../metrics.h"
#include "pg.h"

static int64_t line_product(size_t i, const void *ud) {
  return ((const line_item *)ud)[i].product;
}
static int64_t line_qty(size_t i, const void *ud) {
  return ((const line_item *)ud)[i].qty;
}
static int64_t line_expected(size_t i, const void *ud) {
  return ((const line_item *)ud)[i].expected;
}

static int checkout_encode(sc_db *db, sc__op *base, int64_t now,
                           sc__pg_params *p) {
  checkout_op *op = (checkout_op *)base;
  sc__pg_param_i64(p, op->user);
  int rc = sc__pg_param_i64_array(p, op->n, line_product, op->items);
  if (rc == SC_OK) rc = sc__pg_param_i64_array(p, op->n, line_qty, op->items);
  if (rc == SC_OK) {
    rc = sc__pg_param_i64_array(p, op->n, line_expected, op->items);
  }
  if (rc != SC_OK) return rc;
  sc__pg_param_i64(p, op->coupon);
  sc__pg_param_i64(p, op->ttl_ms);
  sc__pg_param_text(p, op->key);
  if (op->key != NULL) {
    sc__pg_param_bytes(p, op->request, op->request_len);
  } else {
    sc__pg_param_text(p, NULL);
  }
  sc__pg_param_i64(p, now);
  /* Told before the commit, as on SQLite: should it fail, the worker only
   * wakes early and finds nothing due. */
  int64_t deadline;
  if (sc__add_i64(now, op->ttl_ms, &deadline)) sc__note_deadline(db, deadline);
  return SC_OK;
}

static void checkout_decode(sc_db *db, sc__op *base, const PGresult *r) {
  (void)db;
  ((checkout_op *)base)->order = sc__pg_col(r, 2);
}

static int64_t checkout_key(const sc__op *base) {
  const checkout_op *op = (const checkout_op *)base;
  return op->n > 0 ? op->items[0].product : 0;
}

const sc__op_pg sc__pg_checkout = {
    .name = "sc_checkout",
    .sql = "SELECT * FROM sc_checkout($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    .encode = checkout_encode,
    .decode = checkout_decode,
    .lock_key = checkout_key};

static int order_encode(sc_db *db, sc__op *base, int64_t now,
                        sc__pg_params *p) {
  (void)db;
  sc__pg_param_i64(p, ((order_op *)base)->order);
  sc__pg_param_i64(p, now);
  return SC_OK;
}

const sc__op_pg sc__pg_order_pay = {.name = "sc_pay",
                                    .sql = "SELECT * FROM sc_pay($1, $2)",
                                    .encode = order_encode};

const sc__op_pg sc__pg_order_cancel = {.name = "sc_cancel",
                                       .sql = "SELECT * FROM sc_cancel($1, $2)",
                                       .encode = order_encode};

/* ---- expiry ----------------------------------------------------------------
 */

static const char SQL_EXPIRE[] = "SELECT * FROM sc_expire($1, $2, $3, $4, $5)";

static void expire_params(const expire_pass *pass, int64_t now,
                          sc__pg_params *p) {
  sc__pg_param_i64(p, pass->due_at);
  sc__pg_param_i64(p, EXPIRE_BATCH);
  sc__pg_param_i64(p, pass->from.ms);
  sc__pg_param_i64(p, pass->from.id);
  sc__pg_param_i64(p, now);
}

/* The row: st, msg, expired, ev, loaded, last_ms, last_id, skipped,
 * next_deadline. */
static void expire_pass_read(sc_db *db, expire_pass *pass, const PGresult *r) {
  pass->expired = (int)sc__pg_col(r, 2);
  pass->loaded = (int)sc__pg_col(r, 4);
  pass->to = (expire_mark){sc__pg_col(r, 5), sc__pg_col(r, 6)};
  pass->skipped = (int)sc__pg_col(r, 7);
  if (pass->skipped > 0) sc__metrics_expire_skipped(db, pass->skipped);
}

static int expire_encode(sc_db *db, sc__op *base, int64_t now,
                         sc__pg_params *p) {
  (void)db;
  expire_params(&((expire_op *)base)->pass, now, p);
  return SC_OK;
}

static void expire_decode(sc_db *db, sc__op *base, const PGresult *r) {
  expire_pass_read(db, &((expire_op *)base)->pass, r);
}

const sc__op_pg sc__pg_orders_expire = {.name = "sc_expire",
                                        .sql = SQL_EXPIRE,
                                        .encode = expire_encode,
                                        .decode = expire_decode};

static int round_encode(sc_db *db, sc__op *base, int64_t now,
                        sc__pg_params *p) {
  (void)db;
  expire_params(((sc__expire_round *)base)->pass_, now, p);
  return SC_OK;
}

static void round_decode(sc_db *db, sc__op *base, const PGresult *r) {
  sc__expire_round *round = (sc__expire_round *)base;
  expire_pass *pass = round->pass_;
  expire_pass_read(db, pass, r);
  round->expired = pass->expired;
  round->more = pass->loaded == EXPIRE_BATCH;
  round->next_deadline_ms = sc__pg_col(r, 8);
}

const sc__op_pg sc__pg_expire_round = {.name = "sc_expire_round",
                                       .sql = SQL_EXPIRE,
                                       .encode = round_encode,
                                       .decode = round_decode};
