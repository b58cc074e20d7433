/* sc_verify on PostgreSQL: the design's invariants as queries in
 * PostgreSQL's words, one text row per violation, all on one snapshot
 * (REPEATABLE READ, read only). Invariant 6 (the file's integrity) is the
 * server's business. */
#include <stdio.h>
#include <string.h>

#include "pg.h"

typedef struct check {
  const char *invariant;
  const char *sql;
} check;

static const check CHECKS[] = {
    /* issued_count is the sum of the policy's slots (schema.c, version
     * 3), whose quotas add up to max_count. */
    {"1 coupons: issued_count equals the coupons and is within max_count",
     "SELECT format('policy %s: issued_count %s, coupons %s, max_count %s"
     "%s', p.id, coalesce(s.issued, 0), coalesce(c.n, 0), p.max_count, CASE "
     "WHEN s.quota"
     " IS DISTINCT FROM p.max_count THEN format(', slot quotas %s',"
     " coalesce(s.quota, 0)) ELSE '' END) FROM sc_coupon_policy p"
     " LEFT JOIN (SELECT policy_id, sum(issued) AS issued, sum(quota) AS quota"
     "  FROM sc_coupon_slot GROUP BY policy_id) s ON s.policy_id = p.id"
     " LEFT JOIN (SELECT policy_id, count(*) AS n FROM sc_coupon"
     "  GROUP BY policy_id) c ON c.policy_id = p.id"
     " WHERE coalesce(s.issued, 0) <> coalesce(c.n, 0)"
     " OR coalesce(s.issued, 0) > p.max_count"
     " OR s.quota IS DISTINCT FROM p.max_count"},
    {"1 coupons: no user holds more than per_user_limit",
     "SELECT format('policy %s: user %s holds %s, limit %s', c.policy_id,"
     " c.user_id, count(*), p.per_user_limit)"
     " FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
     " GROUP BY c.policy_id, c.user_id, p.per_user_limit"
     " HAVING count(*) > p.per_user_limit"},
    {"2 stock: 0 <= reserved <= total",
     "SELECT format('product %s: total %s, reserved %s', id, total, reserved)"
     " FROM sc_product WHERE total < 0 OR reserved < 0 OR reserved > total"},
    {"2 stock: reserved equals the lines of PENDING orders",
     "SELECT format('product %s: reserved %s, pending lines %s', p.id,"
     " p.reserved, coalesce(s.q, 0)) FROM sc_product p LEFT JOIN"
     " (SELECT l.product_id AS pid, sum(l.qty) AS q FROM sc_order_line l"
     "  JOIN sc_order o ON o.id = l.order_id WHERE o.status = 1"
     "  GROUP BY l.product_id) s ON s.pid = p.id"
     " WHERE p.reserved <> coalesce(s.q, 0)"},
    {"3 accounts: 0 <= held <= balance",
     "SELECT format('user %s: balance %s, held %s', user_id, balance, held)"
     " FROM sc_account WHERE balance < 0 OR held < 0 OR held > balance"},
    {"3 accounts: held equals the totals of PENDING orders",
     "SELECT format('user %s: held %s, pending totals %s', a.user_id, a.held,"
     " coalesce(s.t, 0)) FROM sc_account a LEFT JOIN (SELECT user_id AS uid,"
     "  sum(total) AS t FROM sc_order WHERE status = 1 GROUP BY user_id) s"
     " ON s.uid = a.user_id WHERE a.held <> coalesce(s.t, 0)"},
    {"3 accounts: balance equals the sum of the ledger",
     "SELECT format('user %s: balance %s, ledger %s', a.user_id, a.balance,"
     " coalesce(s.t, 0)) FROM sc_account a LEFT JOIN (SELECT user_id AS uid,"
     "  sum(amount) AS t FROM sc_ledger GROUP BY user_id) s"
     " ON s.uid = a.user_id WHERE a.balance <> coalesce(s.t, 0)"},
    {"4 orders: one state each, closed exactly when not PENDING",
     "SELECT format('order %s: status %s', id, status) FROM sc_order"
     " WHERE status NOT BETWEEN 1 AND 4"
     " OR (status = 1) <> (closed_at_ms IS NULL)"},
    {"4 orders: a CONFIRMED order paid its total once, no other order paid",
     "SELECT format('order %s (status %s): %s payment(s) of %s, total %s',"
     " o.id, o.status, coalesce(s.n, 0), coalesce(s.t, 0), o.total)"
     " FROM sc_order o LEFT JOIN (SELECT order_id AS oid, count(*) AS n,"
     "  sum(amount) AS t FROM sc_ledger WHERE kind = 2 GROUP BY order_id) s"
     " ON s.oid = o.id WHERE CASE WHEN o.status = 2 THEN s.n IS DISTINCT"
     " FROM 1 OR s.t <> -o.total ELSE s.n IS NOT NULL END"},
    {"4 orders: a PENDING order can be released (its user holds its total,"
     " its products reserve its lines)",
     "SELECT format('order %s (due at %s): cannot be expired or cancelled,"
     " %s', o.id, o.expires_at_ms, CASE WHEN NOT EXISTS (SELECT 1"
     "  FROM sc_account a WHERE a.user_id = o.user_id AND a.held >= o.total)"
     "  THEN format('user %s holds less than its total %s', o.user_id,"
     "   o.total) ELSE 'a product reserves less than its line' END)"
     " FROM sc_order o WHERE o.status = 1"
     " AND (NOT EXISTS (SELECT 1 FROM sc_account a"
     "  WHERE a.user_id = o.user_id AND a.held >= o.total)"
     " OR EXISTS (SELECT 1 FROM sc_order_line l LEFT JOIN sc_product p"
     "  ON p.id = l.product_id WHERE l.order_id = o.id"
     "  AND (p.id IS NULL OR p.reserved < l.qty)))"},
    {"4 orders: total is the lines less the discount",
     "SELECT format('order %s: total %s, lines %s, discount %s', o.id,"
     " o.total, s.t, o.discount) FROM sc_order o LEFT JOIN"
     " (SELECT order_id AS oid, sum(qty * price) AS t FROM sc_order_line"
     "  GROUP BY order_id) s ON s.oid = o.id"
     " WHERE s.t IS NULL OR o.discount < 0 OR o.total <> s.t - o.discount"},
    {"4 orders: an order's coupon is held if PENDING, used if CONFIRMED,"
     " released otherwise",
     "SELECT format('order %s (status %s): coupon %s in status %s', o.id,"
     " o.status, o.coupon_id, c.status) FROM sc_order o"
     " LEFT JOIN sc_coupon c ON c.id = o.coupon_id"
     " WHERE o.coupon_id IS NOT NULL AND (c.id IS NULL"
     "  OR c.user_id <> o.user_id OR CASE o.status"
     "  WHEN 1 THEN c.status <> 2 OR c.order_id IS DISTINCT FROM o.id"
     "  WHEN 2 THEN c.status <> 3 OR c.order_id IS DISTINCT FROM o.id"
     "  ELSE c.order_id IS NOT DISTINCT FROM o.id END)"},
    {"4 coupons: a held or used coupon belongs to its PENDING or CONFIRMED"
     " order, an available one to none",
     "SELECT format('coupon %s: status %s, order %s', c.id, c.status,"
     " c.order_id) FROM sc_coupon c LEFT JOIN sc_order o ON o.id = c.order_id"
     " WHERE CASE c.status WHEN 1 THEN c.order_id IS NOT NULL"
     "  WHEN 2 THEN o.status IS DISTINCT FROM 1"
     "   OR o.coupon_id IS DISTINCT FROM c.id"
     "  WHEN 3 THEN o.status IS DISTINCT FROM 2"
     "   OR o.coupon_id IS DISTINCT FROM c.id"
     "  ELSE true END"},
    {"5 events: every order has one created event, then one closing event"
     " as its status says",
     "SELECT format('order %s (status %s): created %s, paid %s, cancelled %s,"
     " expired %s', id, status, c, p, x, e) FROM (SELECT o.id, o.status,"
     "  count(*) FILTER (WHERE ev.type = 2) c,"
     "  count(*) FILTER (WHERE ev.type = 3) p,"
     "  count(*) FILTER (WHERE ev.type = 4) x,"
     "  count(*) FILTER (WHERE ev.type = 5) e FROM sc_order o"
     "  LEFT JOIN sc_outbox ev ON ev.agg_kind = 2 AND ev.agg_id = o.id"
     "  LEFT JOIN sc_outbox_seq s ON s.agg_kind = 2 AND s.agg_id = o.id"
     "  WHERE s.seq IS NULL GROUP BY o.id, o.status) t"
     " WHERE c <> 1 OR p <> (status = 2)::int OR x <> (status = 3)::int"
     "  OR e <> (status = 4)::int"},
    {"5 events: sequence numbers run without a gap from 1 (or the last"
     " purged + 1) in every aggregate",
     "SELECT format('aggregate %s/%s: %s events numbered %s..%s',"
     " e.agg_kind, e.agg_id, n, lo, hi)"
     " FROM (SELECT agg_kind, agg_id, count(*) n, min(seq) lo, max(seq) hi"
     "  FROM sc_outbox GROUP BY agg_kind, agg_id) e LEFT JOIN sc_outbox_seq s"
     "  ON s.agg_kind = e.agg_kind AND s.agg_id = e.agg_id"
     " WHERE lo <> coalesce(s.seq, 0) + 1 OR hi - lo + 1 <> n"},
    {"5 events: every coupon has exactly one issued event (kept or purged)",
     "SELECT format('coupon %s: %s issued events', c.id, count(e.id))"
     " FROM sc_coupon c LEFT JOIN sc_outbox e ON e.agg_kind = 1"
     "  AND e.agg_id = c.id AND e.type = 1"
     " LEFT JOIN sc_outbox_seq s ON s.agg_kind = 1 AND s.agg_id = c.id"
     " GROUP BY c.id, s.seq HAVING count(e.id) + coalesce(s.seq, 0) <> 1"},
    {"5 events: every ledger deposit has exactly one deposit event",
     "SELECT format('account %s: %s deposits, %s deposit events', u,"
     " sum(d), sum(e)) FROM (SELECT user_id u, 1 d, 0 e FROM sc_ledger"
     "  WHERE kind = 1 UNION ALL SELECT agg_id, 0, 1 FROM sc_outbox"
     "  WHERE agg_kind = 3 AND type = 6 UNION ALL SELECT agg_id, 0, seq"
     "  FROM sc_outbox_seq WHERE agg_kind = 3) x"
     " GROUP BY u HAVING sum(d) <> sum(e)"},
};

