/* sc_repair on PostgreSQL: the corrections of repair.c, in the same order
 * and with the same report lines, as plain statements sent from C (no
 * server-side function: the schema's functions are for the hot path).
 *
 * The repair is one transaction of its own on the writer's connection, one
 * pipeline (one round trip): BEGIN, a lock on the tables it reads and
 * corrects (other hosts' writers wait for it, readers do not; so no
 * counter is recomputed from rows another host is changing), one
 * statement per fix, then COMMIT, or ROLLBACK for a dry run. Each fix is
 * one statement: a CTE lists what is wrong (key, report line, and the
 * check the correction would break, if any), data-modifying CTEs correct
 * what can be, and the statement returns the list. The statements run in
 * order and each sees the ones before it, as the SQLite fixes do.
 *
 * A correction a CHECK constraint would refuse (a counter that cannot be
 * right while other data is wrong) is left out and reported as "cannot
 * repair", as on SQLite: the table's checks are tested in the statement,
 * since a failed statement would abort the whole transaction. */
#include <string.h>

#include "../ops.h"
#include "pg.h"

/* The lock is taken table by table, in an order no batch follows (an
 * issue locks a slot of its policy, inserts a coupon, then updates the
 * slot), so waiting for it could close a cycle with another host's batch,
 * which PostgreSQL would break after deadlock_timeout by failing one of
 * the two.
 * The wait is kept short instead: past LOCK_WAIT the repair rolls back,
 * giving back what it took, and tries again (repair_alone) until the busy
 * timeout; a batch it held up waited at most that long. The same bound
 * holds for the row locks its corrections wait for (a batch that locked a
 * row before the tables were taken, and now waits for them). */
#define LOCK_WAIT "100ms"
static const char SQL_LOCK_WAIT[] = "SET LOCAL lock_timeout = '" LOCK_WAIT "'";
static const char SQL_LOCK[] =
    "LOCK TABLE sc_coupon_policy, sc_coupon_slot, sc_coupon, sc_product,"
    " sc_account,"
    " sc_ledger, sc_order, sc_order_line, sc_outbox"
    " IN SHARE ROW EXCLUSIVE MODE";

/* The end of both revocations: the coupons listed in f go, with their
 * events (an event must name an aggregate that exists). */
#define REVOKE                                                \
  " d AS (DELETE FROM sc_coupon c USING f WHERE c.id = f.k)," \
  " e AS (DELETE FROM sc_outbox o USING f"                    \
  "  WHERE o.agg_kind = 1 AND o.agg_id = f.k)"                \
  " SELECT k, line, NULL FROM f ORDER BY k"

/* Each returns (key, line, refusal): refusal is NULL when the correction
 * was made, else the check that keeps it from being made. */
