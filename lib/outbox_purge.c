/* Outbox retention: delivered events are deleted once they are older than
 * the caller's cut-off, a bounded batch per writer operation so that the
 * writer is never held long. Pending, leased and dead events stay.
 *
 * An aggregate's delivered events form a prefix of its sequence (an event
 * is handed out only once every earlier one is delivered), and their ack
 * times grow with the sequence (an ack never records a time before its
 * predecessor's, even if the clock stepped back: outbox.c), so a batch taken in
 * (delivered_at_ms, id) order removes a prefix of each aggregate. The last
 * number it removes is kept in sc_outbox_seq: the next event of an aggregate
 * whose rows are all gone goes on from there (outbox.c, SQL_APPEND), and
 * sc_verify checks the kept rows from there on.
 *
 * The newest event of all is never purged: with INTEGER PRIMARY KEY (no
 * AUTOINCREMENT) the next id is max(id) + 1, so deleting the newest row
 * would hand its id out again, and consumers deduplicate by id. */
#include "ops.h"
#include "metrics.h"

/* The batch: the oldest delivered events acked before ?1, at most ?2. The
 * partial index sc_outbox_delivered serves it (no scan of what is kept). */
#define PURGE_BATCH                                                   \
  "SELECT id FROM sc_outbox WHERE state = 1 AND delivered_at_ms < ?1" \
  " AND id < (SELECT max(id) FROM sc_outbox)"                         \
  " ORDER BY delivered_at_ms, id LIMIT ?2"

/* Both statements select the same batch: nothing else writes between them
 * (one writer, one transaction). */
static const char SQL_PURGE_SEQ[] =
    "INSERT INTO sc_outbox_seq(agg_kind, agg_id, seq)"
    " SELECT agg_kind, agg_id, max(seq) FROM sc_outbox"
    " WHERE id IN (" PURGE_BATCH
    ") GROUP BY agg_kind, agg_id"
    " ON CONFLICT(agg_kind, agg_id) DO UPDATE SET seq = max(seq, excluded.seq)";
static const char SQL_PURGE[] =
    "DELETE FROM sc_outbox WHERE id IN (" PURGE_BATCH ")";

/* Runs sql with the batch's parameters; *changed: rows it changed. */
static int purge_step(sc__conn *w, sc__op *op, const char *sql,
                      const sc__purge_round *r, int *changed) {
  sqlite3_stmt *st = sc__stmt(w, sql);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "purge");
  sqlite3_bind_int64(st, 1, r->before_ms);
  sqlite3_bind_int(st, 2, r->limit);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "purge");
  *changed = sqlite3_changes(w->h);
  return SC_OK;
}

static int purge_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  sc__purge_round *r = (sc__purge_round *)base;
  r->purged = 0;
  int seqs;
  int rc = purge_step(w, base, SQL_PURGE_SEQ, r, &seqs);
  if (rc == SC_OK) rc = purge_step(w, base, SQL_PURGE, r, &r->purged);
  return rc;
}

void sc__purge_round_prepare(sc__purge_round *r, int64_t before_ms, int limit) {
  r->base.run = purge_run;
  r->base.pg = &sc__pg_purge;
  r->base.kind = SC__OP_OUTBOX;
  r->before_ms = before_ms;
  r->limit = limit;
  r->purged = 0;
}

int sc_outbox_purge(sc_db *db, int64_t delivered_before_ms,
                    int64_t *purged_out) {
  SC__CHECK_DB(db);
  /* A cut-off past now means now: what consumers ack while the purge runs
   * is left for the next one, so that the loop below ends even when they
   * ack faster than it deletes. */
  int64_t now = sc__now_ms(db);
  if (delivered_before_ms > now && now < INT64_MAX) {
    delivered_before_ms = now + 1;
  }
  int64_t total = 0;
  int rc;
  sc__purge_round r;
  do {
    r = (sc__purge_round){0};
    sc__purge_round_prepare(&r, delivered_before_ms, SC__PURGE_BATCH_MAX);
    rc = sc__op_execute(db, &r.base);
    if (rc == SC_OK) {
      total += r.purged;
      sc__metrics_purged(db, r.purged);
    }
  } while (rc == SC_OK && r.purged == r.limit);
  /* Batches committed before a failure stay purged: report them too. */
  if (purged_out != NULL) *purged_out = total;
  return rc;
}
