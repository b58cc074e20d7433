/* sc_verify: every invariant of the design, checked on one read snapshot.
 * Each check is a query returning one text row per violation, so a new
 * invariant is one more entry in the table below. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg/pg.h"

typedef struct check {
  const char *invariant;
  const char *sql; /* one text column per violation */
} check;

static const check CHECKS[] = {
    {"1 coupons: issued_count equals the coupons and is within max_count",
     "SELECT printf('policy %d: issued_count %d, coupons %d, max_count %d',"
     " p.id, p.issued_count, (SELECT count(*) FROM sc_coupon c"
     "  WHERE c.policy_id = p.id), p.max_count)"
     " FROM sc_coupon_policy p"
     " WHERE p.issued_count <> (SELECT count(*) FROM sc_coupon c"
     "  WHERE c.policy_id = p.id) OR p.issued_count > p.max_count"},
    {"1 coupons: no user holds more than per_user_limit",
     "SELECT printf('policy %d: user %d holds %d, limit %d', c.policy_id,"
     " c.user_id, count(*), p.per_user_limit)"
     " FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
     " GROUP BY c.policy_id, c.user_id HAVING count(*) > p.per_user_limit"},
    {"6 integrity_check",
     "SELECT integrity_check FROM pragma_integrity_check"
     " WHERE integrity_check <> 'ok'"},
    /* ---- orders: stock, accounts, order states ---- */
    {"2 stock: 0 <= reserved <= total",
     "SELECT printf('product %d: total %d, reserved %d', id, total, reserved)"
     " FROM sc_product WHERE total < 0 OR reserved < 0 OR reserved > total"},
    {"2 stock: reserved equals the lines of PENDING orders",
     "SELECT printf('product %d: reserved %d, pending lines %d', p.id,"
     " p.reserved, coalesce(s.q, 0))"
     " FROM sc_product p LEFT JOIN (SELECT l.product_id AS pid,"
     "  sum(l.qty) AS q FROM sc_order_line l"
     "  JOIN sc_order o ON o.id = l.order_id WHERE o.status = 1"
     "  GROUP BY l.product_id) s ON s.pid = p.id"
     " WHERE p.reserved <> coalesce(s.q, 0)"},
    {"3 accounts: 0 <= held <= balance",
     "SELECT printf('user %d: balance %d, held %d', user_id, balance, held)"
     " FROM sc_account WHERE balance < 0 OR held < 0 OR held > balance"},
    {"3 accounts: held equals the totals of PENDING orders",
     "SELECT printf('user %d: held %d, pending totals %d', a.user_id, a.held,"
     " coalesce(s.t, 0))"
     " FROM sc_account a LEFT JOIN (SELECT user_id AS uid, sum(total) AS t"
     "  FROM sc_order WHERE status = 1 GROUP BY user_id) s"
     " ON s.uid = a.user_id WHERE a.held <> coalesce(s.t, 0)"},
    {"3 accounts: every order's user has an account",
     "SELECT printf('order %d: user %d has no account', o.id, o.user_id)"
     " FROM sc_order o WHERE NOT EXISTS (SELECT 1 FROM sc_account a"
     "  WHERE a.user_id = o.user_id)"},
    {"3 accounts: balance equals the sum of the ledger",
     "SELECT printf('user %d: balance %d, ledger %d', a.user_id, a.balance,"
     " coalesce(s.t, 0))"
     " FROM sc_account a LEFT JOIN (SELECT user_id AS uid, sum(amount) AS t"
     "  FROM sc_ledger GROUP BY user_id) s ON s.uid = a.user_id"
     " WHERE a.balance <> coalesce(s.t, 0)"},
    {"3 ledger: deposits are positive, payments name an order",
     "SELECT printf('ledger %d: kind %d, amount %d, order %s', l.id, l.kind,"
     " l.amount, coalesce(l.order_id, 'none'))"
     " FROM sc_ledger l WHERE l.kind NOT IN (1, 2)"
     " OR (l.kind = 1 AND (l.amount <= 0 OR l.order_id IS NOT NULL))"
     " OR (l.kind = 2 AND (l.amount > 0 OR NOT EXISTS (SELECT 1"
     "  FROM sc_order o WHERE o.id = l.order_id)))"},
    {"4 orders: one state each, closed exactly when not PENDING",
     "SELECT printf('order %d: status %d, closed at %s', id, status,"
     " coalesce(closed_at_ms, 'never'))"
     " FROM sc_order WHERE status NOT BETWEEN 1 AND 4"
     " OR (status = 1) <> (closed_at_ms IS NULL)"},
    /* What expiry skips: an order whose release would fail. */
    {"4 orders: a PENDING order can be released (its user holds its total,"
     " its products reserve its lines)",
     "SELECT printf('order %d (due at %d): cannot be expired or cancelled,"
     " %s', o.id, o.expires_at_ms, CASE WHEN NOT EXISTS (SELECT 1"
     "  FROM sc_account a WHERE a.user_id = o.user_id AND a.held >= o.total)"
     "  THEN printf('user %d holds less than its total %d', o.user_id,"
     "   o.total) ELSE 'a product reserves less than its line' END)"
     " FROM sc_order o WHERE o.status = 1 AND (NOT EXISTS (SELECT 1"
     "  FROM sc_account a WHERE a.user_id = o.user_id AND a.held >= o.total)"
     " OR EXISTS (SELECT 1 FROM sc_order_line l LEFT JOIN sc_product p"
     "  ON p.id = l.product_id WHERE l.order_id = o.id"
     "  AND (p.id IS NULL OR p.reserved < l.qty)))"},
    {"4 orders: total is the lines less the discount",
     "SELECT printf('order %d: total %d, lines %s, discount %d', o.id,"
     " o.total, coalesce(s.t, 'none'), o.discount)"
     " FROM sc_order o LEFT JOIN (SELECT order_id AS oid,"
     "  sum(qty * price) AS t FROM sc_order_line GROUP BY order_id) s"
     " ON s.oid = o.id"
     " WHERE s.t IS NULL OR o.discount < 0 OR o.total <> s.t - o.discount"},
    {"4 orders: a CONFIRMED order paid its total once, no other order paid",
     "SELECT printf('order %d (status %d): %d payment(s) of %d, total %d',"
     " o.id, o.status, coalesce(s.n, 0), coalesce(s.t, 0), o.total)"
     " FROM sc_order o LEFT JOIN (SELECT order_id AS oid, count(*) AS n,"
     "  sum(amount) AS t, min(user_id) AS u1, max(user_id) AS u2"
     "  FROM sc_ledger WHERE kind = 2 GROUP BY order_id) s ON s.oid = o.id"
     " WHERE CASE WHEN o.status = 2 THEN s.n IS NOT 1 OR s.t <> -o.total"
     "  OR s.u1 <> o.user_id OR s.u2 <> o.user_id"
     "  ELSE s.n IS NOT NULL END"},
    {"4 orders: an order's coupon is held if PENDING, used if CONFIRMED,"
     " released otherwise",
     "SELECT printf('order %d (status %d): coupon %d in status %s for order"
     " %s', o.id, o.status, o.coupon_id, coalesce(c.status, 'missing'),"
     " coalesce(c.order_id, 'none'))"
     " FROM sc_order o LEFT JOIN sc_coupon c ON c.id = o.coupon_id"
     " WHERE o.coupon_id IS NOT NULL AND (c.id IS NULL"
     "  OR c.user_id <> o.user_id OR CASE o.status"
     "  WHEN 1 THEN c.status <> 2 OR c.order_id IS NOT o.id"
     "  WHEN 2 THEN c.status <> 3 OR c.order_id IS NOT o.id"
     "  ELSE c.order_id IS o.id END)"},
    {"4 coupons: a held or used coupon belongs to its PENDING or CONFIRMED"
     " order, an available one to none",
     "SELECT printf('coupon %d: status %d, order %s', c.id, c.status,"
     " coalesce(c.order_id, 'none'))"
     " FROM sc_coupon c LEFT JOIN sc_order o ON o.id = c.order_id"
     " WHERE CASE c.status WHEN 1 THEN c.order_id IS NOT NULL"
     "  WHEN 2 THEN o.status IS NOT 1 OR o.coupon_id IS NOT c.id"
     "  WHEN 3 THEN o.status IS NOT 2 OR o.coupon_id IS NOT c.id"
     "  ELSE 1 END"},
    /* Purged events (delivered, then removed by retention) are a prefix of
     * their aggregate's sequence; sc_outbox_seq keeps its last number. */
    {"5 events: sequence numbers run without a gap from 1 (or the last"
     " purged + 1) in every aggregate",
     "SELECT printf('aggregate %d/%d: %d events numbered %d..%d, %d purged',"
     " e.agg_kind, e.agg_id, n, lo, hi, coalesce(s.seq, 0))"
     " FROM (SELECT agg_kind, agg_id, count(*) n, min(seq) lo, max(seq) hi"
     "  FROM sc_outbox GROUP BY agg_kind, agg_id) e"
     " LEFT JOIN sc_outbox_seq s"
     "  ON s.agg_kind = e.agg_kind AND s.agg_id = e.agg_id"
     " WHERE lo <> coalesce(s.seq, 0) + 1 OR hi - lo + 1 <> n"},
    {"5 events: each event is of its aggregate's kind, and the aggregate"
     " exists",
     "SELECT printf('event %d: type %d on aggregate %d/%d', id, type,"
     " agg_kind, agg_id) FROM sc_outbox"
     " WHERE agg_kind IS NOT CASE WHEN type = 1 THEN 1"
     "  WHEN type BETWEEN 2 AND 5 THEN 2 WHEN type = 6 THEN 3"
     "  WHEN type IN (7, 8) THEN 4 END"
     " OR (agg_kind = 1 AND NOT EXISTS"
     "  (SELECT 1 FROM sc_coupon c WHERE c.id = agg_id))"
     " OR (agg_kind = 2 AND NOT EXISTS"
     "  (SELECT 1 FROM sc_order o WHERE o.id = agg_id))"
     " OR (agg_kind = 3 AND NOT EXISTS"
     "  (SELECT 1 FROM sc_account a WHERE a.user_id = agg_id))"
     " OR (agg_kind = 4 AND NOT EXISTS"
     "  (SELECT 1 FROM sc_coupon_policy p WHERE p.id = agg_id))"},
    {"5 events: every coupon has exactly one issued event (kept or purged)",
     "SELECT printf('coupon %d: %d issued events, %d purged', id, n, gone)"
     " FROM (SELECT c.id, count(e.id) n, coalesce((SELECT seq"
     "  FROM sc_outbox_seq s WHERE s.agg_kind = 1 AND s.agg_id = c.id), 0)"
     "  gone FROM sc_coupon c LEFT JOIN sc_outbox e"
     "  ON e.agg_kind = 1 AND e.agg_id = c.id AND e.type = 1 GROUP BY c.id)"
     " WHERE n + gone <> 1"},
    {"5 events: every order has one created event first, then one paid,"
     " cancelled or expired event exactly as its status says",
     /* gone: events purged, the first (created) and the second (the
      * closing one, whose type is no longer known) */
     "SELECT printf('order %d (status %d): created %d (first: %s), paid %d,"
     " cancelled %d, expired %d, %d purged', id, status, c,"
     " coalesce(f, 'none'), p, x, e, gone)"
     " FROM (SELECT o.id, o.status, coalesce((SELECT seq FROM sc_outbox_seq s"
     "   WHERE s.agg_kind = 2 AND s.agg_id = o.id), 0) gone,"
     "  coalesce(sum(ev.type = 2), 0) c, coalesce(sum(ev.type = 3), 0) p,"
     "  coalesce(sum(ev.type = 4), 0) x, coalesce(sum(ev.type = 5), 0) e,"
     "  max(CASE WHEN ev.seq = 1 THEN ev.type END) f"
     "  FROM sc_order o LEFT JOIN sc_outbox ev"
     "   ON ev.agg_kind = 2 AND ev.agg_id = o.id GROUP BY o.id)"
     " WHERE c + (gone >= 1) <> 1 OR (gone = 0 AND f IS NOT 2)"
     "  OR p + x + e + (gone >= 2) <> (status <> 1)"
     "  OR (gone < 2 AND (p <> (status = 2) OR x <> (status = 3)"
     "   OR e <> (status = 4)))"},
    {"5 events: every ledger deposit has exactly one deposit event",
     "SELECT printf('account %d: %d deposits, %d deposit events', u,"
     " sum(d), sum(e)) FROM (SELECT user_id u, 1 d, 0 e FROM sc_ledger"
     "  WHERE kind = 1 UNION ALL SELECT agg_id, 0, 1 FROM sc_outbox"
     "  WHERE agg_kind = 3 AND type = 6"
     /* an account's events are all deposits: seq of them were purged */
     "  UNION ALL SELECT agg_id, 0, seq FROM sc_outbox_seq"
     "  WHERE agg_kind = 3)"
     " GROUP BY u HAVING sum(d) <> sum(e)"},
    {"5 events: a policy's pause and resume events alternate from a pause"
     " and end as the policy is",
     "SELECT printf('policy %d: events %d and %d are both of type %d',"
     " a.agg_id, a.seq, b.seq, a.type) FROM sc_outbox a JOIN sc_outbox b"
     "  ON b.agg_kind = 4 AND b.agg_id = a.agg_id AND b.seq = a.seq + 1"
     " WHERE a.agg_kind = 4 AND a.type = b.type"
     /* Alternating from a pause: odd numbers pause, even ones resume. */
     " UNION ALL SELECT printf('policy %d: event %d is of type %d',"
     " agg_id, seq, type) FROM sc_outbox"
     " WHERE agg_kind = 4 AND type <> CASE seq % 2 WHEN 1 THEN 7 ELSE 8 END"
     " UNION ALL SELECT printf('policy %d: paused is %d, its last event is"
     " of type %s', p.id, p.paused, coalesce(e.type, 'none'))"
     " FROM sc_coupon_policy p LEFT JOIN sc_outbox e"
     "  ON e.agg_kind = 4 AND e.agg_id = p.id AND e.seq = (SELECT max(seq)"
     "   FROM sc_outbox WHERE agg_kind = 4 AND agg_id = p.id)"
     " LEFT JOIN sc_outbox_seq s ON s.agg_kind = 4 AND s.agg_id = p.id"
     " WHERE (p.paused <> 0) <> (coalesce(e.type,"
     "  CASE s.seq % 2 WHEN 1 THEN 7 END, 8) = 7)"},
};

