/* The transactional outbox: each state change appends its event in the same
 * transaction, with a gap-free sequence number per aggregate; consumers claim
 * events with a lease, then ack or nack them. Claims, acks and nacks are
 * writes, so they go through the writer like every other change and hold
 * across processes sharing the file.
 *
 * An event is deliverable when it is pending (state 0), due (available_at),
 * not leased, and every earlier event of its aggregate is delivered: one
 * aggregate's events reach the consumer in sequence order, and a failing or
 * dead event holds back its own aggregate only.
 *
 * Settlement is fenced: every claim gives the event a new token (the claim
 * column, +1 per claim, never reset), and an ack, nack or release must
 * present the latest one. A consumer whose lease ran out, and whose event
 * someone else claimed since, thus cannot clear the new holder's lease or
 * deliver the event under it. */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

enum { AGG_COUPON = 1, AGG_ORDER = 2, AGG_ACCOUNT = 3, AGG_POLICY = 4 };
enum { ST_PENDING = 0, ST_DELIVERED = 1, ST_DEAD = 2 };

#define REASON_MAX 500 /* bytes of a nack's reason kept as last_error */

static const char SQL_APPEND[] =
    "INSERT INTO sc_outbox(type, agg_kind, agg_id, seq, created_at_ms,"
    " payload, available_at_ms)"
    " VALUES(?1, ?2, ?3,"
    "  coalesce((SELECT max(seq) FROM sc_outbox"
    "    WHERE agg_kind = ?2 AND agg_id = ?3),"
    "   (SELECT seq FROM sc_outbox_seq WHERE agg_kind = ?2 AND agg_id = ?3),"
    "   0) + 1,"
    "  ?4, ?5, ?4)";
/* A claim is this SELECT, then one UPDATE by id per row (SQL_LEASE): an
 * UPDATE ... RETURNING would have SQLite build an ephemeral table and a
 * statement journal per claim (expensive in Debian's build, see issue 11).
 * The partial index sc_outbox_pending gives the rows in id order.
 *
 * "Every earlier event of the aggregate is delivered" is checked on the
 * previous event alone (one look-up in the UNIQUE(agg_kind, agg_id, seq)
 * index): an event is delivered only by an ack of its claim, a claim
 * needs the previous event delivered, and nothing makes a delivered event
 * undelivered again, so by induction a delivered event's predecessors are
 * all delivered. A missing previous event was purged, and a purge takes
 * delivered events only, a prefix of each aggregate (outbox_purge.c). The
 * first event (seq 1, every coupon's) has no predecessor to look for. */
static const char SQL_DELIVERABLE[] =
    "SELECT o.id, o.type, o.agg_id, o.seq, o.created_at_ms, o.attempts,"
    " o.payload, o.claim, o.lease_until_ms FROM sc_outbox o"
    " WHERE o.state = 0 AND o.available_at_ms <= ?1"
    "  AND o.lease_until_ms <= ?1"
    "  AND (o.seq = 1 OR NOT EXISTS (SELECT 1 FROM sc_outbox e"
    "   WHERE e.agg_kind = o.agg_kind AND e.agg_id = o.agg_id"
    "    AND e.seq = o.seq - 1 AND e.state <> 1))"
    " ORDER BY o.id LIMIT ?2";
/* Taking over an expired lease (lease_until_ms > 0: claimed, never acked,
 * nacked or released) counts that delivery as an attempt: attempts is
 * "deliveries before this one", and a payload that crashes its consumer
 * must not be handed out forever. The claimer computes attempts and the
 * new token from the row it read in the same transaction. */
static const char SQL_LEASE[] =
    "UPDATE sc_outbox SET attempts = ?2, lease_until_ms = ?3, claim = ?4"
    " WHERE id = ?1";
static const char SQL_STATE[] =
    "SELECT state, attempts, claim, lease_until_ms FROM sc_outbox"
    " WHERE id = ?1";