static const char *const FIXES[] = {
    "WITH f AS (SELECT DISTINCT l.order_id AS k FROM sc_order_line l"
    "  WHERE NOT EXISTS (SELECT 1 FROM sc_order o WHERE o.id = l.order_id)),"
    " d AS (DELETE FROM sc_order_line l USING f WHERE l.order_id = f.k)"
    " SELECT k, format('order %s: removed the lines of an order that no"
    " longer exists', k), NULL FROM f ORDER BY k",
    /* Only a coupon held (not used) goes back: a used one was paid with,
     * and giving it back would grant its discount twice. */
    "WITH f AS (SELECT c.id AS k, format('coupon %s: released from order %s,"
    " which %s', c.id, c.order_id, CASE WHEN o.id IS NULL"
    "  THEN 'no longer exists' ELSE 'is closed' END) AS line"
    "  FROM sc_coupon c LEFT JOIN sc_order o ON o.id = c.order_id"
    "  WHERE c.order_id IS NOT NULL AND c.status <> 3 AND (o.id IS NULL"
    "   OR (c.status = 2 AND o.status IN (3, 4)))),"
    " u AS (UPDATE sc_coupon c SET status = 1, order_id = NULL FROM f"
    "  WHERE c.id = f.k)"
    " SELECT k, line, NULL FROM f ORDER BY k",
    /* Past the cap: revoke the newest coupons nobody has used or holds.
     * Each policy's (and user's) coupons are counted once, as in repair.c:
     * a count per coupon was quadratic. */
    "WITH f AS (SELECT id AS k, format('policy %s: revoked coupon %s of user"
    " %s, issued at %s past max_count %s', policy_id, id, user_id,"
    "  issued_at_ms, max_count) AS line"
    "  FROM (SELECT c.id, c.policy_id, c.user_id, c.issued_at_ms,"
    "   p.max_count, row_number() OVER (PARTITION BY c.policy_id"
    "    ORDER BY c.issued_at_ms DESC, c.id DESC) AS rn,"
    "   t.n - p.max_count AS excess"
    "   FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
    "   JOIN (SELECT policy_id, count(*) AS n FROM sc_coupon"
    "    GROUP BY policy_id) t ON t.policy_id = c.policy_id"
    "   WHERE c.status = 1 AND t.n > p.max_count) x"
    "  WHERE rn <= excess)," REVOKE,
    "WITH f AS (SELECT id AS k, format('policy %s: revoked coupon %s of user"
    " %s, past per_user_limit %s', policy_id, id, user_id, per_user_limit)"
    "  AS line"
    "  FROM (SELECT c.id, c.policy_id, c.user_id, p.per_user_limit,"
    "   row_number() OVER (PARTITION BY c.policy_id, c.user_id"
    "    ORDER BY c.issued_at_ms DESC, c.id DESC) AS rn,"
    "   t.n - p.per_user_limit AS excess"
    "   FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
    "   JOIN (SELECT policy_id, user_id, count(*) AS n FROM sc_coupon"
    "    GROUP BY policy_id, user_id) t ON t.policy_id = c.policy_id"
    "    AND t.user_id = c.user_id"
    "   WHERE c.status = 1 AND t.n > p.per_user_limit) x"
    "  WHERE rn <= excess)," REVOKE,
    /* issued_count is the sum of the policy's slots: they are laid out
     * again (sc_slots_fill) with the coupons counted into them; the cross
     * join with u's count makes u run. */
    "WITH f AS (SELECT * FROM (SELECT p.id AS k, p.max_count,"
    "   coalesce(s.issued, 0) AS issued, s.quota,"
    "   (SELECT count(*) FROM sc_coupon c WHERE c.policy_id = p.id) AS n"
    "   FROM sc_coupon_policy p LEFT JOIN (SELECT policy_id,"
    "    sum(issued) AS issued, sum(quota) AS quota FROM sc_coupon_slot"
    "    GROUP BY policy_id) s ON s.policy_id = p.id) x"
    "  WHERE issued <> n OR quota IS DISTINCT FROM max_count),"
    " u AS (SELECT sc_slots_fill(k, max_count, n) FROM f"
    "  WHERE n <= max_count),"
    " d AS (DELETE FROM sc_coupon_slot s USING f WHERE s.policy_id = f.k"
    "  AND f.n <= f.max_count AND s.slot >= least(8, f.max_count))"
    " SELECT k, CASE WHEN issued <> n"
    "  THEN format('policy %s: issued_count %s -> %s', k, issued, n)"
    "  ELSE format('policy %s: slot quotas %s -> %s', k, coalesce(quota, 0),"
    "   max_count) END,"
    "  CASE WHEN n > max_count THEN 'issued_count <= max_count' END"
    " FROM f, (SELECT count(*) FROM u) AS ran ORDER BY k",
    "WITH f AS (SELECT * FROM (SELECT p.id AS k, p.reserved, p.total,"
    "   coalesce((SELECT sum(l.qty) FROM sc_order_line l"
    "    JOIN sc_order o ON o.id = l.order_id"
    "    WHERE l.product_id = p.id AND o.status = 1), 0) AS q"
    "   FROM sc_product p) x WHERE reserved <> q),"
    " u AS (UPDATE sc_product p SET version = p.version + 1, reserved = f.q"
    "  FROM f WHERE p.id = f.k AND f.q <= f.total)"
    " SELECT k, format('product %s: reserved %s -> %s', k, reserved, q),"
    "  CASE WHEN q > total THEN 'reserved <= total' END FROM f ORDER BY k",
    "WITH f AS (SELECT * FROM (SELECT a.user_id AS k, a.balance, a.held,"
    "   coalesce((SELECT sum(amount) FROM sc_ledger l"
    "    WHERE l.user_id = a.user_id), 0) AS b,"
    "   coalesce((SELECT sum(total) FROM sc_order o"
    "    WHERE o.user_id = a.user_id AND o.status = 1), 0) AS h"
    "   FROM sc_account a) x WHERE balance <> b OR held <> h),"
    " u AS (UPDATE sc_account a SET balance = f.b, held = f.h FROM f"
    "  WHERE a.user_id = f.k AND f.b >= 0 AND f.h <= f.b)"
    " SELECT k, format('user %s: balance %s -> %s, held %s -> %s', k,"
    "  balance, b, held, h), CASE WHEN b < 0 THEN 'balance >= 0'"
    "  WHEN h > b THEN 'held <= balance' END FROM f ORDER BY k",
};

#define N_FIXES (sizeof FIXES / sizeof *FIXES)

static bool send_sql(PGconn *c, const char *sql) {
  return PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
}

static bool send_repair(PGconn *c, bool dry_run) {
  bool ok = send_sql(c, "BEGIN ISOLATION LEVEL READ COMMITTED") &&
            send_sql(c, SQL_LOCK_WAIT) && send_sql(c, SQL_LOCK);
  for (size_t i = 0; ok && i < N_FIXES; i++)
    ok = send_sql(c, FIXES[i]);
  return ok && send_sql(c, dry_run ? "ROLLBACK" : "COMMIT") &&
         PQpipelineSync(c) == 1 && PQflush(c) == 0;
}

/* Adds a fix's rows to the report. */
static void report_rows(repair_op *op, const PGresult *r) {
  for (int row = 0; row < PQntuples(r); row++) {
    const char *line = PQgetvalue(r, row, 1);
    if (PQgetisnull(r, row, 2)) {
      op->changes++;
      sc__strbuf_printf(&op->report, "%s\n", line);
    } else {
      op->refused++;
      sc__strbuf_printf(&op->report,
                        "cannot repair: %s (it would break the check %s)\n",
                        line, PQgetvalue(r, row, 2));
    }
  }
}

