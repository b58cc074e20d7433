/* Products, restocking and deposits on PostgreSQL: each a call of its
 * function (schema.c). A deposit's idempotency key and request bytes go
 * with it; the function records or compares them in the same transaction. */
#include <stdio.h>

#include "../ops.h"
#include "pg.h"

static int product_create_encode(sc_db *db, sc__op *base, int64_t now,
                                 sc__pg_params *p) {
  (void)db;
  (void)now;
  product_create_op *op = (product_create_op *)base;
  sc__pg_param_text(p, op->name);
  sc__pg_param_i64(p, op->price);
  sc__pg_param_i64(p, op->stock);
  return SC_OK;
}

static void product_create_decode(sc_db *db, sc__op *base, const PGresult *r) {
  (void)db;
  ((product_create_op *)base)->id = sc__pg_col(r, 2);
}

const sc__op_pg sc__pg_product_create = {
    .name = "sc_product_create",
    .sql = "SELECT * FROM sc_product_create($1, $2, $3)",
    .encode = product_create_encode,
    .decode = product_create_decode};

static int restock_encode(sc_db *db, sc__op *base, int64_t now,
                          sc__pg_params *p) {
  (void)db;
  (void)now;
  restock_op *op = (restock_op *)base;
  sc__pg_param_i64(p, op->product);
  sc__pg_param_i64(p, op->qty);
  return SC_OK;
}

const sc__op_pg sc__pg_product_restock = {
    .name = "sc_restock",
    .sql = "SELECT * FROM sc_restock($1, $2)",
    .encode = restock_encode};

static int deposit_encode(sc_db *db, sc__op *base, int64_t now,
                          sc__pg_params *p) {
  (void)db;
  deposit_op *op = (deposit_op *)base;
  sc__pg_param_i64(p, op->user);
  sc__pg_param_i64(p, op->amount);
  sc__pg_param_text(p, op->key);
  sc__pg_param_bytes(p, op->request, sizeof op->request);
  sc__pg_param_i64(p, now);
  return SC_OK;
}

const sc__op_pg sc__pg_deposit = {
    .name = "sc_deposit",
    .sql = "SELECT * FROM sc_deposit($1, $2, $3, $4, $5)",
    .encode = deposit_encode};

int sc__pg_product_get(sc_db *db, sc_id product, sc_product *out) {
  PGconn *c;
  int rc = sc__pg_read_acquire(db, &c);
  if (rc != SC_OK) return rc;
  char arg[24];
  snprintf(arg, sizeof arg, "%lld", (long long)product);
  const char *vals[] = {arg};
  PGresult *r = sc__pg_read_exec(db, &c,
                                 "SELECT name, price, total, reserved,"
                                 " version FROM sc_product WHERE id = $1",
                                 1, NULL, vals);
  bool broken = PQresultStatus(r) != PGRES_TUPLES_OK;
  if (broken) {
    rc = sc__fail(sc__pg_status(r), "reading product %lld: %s",
                  (long long)product, PQresultErrorMessage(r));
  } else if (PQntuples(r) == 0) {
    rc = sc__fail(SC_NOT_FOUND, "product %lld not found", (long long)product);
  } else {
    sc_product p;
    sc__name_copy(p.name, (const unsigned char *)PQgetvalue(r, 0, 0),
                  (size_t)PQgetlength(r, 0, 0));
    p.price = sc__pg_col(r, 1);
    p.stock.total = sc__pg_col(r, 2);
    p.stock.reserved = sc__pg_col(r, 3);
    p.stock.available = p.stock.total - p.stock.reserved;
    p.stock.version = sc__pg_col(r, 4);
    *out = p;
  }
  PQclear(r);
  sc__pg_read_release(db, c, broken);
  return rc;
}