/* delivered_at_ms never goes below the previous event's (delivered before
 * this one could be claimed), even when the clock stepped back: a purge,
 * taking events in delivered_at_ms order, then removes a prefix of each
 * aggregate (outbox_purge.c), never a later event before an earlier one.
 * An aggregate's first event has no previous one: CASE evaluates the
 * lookup only for the others. The WHERE is the fence: no row changes
 * unless ?2 is the latest claim's token. */
static const char SQL_ACK[] =
    "UPDATE sc_outbox SET state = 1, lease_until_ms = 0,"
    " delivered_at_ms = CASE WHEN seq = 1 THEN ?3"
    "  ELSE max(?3, coalesce((SELECT p.delivered_at_ms"
    "  FROM sc_outbox p WHERE p.agg_kind = sc_outbox.agg_kind"
    "  AND p.agg_id = sc_outbox.agg_id AND p.seq = sc_outbox.seq - 1), ?3))"
    "  END"
    " WHERE id = ?1 AND claim = ?2 AND claim > 0 AND state <> 1";
static const char SQL_RETRY[] =
    "UPDATE sc_outbox SET state = ?2, attempts = ?3, available_at_ms = ?4,"
    " lease_until_ms = 0, last_error = ?5 WHERE id = ?1 AND claim = ?6"
    " AND state = 0";
static const char SQL_LEASES_RAN_OUT[] =
    "UPDATE sc_outbox SET state = 2, lease_until_ms = 0,"
    " last_error = 'every lease ran out without an ack or a nack'"
    " WHERE id = ?1 AND state = 0";
static const char SQL_RELEASE[] =
    "UPDATE sc_outbox SET lease_until_ms = 0"
    " WHERE id = ?1 AND claim = ?2 AND state = 0";
static const char SQL_REQUEUE[] =
    "UPDATE sc_outbox SET state = 0, attempts = 0, available_at_ms = ?2,"
    " lease_until_ms = 0, last_error = NULL WHERE id = ?1 AND state = 2";
static const char SQL_REQUEUE_ALL[] =
    "UPDATE sc_outbox SET state = 0, attempts = 0, available_at_ms = ?1,"
    " lease_until_ms = 0, last_error = NULL WHERE state = 2";

/* ---- appending ------------------------------------------------------------
 */

/* The aggregate an event belongs to, by the design's rule. */
static int aggregate_of(const sc__event_fields *f, sc_id *id) {
  switch (f->type) {
    case SC_EVENT_COUPON_ISSUED:
      *id = f->coupon;
      return AGG_COUPON;
    case SC_EVENT_DEPOSIT:
      *id = f->user;
      return AGG_ACCOUNT;
    case SC_EVENT_POLICY_PAUSED:
    case SC_EVENT_POLICY_RESUMED:
      *id = f->policy;
      return AGG_POLICY;
    default:
      *id = f->order;
      return AGG_ORDER;
  }
}

/* Counts as "events written" for the commit hook, which wakes the worker:
 * an event that becomes deliverable again (requeued, or its aggregate
 * unblocked) is as new to it as an appended one. */
static void note_deliverable(sc_db *db) {
  db->batch_events++;
}

/* The first event of an aggregate the same operation just created (a
 * coupon issued, an order placed): ids are never reused, so its sequence
 * number is 1 without looking up the aggregate's history (an index seek
 * per event, on the writer's hottest path). */
static const char SQL_APPEND_FIRST[] =
    "INSERT INTO sc_outbox(type, agg_kind, agg_id, seq, created_at_ms,"
    " payload, available_at_ms) VALUES(?1, ?2, ?3, 1, ?4, ?5, ?4)";

static bool creates_aggregate(int type) {
  return type == SC_EVENT_COUPON_ISSUED || type == SC_EVENT_ORDER_CREATED;
}

