/* SQLite connections: the library's pragmas, bounded exponential backoff on
 * another process's lock, the prepared-statement cache and the read pool. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg/pg.h"
#include "metrics.h"

/* Backoff between attempts to take a lock another process holds: doubling
 * from 1 ms to 64 ms, with jitter so that several waiting processes do not
 * retry in step. */
#define BACKOFF_FIRST_MS 1
#define BACKOFF_CAP_MS 64

static int busy_backoff(void *ud, int attempts) {
  sc__conn *c = ud;
  int64_t now = sc__monotonic_ns();
  if (attempts == 0) c->busy_started_ns = now;
  int64_t waited_ms = (now - c->busy_started_ns) / 1000000;
  if (waited_ms >= c->db->opts.busy_timeout_ms) return 0; /* give up: BUSY */
  int64_t delay = BACKOFF_FIRST_MS << (attempts < 6 ? attempts : 6);
  if (delay > BACKOFF_CAP_MS) delay = BACKOFF_CAP_MS;
  delay = delay / 2 + (int64_t)(rand() % (int)(delay / 2 + 1));
  if (delay > c->db->opts.busy_timeout_ms - waited_ms) {
    delay = c->db->opts.busy_timeout_ms - waited_ms;
  }
  sc__sleep_ms(delay > 0 ? delay : 1);
  return 1;
}

