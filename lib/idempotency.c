/* Idempotency keys. A key is recorded in the same transaction as the change it
 * names, with the request's canonical bytes, so a replay finds it only if the
 * change committed, and the single writer (or SQLite's write lock, across
 * processes) orders racing replays: the first records, the others read. A
 * failed request records nothing, so its key may be retried. The request is
 * kept whole rather than hashed: a different request can never pass for the
 * same one. */
#include <string.h>

#include "internal.h"

static const char SQL_FIND[] =
    "SELECT request, result_id FROM sc_idempotency"
    " WHERE scope = ?1 AND key = ?2";
static const char SQL_RECORD[] =
    "INSERT INTO sc_idempotency(scope, key, request, result_id,"
    " created_at_ms) VALUES(?1, ?2, ?3, ?4, ?5)";

void sc__idem_put_i64(unsigned char *p, int64_t v) {
  uint64_t u = (uint64_t)v;
  for (int i = 7; i >= 0; i--, u >>= 8)
    p[i] = (unsigned char)(u & 0xff);
}

int sc__idem_find(sc__conn *w, sc__op *op, int scope, const char *key,
                  const void *request, size_t len, sc_id *result_id) {
  sqlite3_stmt *st = sc__stmt(w, SQL_FIND);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "idempotency");
  sqlite3_bind_int(st, 1, scope);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) return SC_NOT_FOUND; /* a new key: no failure */
    return sc__op_fail_sqlite(op, w, rc, "idempotency");
  }
  const void *stored = sqlite3_column_blob(st, 0);
  size_t stored_len = (size_t)sqlite3_column_bytes(st, 0);
  bool same =
      stored_len == len && (len == 0 || memcmp(stored, request, len) == 0);
  *result_id = sqlite3_column_int64(st, 1);
  sqlite3_reset(st);
  if (same) return SC_OK;
  return sc__op_fail(op, SC_IDEMPOTENCY_MISMATCH,
                     "idempotency key \"%.64s\" was used for another request",
                     key);
}

int sc__idem_record(sc__conn *w, sc__op *op, int scope, const char *key,
                    const void *request, size_t len, sc_id result_id,
                    int64_t now) {
  sqlite3_stmt *st = sc__stmt(w, SQL_RECORD);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "idempotency");
  sqlite3_bind_int(st, 1, scope);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 3, request, (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, result_id);
  sqlite3_bind_int64(st, 5, now);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SC_OK
                           : sc__op_fail_sqlite(op, w, rc, "idempotency");
}