typedef struct report {
  char *text;
  size_t len, cap;
  int findings;
  bool nomem;
} report;

static void report_add(report *r, const char *invariant, const char *finding) {
  r->findings++;
  size_t need = strlen(invariant) + strlen(finding) + 8;
  if (r->len + need >= r->cap) {
    size_t cap = (r->cap ? r->cap * 2 : 256) + need;
    char *text = sc__realloc(r->text, cap);
    if (text == NULL) {
      r->nomem = true;
      return;
    }
    r->text = text;
    r->cap = cap;
  }
  r->len += (size_t)snprintf(r->text + r->len, r->cap - r->len, "[%s] %s\n",
                             invariant, finding);
}

/* The SQLite code of a finding that says a check could not read (out of
 * memory, I/O): integrity_check reports those in rows of their own, as
 * "... error code=7", and they are no evidence of corruption. */
static int unreadable(const char *finding) {
  if (finding == NULL || strstr(finding, "out of memory") != NULL) {
    return SQLITE_NOMEM;
  }
  const char *at = strstr(finding, "error code=");
  int code = at != NULL ? atoi(at + strlen("error code=")) : SQLITE_OK;
  /* A page that reads as corrupt stays a finding. */
  return (code & 0xff) == SQLITE_NOMEM || (code & 0xff) == SQLITE_IOERR
             ? code
             : SQLITE_OK;
}