int sc__outbox_emit(sc_db *db, sc__conn *w, sc__op *op,
                    const sc__event_fields *f) {
  char payload[SC__PAYLOAD_MAX];
  size_t len = sc__event_encode(f, payload, sizeof payload);
  if (len == 0) {
    return sc__op_fail(op, SC_ERROR, "cannot encode event type %d", f->type);
  }
  sc_id agg_id;
  int agg_kind = aggregate_of(f, &agg_id);
  sqlite3_stmt *st =
      sc__stmt(w, creates_aggregate(f->type) ? SQL_APPEND_FIRST : SQL_APPEND);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "outbox");
  sqlite3_bind_int(st, 1, f->type);
  sqlite3_bind_int(st, 2, agg_kind);
  sqlite3_bind_int64(st, 3, agg_id);
  sqlite3_bind_int64(st, 4, f->at_ms);
  /* SQLITE_STATIC: no copy, so no allocation that could fail and leave the
   * payload NULL; the buffer outlives the step, and sc__stmt clears the
   * binding before the statement is used again. */
  int rc = sqlite3_bind_blob(st, 5, payload, (int)len, SQLITE_STATIC);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "outbox");
  note_deliverable(db);
  return SC_OK;
}

/* ---- claiming -------------------------------------------------------------
 */

void sc__events_clear(sc_event *events, int n) {
  for (int i = 0; events != NULL && i < n; i++) {
    sc__free((void *)events[i].payload);
    events[i].payload = NULL;
  }
}

/* Copies a row of SQL_DELIVERABLE into ev, payload included, as it will be
 * once leased: one more attempt if an earlier lease ran out, a new token. */
static bool event_read(sqlite3_stmt *st, sc_event *ev) {
  const void *blob = sqlite3_column_blob(st, 6);
  size_t len = (size_t)sqlite3_column_bytes(st, 6);
  void *copy = sc__malloc(len);
  if (copy == NULL) return false;
  if (len > 0) memcpy(copy, blob, len);
  *ev = sc__event_from_row(st, copy, len);
  ev->attempts += sqlite3_column_int64(st, 8) > 0;
  ev->claim = sqlite3_column_int64(st, 7) + 1;
  return true;
}

sc_event sc__event_from_row(sqlite3_stmt *st, const void *payload, size_t len) {
  return (sc_event){.id = sqlite3_column_int64(st, 0),
                    .type = sqlite3_column_int(st, 1),
                    .aggregate_id = sqlite3_column_int64(st, 2),
                    .seq = sqlite3_column_int64(st, 3),
                    .created_at_ms = sqlite3_column_int64(st, 4),
                    .attempts = sqlite3_column_int(st, 5),
                    .payload = payload,
                    .payload_len = len};
}

/* Leases the events read by SQL_DELIVERABLE, in id order. */
static int lease(sc__conn *w, sc__outbox_round *r, int64_t until) {
  sqlite3_stmt *st = sc__stmt(w, SQL_LEASE);
  if (st == NULL) return sc__op_fail_sqlite(&r->base, w, SQLITE_ERROR, "claim");
  for (int i = 0; i < r->n_events; i++) {
    const sc_event *ev = &r->events[i];
    sqlite3_bind_int64(st, 1, ev->id);
    sqlite3_bind_int(st, 2, ev->attempts);
    sqlite3_bind_int64(st, 3, until);
    sqlite3_bind_int64(st, 4, ev->claim);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return sc__op_fail_sqlite(&r->base, w, rc, "claim");
  }
  return SC_OK;
}

