/* sc_repair: an operator's recovery steps (verify counts, correct data) for a
 * database written by something else or imported. Each fix is a query that
 * lists what is wrong (a key and a line for the report) and a statement that
 * corrects one key; they run in order, inside one savepoint of the writer,
 * so a repair is all or nothing and a dry run is the same repair rolled
 * back. Repairs write no outbox event: they are corrections, not business
 * state changes. pg/repair.c makes the same corrections on PostgreSQL. */
#include <stdio.h>
#include <string.h>

#include "ops.h"

typedef struct fix {
  const char *select; /* key, report line */
  const char *apply;  /* ?1 = key */
  const char *also;   /* NULL, or a second statement for the same key */
} fix;

/* A revoked coupon's events go with it: an event must name an aggregate
 * that exists, and an undelivered one must not announce a coupon that is
 * gone. */
static const char SQL_COUPON_EVENTS_DELETE[] =
    "DELETE FROM sc_outbox WHERE agg_kind = 1 AND agg_id = ?1";

/* Order matters: holds of missing orders go first, then coupons past their
 * caps, then every counter is recomputed from the rows that remain. */
static const fix FIXES[] = {
    {"SELECT DISTINCT l.order_id, printf('order %d: removed the lines of"
     " an order that no longer exists', l.order_id)"
     " FROM sc_order_line l WHERE NOT EXISTS (SELECT 1 FROM sc_order o"
     "  WHERE o.id = l.order_id)",
     "DELETE FROM sc_order_line WHERE order_id = ?1", NULL},
    /* Only a coupon held (not used) goes back: a used one was paid with,
     * and giving it back would grant its discount twice. */
    {"SELECT c.id, printf('coupon %d: released from order %d, which %s',"
     " c.id, c.order_id, CASE WHEN o.id IS NULL THEN 'no longer exists'"
     "  ELSE 'is closed' END)"
     " FROM sc_coupon c LEFT JOIN sc_order o ON o.id = c.order_id"
     " WHERE c.order_id IS NOT NULL AND c.status <> 3 AND (o.id IS NULL"
     "  OR (c.status = 2 AND o.status IN (3, 4)))",
     "UPDATE sc_coupon SET status = 1, order_id = NULL WHERE id = ?1", NULL},
    /* Past the cap: revoke the newest coupons nobody has used or holds. Each
     * policy's (and user's) coupons are counted once, in a grouped
     * sub-query: a count per coupon was quadratic (35 s for one policy of
     * 20,000 coupons on PostgreSQL), and only the groups past their limit
     * go on to the window. */
    {"SELECT id, printf('policy %d: revoked coupon %d of user %d, issued at"
     " %d past max_count %d', policy_id, id, user_id, issued_at_ms, max_count)"
     " FROM (SELECT c.id, c.policy_id, c.user_id, c.issued_at_ms,"
     "  p.max_count, row_number() OVER (PARTITION BY c.policy_id"
     "   ORDER BY c.issued_at_ms DESC, c.id DESC) AS k,"
     "  t.n - p.max_count AS excess"
     "  FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
     "  JOIN (SELECT policy_id, count(*) AS n FROM sc_coupon"
     "   GROUP BY policy_id) t ON t.policy_id = c.policy_id"
     "  WHERE c.status = 1 AND t.n > p.max_count)"
     " WHERE k <= excess",
     "DELETE FROM sc_coupon WHERE id = ?1", SQL_COUPON_EVENTS_DELETE},
    {"SELECT id, printf('policy %d: revoked coupon %d of user %d, past"
     " per_user_limit %d', policy_id, id, user_id, per_user_limit)"
     " FROM (SELECT c.id, c.policy_id, c.user_id, p.per_user_limit,"
     "  row_number() OVER (PARTITION BY c.policy_id, c.user_id"
     "   ORDER BY c.issued_at_ms DESC, c.id DESC) AS k,"
     "  t.n - p.per_user_limit AS excess"
     "  FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
     "  JOIN (SELECT policy_id, user_id, count(*) AS n FROM sc_coupon"
     "   GROUP BY policy_id, user_id) t ON t.policy_id = c.policy_id"
     "   AND t.user_id = c.user_id"
     "  WHERE c.status = 1 AND t.n > p.per_user_limit)"
     " WHERE k <= excess",
     "DELETE FROM sc_coupon WHERE id = ?1", SQL_COUPON_EVENTS_DELETE},
    {"SELECT id, printf('policy %d: issued_count %d -> %d', id,"
     " issued_count, n) FROM (SELECT p.id, p.issued_count, (SELECT count(*)"
     "  FROM sc_coupon c WHERE c.policy_id = p.id) AS n"
     "  FROM sc_coupon_policy p) WHERE issued_count <> n",
     "UPDATE sc_coupon_policy SET issued_count = (SELECT count(*)"
     " FROM sc_coupon c WHERE c.policy_id = ?1) WHERE id = ?1",
     NULL},
    {"SELECT id, printf('product %d: reserved %d -> %d', id, reserved, q)"
     " FROM (SELECT p.id, p.reserved, coalesce((SELECT sum(l.qty)"
     "  FROM sc_order_line l JOIN sc_order o ON o.id = l.order_id"
     "  WHERE l.product_id = p.id AND o.status = 1), 0) AS q"
     "  FROM sc_product p) WHERE reserved <> q",
     "UPDATE sc_product SET version = version + 1,"
     " reserved = coalesce((SELECT sum(l.qty) FROM sc_order_line l"
     "  JOIN sc_order o ON o.id = l.order_id"
     "  WHERE l.product_id = ?1 AND o.status = 1), 0) WHERE id = ?1",
     NULL},
    {"SELECT user_id, printf('user %d: balance %d -> %d, held %d -> %d',"
     " user_id, balance, b, held, h)"
     " FROM (SELECT a.user_id, a.balance, a.held,"
     "  coalesce((SELECT sum(amount) FROM sc_ledger l"
     "   WHERE l.user_id = a.user_id), 0) AS b,"
     "  coalesce((SELECT sum(total) FROM sc_order o"
     "   WHERE o.user_id = a.user_id AND o.status = 1), 0) AS h"
     "  FROM sc_account a) WHERE balance <> b OR held <> h",
     "UPDATE sc_account SET"
     " balance = coalesce((SELECT sum(amount) FROM sc_ledger l"
     "  WHERE l.user_id = ?1), 0),"
     " held = coalesce((SELECT sum(total) FROM sc_order o"
     "  WHERE o.user_id = ?1 AND o.status = 1), 0) WHERE user_id = ?1",
     NULL},
};

