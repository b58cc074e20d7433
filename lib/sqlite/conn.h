/* The SQLite engine below the writer: connections with their statement
 * caches, the read pool, the schema, and the transaction of a batch
 * (batch.c). */
#ifndef SC_SQLITE_CONN_H
#define SC_SQLITE_CONN_H

#include <sqlite3.h>

#include "base.h"

typedef struct sc__op sc__op;

/* ---- connections (sqlite/conn.c)
 * ---------------------------------------------- */

#define SC__STMT_CACHE                                   \
  128 /* power of two; more SQL texts than this is a bug \
       */

typedef struct sc__conn {
  sqlite3 *h;
  sc_db *db;
  int64_t busy_started_ns; /* when the current wait for a lock began */
  struct {
    const char *sql; /* the SQL constant's address is the key */
    sqlite3_stmt *stmt;
  } cache[SC__STMT_CACHE];
  struct sc__conn *next_idle;
} sc__conn;

/* Opens a connection with the library's pragmas. flags are SQLITE_OPEN_*. */
int sc__conn_open(sc_db *db, int flags, sc__conn **out);
void sc__conn_close(sc__conn *c);
/* The prepared statement for sql (a named constant: it is cached by its
 * address), reset and with its bindings cleared. NULL on failure, with the
 * error left on the connection (sqlite3_errcode). */
sqlite3_stmt *sc__stmt(sc__conn *c, const char *sql);
/* Runs a statement with no result rows; SQLITE_OK/DONE -> SQLITE_OK. */
int sc__exec(sc__conn *c, const char *sql);

/* Read connections, pooled: WAL lets them read beside the writer. */
int sc__read_acquire(sc_db *db, sc__conn **out);
void sc__read_release(sc_db *db, sc__conn *c);
/* Reads the int64 columns of the single row that sql (one parameter: id)
 * returns, on a read connection. SC_NOT_FOUND (with "<what> <id> not found")
 * when there is none. The getters of every module share it. */
int sc__read_row(sc_db *db, const char *sql, sc_id id, int64_t *cols, int ncols,
                 const char *what);

/* ---- schema (sqlite/schema.c)
 * ------------------------------------------------- */

int sc__schema_migrate(sc__conn *w);
/* The schema version this library migrates to, and the SQL of migration
 * version (NULL if it is code, not SQL), for the tests of migrations. */
int sc__schema_version(void);
const char *sc__schema_sql(int version);

/* Fails an operation after an SQLite error on the writer connection. */
int sc__op_fail_sqlite(sc__op *op, sc__conn *w, int rc, const char *what);

/* ---- the transaction of a batch (sqlite/batch.c) ----------------------- */

/* Prepares the writer connection for batches (open.c). */
int sc__sqlite_writer_init(sc_db *db);
/* Commits batch in one write transaction, in this process's write turn;
 * every operation gets its status. Returns whether it committed. */
bool sc__sqlite_run_batch(sc_db *db, sc__op *batch);

#endif /* SC_SQLITE_CONN_H */
