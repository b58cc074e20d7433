/* The outbox on PostgreSQL: the worker's round (settle the last batch,
 * claim the next) is one call of sc_outbox_round, which returns the
 * claimed events as rows; ack, nack and requeue are calls of sc_settle;
 * purges of sc_purge (schema.c). */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "../ops.h"
#include "pg.h"

/* The options a settlement's backoff and dead-lettering follow. */
static void retry_params(const sc_db *db, sc__pg_params *p) {
  sc__pg_param_i64(p, db->opts.outbox_retry_base_ms);
  sc__pg_param_i64(p, db->opts.outbox_retry_max_ms);
  sc__pg_param_i64(p, db->opts.outbox_max_attempts);
}

static int64_t settle_id(size_t i, const void *ud) {
  return ((const sc__settle *)ud)[i].id;
}
static int64_t settle_verdict(size_t i, const void *ud) {
  return ((const sc__settle *)ud)[i].verdict;
}
static int64_t settle_claim(size_t i, const void *ud) {
  return ((const sc__settle *)ud)[i].claim;
}
static const char *settle_reason(size_t i, const void *ud, size_t *len) {
  const char *r = ((const sc__settle *)ud)[i].reason;
  *len = r != NULL ? sc__reason_len(r) : 0;
  return r;
}

static int round_encode(sc_db *db, sc__op *base, int64_t now,
                        sc__pg_params *p) {
  sc__outbox_round *r = (sc__outbox_round *)base;
  size_t n = r->n_settle > 0 ? (size_t)r->n_settle : 0;
  int rc = sc__pg_param_i64_array(p, n, settle_id, r->settle);
  if (rc == SC_OK) rc = sc__pg_param_i64_array(p, n, settle_verdict, r->settle);
  if (rc == SC_OK) rc = sc__pg_param_i64_array(p, n, settle_claim, r->settle);
  if (rc == SC_OK) rc = sc__pg_param_text_array(p, n, settle_reason, r->settle);
  if (rc != SC_OK) return rc;
  sc__pg_param_i64(p, r->claim_max > 0 ? r->claim_max : 0);
  sc__pg_param_i64(p, r->lease_ms);
  sc__pg_param_i64(p, now);
  retry_params(db, p);
  r->claimed_at_ms = now;
  return SC_OK;
}

/* Rows: st, msg, next due, ev, then the event (id, type, agg_id, seq,
 * created_at_ms, attempts, claim, payload), NULL when none was claimed. */
static void round_decode(sc_db *db, sc__op *base, const PGresult *res) {
  (void)db;
  sc__outbox_round *r = (sc__outbox_round *)base;
  sc__events_clear(r->events, r->n_events);
  r->n_events = 0;
  r->next_due_ms = sc__pg_col(res, 2);
  for (int row = 0; row < PQntuples(res) && r->n_events < r->claim_max; row++) {
    if (PQgetisnull(res, row, 4)) continue;
    size_t len = 0;
    unsigned char *bytes =
        PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, 11), &len);
    void *copy = bytes != NULL ? sc__malloc(len ? len : 1) : NULL;
    if (copy == NULL) {
      PQfreemem(bytes);
      /* Claimed but not handed out: its lease runs out and it comes back,
       * counted as an attempt, as after a consumer that crashed. */
      base->status = sc__op_fail(base, SC_NOMEM, "claim: out of memory");
      sc__events_clear(r->events, r->n_events);
      r->n_events = 0;
      return;
    }
    memcpy(copy, bytes, len);
    PQfreemem(bytes);
    const char *v[8];
    for (int c = 0; c < 7; c++)
      v[c] = PQgetvalue(res, row, 4 + c);
    r->events[r->n_events++] =
        (sc_event){.id = strtoll(v[0], NULL, 10),
                   .type = (int)strtol(v[1], NULL, 10),
                   .aggregate_id = strtoll(v[2], NULL, 10),
                   .seq = strtoll(v[3], NULL, 10),
                   .created_at_ms = strtoll(v[4], NULL, 10),
                   .attempts = (int)strtol(v[5], NULL, 10),
                   .claim = strtoll(v[6], NULL, 10),
                   .payload = copy,
                   .payload_len = len};
  }
}

const sc__op_pg sc__pg_outbox_round = {
    .name = "sc_outbox_round",
    .sql =
        "SELECT * FROM sc_outbox_round($1, $2::int[], $3, $4, $5, $6, $7,"
        " $8, $9, $10)",
    .encode = round_encode,
    .decode = round_decode};