static const char SQL_DRY_BEGIN[] = "SAVEPOINT sc_repair_dry";
static const char SQL_DRY_UNDO[] = "ROLLBACK TO sc_repair_dry";
static const char SQL_DRY_END[] = "RELEASE sc_repair_dry";

typedef struct finding {
  int64_t key;
  char *line;
} finding;

/* Lists what one fix would change; the rows are read in full before any
 * is changed, since a change may move the query's own rows. */
static int collect(sc__conn *w, const fix *f, finding **out, int *n_out) {
  sqlite3_stmt *st = sc__stmt(w, f->select);
  if (st == NULL) return sqlite3_errcode(w->h);
  finding *list = NULL;
  int n = 0, cap = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      finding *grown = sc__realloc(list, (size_t)cap * sizeof *list);
      if (grown == NULL) {
        rc = SQLITE_NOMEM;
        break;
      }
      list = grown;
    }
    list[n].key = sqlite3_column_int64(st, 0);
    list[n].line = sc__strdup((const char *)sqlite3_column_text(st, 1));
    if (list[n++].line == NULL) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  sqlite3_reset(st);
  *out = list;
  *n_out = n;
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Applies one correction; a constraint that refuses it (a counter that
 * cannot be right while other data is wrong) is reported, not fatal. */
static int apply_one(sc__conn *w, repair_op *op, const fix *f,
                     const finding *x) {
  sqlite3_stmt *st = sc__stmt(w, f->apply);
  if (st == NULL) return sqlite3_errcode(w->h);
  sqlite3_bind_int64(st, 1, x->key);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc == SQLITE_DONE && f->also != NULL) {
    if ((st = sc__stmt(w, f->also)) == NULL) return sqlite3_errcode(w->h);
    sqlite3_bind_int64(st, 1, x->key);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
  }
  if (rc == SQLITE_DONE) {
    op->changes++;
    sc__strbuf_printf(&op->report, "%s\n", x->line);
    return SQLITE_OK;
  }
  if ((rc & 0xff) != SQLITE_CONSTRAINT) return rc;
  op->refused++;
  sc__strbuf_printf(&op->report, "cannot repair: %s (%s)\n", x->line,
                    sqlite3_errmsg(w->h));
  return SQLITE_OK;
}

static int run_fix(sc__conn *w, repair_op *op, const fix *f) {
  finding *list = NULL;
  int n = 0;
  int rc = collect(w, f, &list, &n);
  for (int i = 0; i < n && rc == SQLITE_OK; i++) {
    rc = apply_one(w, op, f, &list[i]);
  }
  for (int i = 0; i < n; i++)
    sc__free(list[i].line);
  sc__free(list);
  return rc;
}

static int repair_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  repair_op *op = (repair_op *)base;
  int rc = op->dry_run ? sc__exec(w, SQL_DRY_BEGIN) : SQLITE_OK;
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof FIXES / sizeof *FIXES; i++) {
    rc = run_fix(w, op, &FIXES[i]);
  }
  if (op->dry_run) {
    sc__exec(w, SQL_DRY_UNDO);
    sc__exec(w, SQL_DRY_END);
  }
  if (rc != SQLITE_OK) return sc__op_fail_sqlite(base, w, rc, "sc_repair");
  if (op->report.nomem)
    return sc__op_fail(base, SC_NOMEM, "sc_repair: no memory");
  return SC_OK;
}

int sc_repair(sc_db *db, int dry_run, int *changes_out, char **report_out) {
  SC__CHECK_DB(db);
  if (report_out != NULL) *report_out = NULL;
  repair_op op = {
      .base = {.run = repair_run, .pg = &sc__pg_repair, .kind = SC__OP_ADMIN},
      .dry_run = dry_run != 0};
  int rc = sc__op_execute(db, &op.base);
  if (rc == SC_OK && op.changes + op.refused == 0) {
    sc__strbuf_printf(&op.report, "nothing to repair\n");
  }
  if (rc == SC_OK && op.refused > 0) {
    rc = sc__fail(SC_CORRUPT, "sc_repair: %d finding(s) could not be repaired",
                  op.refused);
  }
  if (rc != SC_OK && rc != SC_CORRUPT) {
    sc__strbuf_free(&op.report);
    return rc;
  }
  char *text = sc__strbuf_take(&op.report);
  if (text == NULL) return sc__fail(SC_NOMEM, "sc_repair: no memory");
  if (changes_out != NULL) *changes_out = op.changes;
  if (report_out != NULL) {
    *report_out = text;
  } else {
    sc__free(text);
  }
  return rc;
}
