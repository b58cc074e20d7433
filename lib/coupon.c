/* Coupon policies and bounded issuance. The cap rests on one conditional
 * UPDATE ... WHERE issued_count < max_count inside the write transaction, so
 * it holds across threads and processes without any in-process state. */
#include <string.h>

#include "ops.h"

static const char SQL_POLICY_INSERT[] =
    "INSERT INTO sc_coupon_policy(name, max_count, per_user_limit,"
    " discount_amount, discount_percent, max_discount, starts_at_ms,"
    " ends_at_ms, created_at_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
static const char SQL_POLICY_STATE[] =
    "SELECT max_count, issued_count, per_user_limit, paused, starts_at_ms,"
    " ends_at_ms FROM sc_coupon_policy WHERE id = ?1";
static const char SQL_POLICY_GET[] =
    "SELECT max_count, issued_count, per_user_limit, paused"
    " FROM sc_coupon_policy WHERE id = ?1";
static const char SQL_POLICY_SET_PAUSED[] =
    "UPDATE sc_coupon_policy SET paused = ?2 WHERE id = ?1 AND paused <> ?2";
/* The guard: issuance is one conditional UPDATE, so the cap holds even
 * if the checks before it were wrong. It has no RETURNING: that makes
 * SQLite build an ephemeral table and a statement journal on every call,
 * ten times the cost of the UPDATE itself. */
static const char SQL_ISSUE_CLAIM[] =
    "UPDATE sc_coupon_policy SET issued_count = issued_count + 1"
    " WHERE id = ?1 AND issued_count < max_count";
static const char SQL_HELD_BY_USER[] =
    "SELECT count(*) FROM sc_coupon WHERE policy_id = ?1 AND user_id = ?2";
static const char SQL_COUPON_INSERT[] =
    "INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms)"
    " VALUES(?1, ?2, ?3)";

/* ---- creating a policy -------------------------------------------------- */

static int check_spec(const sc_coupon_policy_spec *s) {
  const char *fn = "sc_coupon_policy_create";
  int rc = sc__check_text(fn, "name", s->name, SC_NAME_MAX, false);
  if (rc != SC_OK) return rc;
  if (s->max_count <= 0) {
    return sc__fail(SC_INVALID, "%s: max_count %lld must be > 0", fn,
                    (long long)s->max_count);
  }
  if (s->per_user_limit < 0) {
    return sc__fail(SC_INVALID, "%s: per_user_limit %d is negative", fn,
                    (int)s->per_user_limit);
  }
  if (s->discount_amount < 0 || s->max_discount < 0 ||
      s->discount_percent < 0 || s->discount_percent > 100) {
    return sc__fail(SC_INVALID,
                    "%s: discounts must be >= 0 and percent at most 100", fn);
  }
  if (s->discount_amount > 0 && s->discount_percent > 0) {
    return sc__fail(SC_INVALID,
                    "%s: a fixed discount and a percentage are exclusive", fn);
  }
  if (s->starts_at_ms < 0 || s->ends_at_ms < 0 ||
      (s->ends_at_ms != 0 && s->ends_at_ms <= s->starts_at_ms)) {
    return sc__fail(SC_INVALID, "%s: the validity window is empty", fn);
  }
  return SC_OK;
}

static int policy_create_run(sc_db *db, sc__conn *w, sc__op *base) {
  policy_create_op *op = (policy_create_op *)base;
  const sc_coupon_policy_spec *s = op->spec;
  sqlite3_stmt *st = sc__stmt(w, SQL_POLICY_INSERT);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "policy");
  sqlite3_bind_text(st, 1, s->name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, s->max_count);
  sqlite3_bind_int(st, 3, op->per_user_limit);
  sqlite3_bind_int64(st, 4, s->discount_amount);
  sqlite3_bind_int(st, 5, s->discount_percent);
  sqlite3_bind_int64(st, 6, s->max_discount);
  sqlite3_bind_int64(st, 7, s->starts_at_ms);
  sqlite3_bind_int64(st, 8, s->ends_at_ms);
  sqlite3_bind_int64(st, 9, sc__now_ms(db));
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "policy");
  op->id = sqlite3_last_insert_rowid(w->h);
  return SC_OK;
}

int sc_coupon_policy_create(sc_db *db, const sc_coupon_policy_spec *spec,
                            sc_id *out) {
  SC__CHECK_DB(db);
  if (spec == NULL || out == NULL) {
    return sc__fail(SC_MISUSE, "sc_coupon_policy_create: spec or out is NULL");
  }
  int rc = check_spec(spec);
  if (rc != SC_OK) return rc;
  policy_create_op op = {
      .base = {.run = policy_create_run,
               .pg = &sc__pg_policy_create,
               .kind = SC__OP_POLICY_CREATE},
      .spec = spec,
      .per_user_limit = spec->per_user_limit ? spec->per_user_limit : 1};
  rc = sc__op_execute(db, &op.base);
  if (rc == SC_OK) *out = op.id;
  return rc;
}

