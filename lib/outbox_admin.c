/* Reading the outbox for operators: the dead letters with the reason each
 * died, and the counts a monitor watches. Reads run on a read connection,
 * beside the writer. */
#include <string.h>

#include "ops.h"

/* The partial index sc_outbox_dead serves this. */
static const char SQL_DEAD_LIST[] =
    "SELECT id, type, agg_id, seq, created_at_ms, attempts, payload,"
    " coalesce(last_error, '') FROM sc_outbox"
    " WHERE state = 2 AND id > ?1 ORDER BY id LIMIT ?2";
static const char SQL_STATS[] =
    "SELECT (SELECT count(*) FROM sc_outbox WHERE state = 0),"
    " (SELECT count(*) FROM sc_outbox WHERE state = 2),"
    " (SELECT coalesce(min(created_at_ms), 0) FROM sc_outbox"
    "  WHERE state = 0)";

/* One row of SQL_DEAD_LIST: the payload and the reason share one
 * allocation, freed with the payload. */
static bool dead_read(sqlite3_stmt *st, sc_dead_event *d) {
  size_t len = (size_t)sqlite3_column_bytes(st, 6);
  const char *why = (const char *)sqlite3_column_text(st, 7);
  size_t wlen = why ? strlen(why) : 0;
  char *mem = sc__malloc(len + wlen + 1);
  if (mem == NULL) return false;
  if (len > 0) memcpy(mem, sqlite3_column_blob(st, 6), len);
  if (wlen > 0) memcpy(mem + len, why, wlen);
  mem[len + wlen] = '\0';
  d->event = sc__event_from_row(st, mem, len);
  d->last_error = mem + len;
  return true;
}

static int dead_fill(sc__conn *c, sc_id after, int max, sc_dead_event *out,
                     int *n) {
  sqlite3_stmt *st = sc__stmt(c, SQL_DEAD_LIST);
  if (st == NULL) return sqlite3_errcode(c->h);
  sqlite3_bind_int64(st, 1, after);
  sqlite3_bind_int(st, 2, max);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
    if (!dead_read(st, &out[*n])) {
      rc = SQLITE_NOMEM;
      break;
    }
    (*n)++;
  }
  sqlite3_reset(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

int sc_outbox_dead_list(sc_db *db, sc_id after_id, int max,
                        sc_dead_event **events_out, int *n_out) {
  SC__CHECK_DB(db);
  const char *fn = "sc_outbox_dead_list";
  if (events_out == NULL || n_out == NULL) {
    return sc__fail(SC_MISUSE, "%s: events_out or n_out is NULL", fn);
  }
  if (max <= 0 || max > SC_OUTBOX_CLAIM_MAX) {
    return sc__fail(SC_INVALID, "%s: max %d is not in 1..%d", fn, max,
                    SC_OUTBOX_CLAIM_MAX);
  }
  sc_dead_event *list = sc__calloc((size_t)max, sizeof *list);
  if (list == NULL) return sc__fail(SC_NOMEM, "%s: out of memory", fn);
  int n = 0, rc;
  if (db->pg != NULL) {
    rc = sc__pg_dead_fill(db, after_id, max, list, &n);
  } else {
    sc__conn *c;
    rc = sc__read_acquire(db, &c);
    if (rc != SC_OK) {
      sc__free(list);
      return rc;
    }
    int src = dead_fill(c, after_id, max, list, &n);
    if (src != SQLITE_OK) {
      rc = sc__fail(
          sc__status_from_sqlite(src), "%s: %s", fn,
          src == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(c->h));
    }
    sc__read_release(db, c);
  }
  if (rc != SC_OK || n == 0) {
    sc_dead_events_free(list, n);
    list = NULL;
    n = rc == SC_OK ? 0 : n;
  }
  if (rc == SC_OK) {
    *events_out = list;
    *n_out = n;
  }
  return rc;
}

void sc_dead_events_free(sc_dead_event *events, int n) {
  for (int i = 0; events != NULL && i < n; i++) {
    sc__free((void *)events[i].event.payload);
  }
  sc__free(events);
}

int sc_outbox_stats_get(sc_db *db, sc_outbox_stats *out) {
  SC__CHECK_DB(db);
  if (out == NULL)
    return sc__fail(SC_MISUSE, "sc_outbox_stats_get: out is NULL");
  int64_t cols[3];
  /* sc__read_row binds its id to ?1; this query has none, which is fine. */
  int rc = sc__read_row(db, SQL_STATS, 0, cols, 3, "outbox");
  if (rc != SC_OK) return rc;
  out->pending = cols[0];
  out->dead = cols[1];
  out->oldest_pending_ms = cols[2];
  return SC_OK;
}