int sc__pg_verify(sc_db *db, char **report_out) {
  PGconn *c;
  int rc = sc__pg_read_acquire(db, &c);
  if (rc != SC_OK) return rc;
  sc__strbuf b = {0};
  int findings = 0;
  bool broken = false;
  PGresult *r = sc__pg_read_exec(
      db, &c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    rc = sc__fail(sc__pg_status(r), "sc_verify: %s", PQresultErrorMessage(r));
    broken = true;
  }
  PQclear(r);
  for (size_t i = 0; !broken && i < sizeof CHECKS / sizeof *CHECKS; i++) {
    r = PQexec(c, CHECKS[i].sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      rc = sc__fail(sc__pg_status(r), "sc_verify: %s: %s", CHECKS[i].invariant,
                    PQresultErrorMessage(r));
      broken = true;
    }
    for (int row = 0; !broken && row < PQntuples(r); row++, findings++)
      sc__strbuf_printf(&b, "[%s] %s\n", CHECKS[i].invariant,
                        PQgetvalue(r, row, 0));
    PQclear(r);
  }
  if (!broken) PQclear(PQexec(c, "COMMIT"));
  sc__pg_read_release(db, c, broken);
  if (rc == SC_OK && findings == 0) sc__strbuf_printf(&b, "ok\n");
  char *text = sc__strbuf_take(&b);
  if ((rc == SC_OK || findings > 0) && text == NULL) {
    return sc__fail(SC_NOMEM, "sc_verify: no memory");
  }
  if (rc == SC_OK && findings > 0) {
    rc = sc__fail(SC_CORRUPT, "sc_verify: %d invariant violation(s)", findings);
  }
  if (report_out != NULL && (rc == SC_OK || rc == SC_CORRUPT)) {
    *report_out = text;
  } else {
    sc__free(text);
  }
  return rc;
}