/* ---- the kill switch ---------------------------------------------------- */

static int policy_pause_run(sc_db *db, sc__conn *w, sc__op *base) {
  policy_pause_op *op = (policy_pause_op *)base;
  sqlite3_stmt *st = sc__stmt(w, SQL_POLICY_SET_PAUSED);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "pause");
  sqlite3_bind_int64(st, 1, op->policy);
  sqlite3_bind_int(st, 2, op->paused);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "pause");
  if (sqlite3_changes(w->h) == 0) {
    /* Either already in that state (nothing changes, no event) or absent. */
    st = sc__stmt(w, SQL_POLICY_GET);
    if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "pause");
    sqlite3_bind_int64(st, 1, op->policy);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) return SC_OK;
    if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "pause");
    return sc__op_fail(base, SC_NOT_FOUND, "coupon policy %lld not found",
                       (long long)op->policy);
  }
  sc__event_fields ev = {
      .type = op->paused ? SC_EVENT_POLICY_PAUSED : SC_EVENT_POLICY_RESUMED,
      .policy = op->policy,
      .at_ms = sc__now_ms(db)};
  return sc__outbox_emit(db, w, base, &ev);
}

int sc_coupon_policy_pause(sc_db *db, sc_id policy, int paused) {
  SC__CHECK_DB(db);
  if (policy <= 0) {
    return sc__fail(SC_NOT_FOUND, "coupon policy %lld not found",
                    (long long)policy);
  }
  policy_pause_op op = {.base = {.run = policy_pause_run,
                                 .pg = &sc__pg_policy_pause,
                                 .kind = SC__OP_POLICY_PAUSE},
                        .policy = policy,
                        .paused = paused != 0};
  return sc__op_execute(db, &op.base);
}

int sc_coupon_policy_resume(sc_db *db, sc_id policy) {
  return sc_coupon_policy_pause(db, policy, 0);
}

int sc_coupon_policy_get(sc_db *db, sc_id policy, sc_coupon_policy *out) {
  SC__CHECK_DB(db);
  if (out == NULL)
    return sc__fail(SC_MISUSE, "sc_coupon_policy_get: out is NULL");
  int64_t cols[4];
  int rc = db->pg != NULL ? sc__pg_policy_read(db, policy, cols)
                          : sc__read_row(db, SQL_POLICY_GET, policy, cols, 4,
                                         "coupon policy");
  if (rc != SC_OK) return rc;
  out->max_count = cols[0];
  out->issued_count = cols[1];
  out->per_user_limit = (int32_t)cols[2];
  out->paused = (int)cols[3];
  return SC_OK;
}

/* ---- issuance ----------------------------------------------------------- */

/* Reads the policy and says whether it may issue now: the refusals in
 * the order a user would ask. Returns the per-user limit through limit. */
static int issue_check_policy(sc__conn *w, issue_op *op, int64_t now,
                              int64_t *limit) {
  sqlite3_stmt *st = sc__stmt(w, SQL_POLICY_STATE);
  if (st == NULL)
    return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "issue");
  sqlite3_bind_int64(st, 1, op->policy);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return sc__op_fail_sqlite(&op->base, w, rc, "issue");
    return sc__op_fail(&op->base, SC_NOT_FOUND, "coupon policy %lld not found",
                       (long long)op->policy);
  }
  int64_t max_count = sqlite3_column_int64(st, 0);
  int64_t issued = sqlite3_column_int64(st, 1);
  *limit = sqlite3_column_int64(st, 2);
  int paused = sqlite3_column_int(st, 3);
  int64_t starts = sqlite3_column_int64(st, 4);
  int64_t ends = sqlite3_column_int64(st, 5);
  sqlite3_reset(st);
  long long id = (long long)op->policy;
  if (paused) {
    return sc__op_fail(&op->base, SC_PAUSED, "coupon policy %lld is paused",
                       id);
  }
  if ((starts != 0 && now < starts) || (ends != 0 && now >= ends)) {
    return sc__op_fail(&op->base, SC_NOT_ACTIVE,
                       "coupon policy %lld is not active at %lld", id,
                       (long long)now);
  }
  if (issued >= max_count) {
    return sc__op_fail(&op->base, SC_SOLD_OUT,
                       "coupon policy %lld has issued all %lld coupons", id,
                       (long long)max_count);
  }
  return SC_OK;
}

