/* Products and their stock. A reservation reads and checks the row (the
 * available units, and the caller's expected version), then runs one
 * conditional UPDATE that bumps the version in the same step (force
 * increment), all inside the write transaction: a stale reader can never
 * half-reserve, and every reservation, release and restock is visible as a
 * new version even to a caller that reads nothing else of the row. */
#include <string.h>

#include "ops.h"

static const char SQL_PRODUCT_INSERT[] =
    "INSERT INTO sc_product(name, price, total) VALUES(?1, ?2, ?3)";
/* The overflow guard keeps total an exact integer: SQLite would turn an
 * overflowing sum into a REAL. */
static const char SQL_RESTOCK[] =
    "UPDATE sc_product SET total = total + ?2, version = version + 1"
    " WHERE id = ?1 AND total <= 9223372036854775807 - ?2";
static const char SQL_STOCK_GET[] =
    "SELECT total, reserved, version FROM sc_product WHERE id = ?1";
/* Reserving comes after stock_check has read and checked the row in the
 * same transaction; the condition stays as the guard of the stock. No
 * RETURNING: that costs an ephemeral table and a statement journal. */
static const char SQL_RESERVE[] =
    "UPDATE sc_product SET reserved = reserved + ?2, version = version + 1"
    " WHERE id = ?1 AND total - reserved >= ?2";
static const char SQL_STOCK_CHECK[] =
    "SELECT total, reserved, version, price FROM sc_product WHERE id = ?1";
/* Releasing and consuming go by the order's lines, one statement per order.
 * The CHECK constraints on sc_product refuse a reserved count that would go
 * negative, so a bookkeeping bug fails loudly instead of drifting. */
static const char SQL_RELEASE_ORDER[] =
    "UPDATE sc_product SET reserved = reserved - l.qty, version = version + 1"
    " FROM sc_order_line l"
    " WHERE l.order_id = ?1 AND sc_product.id = l.product_id";
/* Paying does not change what is available (total - reserved), so it keeps
 * the version: an expected version read before the payment stays valid. */
static const char SQL_CONSUME_ORDER[] =
    "UPDATE sc_product SET total = total - l.qty, reserved = reserved - l.qty"
    " FROM sc_order_line l"
    " WHERE l.order_id = ?1 AND sc_product.id = l.product_id";

/* ---- creating a product ------------------------------------------------- */

static int product_create_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  product_create_op *op = (product_create_op *)base;
  sqlite3_stmt *st = sc__stmt(w, SQL_PRODUCT_INSERT);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "product");
  sqlite3_bind_text(st, 1, op->name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, op->price);
  sqlite3_bind_int64(st, 3, op->stock);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "product");
  op->id = sqlite3_last_insert_rowid(w->h);
  return SC_OK;
}

int sc_product_create(sc_db *db, const char *name, int64_t price, int64_t stock,
                      sc_id *out) {
  const char *fn = "sc_product_create";
  SC__CHECK_DB(db);
  if (out == NULL) return sc__fail(SC_MISUSE, "%s: out is NULL", fn);
  int rc = sc__check_text(fn, "name", name, SC_NAME_MAX, false);
  if (rc != SC_OK) return rc;
  if (price < 0 || stock < 0) {
    return sc__fail(SC_INVALID, "%s: price %lld and stock %lld must be >= 0",
                    fn, (long long)price, (long long)stock);
  }
  product_create_op op = {.base = {.run = product_create_run,
                                   .pg = &sc__pg_product_create,
                                   .kind = SC__OP_PRODUCT_CREATE},
                          .name = name,
                          .price = price,
                          .stock = stock};
  rc = sc__op_execute(db, &op.base);
  if (rc == SC_OK) *out = op.id;
  return rc;
}

/* ---- restocking --------------------------------------------------------- */

