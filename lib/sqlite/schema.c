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

/* ---- migration 3: ids are never reused ----------------------------------
 * Consumers deduplicate events by id, so an id handed out again after
 * sc_repair (or a purge, or a hand) deleted the newest rows would make them
 * drop a new event. AUTOINCREMENT keeps the highest id ever used in
 * sqlite_sequence (SQLite's own table, shared with any AUTOINCREMENT table
 * of the host). SQLite cannot add it to an existing table, so each table
 * is rebuilt from its own stored definition (which keeps any column a later
 * migration adds), with its rows, its indexes (and a host's triggers) and its
 * highest id. */

typedef struct id_table {
  const char *name;
  /* The highest id of the table that other tables still name: rows
   * deleted before this migration may live on there. NULL = none. */
  const char *referenced;
} id_table;

static const id_table ID_TABLES[] = {
    {"sc_coupon_policy",
     "SELECT max(id) FROM (SELECT policy_id AS id FROM sc_coupon"
     " UNION ALL SELECT agg_id FROM sc_outbox WHERE agg_kind = 4)"},
    {"sc_coupon",
     "SELECT max(id) FROM (SELECT coupon_id AS id FROM sc_order"
     " UNION ALL SELECT agg_id FROM sc_outbox WHERE agg_kind = 1)"},
    {"sc_product", "SELECT max(product_id) FROM sc_order_line"},
    {"sc_ledger", NULL},
    {"sc_order",
     "SELECT max(id) FROM (SELECT order_id AS id FROM sc_order_line"
     " UNION ALL SELECT order_id FROM sc_ledger"
     " UNION ALL SELECT agg_id FROM sc_outbox WHERE agg_kind = 2"
     " UNION ALL SELECT result_id FROM sc_idempotency WHERE scope = 1)"},
    {"sc_outbox", NULL},
};

static const char SQL_TABLE_DDL[] =
    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1";
/* Its indexes, and any trigger a host put on it: dropping the table drops
 * them. */
static const char SQL_DEPENDENT_DDL[] =
    "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger')"
    " AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY type, name";
/* The id column as migration 1 wrote it, first after the parenthesis. */
static const char ID_COLUMN[] = " id INTEGER PRIMARY KEY";
static const char AUTOINCREMENT[] = " AUTOINCREMENT";

/* Runs SQL built with sqlite3_mprintf (NULL: out of memory) and frees it. */
static int exec_built(sc__conn *w, char *sql) {
  if (sql == NULL) return SQLITE_NOMEM;
  int rc = sqlite3_exec(w->h, sql, NULL, NULL, NULL);
  sqlite3_free(sql);
  return rc;
}

/* The CREATE TABLE of name, as "<name>_rebuild" with AUTOINCREMENT on its
 * id; NULL with *rc set when the definition is not migration 1's, NULL with
 * SQLITE_OK when the id already has AUTOINCREMENT (a file rebuilt before,
 * whose version was rolled back: the step is safe to run again). */
static char *autoincrement_ddl(sc__conn *w, const char *name, int *rc) {
  sqlite3_stmt *st = sc__stmt(w, SQL_TABLE_DDL);
  if (st == NULL) {
    *rc = sqlite3_errcode(w->h);
    return NULL;
  }
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  char *ddl = NULL;
  *rc = sqlite3_step(st);
  const char *sql =
      *rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
  const char *cols = sql != NULL ? strchr(sql, '(') : NULL;
  bool has_id =
      cols != NULL && strncmp(cols + 1, ID_COLUMN, sizeof ID_COLUMN - 1) == 0;
  const char *rest = has_id ? cols + sizeof ID_COLUMN : NULL;
  if (has_id && strncmp(rest, AUTOINCREMENT, sizeof AUTOINCREMENT - 1) == 0) {
    *rc = SQLITE_OK; /* already rebuilt: nothing to do */
  } else if (has_id) {
    ddl = sqlite3_mprintf("CREATE TABLE \"%w_rebuild\"(%s AUTOINCREMENT%s",
                          name, ID_COLUMN, rest);
    *rc = ddl != NULL ? SQLITE_OK : SQLITE_NOMEM;
  } else if (*rc == SQLITE_ROW || *rc == SQLITE_DONE) {
    *rc = SQLITE_CORRUPT; /* not a table this library made */
  }
  sqlite3_reset(st);
  return ddl;
}

/* Re-creates indexes and triggers from their stored definitions. */
static int create_dependents(sc__conn *w, char **ddl, int n) {
  int rc = SQLITE_OK;
  for (int i = 0; i < n && rc == SQLITE_OK; i++) {
    rc = sqlite3_exec(w->h, ddl[i], NULL, NULL, NULL);
  }
  return rc;
}