static int check_user_limit(sc__conn *w, issue_op *op, int64_t limit) {
  sqlite3_stmt *st = sc__stmt(w, SQL_HELD_BY_USER);
  if (st == NULL)
    return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "issue");
  sqlite3_bind_int64(st, 1, op->policy);
  sqlite3_bind_int64(st, 2, op->user);
  int rc = sqlite3_step(st);
  int64_t held = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  if (rc != SQLITE_ROW) return sc__op_fail_sqlite(&op->base, w, rc, "issue");
  if (held >= limit) {
    return sc__op_fail(&op->base, SC_LIMIT_REACHED,
                       "user %lld already holds %lld of coupon policy %lld",
                       (long long)op->user, (long long)held,
                       (long long)op->policy);
  }
  return SC_OK;
}

/* The claim, once every check passed. The guard refusing it now would mean
 * the checks above misread the row: a bug, not a refusal. */
static int issue_claim(sc__conn *w, issue_op *op) {
  sqlite3_stmt *st = sc__stmt(w, SQL_ISSUE_CLAIM);
  if (st == NULL)
    return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "issue");
  sqlite3_bind_int64(st, 1, op->policy);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(&op->base, w, rc, "issue");
  if (sqlite3_changes(w->h) == 1) return SC_OK;
  return sc__op_fail(&op->base, SC_ERROR,
                     "coupon policy %lld refused issuance for no known reason",
                     (long long)op->policy);
}

/* Validate, then apply: every refusal comes before the first write. */
static int issue_run(sc_db *db, sc__conn *w, sc__op *base) {
  issue_op *op = (issue_op *)base;
  int64_t now = sc__now_ms(db), limit = 0;
  int rc = issue_check_policy(w, op, now, &limit);
  if (rc == SC_OK) rc = check_user_limit(w, op, limit);
  if (rc == SC_OK) rc = issue_claim(w, op);
  if (rc != SC_OK) return rc;
  sqlite3_stmt *st = sc__stmt(w, SQL_COUPON_INSERT);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "issue");
  sqlite3_bind_int64(st, 1, op->policy);
  sqlite3_bind_int64(st, 2, op->user);
  sqlite3_bind_int64(st, 3, now);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "issue");
  op->coupon = sqlite3_last_insert_rowid(w->h);
  sc__event_fields ev = {.type = SC_EVENT_COUPON_ISSUED,
                         .user = op->user,
                         .policy = op->policy,
                         .coupon = op->coupon,
                         .at_ms = now};
  return sc__outbox_emit(db, w, base, &ev);
}

int sc_coupon_issue(sc_db *db, sc_id policy, sc_id user, sc_id *coupon_out) {
  SC__CHECK_DB(db);
  if (user <= 0) {
    return sc__fail(SC_INVALID, "sc_coupon_issue: user %lld must be > 0",
                    (long long)user);
  }
  if (policy <= 0) {
    return sc__fail(SC_NOT_FOUND, "coupon policy %lld not found",
                    (long long)policy);
  }
  issue_op op = {.base = {.run = issue_run,
                          .pg = &sc__pg_coupon_issue,
                          .kind = SC__OP_COUPON_ISSUE},
                 .policy = policy,
                 .user = user};
  int rc = sc__op_execute(db, &op.base);
  if (rc == SC_OK && coupon_out != NULL) *coupon_out = op.coupon;
  return rc;
}

/* For sc_coupon_issue_async (async.c): the same operation, allocated. */
static void issue_op_free(sc__op *op) {
  sc__free(op);
}

int sc__coupon_issue_prepare(sc_db *db, sc_id policy, sc_id user,
                             sc__prepared *out) {
  SC__CHECK_DB(db);
  if (user <= 0) {
    return sc__fail(SC_INVALID, "sc_coupon_issue_async: user %lld must be > 0",
                    (long long)user);
  }
  if (policy <= 0) {
    return sc__fail(SC_NOT_FOUND, "coupon policy %lld not found",
                    (long long)policy);
  }
  issue_op *op = sc__calloc(1, sizeof *op);
  if (op == NULL) return sc__fail(SC_NOMEM, "sc_coupon_issue_async: no memory");
  *op = (issue_op){.base = {.run = issue_run,
                            .pg = &sc__pg_coupon_issue,
                            .kind = SC__OP_COUPON_ISSUE},
                   .policy = policy,
                   .user = user};
  *out = (sc__prepared){&op->base, &op->coupon, issue_op_free};
  return SC_OK;
}

/* ---- coupons on orders ---------------------------------------------------
 * A checkout holds a coupon (status 2, order_id set), a payment uses it
 * (status 3), a cancellation or expiry makes it available again (status 1,
 * no order). Each step is conditional on the previous status, so a coupon
 * can back only one PENDING or CONFIRMED order. */