/* Runs every check; returns an SQLite code for a failure to read. */
static int run_checks(sc__conn *c, report *r) {
  int rc = sqlite3_exec(c->h, "BEGIN", NULL, NULL, NULL);
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof CHECKS / sizeof *CHECKS;
       i++) {
    sqlite3_stmt *st = sc__stmt(c, CHECKS[i].sql);
    if (st == NULL) return sqlite3_errcode(c->h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *finding = (const char *)sqlite3_column_text(st, 0);
      int err = unreadable(finding);
      if (err != SQLITE_OK) {
        rc = err;
        break;
      }
      report_add(r, CHECKS[i].invariant, finding);
    }
    sqlite3_reset(st);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_exec(c->h, "COMMIT", NULL, NULL, NULL);
  return rc;
}

int sc_verify(sc_db *db, char **report_out) {
  SC__CHECK_DB(db);
  if (report_out != NULL) *report_out = NULL;
  if (db->pg != NULL) return sc__pg_verify(db, report_out);
  sc__conn *c;
  int rc = sc__read_acquire(db, &c);
  if (rc != SC_OK) return rc;
  report r = {0};
  int src = run_checks(c, &r);
  if (src != SQLITE_OK) {
    /* errstr, not errmsg: the COMMIT after the checks reset the message. */
    rc = sc__fail(sc__status_from_sqlite(src), "sc_verify: %s",
                  sqlite3_errstr(src));
  }
  sc__read_release(db, c);
  if (rc == SC_OK && r.nomem) rc = sc__fail(SC_NOMEM, "sc_verify: no memory");
  if (rc == SC_OK && r.findings > 0) {
    rc = sc__fail(SC_CORRUPT, "sc_verify: %d invariant violation(s)",
                  r.findings);
  }
  if (rc == SC_OK || rc == SC_CORRUPT) {
    if (report_out != NULL && r.findings == 0) {
      sc__free(r.text);
      r.text = sc__strdup("ok\n");
      if (r.text == NULL) return sc__fail(SC_NOMEM, "sc_verify: no memory");
    }
    if (report_out != NULL) {
      *report_out = r.text;
      r.text = NULL;
    }
  }
  sc__free(r.text);
  return rc;
}