/* The stored CREATE INDEX and TRIGGER statements of name (at most max). */
static int read_dependents(sc__conn *w, const char *name, char **ddl, int max,
                           int *n) {
  sqlite3_stmt *st = sc__stmt(w, SQL_DEPENDENT_DDL);
  if (st == NULL) return sqlite3_errcode(w->h);
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  int rc;
  *n = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (*n == max) {
      rc = SQLITE_FULL; /* more than this migration has room for */
      break;
    }
    ddl[*n] = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
    if (ddl[(*n)++] == NULL) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Makes sqlite_sequence say at least the highest id t's rows or other
 * tables name (the copy itself already recorded its highest row). */
static int seed_sequence(sc__conn *w, const id_table *t) {
  if (t->referenced == NULL) return SQLITE_OK;
  return exec_built(
      w,
      sqlite3_mprintf(
          "INSERT INTO sqlite_sequence(name, seq) SELECT %Q, 0"
          " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = %Q);"
          "UPDATE sqlite_sequence SET seq = max(seq, coalesce((%s), 0))"
          " WHERE name = %Q",
          t->name, t->name, t->referenced, t->name));
}

#define REBUILD_DEPENDENTS_MAX 32

/* The table rebuilt with AUTOINCREMENT: new table, rows copied with their
 * ids, old table dropped, new one renamed, indexes and triggers re-created. */
static int rebuild_autoincrement(sc__conn *w, const id_table *t) {
  char *dependent_ddl[REBUILD_DEPENDENTS_MAX];
  int n_dependents = 0, rc;
  char *ddl = autoincrement_ddl(w, t->name, &rc);
  if (rc == SQLITE_OK && ddl == NULL) return seed_sequence(w, t);
  if (rc == SQLITE_OK) {
    rc = read_dependents(w, t->name, dependent_ddl, REBUILD_DEPENDENTS_MAX,
                         &n_dependents);
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(w->h, ddl, NULL, NULL, NULL);
  if (rc == SQLITE_OK) {
    rc = exec_built(
        w, sqlite3_mprintf("INSERT INTO \"%w_rebuild\" SELECT * FROM \"%w\";"
                           "DROP TABLE \"%w\";"
                           "ALTER TABLE \"%w_rebuild\" RENAME TO \"%w\"",
                           t->name, t->name, t->name, t->name, t->name));
  }
  if (rc == SQLITE_OK) rc = create_dependents(w, dependent_ddl, n_dependents);
  if (rc == SQLITE_OK) rc = seed_sequence(w, t);
  for (int i = 0; i < n_dependents; i++)
    sqlite3_free(dependent_ddl[i]);
  sqlite3_free(ddl);
  return rc;
}

static int migrate_ids_never_reused(sc__conn *w) {
  int rc = SQLITE_OK;
  for (size_t i = 0;
       rc == SQLITE_OK && i < sizeof ID_TABLES / sizeof *ID_TABLES; i++) {
    rc = rebuild_autoincrement(w, &ID_TABLES[i]);
  }
  return rc;
}

/* Migration 4: a new event is three B-tree inserts, not four. The index
 * sc_outbox_open served only the claim's check that no earlier event of the
 * aggregate is undelivered, which now looks at the previous event alone through
 * the UNIQUE index (outbox.c says why that suffices). Without it the writer's
 * CPU per coupon issue fell from a median 9.62 to 7.98 us (bench_async, 7
 * alternated pairs, bench/README.md). IF EXISTS: a file whose version was
 * set back runs it again harmlessly. */
static const char MIGRATION_4[] = "DROP INDEX IF EXISTS sc_outbox_open;";

/* A migration is SQL, or a function for what SQL alone cannot do. */
typedef struct migration {
  const char *sql;
  int (*run)(sc__conn *w); /* an SQLite code */
} migration;

static const migration MIGRATIONS[] = {
    {MIGRATION_1, NULL},
    {MIGRATION_2, NULL},
    {NULL, migrate_ids_never_reused},
    {MIGRATION_4, NULL},
};
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
    const migration *m = &MIGRATIONS[v];
    rc = m->sql != NULL ? sqlite3_exec(w->h, m->sql, NULL, NULL, NULL)
                        : m->run(w);
  }
  if (rc == SQLITE_OK && *version < SCHEMA_VERSION) {
    rc = set_version(w, SCHEMA_VERSION);
  }
  return rc;
}

/* A table is rebuilt by dropping it and renaming its copy: foreign keys
 * would refuse the drop (other tables point at it), and the modern rename
 * would check every view and trigger of the host's file against a schema
 * that is midway. Both settings only change outside a transaction. */
static const char SQL_REBUILD_MODE[] =
    "PRAGMA foreign_keys = OFF; PRAGMA legacy_alter_table = ON";
static const char SQL_NORMAL_MODE[] =
    "PRAGMA foreign_keys = ON; PRAGMA legacy_alter_table = OFF";

const char *sc__schema_sql(int version) {
  if (version < 1 || version > SCHEMA_VERSION) return NULL;
  return MIGRATIONS[version - 1].sql;
}

int sc__schema_version(void) {
  return SCHEMA_VERSION;
}

static int migrate(sc__conn *w) {
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

int sc__schema_migrate(sc__conn *w) {
  int rc = sqlite3_exec(w->h, SQL_REBUILD_MODE, NULL, NULL, NULL);
  int st = rc == SQLITE_OK ? migrate(w) : SC_OK;
  /* Always back: a writer without foreign keys would go on unnoticed. */
  int back = sqlite3_exec(w->h, SQL_NORMAL_MODE, NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = back;
  if (st == SC_OK && rc != SQLITE_OK) {
    st = sc__fail(sc__status_from_sqlite(rc), "%s: cannot set up schema: %s",
                  w->db->path, sqlite3_errmsg(w->h));
  }
  return st;
}