static int claim(sc__conn *w, sc__outbox_round *r, int64_t now) {
  sqlite3_stmt *st = sc__stmt(w, SQL_DELIVERABLE);
  if (st == NULL) return sc__op_fail_sqlite(&r->base, w, SQLITE_ERROR, "claim");
  int64_t until;
  if (!sc__add_i64(now, r->lease_ms, &until)) until = INT64_MAX;
  sqlite3_bind_int64(st, 1, now);
  sqlite3_bind_int(st, 2, r->claim_max);
  int rc;
  bool nomem = false;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && r->n_events < r->claim_max) {
    if (!event_read(st, &r->events[r->n_events])) {
      nomem = true;
      break;
    }
    r->n_events++;
  }
  sqlite3_reset(st);
  if (nomem) {
    rc = sc__op_fail(&r->base, SC_NOMEM, "claim: out of memory");
  } else if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    rc = sc__op_fail_sqlite(&r->base, w, rc, "claim");
  } else {
    rc = lease(w, r, until);
  }
  if (rc != SC_OK) {
    sc__events_clear(r->events, r->n_events);
    r->n_events = 0;
  }
  return rc;
}

/* ---- settling -------------------------------------------------------------
 */

/* What settling an event looks at. */
typedef struct event_row {
  int state, attempts;
  int64_t claim;          /* the latest claim's token; 0 = never claimed */
  int64_t lease_until_ms; /* 0 once that claim was nacked or released */
} event_row;

/* The event's row; SC_NOT_FOUND if there is none. */
static int event_get(sc__conn *w, sc__op *op, sc_id id, event_row *row) {
  sqlite3_stmt *st = sc__stmt(w, SQL_STATE);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "outbox");
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    row->state = sqlite3_column_int(st, 0);
    row->attempts = sqlite3_column_int(st, 1);
    row->claim = sqlite3_column_int64(st, 2);
    row->lease_until_ms = sqlite3_column_int64(st, 3);
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) {
    return sc__op_fail(op, SC_NOT_FOUND, "event %lld not found", (long long)id);
  }
  return rc == SQLITE_ROW ? SC_OK : sc__op_fail_sqlite(op, w, rc, "outbox");
}

/* The event's row, if token is its latest claim's; SC_CONFLICT if it is
 * not, or if the event was never claimed. */
static int event_fenced(sc__conn *w, sc__op *op, sc_id id, int64_t token,
                        event_row *row) {
  int rc = event_get(w, op, id, row);
  if (rc != SC_OK) return rc;
  if (row->claim == 0) {
    return sc__op_fail(op, SC_CONFLICT, "event %lld was never claimed",
                       (long long)id);
  }
  if (token != row->claim) {
    return sc__op_fail(op, SC_CONFLICT,
                       "claim %lld is not event %lld's latest (%lld): its "
                       "lease ran out and it was claimed again",
                       (long long)token, (long long)id, (long long)row->claim);
  }
  return SC_OK;
}

/* Runs an UPDATE keyed by event id (?1) with optional int64s ?2 and ?3;
 * returns SC_OK with *changed, or the failure. */
static int update_one(sc__conn *w, sc__op *op, const char *sql, sc_id id,
                      int64_t arg, int64_t arg2, bool *changed) {
  sqlite3_stmt *st = sc__stmt(w, sql);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "outbox");
  sqlite3_bind_int64(st, 1, id);
  int params = sqlite3_bind_parameter_count(st);
  if (params >= 2) sqlite3_bind_int64(st, 2, arg);
  if (params >= 3) sqlite3_bind_int64(st, 3, arg2);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "outbox");
  *changed = sqlite3_changes(w->h) > 0;
  return SC_OK;
}

/* With the latest claim's token, a pending or dead event becomes delivered
 * (a dead one's late success counts too); acking a delivered one changes
 * nothing. The fenced UPDATE comes first: on the hot path (the token is
 * the latest) it is the only statement; only when it changes nothing is
 * the row read, to say why. */
static int ack(sc_db *db, sc__conn *w, sc__op *op, sc_id id, int64_t token,
               bool *changed) {
  *changed = false;
  int rc = update_one(w, op, SQL_ACK, id, token, sc__now_ms(db), changed);
  if (rc != SC_OK || *changed) return rc;
  event_row row;
  return event_fenced(w, op, id, token, &row);
}

/* Uniform in [0, n), from a per-thread xorshift: only the writer thread
 * draws, and jitter needs no quality beyond spreading retries apart. */