/* Reads a product's stock on the writer connection. */
static int stock_read(sc__conn *w, sc__op *op, sc_id product, sc_stock *s) {
  sqlite3_stmt *st = sc__stmt(w, SQL_STOCK_GET);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "stock");
  sqlite3_bind_int64(st, 1, product);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    s->total = sqlite3_column_int64(st, 0);
    s->reserved = sqlite3_column_int64(st, 1);
    s->version = sqlite3_column_int64(st, 2);
    s->available = s->total - s->reserved;
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) {
    return sc__op_fail(op, SC_NOT_FOUND, "product %lld not found",
                       (long long)product);
  }
  return rc == SQLITE_ROW ? SC_OK : sc__op_fail_sqlite(op, w, rc, "stock");
}

static int restock_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  restock_op *op = (restock_op *)base;
  sqlite3_stmt *st = sc__stmt(w, SQL_RESTOCK);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "restock");
  sqlite3_bind_int64(st, 1, op->product);
  sqlite3_bind_int64(st, 2, op->qty);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "restock");
  if (sqlite3_changes(w->h) == 1) return SC_OK;
  sc_stock s = {0};
  rc = stock_read(w, base, op->product, &s);
  if (rc != SC_OK) return rc;
  return sc__op_fail(base, SC_INVALID,
                     "sc_product_restock: product %lld: total %lld + %lld "
                     "overflows",
                     (long long)op->product, (long long)s.total,
                     (long long)op->qty);
}

int sc_product_restock(sc_db *db, sc_id product, int64_t qty) {
  SC__CHECK_DB(db);
  if (qty <= 0) {
    return sc__fail(SC_INVALID, "sc_product_restock: qty %lld must be > 0",
                    (long long)qty);
  }
  if (product <= 0) {
    return sc__fail(SC_NOT_FOUND, "product %lld not found", (long long)product);
  }
  restock_op op = {.base = {.run = restock_run,
                            .pg = &sc__pg_product_restock,
                            .kind = SC__OP_PRODUCT_RESTOCK},
                   .product = product,
                   .qty = qty};
  return sc__op_execute(db, &op.base);
}

int sc_stock_get(sc_db *db, sc_id product, sc_stock *out) {
  SC__CHECK_DB(db);
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_stock_get: out is NULL");
  int64_t cols[3];
  int rc = sc__read_row(db, SQL_STOCK_GET, product, cols, 3, "product");
  if (rc != SC_OK) return rc;
  out->total = cols[0];
  out->reserved = cols[1];
  out->available = cols[0] - cols[1];
  out->version = cols[2];
  return SC_OK;
}

static const char SQL_PRODUCT_GET[] =
    "SELECT name, price, total, reserved, version FROM sc_product"
    " WHERE id = ?1";

/* Copies a name of len bytes into out (SC_NAME_MAX + 1 bytes). The library
 * never stores a longer one; a row edited by hand may hold one, and is cut
 * before the UTF-8 character that would not fit whole. */
void sc__name_copy(char *out, const unsigned char *name, size_t len) {
  if (len > SC_NAME_MAX) {
    len = SC_NAME_MAX;
    while (len > 0 && (name[len] & 0xC0) == 0x80)
      len--;
  }
  if (len > 0) memcpy(out, name, len);
  out[len] = '\0';
}

