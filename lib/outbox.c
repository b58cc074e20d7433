/* The transactional outbox: each state change appends its event in the same
 * savepoint, with a gap-free sequence number per aggregate. */
#include "internal.h"

enum { AGG_COUPON = 1, AGG_ORDER = 2, AGG_ACCOUNT = 3, AGG_POLICY = 4 };

static const char SQL_APPEND[] =
    "INSERT INTO sc_outbox(type, agg_kind, agg_id, seq, created_at_ms,"
    " payload, available_at_ms)"
    " VALUES(?1, ?2, ?3,"
    "  (SELECT coalesce(max(seq), 0) + 1 FROM sc_outbox"
    "   WHERE agg_kind = ?2 AND agg_id = ?3),"
    "  ?4, ?5, ?4)";

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

int sc__outbox_emit(sc_db *db, sc__conn *w, sc__op *op,
                    const sc__event_fields *f) {
  char payload[SC__PAYLOAD_MAX];
  size_t len = sc__event_encode(f, payload, sizeof payload);
  if (len == 0) {
    return sc__op_fail(op, SC_ERROR, "cannot encode event type %d", f->type);
  }
  sc_id agg_id;
  int agg_kind = aggregate_of(f, &agg_id);
  sqlite3_stmt *st = sc__stmt(w, SQL_APPEND);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "outbox");
  sqlite3_bind_int(st, 1, f->type);
  sqlite3_bind_int(st, 2, agg_kind);
  sqlite3_bind_int64(st, 3, agg_id);
  sqlite3_bind_int64(st, 4, f->at_ms);
  sqlite3_bind_blob(st, 5, payload, (int)len, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, "outbox");
  db->batch_events++;
  return SC_OK;
}