static int64_t jitter_draw(int64_t n) {
  static _Thread_local uint64_t x;
  if (x == 0) x = (uint64_t)sc__monotonic_ns() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return n > 0 ? (int64_t)(x % (uint64_t)n) : 0;
}

/* The wait before delivery attempt number attempts + 1: base doubled per
 * failed attempt, capped, then spread by +-20% so that events failing
 * together do not come back together. */
static int64_t backoff_ms(const sc_options *o, int attempts) {
  int64_t d = o->outbox_retry_max_ms;
  if (attempts - 1 < 62 &&
      o->outbox_retry_base_ms <= (o->outbox_retry_max_ms >> (attempts - 1))) {
    d = o->outbox_retry_base_ms << (attempts - 1);
  }
  /* Past about 0.83 * INT64_MAX the +20% would overflow: saturate. */
  int64_t spread;
  if (!sc__add_i64(d - d / 5, jitter_draw(2 * (d / 5) + 1), &spread)) {
    return INT64_MAX;
  }
  return spread;
}

/* The length of reason kept: at most REASON_MAX bytes, cut before a UTF-8
 * character that would not fit whole. */
size_t sc__reason_len(const char *reason) {
  size_t n = strnlen(reason, REASON_MAX);
  if (reason[n] != '\0') {
    while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
      n--;
  }
  return n;
}

/* A failed delivery: retried after a backoff, or dead once it has failed
 * outbox_max_attempts times (at once with dead_now). */
static int nack(sc_db *db, sc__conn *w, sc__op *op, const sc__settle *s,
                bool dead_now, int64_t *due_ms) {
  event_row row;
  int rc = event_fenced(w, op, s->id, s->claim, &row);
  if (rc != SC_OK) return rc;
  if (row.state != ST_PENDING) {
    return sc__op_fail(op, SC_INVALID_STATE, "event %lld is %s",
                       (long long)s->id,
                       row.state == ST_DELIVERED ? "delivered" : "dead");
  }
  if (row.lease_until_ms == 0) {
    return sc__op_fail(op, SC_INVALID_STATE,
                       "event %lld: claim %lld was already settled",
                       (long long)s->id, (long long)s->claim);
  }
  int attempts = row.attempts + 1;
  bool dead = dead_now || attempts >= db->opts.outbox_max_attempts;
  int64_t at = sc__now_ms(db);
  if (!dead && !sc__add_i64(at, backoff_ms(&db->opts, attempts), &at)) {
    at = INT64_MAX;
  }
  sqlite3_stmt *st = sc__stmt(w, SQL_RETRY);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "nack");
  sqlite3_bind_int64(st, 1, s->id);
  sqlite3_bind_int(st, 2, dead ? ST_DEAD : ST_PENDING);
  sqlite3_bind_int(st, 3, attempts);
  sqlite3_bind_int64(st, 4, at);
  sqlite3_bind_int64(st, 6, s->claim);
  rc = SQLITE_OK;
  if (s->reason != NULL) {
    rc = sqlite3_bind_text(st, 5, s->reason, (int)sc__reason_len(s->reason),
                           SQLITE_STATIC);
  }
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "nack");
  if (due_ms != NULL) *due_ms = dead ? 0 : at;
  return SC_OK;
}

static int settle_one(sc_db *db, sc__conn *w, sc__outbox_round *r,
                      const sc__settle *s) {
  sc__op *op = &r->base;
  bool changed;
  int64_t due = 0;
  int rc;
  switch (s->verdict) {
    case SC__SETTLE_ACK:
      /* The round's own claim follows: no need to wake anyone. */
      return ack(db, w, op, s->id, s->claim, &changed);
    case SC__SETTLE_NACK:
    case SC__SETTLE_DEAD:
      rc = nack(db, w, op, s, s->verdict == SC__SETTLE_DEAD, &due);
      if (due > 0 && (r->next_due_ms == 0 || due < r->next_due_ms)) {
        r->next_due_ms = due;
      }
      return rc;
    default:
      /* Fenced too: a lease that ran out may be someone else's now. */
      return update_one(w, op, SQL_RELEASE, s->id, s->claim, 0, &changed);
  }
}