static int event_encode(sc_db *db, sc__op *base, int64_t now,
                        sc__pg_params *p) {
  event_op *op = (event_op *)base;
  sc__pg_param_i64(p, op->s.id);
  sc__pg_param_i64(p, op->s.verdict);
  sc__pg_param_i64(p, op->s.claim);
  const char *reason = op->s.reason;
  if (reason != NULL && reason[sc__reason_len(reason)] != '\0') {
    /* Cut to what is kept, as a one-element array literal would be. */
    size_t len = sc__reason_len(reason);
    if (p->nowned == (int)(sizeof p->owned / sizeof *p->owned)) return SC_ERROR;
    char *copy = sc__malloc(len + 1);
    if (copy == NULL) return SC_NOMEM;
    memcpy(copy, reason, len);
    copy[len] = '\0';
    p->owned[p->nowned++] = copy;
    reason = copy;
  }
  sc__pg_param_text(p, reason);
  sc__pg_param_i64(p, now);
  retry_params(db, p);
  return SC_OK;
}

const sc__op_pg sc__pg_outbox_event = {
    .name = "sc_settle",
    .sql = "SELECT * FROM sc_settle($1, $2, $3, $4, $5, $6, $7, $8)",
    .encode = event_encode};

static int requeue_all_encode(sc_db *db, sc__op *base, int64_t now,
                              sc__pg_params *p) {
  (void)db;
  (void)base;
  sc__pg_param_i64(p, now);
  return SC_OK;
}

static void requeue_all_decode(sc_db *db, sc__op *base, const PGresult *r) {
  (void)db;
  ((requeue_all_op *)base)->n = (int)sc__pg_col(r, 2);
}

const sc__op_pg sc__pg_requeue_all = {.name = "sc_requeue_all",
                                      .sql = "SELECT * FROM sc_requeue_all($1)",
                                      .encode = requeue_all_encode,
                                      .decode = requeue_all_decode};

static int purge_encode(sc_db *db, sc__op *base, int64_t now,
                        sc__pg_params *p) {
  (void)db;
  (void)now;
  sc__purge_round *r = (sc__purge_round *)base;
  sc__pg_param_i64(p, r->before_ms);
  sc__pg_param_i64(p, r->limit);
  return SC_OK;
}

static void purge_decode(sc_db *db, sc__op *base, const PGresult *r) {
  (void)db;
  ((sc__purge_round *)base)->purged = (int)sc__pg_col(r, 2);
}

const sc__op_pg sc__pg_purge = {.name = "sc_purge",
                                .sql = "SELECT * FROM sc_purge($1, $2)",
                                .encode = purge_encode,
                                .decode = purge_decode};

int sc__pg_dead_fill(sc_db *db, sc_id after, int max, sc_dead_event *out,
                     int *n) {
  PGconn *c;
  int rc = sc__pg_read_acquire(db, &c);
  if (rc != SC_OK) return rc;
  char a[24], m[24];
  snprintf(a, sizeof a, "%lld", (long long)after);
  snprintf(m, sizeof m, "%d", max);
  const char *vals[] = {a, m};
  PGresult *r = sc__pg_read_exec(
      db, &c,
      "SELECT id, type, agg_id, seq, created_at_ms, attempts, payload,"
      " coalesce(last_error, '') FROM sc_outbox WHERE state = 2 AND id > $1"
      " ORDER BY id LIMIT $2",
      2, NULL, vals);
  bool broken = PQresultStatus(r) != PGRES_TUPLES_OK;
  if (broken) {
    rc = sc__fail(sc__pg_status(r), "sc_outbox_dead_list: %s",
                  PQresultErrorMessage(r));
  }
  for (int row = 0; !broken && row < PQntuples(r) && *n < max; row++) {
    size_t len = 0;
    unsigned char *bytes =
        PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, 6), &len);
    const char *why = PQgetvalue(r, row, 7);
    size_t wlen = strlen(why);
    char *mem = bytes != NULL ? sc__malloc(len + wlen + 1) : NULL;
    if (mem == NULL) {
      PQfreemem(bytes);
      rc = sc__fail(SC_NOMEM, "sc_outbox_dead_list: out of memory");
      break;
    }
    memcpy(mem, bytes, len);
    PQfreemem(bytes);
    memcpy(mem + len, why, wlen + 1);
    out[*n].event =
        (sc_event){.id = strtoll(PQgetvalue(r, row, 0), NULL, 10),
                   .type = (int)strtol(PQgetvalue(r, row, 1), NULL, 10),
                   .aggregate_id = strtoll(PQgetvalue(r, row, 2), NULL, 10),
                   .seq = strtoll(PQgetvalue(r, row, 3), NULL, 10),
                   .created_at_ms = strtoll(PQgetvalue(r, row, 4), NULL, 10),
                   .attempts = (int)strtol(PQgetvalue(r, row, 5), NULL, 10),
                   .payload = mem,
                   .payload_len = len};
    out[*n].last_error = mem + len;
    (*n)++;
  }
  PQclear(r);
  sc__pg_read_release(db, c, broken);
  return rc;
}
