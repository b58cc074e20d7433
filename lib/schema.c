/* The schema and its migrations. Every table is prefixed sc_ and the schema
 * version lives in the library's own sc_meta table, not PRAGMA user_version,
 * so libshopcore can share a host application's SQLite file. */
#include <string.h>

#include "internal.h"

/* Migration N brings the schema from version N-1 to N. Append only: a
 * released migration is never edited. */
static const char MIGRATION_1[] =
    "CREATE TABLE sc_coupon_policy("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " max_count INTEGER NOT NULL CHECK(max_count > 0),"
    " issued_count INTEGER NOT NULL DEFAULT 0"
    "  CHECK(issued_count >= 0 AND issued_count <= max_count),"
    " per_user_limit INTEGER NOT NULL CHECK(per_user_limit > 0),"
    " discount_amount INTEGER NOT NULL DEFAULT 0,"
    " discount_percent INTEGER NOT NULL DEFAULT 0,"
    " max_discount INTEGER NOT NULL DEFAULT 0,"
    " starts_at_ms INTEGER NOT NULL DEFAULT 0,"
    " ends_at_ms INTEGER NOT NULL DEFAULT 0,"
    " paused INTEGER NOT NULL DEFAULT 0,"
    " created_at_ms INTEGER NOT NULL);"
    /* status: 1 available, 2 held by a pending order, 3 used */
    "CREATE TABLE sc_coupon("
    " id INTEGER PRIMARY KEY,"
    " policy_id INTEGER NOT NULL REFERENCES sc_coupon_policy(id),"
    " user_id INTEGER NOT NULL,"
    " status INTEGER NOT NULL DEFAULT 1,"
    " order_id INTEGER,"
    " issued_at_ms INTEGER NOT NULL);"
    "CREATE INDEX sc_coupon_by_holder ON sc_coupon(policy_id, user_id);"
    "CREATE TABLE sc_product("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " price INTEGER NOT NULL CHECK(price >= 0),"
    " total INTEGER NOT NULL CHECK(total >= 0),"
    " reserved INTEGER NOT NULL DEFAULT 0"
    "  CHECK(reserved >= 0 AND reserved <= total),"
    " version INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE sc_account("
    " user_id INTEGER PRIMARY KEY,"
    " balance INTEGER NOT NULL DEFAULT 0 CHECK(balance >= 0),"
    " held INTEGER NOT NULL DEFAULT 0 CHECK(held >= 0 AND held <= balance));"
    /* kind: 1 deposit, 2 payment (negative amount) */
    "CREATE TABLE sc_ledger("
    " id INTEGER PRIMARY KEY,"
    " user_id INTEGER NOT NULL REFERENCES sc_account(user_id),"
    " amount INTEGER NOT NULL, kind INTEGER NOT NULL,"
    " order_id INTEGER, at_ms INTEGER NOT NULL);"
    "CREATE INDEX sc_ledger_by_user ON sc_ledger(user_id);"
    /* status: SC_ORDER_* */
    "CREATE TABLE sc_order("
    " id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
    " status INTEGER NOT NULL CHECK(status BETWEEN 1 AND 4),"
    " total INTEGER NOT NULL CHECK(total >= 0),"
    " discount INTEGER NOT NULL DEFAULT 0,"
    " coupon_id INTEGER,"
    " created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL,"
    " closed_at_ms INTEGER);"
    "CREATE INDEX sc_order_due ON sc_order(expires_at_ms) WHERE status = 1;"
    "CREATE INDEX sc_order_by_user ON sc_order(user_id);"
    "CREATE TABLE sc_order_line("
    " order_id INTEGER NOT NULL REFERENCES sc_order(id),"
    " product_id INTEGER NOT NULL REFERENCES sc_product(id),"
    " qty INTEGER NOT NULL CHECK(qty > 0), price INTEGER NOT NULL,"
    " PRIMARY KEY(order_id, product_id)) WITHOUT ROWID;"
    "CREATE INDEX sc_order_line_by_product ON sc_order_line(product_id);"
    /* scope: 1 checkout, 2 deposit; request: a digest of the request */
    "CREATE TABLE sc_idempotency("
    " scope INTEGER NOT NULL, key TEXT NOT NULL,"
    " request BLOB NOT NULL, result_id INTEGER NOT NULL,"
    " created_at_ms INTEGER NOT NULL,"
    " PRIMARY KEY(scope, key)) WITHOUT ROWID;"
    /* agg_kind: 1 coupon, 2 order, 3 account, 4 policy;
     * state: 0 pending, 1 delivered, 2 dead */
    "CREATE TABLE sc_outbox("
    " id INTEGER PRIMARY KEY, type INTEGER NOT NULL,"
    " agg_kind INTEGER NOT NULL, agg_id INTEGER NOT NULL,"
    " seq INTEGER NOT NULL, created_at_ms INTEGER NOT NULL,"
    " payload BLOB NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
    " available_at_ms INTEGER NOT NULL DEFAULT 0,"
    " lease_until_ms INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " UNIQUE(agg_kind, agg_id, seq));"
    "CREATE INDEX sc_outbox_pending ON sc_outbox(id) WHERE state = 0;"
    /* Undelivered events per aggregate: a claim checks that no earlier one
     * is left without visiting the delivered history. */
    "CREATE INDEX sc_outbox_open ON sc_outbox(agg_kind, agg_id, seq)"
    " WHERE state <> 1;"
    "CREATE INDEX sc_outbox_dead ON sc_outbox(id) WHERE state = 2;";