/* Events whose leases ran out outbox_max_attempts times are dead, not
 * delivered again; the rest of the claim stands. */
static int drop_exhausted(sc_db *db, sc__conn *w, sc__outbox_round *r) {
  int kept = 0;
  for (int i = 0; i < r->n_events; i++) {
    sc_event ev = r->events[i];
    if (ev.attempts < db->opts.outbox_max_attempts) {
      r->events[kept++] = ev;
      continue;
    }
    sc__free((void *)ev.payload);
    bool changed;
    int rc = update_one(w, &r->base, SQL_LEASES_RAN_OUT, ev.id, 0, 0, &changed);
    if (rc != SC_OK) {
      /* Kept ones sit in [0, kept), unvisited ones in (i, n). */
      sc__events_clear(r->events, kept);
      sc__events_clear(r->events + i + 1, r->n_events - i - 1);
      r->n_events = 0;
      return rc;
    }
  }
  r->n_events = kept;
  return SC_OK;
}

/* Settles, then claims. An event that cannot be settled (acked, requeued,
 * claimed again or deleted by someone else meanwhile) is skipped: the
 * round's purpose is
 * the rest. A failed claim fails the round, settlements included, so
 * nothing is half-done; the worker then retries later. */
static int round_run(sc_db *db, sc__conn *w, sc__op *base) {
  sc__outbox_round *r = (sc__outbox_round *)base;
  /* A replayed batch runs the round again: what its first run claimed was
   * rolled back, and its payload copies go. */
  sc__events_clear(r->events, r->n_events);
  r->n_events = 0;
  r->next_due_ms = 0;
  for (int i = 0; i < r->n_settle; i++) {
    int rc = settle_one(db, w, r, &r->settle[i]);
    if (rc != SC_OK && rc != SC_NOT_FOUND && rc != SC_INVALID_STATE &&
        rc != SC_CONFLICT) {
      return rc;
    }
  }
  base->errmsg[0] = '\0';
  if (r->claim_max <= 0) return SC_OK;
  r->claimed_at_ms = sc__now_ms(db);
  int rc = claim(w, r, r->claimed_at_ms);
  if (rc == SC_OK) rc = drop_exhausted(db, w, r);
  if (rc != SC_OK) {
    sc__events_clear(r->events, r->n_events);
    r->n_events = 0;
  }
  return rc;
}

void sc__outbox_round_init(sc__outbox_round *r) {
  r->base.run = round_run;
  r->base.pg = &sc__pg_outbox_round;
  r->base.kind = SC__OP_OUTBOX;
}

/* ---- the public pull API ----------------------------------------------------
 */

int sc_outbox_claim(sc_db *db, int max, int64_t lease_ms, sc_event **events_out,
                    int *n_out) {
  SC__CHECK_DB(db);
  if (events_out == NULL || n_out == NULL) {
    return sc__fail(SC_MISUSE, "sc_outbox_claim: events_out or n_out is NULL");
  }
  if (max <= 0 || max > SC_OUTBOX_CLAIM_MAX) {
    return sc__fail(SC_INVALID, "sc_outbox_claim: max %d is not in 1..%d", max,
                    SC_OUTBOX_CLAIM_MAX);
  }
  if (lease_ms <= 0) {
    return sc__fail(SC_INVALID, "sc_outbox_claim: lease_ms %lld must be > 0",
                    (long long)lease_ms);
  }
  sc__outbox_round r = {.claim_max = max, .lease_ms = lease_ms};
  sc__outbox_round_init(&r);
  r.events = sc__calloc((size_t)max, sizeof *r.events);
  if (r.events == NULL) return sc__fail(SC_NOMEM, "sc_outbox_claim: no memory");
  int rc = sc__op_execute(db, &r.base);
  /* A claim that ran but whose batch failed to commit has copied payloads
   * nobody will free. */
  if (rc != SC_OK) sc__events_clear(r.events, r.n_events);
  if (rc != SC_OK || r.n_events == 0) {
    sc__free(r.events);
    r.events = NULL;
  }
  if (rc == SC_OK) {
    *events_out = r.events;
    *n_out = r.n_events;
  }
  return rc;
}