/* One row, on one read snapshot: the name and the numbers agree. */
static int product_read(sc__conn *c, sc_id product, sc_product *p) {
  sqlite3_stmt *st = sc__stmt(c, SQL_PRODUCT_GET);
  int step = st ? SQLITE_OK : sqlite3_errcode(c->h);
  if (st != NULL) {
    sqlite3_bind_int64(st, 1, product);
    step = sqlite3_step(st);
  }
  int rc = SC_OK;
  if (step == SQLITE_ROW) {
    const unsigned char *name = sqlite3_column_text(st, 0);
    sc__name_copy(p->name, name ? name : (const unsigned char *)"",
                  (size_t)sqlite3_column_bytes(st, 0));
    p->price = sqlite3_column_int64(st, 1);
    p->stock.total = sqlite3_column_int64(st, 2);
    p->stock.reserved = sqlite3_column_int64(st, 3);
    p->stock.available = p->stock.total - p->stock.reserved;
    p->stock.version = sqlite3_column_int64(st, 4);
  } else if (step == SQLITE_DONE) {
    rc = sc__fail(SC_NOT_FOUND, "product %lld not found", (long long)product);
  } else if (step == SQLITE_NOMEM) {
    rc = sc__fail(SC_NOMEM, "sc_product_get: out of memory");
  } else {
    rc = sc__fail(sc__status_from_sqlite(step), "reading product %lld: %s",
                  (long long)product, sqlite3_errmsg(c->h));
  }
  if (st != NULL) sqlite3_reset(st);
  return rc;
}

int sc_product_get(sc_db *db, sc_id product, sc_product *out) {
  SC__CHECK_DB(db);
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_product_get: out is NULL");
  if (db->pg != NULL) return sc__pg_product_get(db, product, out);
  sc__conn *c;
  int rc = sc__read_acquire(db, &c);
  if (rc != SC_OK) return rc;
  sc_product p; /* out is left untouched on failure */
  rc = product_read(c, product, &p);
  sc__read_release(db, c);
  if (rc == SC_OK) *out = p;
  return rc;
}

/* ---- reservations, for orders ------------------------------------------- */

int sc__stock_check(sc__conn *w, sc__op *op, sc_id product, int64_t qty,
                    int64_t expected_version, int64_t *price_out) {
  sqlite3_stmt *st = sc__stmt(w, SQL_STOCK_CHECK);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "reserve");
  sqlite3_bind_int64(st, 1, product);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "reserve");
    return sc__op_fail(op, SC_NOT_FOUND, "product %lld not found",
                       (long long)product);
  }
  int64_t total = sqlite3_column_int64(st, 0);
  int64_t reserved = sqlite3_column_int64(st, 1);
  int64_t version = sqlite3_column_int64(st, 2);
  *price_out = sqlite3_column_int64(st, 3);
  sqlite3_reset(st);
  if (expected_version >= 0 && version != expected_version) {
    return sc__op_fail(
        op, SC_CONFLICT, "product %lld: version is %lld, expected %lld",
        (long long)product, (long long)version, (long long)expected_version);
  }
  if (total - reserved < qty) {
    return sc__op_fail(
        op, SC_OUT_OF_STOCK, "product %lld: %lld available, %lld asked",
        (long long)product, (long long)(total - reserved), (long long)qty);
  }
  return SC_OK;
}

int sc__stock_reserve(sc__conn *w, sc__op *op, sc_id product, int64_t qty) {
  sqlite3_stmt *st = sc__stmt(w, SQL_RESERVE);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "reserve");
  sqlite3_bind_int64(st, 1, product);
  sqlite3_bind_int64(st, 2, qty);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "reserve");
  if (sqlite3_changes(w->h) == 1) return SC_OK;
  return sc__op_fail(op, SC_ERROR,
                     "product %lld: the reservation was refused after its "
                     "check passed",
                     (long long)product);
}

/* Runs one of the by-order statements. */
static int by_order(sc__conn *w, sc__op *op, const char *sql, sc_id order,
                    const char *what) {
  sqlite3_stmt *st = sc__stmt(w, sql);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, what);
  sqlite3_bind_int64(st, 1, order);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SC_OK : sc__op_fail_sqlite(op, w, rc, what);
}

int sc__stock_release_order(sc__conn *w, sc__op *op, sc_id order) {
  return by_order(w, op, SQL_RELEASE_ORDER, order, "release stock");
}

int sc__stock_consume_order(sc__conn *w, sc__op *op, sc_id order) {
  return by_order(w, op, SQL_CONSUME_ORDER, order, "consume stock");
}
