/* Coupon policies and bounded issuance. The cap rests on one conditional
 * UPDATE ... WHERE issued_count < max_count inside the write transaction, so
 * it holds across threads and processes without any in-process state. */
#include <string.h>

#include "internal.h"

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
static const char SQL_ISSUE_CLAIM[] =
    "UPDATE sc_coupon_policy SET issued_count = issued_count + 1"
    " WHERE id = ?1 AND issued_count < max_count AND paused = 0";
static const char SQL_HELD_BY_USER[] =
    "SELECT count(*) FROM sc_coupon WHERE policy_id = ?1 AND user_id = ?2";
static const char SQL_COUPON_INSERT[] =
    "INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms)"
    " VALUES(?1, ?2, ?3)";

/* ---- creating a policy -------------------------------------------------- */

typedef struct policy_create_op {
  sc__op base;
  const sc_coupon_policy_spec *spec;
  int32_t per_user_limit;
  sc_id id;
} policy_create_op;

static int check_spec(const sc_coupon_policy_spec *s) {
  const char *fn = "sc_coupon_policy_create";
  if (s->name == NULL || s->name[0] == '\0') {
    return sc__fail(SC_INVALID, "%s: name is NULL or empty", fn);
  }
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
  policy_create_op op = {.base = {.run = policy_create_run,
                                  .kind = SC__OP_POLICY_CREATE},
                         .spec = spec,
                         .per_user_limit = spec->per_user_limit ? spec->per_user_limit : 1};
  rc = sc__op_execute(db, &op.base);
  if (rc == SC_OK) *out = op.id;
  return rc;
}

/* ---- the kill switch ---------------------------------------------------- */

typedef struct policy_pause_op {
  sc__op base;
  sc_id policy;
  int paused;
} policy_pause_op;

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
  policy_pause_op op = {
      .base = {.run = policy_pause_run, .kind = SC__OP_POLICY_PAUSE},
      .policy = policy,
      .paused = paused != 0};
  return sc__op_execute(db, &op.base);
}

int sc_coupon_policy_get(sc_db *db, sc_id policy, sc_coupon_policy *out) {
  SC__CHECK_DB(db);
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_coupon_policy_get: out is NULL");
  int64_t cols[4];
  int rc = sc__read_row(db, SQL_POLICY_GET, policy, cols, 4, "coupon policy");
  if (rc != SC_OK) return rc;
  out->max_count = cols[0];
  out->issued_count = cols[1];
  out->per_user_limit = (int32_t)cols[2];
  out->paused = (int)cols[3];
  return SC_OK;
}

/* ---- issuance ----------------------------------------------------------- */

typedef struct issue_op {
  sc__op base;
  sc_id policy, user, coupon;
} issue_op;

/* Why a policy cannot issue now, checked in the order a user would ask. The
 * conditional UPDATE that follows is what guarantees the cap; these checks
 * only name the reason. */
static int issue_refusal(sc_db *db, sc__conn *w, issue_op *op) {
  sqlite3_stmt *st = sc__stmt(w, SQL_POLICY_STATE);
  if (st == NULL) return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "issue");
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
  int64_t limit = sqlite3_column_int64(st, 2);
  int paused = sqlite3_column_int(st, 3);
  int64_t starts = sqlite3_column_int64(st, 4);
  int64_t ends = sqlite3_column_int64(st, 5);
  sqlite3_reset(st);
  int64_t now = sc__now_ms(db);
  long long id = (long long)op->policy;
  if (paused) {
    return sc__op_fail(&op->base, SC_PAUSED, "coupon policy %lld is paused", id);
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
  st = sc__stmt(w, SQL_HELD_BY_USER);
  if (st == NULL) return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "issue");
  sqlite3_bind_int64(st, 1, op->policy);
  sqlite3_bind_int64(st, 2, op->user);
  rc = sqlite3_step(st);
  int64_t held = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  if (rc != SQLITE_ROW) return sc__op_fail_sqlite(&op->base, w, rc, "issue");
  if (held >= limit) {
    return sc__op_fail(&op->base, SC_LIMIT_REACHED,
                       "user %lld already holds %lld of coupon policy %lld",
                       (long long)op->user, (long long)held, id);
  }
  return SC_OK;
}

static int issue_run(sc_db *db, sc__conn *w, sc__op *base) {
  issue_op *op = (issue_op *)base;
  int rc = issue_refusal(db, w, op);
  if (rc != SC_OK) return rc;
  sqlite3_stmt *st = sc__stmt(w, SQL_ISSUE_CLAIM);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "issue");
  sqlite3_bind_int64(st, 1, op->policy);
  rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "issue");
  if (sqlite3_changes(w->h) != 1) {
    return sc__op_fail(base, SC_SOLD_OUT, "coupon policy %lld is sold out",
                       (long long)op->policy);
  }
  int64_t now = sc__now_ms(db);
  st = sc__stmt(w, SQL_COUPON_INSERT);
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
  issue_op op = {.base = {.run = issue_run, .kind = SC__OP_COUPON_ISSUE},
                 .policy = policy,
                 .user = user};
  int rc = sc__op_execute(db, &op.base);
  if (rc == SC_OK && coupon_out != NULL) *coupon_out = op.coupon;
  return rc;
}