int sc__exec(sc__conn *c, const char *sql) {
  sqlite3_stmt *st = sc__stmt(c, sql);
  if (st == NULL) return sqlite3_errcode(c->h);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

sqlite3_stmt *sc__stmt(sc__conn *c, const char *sql) {
  size_t slot = ((uintptr_t)sql >> 3) & (SC__STMT_CACHE - 1);
  for (size_t i = 0; i < SC__STMT_CACHE; i++) {
    size_t k = (slot + i) & (SC__STMT_CACHE - 1);
    if (c->cache[k].sql == sql) {
      sqlite3_stmt *st = c->cache[k].stmt;
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      return st;
    }
    if (c->cache[k].sql == NULL) {
      sqlite3_stmt *st = NULL;
      if (sqlite3_prepare_v3(c->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                             NULL) != SQLITE_OK) {
        return NULL;
      }
      c->cache[k].sql = sql;
      c->cache[k].stmt = st;
      return st;
    }
  }
  /* More distinct statements than the cache holds: a library bug. */
  return NULL;
}

/* temp_store=MEMORY keeps the writer's statement and savepoint journals
 * in memory: Debian's SQLite (TEMP_STORE=1) spills them to a temp file past
 * 64 KiB, which cost a fifth of the writer's CPU per checkout (measured in
 * bench_order). It is this connection's setting only. Measured and left as
 * they are, for want of an effect on this workload: secure_delete (a
 * safety setting of the host's SQLite, kept), cache_size beyond 16 MB,
 * mmap_size, and foreign_keys (kept on). */
static const char PRAGMAS_FULL[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
    "PRAGMA foreign_keys=ON; PRAGMA cache_size=-16000;"
    "PRAGMA temp_store=MEMORY;";
static const char PRAGMAS_NORMAL[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "PRAGMA foreign_keys=ON; PRAGMA cache_size=-16000;"
    "PRAGMA temp_store=MEMORY;";
static const char PRAGMAS_READ[] =
    "PRAGMA foreign_keys=ON; PRAGMA query_only=1; PRAGMA cache_size=-4000;";

int sc__conn_open(sc_db *db, int flags, sc__conn **out) {
  *out = NULL;
  sc__conn *c = sc__calloc(1, sizeof *c);
  if (c == NULL) return sc__fail(SC_NOMEM, "cannot allocate a connection");
  c->db = db;
  /* Through the timing VFS: the writer's and checkpoint thread's fsyncs are
   * measured for the slow-commit recorder (iotime.c). */
  int rc = sqlite3_open_v2(db->path, &c->h, flags | SQLITE_OPEN_NOMUTEX,
                           sc__io_vfs());
  if (rc != SQLITE_OK) {
    int st = sc__fail(sc__status_from_sqlite(rc), "cannot open %s: %s",
                      db->path, c->h ? sqlite3_errmsg(c->h) : "out of memory");
    sc__conn_close(c);
    return st;
  }
  sqlite3_extended_result_codes(c->h, 1);
  sqlite3_busy_handler(c->h, busy_backoff, c);
  const char *pragmas = PRAGMAS_READ;
  if (!(flags & SQLITE_OPEN_READONLY) && (flags & SQLITE_OPEN_CREATE)) {
    pragmas = db->opts.durability == SC_DURABILITY_NORMAL ? PRAGMAS_NORMAL
                                                          : PRAGMAS_FULL;
  }
  char *err = NULL;
  rc = sqlite3_exec(c->h, pragmas, NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    int st = sc__fail(sc__status_from_sqlite(rc), "cannot set up %s: %s",
                      db->path, err ? err : sqlite3_errstr(rc));
    sqlite3_free(err);
    sc__conn_close(c);
    return st;
  }
  *out = c;
  return SC_OK;
}

void sc__conn_close(sc__conn *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < SC__STMT_CACHE; i++) {
    sqlite3_finalize(c->cache[i].stmt);
  }
  sqlite3_close(c->h);
  sc__free(c);
}

int sc__read_acquire(sc_db *db, sc__conn **out) {
  /* Only SQLite-file features read through these (backup, repair, the
   * outbox listings, ...); the PostgreSQL backend reads with its own. */
  if (db->pg != NULL) {
    return sc__fail(SC_MISUSE, "this call is not supported on PostgreSQL yet");
  }
  /* Holding a read connection counts as a call in progress: sc_close waits
   * for it before closing the pool. */
  int rc = sc__call_enter(db);
  if (rc != SC_OK) return rc;
  pthread_mutex_lock(&db->rlock);
  sc__conn *c = db->ridle;
  if (c != NULL) {
    db->ridle = c->next_idle;
    db->nidle--;
  }
  pthread_mutex_unlock(&db->rlock);
  if (c != NULL) {
    *out = c;
    return SC_OK;
  }
  /* A read connection is opened read-write without CREATE: WAL readers need
   * to write the -shm index, and query_only forbids changes. */
  rc = sc__conn_open(db, SQLITE_OPEN_READWRITE, out);
  if (rc != SC_OK) sc__call_leave(db);
  return rc;
}

void sc__read_release(sc_db *db, sc__conn *c) {
  if (!sqlite3_get_autocommit(c->h)) sqlite3_exec(c->h, "ROLLBACK", 0, 0, 0);
  /* A connection still inside a transaction (its ROLLBACK failed for want
   * of memory) is closed, not pooled: the next reader's BEGIN would fail,
   * and it would pin an old snapshot. */
  bool reusable = sqlite3_get_autocommit(c->h);
  pthread_mutex_lock(&db->rlock);
  if (reusable && db->nidle < db->opts.read_pool_max) {
    c->next_idle = db->ridle;
    db->ridle = c;
    db->nidle++;
    c = NULL;
  }
  pthread_mutex_unlock(&db->rlock);
  sc__conn_close(c);
  sc__call_leave(db);
}

int sc__read_row(sc_db *db, const char *sql, sc_id id, int64_t *cols, int ncols,
                 const char *what) {
  if (db->pg != NULL) return sc__pg_read_row(db, sql, id, cols, ncols, what);
  sc__conn *c;
  int rc = sc__read_acquire(db, &c);
  if (rc != SC_OK) return rc;
  sqlite3_stmt *st = sc__stmt(c, sql);
  int step = st ? SQLITE_OK : sqlite3_errcode(c->h);
  if (st != NULL) {
    sqlite3_bind_int64(st, 1, id);
    step = sqlite3_step(st);
  }
  if (step == SQLITE_ROW) {
    for (int i = 0; i < ncols; i++)
      cols[i] = sqlite3_column_int64(st, i);
    rc = SC_OK;
  } else if (step == SQLITE_DONE) {
    rc = sc__fail(SC_NOT_FOUND, "%s %lld not found", what, (long long)id);
  } else {
    rc = sc__fail(sc__status_from_sqlite(step), "reading %s %lld: %s", what,
                  (long long)id, sqlite3_errmsg(c->h));
  }
  if (st != NULL) sqlite3_reset(st);
  sc__read_release(db, c);
  return rc;
}

int sc__op_fail_sqlite(sc__op *op, sc__conn *w, int rc, const char *what) {
  /* A statement that could not be prepared leaves its code on the handle. */
  if (rc == SQLITE_OK || rc == SQLITE_ERROR)
    rc = sqlite3_extended_errcode(w->h);
  return sc__op_fail(op, sc__status_from_sqlite(rc), "%s: %s", what,
                     sqlite3_errmsg(w->h));
}