typedef struct outcome {
  int status; /* SC_OK, or the first failure's */
  char why[SC__ERRMSG_MAX];
  bool ended;     /* COMMIT (or the dry run's ROLLBACK) answered */
  bool lost;      /* the connection broke */
  bool contended; /* a lock wait ran out, or a deadlock: try again */
} outcome;

static void failed(outcome *o, const PGresult *r, const char *msg) {
  if (o->status != SC_OK) return;
  o->status = sc__pg_status(r);
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  o->contended =
      st != NULL && (strcmp(st, "55P03") == 0 || strcmp(st, "40P01") == 0);
  snprintf(o->why, sizeof o->why, "%s", msg);
  o->why[strcspn(o->why, "\n")] = '\0';
}

/* Reads BEGIN, the lock's wait and the lock, the fixes, the end and the
 * Sync. */
static void read_repair(PGconn *c, repair_op *op, outcome *o) {
  for (size_t i = 0; i < N_FIXES + 4; i++) {
    PGresult *r = sc__pg_next_result(c);
    if (r == NULL) {
      o->lost = true;
      failed(o, NULL, PQerrorMessage(c));
      return;
    }
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_FATAL_ERROR) {
      failed(o, r, PQresultErrorMessage(r));
    } else if (s == PGRES_TUPLES_OK && o->status == SC_OK) {
      report_rows(op, r);
    } else if (s == PGRES_COMMAND_OK && i == N_FIXES + 3) {
      o->ended = true;
    }
    PQclear(r);
  }
  PGresult *sync = PQgetResult(c);
  if (sync == NULL || PQresultStatus(sync) != PGRES_PIPELINE_SYNC) {
    o->lost = true;
    failed(o, NULL, PQerrorMessage(c));
  }
  PQclear(sync);
}

/* Ends a transaction a failure left open. */
static void roll_back(PGconn *c) {
  if (PQtransactionStatus(c) == PQTRANS_IDLE) return;
  if (send_sql(c, "ROLLBACK") && PQpipelineSync(c) == 1) {
    PQclear(sc__pg_next_result(c));
    PQclear(PQgetResult(c));
  }
}

static int repair_alone(sc_db *db, sc__op *base) {
  repair_op *op = (repair_op *)base;
  sc__pg *pg = db->pg;
  char why[SC__ERRMSG_MAX] = "";
  int64_t deadline =
      sc__monotonic_ns() + (int64_t)db->opts.busy_timeout_ms * 1000000;
  if ((pg->w == NULL || PQstatus(pg->w) != CONNECTION_OK) &&
      sc__pg_writer_connect(db, deadline, why, sizeof why) != SC_OK) {
    return sc__op_fail(base, SC_IOERR,
                       "sc_repair: PostgreSQL unreachable: %s (nothing was "
                       "changed)",
                       why);
  }
  outcome o;
  for (int tries = 0;; tries++) {
    o = (outcome){.status = SC_OK};
    op->changes = op->refused = 0;
    sc__strbuf_free(&op->report);
    op->report.nomem = false;
    if (!send_repair(pg->w, op->dry_run)) {
      o.lost = true;
      failed(&o, NULL, PQerrorMessage(pg->w));
    } else {
      read_repair(pg->w, op, &o);
    }
    if (o.lost || !o.contended || sc__monotonic_ns() >= deadline) break;
    /* Other hosts' batches held a table or a row: everything was given
     * back; let them pass, then take the tables again. */
    roll_back(pg->w);
    sc__sleep_ms(5 + tries % 8 * 5);
  }
  if (o.lost) {
    /* The writer connects again for the next batch. Whether a COMMIT sent
     * took effect is unknown: sc_verify, or another repair, tells. */
    PQfinish(pg->w);
    pg->w = NULL;
    int st = op->dry_run ? SC_IOERR : SC_AMBIGUOUS;
    return sc__op_fail(
        base, st, "sc_repair: connection lost: %s (%s); run sc_verify", o.why,
        op->dry_run ? "nothing was changed"
                    : "the repair may or may not be durable");
  }
  if (o.status == SC_OK && !o.ended) {
    o.status = SC_ERROR;
    snprintf(o.why, sizeof o.why, "no answer to the transaction's end");
  }
  if (o.status != SC_OK) {
    roll_back(pg->w);
    if (o.contended) {
      return sc__op_fail(base, o.status,
                         "sc_repair: other hosts' transactions held the "
                         "tables past the busy timeout (%s); nothing was "
                         "changed",
                         o.why);
    }
    return sc__op_fail(base, o.status, "sc_repair: %s (nothing was changed)",
                       o.why);
  }
  if (op->report.nomem) {
    return sc__op_fail(base, SC_NOMEM, "sc_repair: no memory");
  }
  return SC_OK;
}

const sc__op_pg sc__pg_repair = {.name = "sc_repair", .alone = repair_alone};