enum { COUPON_AVAILABLE = 1, COUPON_HELD = 2, COUPON_USED = 3 };

static const char SQL_COUPON_FOR_ORDER[] =
    "SELECT c.user_id, c.status, p.discount_amount, p.discount_percent,"
    " p.max_discount, p.starts_at_ms, p.ends_at_ms"
    " FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
    " WHERE c.id = ?1";
/* ?1 is the order in each transition; ?2 the coupon a hold takes. */
static const char SQL_COUPON_HOLD[] =
    "UPDATE sc_coupon SET status = 2, order_id = ?1"
    " WHERE id = ?2 AND status = 1";
static const char SQL_COUPON_USE[] =
    "UPDATE sc_coupon SET status = 3 WHERE order_id = ?1 AND status = 2";
static const char SQL_COUPON_RELEASE[] =
    "UPDATE sc_coupon SET status = 1, order_id = NULL"
    " WHERE order_id = ?1 AND status = 2";

/* The discount of a policy on subtotal: a fixed amount, or a percentage
 * (rounded down, computed without overflow) capped by max_discount when that
 * is > 0; never more than the subtotal. */
static int64_t discount_on(int64_t subtotal, int64_t amount, int64_t percent,
                           int64_t cap) {
  int64_t d = amount;
  if (percent > 0) {
    d = subtotal / 100 * percent + subtotal % 100 * percent / 100;
    if (cap > 0 && d > cap) d = cap;
  }
  return d < subtotal ? d : subtotal;
}

/* Why user cannot use a coupon now, or SC_OK. */
static int coupon_refusal(sc__op *op, sc_id coupon, sc_id user,
                          sqlite3_stmt *row, int64_t now) {
  long long id = (long long)coupon;
  int64_t starts = sqlite3_column_int64(row, 5);
  int64_t ends = sqlite3_column_int64(row, 6);
  if (sqlite3_column_int64(row, 0) != user) {
    return sc__op_fail(op, SC_COUPON_UNAVAILABLE,
                       "coupon %lld belongs to another user", id);
  }
  int status = sqlite3_column_int(row, 1);
  if (status != COUPON_AVAILABLE) {
    return sc__op_fail(
        op, SC_COUPON_UNAVAILABLE, "coupon %lld is %s", id,
        status == COUPON_HELD ? "held by a pending order" : "used");
  }
  if ((starts != 0 && now < starts) || (ends != 0 && now >= ends)) {
    return sc__op_fail(op, SC_COUPON_UNAVAILABLE,
                       "coupon %lld: its policy is not active at %lld", id,
                       (long long)now);
  }
  return SC_OK;
}

int sc__coupon_discount(sc__conn *w, sc__op *op, sc_id coupon, sc_id user,
                        int64_t now, int64_t subtotal, int64_t *discount) {
  sqlite3_stmt *st = sc__stmt(w, SQL_COUPON_FOR_ORDER);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "coupon");
  sqlite3_bind_int64(st, 1, coupon);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "coupon");
    return sc__op_fail(op, SC_NOT_FOUND, "coupon %lld not found",
                       (long long)coupon);
  }
  rc = coupon_refusal(op, coupon, user, st, now);
  if (rc == SC_OK) {
    *discount =
        discount_on(subtotal, sqlite3_column_int64(st, 2),
                    sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4));
  }
  sqlite3_reset(st);
  return rc;
}

/* Runs one transition of the coupon of order and checks that it moved
 * exactly one coupon from the state `from`. */
static int coupon_step(sc__conn *w, sc__op *op, const char *sql, sc_id order,
                       sc_id coupon, const char *what, const char *from) {
  sqlite3_stmt *st = sc__stmt(w, sql);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, what);
  sqlite3_bind_int64(st, 1, order);
  if (coupon != 0) sqlite3_bind_int64(st, 2, coupon);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, what);
  if (sqlite3_changes(w->h) == 1) return SC_OK;
  /* The order's own coupon is missing or in another state: the books are
   * already wrong, so refuse rather than make them worse. */
  return sc__op_fail(op, SC_CORRUPT, "%s: the coupon of order %lld is not %s",
                     what, (long long)order, from);
}

int sc__coupon_hold(sc__conn *w, sc__op *op, sc_id coupon, sc_id order) {
  return coupon_step(w, op, SQL_COUPON_HOLD, order, coupon, "hold coupon",
                     "available");
}

int sc__coupon_use(sc__conn *w, sc__op *op, sc_id order) {
  return coupon_step(w, op, SQL_COUPON_USE, order, 0, "use coupon", "held");
}

int sc__coupon_release(sc__conn *w, sc__op *op, sc_id order) {
  return coupon_step(w, op, SQL_COUPON_RELEASE, order, 0, "release coupon",
                     "held");
}