/* The outbox's fencing and retention.
 * claim: the fencing token of the event's latest delivery, +1 on every
 * claim and never reset, so a settlement can prove it holds that delivery;
 * 0 = never claimed.
 * delivered_at_ms: when it was acked (db clock); events delivered before
 * this migration count as acked when they were created.
 * sc_outbox_seq: the last sequence number of each aggregate whose delivered
 * events were purged, so that its sequence goes on from there. */
static const char MIGRATION_2[] =
    "ALTER TABLE sc_outbox ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sc_outbox ADD COLUMN delivered_at_ms INTEGER NOT NULL"
    " DEFAULT 0;"
    "UPDATE sc_outbox SET delivered_at_ms = created_at_ms WHERE state = 1;"
    "CREATE INDEX sc_outbox_delivered ON sc_outbox(delivered_at_ms)"
    " WHERE state = 1;"
    "CREATE TABLE sc_outbox_seq("
    " agg_kind INTEGER NOT NULL, agg_id INTEGER NOT NULL,"
    " seq INTEGER NOT NULL, PRIMARY KEY(agg_kind, agg_id)) WITHOUT ROWID;";

static const char *const MIGRATIONS[] = {MIGRATION_1, MIGRATION_2};
#define SCHEMA_VERSION ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_META_CREATE[] =
    "CREATE TABLE IF NOT EXISTS sc_meta(key TEXT PRIMARY KEY, value)";
static const char SQL_META_VERSION[] =
    "SELECT value FROM sc_meta WHERE key = 'schema_version'";
static const char SQL_META_SET_VERSION[] =
    "INSERT INTO sc_meta(key, value) VALUES('schema_version', ?1)"
    " ON CONFLICT(key) DO UPDATE SET value = excluded.value";

static int read_version(sc__conn *w, int *version) {
  sqlite3_stmt *st = sc__stmt(w, SQL_META_VERSION);
  if (st == NULL) return sqlite3_errcode(w->h);
  int rc = sqlite3_step(st);
  *version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
  sqlite3_reset(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int set_version(sc__conn *w, int version) {
  sqlite3_stmt *st = sc__stmt(w, SQL_META_SET_VERSION);
  if (st == NULL) return sqlite3_errcode(w->h);
  sqlite3_bind_int(st, 1, version);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Applies the migrations the file lacks, all in one write transaction, so
 * processes opening the same new file at once create the schema once. */
static int migrate_locked(sc__conn *w, int *version) {
  int rc = sqlite3_exec(w->h, SQL_META_CREATE, NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = read_version(w, version);
  if (rc != SQLITE_OK) return rc;
  if (*version > SCHEMA_VERSION) return SQLITE_OK; /* refused by the caller */
  for (int v = *version; v < SCHEMA_VERSION && rc == SQLITE_OK; v++) {
    rc = sqlite3_exec(w->h, MIGRATIONS[v], NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK && *version < SCHEMA_VERSION) {
    rc = set_version(w, SCHEMA_VERSION);
  }
  return rc;
}

int sc__schema_migrate(sc__conn *w) {
  int rc = sc__exec(w, SQL_BEGIN);
  int version = 0;
  if (rc == SQLITE_OK) rc = migrate_locked(w, &version);
  if (rc == SQLITE_OK && version > SCHEMA_VERSION) {
    sqlite3_exec(w->h, "ROLLBACK", NULL, NULL, NULL);
    return sc__fail(SC_CORRUPT,
                    "%s: schema version %d is newer than this library's %d",
                    w->db->path, version, SCHEMA_VERSION);
  }
  if (rc == SQLITE_OK) rc = sc__exec(w, SQL_COMMIT);
  if (rc != SQLITE_OK) {
    int st =
        sc__fail(sc__status_from_sqlite(rc), "%s: cannot set up schema: %s",
                 w->db->path, sqlite3_errmsg(w->h));
    if (!sqlite3_get_autocommit(w->h)) {
      sqlite3_exec(w->h, "ROLLBACK", NULL, NULL, NULL);
    }
    return st;
  }
  return SC_OK;
}
