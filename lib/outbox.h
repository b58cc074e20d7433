/* The outbox inside the library: event payloads (codec.c), the event a
 * state change appends in its write transaction, the worker's round trip
 * of settling and claiming (outbox.c) and retention (outbox_purge.c). */
#ifndef SC_OUTBOX_H
#define SC_OUTBOX_H

#include "writer.h"

/* ---- outbox and codec -------------------------------------------------- */

/* The fields of an event payload, encoded as a msgpack map (codec.c). */
typedef struct sc__event_fields {
  int type;
  sc_id user, order, policy, coupon;
  int64_t amount, discount, expires_at_ms, at_ms;
} sc__event_fields;

#define SC__PAYLOAD_MAX 256
/* Encodes f into buf; returns the length, or 0 if it does not fit. */
size_t sc__event_encode(const sc__event_fields *f, char *buf, size_t cap);
/* Appends the event of a state change in the write transaction (outbox.c):
 * its aggregate is derived from the type (order, coupon, account, policy). */
int sc__outbox_emit(sc_db *db, sc__conn *w, sc__op *op,
                    const sc__event_fields *f);

/* ---- outbox: the worker's round trip (outbox.c) ---- */

/* What becomes of one delivered event. */
enum {
  SC__SETTLE_ACK = 1, /* delivered */
  SC__SETTLE_NACK,    /* failed: retried after a backoff, or dead */
  SC__SETTLE_RELEASE, /* not delivered (stopping): lease dropped, no attempt */
  SC__SETTLE_DEAD     /* can never be delivered (undecodable): dead now */
};
typedef struct sc__settle {
  sc_id id;
  int verdict;        /* SC__SETTLE_* */
  const char *reason; /* NACK, DEAD: stored as last_error; may be NULL */
  int64_t claim;      /* the delivery's token (sc_event.claim): the fence */
} sc__settle;

/* One writer operation that settles the events of the last batch and claims
 * the next: the worker's whole round trip, one op and one commit. Settling
 * an event that changed meanwhile (acked or requeued elsewhere) is skipped.
 * The caller owns every array; the op allocates the claimed payloads, which
 * sc__events_clear frees. */
typedef struct sc__outbox_round {
  sc__op base;
  const sc__settle *settle; /* in */
  int n_settle;
  int claim_max;         /* in: 0 = claim nothing */
  int64_t lease_ms;      /* in */
  sc_event *events;      /* in: room for claim_max; out: the claimed ones */
  int n_events;          /* out */
  int64_t next_due_ms;   /* out: the earliest retry this round's nacks set
                            (db clock); 0 = none */
  int64_t claimed_at_ms; /* out: the db clock when it claimed; the leases of
                            the claimed events end at claimed_at_ms +
                            lease_ms */
} sc__outbox_round;
/* Sets base.run and base.kind; the other fields are the caller's. */
void sc__outbox_round_init(sc__outbox_round *r);
/* Frees the payloads of events[0..n) (not the array). */
void sc__events_clear(sc_event *events, int n);
/* An event from a row whose first six columns are id, type, agg_id, seq,
 * created_at_ms, attempts (the claim's and the dead list's queries); the
 * payload is the caller's copy. */
sc_event sc__event_from_row(sqlite3_stmt *st, const void *payload, size_t len);

/* ---- outbox retention (outbox_purge.c) ---- */

/* Events one purge batch deletes at most: a batch costs the writer about
 * 5 us of CPU per event, 2.5 ms in all (bench/bench_purge). */
#define SC__PURGE_BATCH_MAX 500

/* One batch of sc_outbox_purge as an operation (the worker submits its own,
 * smaller ones): deletes up to limit delivered events acked before
 * before_ms, the newest event of all excepted. */
typedef struct sc__purge_round {
  sc__op base;
  int64_t before_ms; /* in */
  int limit;         /* in: > 0 */
  int purged;        /* out; == limit: more may be left */
} sc__purge_round;
/* Sets base (run, kind) and the inputs; base.done is the caller's. */
void sc__purge_round_prepare(sc__purge_round *r, int64_t before_ms, int limit);

#endif /* SC_OUTBOX_H */
