/* Coupon policies and issuance on PostgreSQL: each a call of its function
 * (schema.c), which holds the cap, the pause, the window and the per-user
 * limit with the policy's slots (schema version 3). */
#include <stdlib.h>

#include "../ops.h"
#include "pg.h"

static int policy_create_encode(sc_db *db, sc__op *base, int64_t now,
                                sc__pg_params *p) {
  (void)db;
  policy_create_op *op = (policy_create_op *)base;
  const sc_coupon_policy_spec *s = op->spec;
  sc__pg_param_text(p, s->name);
  sc__pg_param_i64(p, s->max_count);
  sc__pg_param_i64(p, op->per_user_limit);
  sc__pg_param_i64(p, s->discount_amount);
  sc__pg_param_i64(p, s->discount_percent);
  sc__pg_param_i64(p, s->max_discount);
  sc__pg_param_i64(p, s->starts_at_ms);
  sc__pg_param_i64(p, s->ends_at_ms);
  sc__pg_param_i64(p, now);
  return SC_OK;
}

static void policy_create_decode(sc_db *db, sc__op *base, const PGresult *r) {
  (void)db;
  ((policy_create_op *)base)->id = sc__pg_col(r, 2);
}

const sc__op_pg sc__pg_policy_create = {
    .name = "sc_policy_create",
    .sql =
        "SELECT * FROM sc_policy_create($1, $2, $3, $4, $5, $6, $7, $8,"
        " $9)",
    .encode = policy_create_encode,
    .decode = policy_create_decode};

static int policy_pause_encode(sc_db *db, sc__op *base, int64_t now,
                               sc__pg_params *p) {
  (void)db;
  policy_pause_op *op = (policy_pause_op *)base;
  sc__pg_param_i64(p, op->policy);
  sc__pg_param_i64(p, op->paused);
  sc__pg_param_i64(p, now);
  return SC_OK;
}

static int64_t policy_pause_key(const sc__op *base) {
  return ((const policy_pause_op *)base)->policy;
}

const sc__op_pg sc__pg_policy_pause = {
    .name = "sc_policy_pause",
    .sql = "SELECT * FROM sc_policy_pause($1, $2, $3)",
    .encode = policy_pause_encode,
    .lock_key = policy_pause_key};

static int issue_encode(sc_db *db, sc__op *base, int64_t now,
                        sc__pg_params *p) {
  (void)db;
  issue_op *op = (issue_op *)base;
  sc__pg_param_i64(p, op->policy);
  sc__pg_param_i64(p, op->user);
  sc__pg_param_i64(p, now);
  return SC_OK;
}

static void issue_decode(sc_db *db, sc__op *base, const PGresult *r) {
  (void)db;
  ((issue_op *)base)->coupon = sc__pg_col(r, 2);
}

static int64_t issue_key(const sc__op *base) {
  return ((const issue_op *)base)->policy;
}

static int64_t issue_user(size_t i, const void *ud) {
  return ((const issue_op *const *)ud)[i]->user;
}

/* Issues of one policy in a batch: one call, so the policy row is locked
 * and its count updated once per batch. */
static int issue_encode_many(sc_db *db, sc__op *const *ops, int n, int64_t now,
                             sc__pg_params *p) {
  (void)db;
  sc__pg_param_i64(p, ((const issue_op *)ops[0])->policy);
  int rc = sc__pg_param_i64_array(p, (size_t)n, issue_user, ops);
  sc__pg_param_i64(p, now);
  return rc;
}

static void issue_decode_row(sc__op *base, const PGresult *r, int row) {
  ((issue_op *)base)->coupon = strtoll(PQgetvalue(r, row, 2), NULL, 10);
}

const sc__op_pg sc__pg_coupon_issue = {
    .name = "sc_issue",
    .sql = "SELECT * FROM sc_issue_many($1, ARRAY[$2::bigint], $3)",
    .encode = issue_encode,
    .decode = issue_decode,
    .lock_key = issue_key,
    .many_name = "sc_issue_many",
    .many_sql = "SELECT * FROM sc_issue_many($1, $2, $3)",
    .encode_many = issue_encode_many,
    .decode_row = issue_decode_row};

int sc__pg_policy_read(sc_db *db, sc_id policy, int64_t cols[4]) {
  return sc__pg_read_row(db,
                         "SELECT p.max_count, (SELECT coalesce(sum(s.issued),"
                         " 0) FROM sc_coupon_slot s WHERE s.policy_id = p.id),"
                         " p.per_user_limit, p.paused FROM sc_coupon_policy p"
                         " WHERE p.id = ?1",
                         policy, cols, 4, "coupon policy");
}