void sc_events_free(sc_event *events, int n) {
  sc__events_clear(events, n);
  sc__free(events);
}

static int requeue(sc_db *db, sc__conn *w, sc__op *op, sc_id id) {
  bool changed;
  int rc = update_one(w, op, SQL_REQUEUE, id, sc__now_ms(db), 0, &changed);
  if (rc != SC_OK) return rc;
  if (changed) {
    note_deliverable(db);
    return SC_OK;
  }
  event_row row;
  rc = event_get(w, op, id, &row);
  if (rc != SC_OK) return rc;
  return sc__op_fail(op, SC_INVALID_STATE, "event %lld is not dead (%s)",
                     (long long)id,
                     row.state == ST_DELIVERED ? "delivered" : "pending");
}

static int event_op_run(sc_db *db, sc__conn *w, sc__op *base) {
  event_op *op = (event_op *)base;
  bool changed = false;
  int rc;
  switch (op->s.verdict) {
    case SC__SETTLE_ACK:
      rc = ack(db, w, base, op->s.id, op->s.claim, &changed);
      /* The next event of its aggregate may be deliverable now. */
      if (changed) note_deliverable(db);
      return rc;
    case SC__SETTLE_NACK:
      return nack(db, w, base, &op->s, false, NULL);
    default:
      return requeue(db, w, base, op->s.id);
  }
}

static int event_execute(sc_db *db, sc__settle s) {
  SC__CHECK_DB(db);
  if (s.id <= 0) {
    return sc__fail(SC_NOT_FOUND, "event %lld not found", (long long)s.id);
  }
  event_op op = {.base = {.run = event_op_run,
                          .pg = &sc__pg_outbox_event,
                          .kind = SC__OP_OUTBOX},
                 .s = s};
  return sc__op_execute(db, &op.base);
}

int sc_outbox_ack(sc_db *db, sc_id event_id, int64_t claim) {
  return event_execute(
      db,
      (sc__settle){.id = event_id, .verdict = SC__SETTLE_ACK, .claim = claim});
}

int sc_outbox_nack(sc_db *db, sc_id event_id, int64_t claim,
                   const char *reason) {
  return event_execute(db, (sc__settle){.id = event_id,
                                        .verdict = SC__SETTLE_NACK,
                                        .claim = claim,
                                        .reason = reason});
}

int sc_outbox_requeue(sc_db *db, sc_id event_id) {
  return event_execute(db, (sc__settle){.id = event_id});
}

static int requeue_all_run(sc_db *db, sc__conn *w, sc__op *base) {
  requeue_all_op *op = (requeue_all_op *)base;
  sqlite3_stmt *st = sc__stmt(w, SQL_REQUEUE_ALL);
  if (st == NULL) return sc__op_fail_sqlite(base, w, SQLITE_ERROR, "requeue");
  sqlite3_bind_int64(st, 1, sc__now_ms(db));
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(base, w, rc, "requeue");
  op->n = sqlite3_changes(w->h);
  if (op->n > 0) note_deliverable(db);
  return SC_OK;
}

int sc_outbox_requeue_all(sc_db *db, int *requeued_out) {
  SC__CHECK_DB(db);
  requeue_all_op op = {.base = {.run = requeue_all_run,
                                .pg = &sc__pg_requeue_all,
                                .kind = SC__OP_OUTBOX}};
  int rc = sc__op_execute(db, &op.base);
  if (rc == SC_OK && requeued_out != NULL) *requeued_out = op.n;
  return rc;
}
