/* Opening and closing a database: the options (checked, then defaulted),
 * the connections, the schema, the threads; and sc_close, which waits for
 * the calls in progress and drains the queue before it joins them. */
#include <stddef.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "metrics.h"
#include "pg/pg.h"
#include "sqlite/checkpoint.h"
#include "sqlite/turn.h"

#define DEFAULT_BATCH_MAX 512
#define DEFAULT_BUSY_TIMEOUT_MS 30000
#define DEFAULT_QUEUE_MAX 4096
#define QUEUE_MAX_MAX (1 << 24)
#define DEFAULT_READ_POOL_MAX 64
#define DEFAULT_ORDER_TTL_MS (15 * 60 * 1000)
#define DEFAULT_OUTBOX_MAX_ATTEMPTS 10
#define DEFAULT_OUTBOX_RETRY_BASE_MS 100
#define DEFAULT_OUTBOX_RETRY_MAX_MS 60000
#define DEFAULT_OUTBOX_RETENTION_MS (7LL * 24 * 3600 * 1000)
/* The size of the first sc_options with a size field (a zeroed struct,
 * size 0, is read as this one). Frozen at 1.0: fields added later go after
 * slow_commit_ms and are not part of it. */
#define OPTIONS_SIZE_V1 (offsetof(sc_options, slow_commit_ms) + sizeof(int64_t))

void sc_options_init_sized(sc_options *opts, size_t size) {
  if (opts == NULL || size < sizeof opts->size) return;
  /* Only the caller's bytes: an older caller's struct is smaller. Every
   * default is 0 (SC_DURABILITY_FULL included). */
  memset(opts, 0, size);
  opts->size = size;
}

void(sc_options_init)(sc_options *opts) {
  sc_options_init_sized(opts, sizeof *opts);
}

/* Refuses an option outside lo..hi, naming it. */
static int option_in(const char *name, int64_t v, int64_t lo, int64_t hi,
                     const char *why) {
  if (v >= lo && v <= hi) return SC_OK;
  if (hi == INT64_MAX) {
    return sc__fail(SC_INVALID,
                    "sc_open: option %s is %lld; it must be >= %lld%s", name,
                    (long long)v, (long long)lo, why);
  }
  return sc__fail(SC_INVALID,
                  "sc_open: option %s is %lld; it must be in %lld..%lld%s",
                  name, (long long)v, (long long)lo, (long long)hi, why);
}

/* Checks every numeric option (0 means the default for all of them). */
static int options_check(const sc_options *o) {
  if (o->durability != SC_DURABILITY_FULL &&
      o->durability != SC_DURABILITY_NORMAL) {
    return sc__fail(SC_INVALID,
                    "sc_open: option durability is %d; it must be "
                    "SC_DURABILITY_FULL or SC_DURABILITY_NORMAL",
                    o->durability);
  }
  /* queue_max bounds memory, and 80% of it is computed in an int. */
  const struct {
    const char *name;
    int64_t v, lo, hi;
    const char *why;
  } range[] = {
      {"batch_max", o->batch_max, 0, INT_MAX, ""},
      {"busy_timeout_ms", o->busy_timeout_ms, 0, INT_MAX, ""},
      {"queue_max", o->queue_max, 0, QUEUE_MAX_MAX, ""},
      {"read_pool_max", o->read_pool_max, 0, INT_MAX, ""},
      {"default_order_ttl_ms", o->default_order_ttl_ms, 0, INT64_MAX, ""},
      {"outbox_max_attempts", o->outbox_max_attempts, 0, INT_MAX, ""},
      {"outbox_retry_base_ms", o->outbox_retry_base_ms, 0, INT64_MAX, ""},
      {"outbox_retry_max_ms", o->outbox_retry_max_ms, 0, INT64_MAX, ""},
      {"outbox_retention_ms", o->outbox_retention_ms, 0, INT64_MAX, ""},
      {"alert_window_ms", o->alert_window_ms, 0, INT64_MAX, ""},
      {"alert_min_samples", o->alert_min_samples, 0, INT_MAX, ""},
      {"slow_commit_ms", o->slow_commit_ms, INT64_MIN, INT64_MAX / 1000000,
       " (in nanoseconds it must fit an int64; negative = off)"},
      {"alert_queue_depth", o->alert_queue_depth, INT_MIN,
       o->queue_max ? o->queue_max : DEFAULT_QUEUE_MAX,
       " (at most queue_max: the queue never holds more; negative = off)"},
  };
  for (size_t i = 0; i < sizeof range / sizeof *range; i++) {
    int rc = option_in(range[i].name, range[i].v, range[i].lo, range[i].hi,
                       range[i].why);
    if (rc != SC_OK) return rc;
  }
  /* A share; negative turns the alert off. NaN is neither. */
  if (!(o->alert_error_rate <= 1.0)) {
    return sc__fail(SC_INVALID,
                    "sc_open: option alert_error_rate is %g; it must be a "
                    "share, at most 1 (0 = default, negative = off)",
                    o->alert_error_rate);
  }
  return SC_OK;
}

/* Checks the options, then fills the zero fields with defaults. */
static int options_resolve(const sc_options *in, sc_options *o) {
  sc_options_init_sized(o, sizeof *o);
  if (in != NULL) {
    int rc =
        sc__struct_in("sc_open", o, sizeof *o, in, in->size, OPTIONS_SIZE_V1);
    if (rc != SC_OK) return rc;
    o->size = sizeof *o;
  }
  int rc = options_check(o);
  if (rc != SC_OK) return rc;
  if (o->outbox_retention_ms == 0) {
    o->outbox_retention_ms = DEFAULT_OUTBOX_RETENTION_MS;
  }
  if (o->batch_max == 0) o->batch_max = DEFAULT_BATCH_MAX;
  if (o->busy_timeout_ms == 0) o->busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS;
  if (o->queue_max == 0) o->queue_max = DEFAULT_QUEUE_MAX;
  if (o->read_pool_max == 0) o->read_pool_max = DEFAULT_READ_POOL_MAX;
  if (o->default_order_ttl_ms == 0) {
    o->default_order_ttl_ms = DEFAULT_ORDER_TTL_MS;
  }
  if (o->outbox_max_attempts == 0) {
    o->outbox_max_attempts = DEFAULT_OUTBOX_MAX_ATTEMPTS;
  }
  if (o->outbox_retry_base_ms == 0) {
    o->outbox_retry_base_ms = DEFAULT_OUTBOX_RETRY_BASE_MS;
  }
  if (o->outbox_retry_max_ms == 0) {
    o->outbox_retry_max_ms = DEFAULT_OUTBOX_RETRY_MAX_MS;
  }
  return SC_OK;
}

int64_t sc__now_ms(sc_db *db) {
  return db->opts.clock_ms ? db->opts.clock_ms(db->opts.clock_ud)
                           : sc__wall_ms();
}

/* ---- calls in progress, for sc_close ----------------------------------- */

int sc__call_enter(sc_db *db) {
  if (atomic_load(&db->closing)) {
    return sc__fail(SC_CLOSED, "the database is closing");
  }
  atomic_fetch_add(&db->calls, 1);
  if (atomic_load(&db->closing)) {
    atomic_fetch_sub(&db->calls, 1);
    return sc__fail(SC_CLOSED, "the database is closing");
  }
  return SC_OK;
}

void sc__call_leave(sc_db *db) {
  atomic_fetch_sub(&db->calls, 1);
}

/* ---- open and close ----------------------------------------------------- */

/* The checkpointer stops once the writer is gone, before its connection. */
static void stop_checkpointer(sc_db *db) {
  sc__checkpointer_stop(db->checkpointer, db->wconn ? db->wconn->h : NULL);
  db->checkpointer = NULL;
}

static void db_free(sc_db *db) {
  sc__pg_close(db);
  sc__conn_close(db->wconn);
  sc__turn_close(db->turn);
  while (db->ridle != NULL) {
    sc__conn *c = db->ridle;
    db->ridle = c->next_idle;
    sc__conn_close(c);
  }
  pthread_mutex_destroy(&db->qlock);
  pthread_cond_destroy(&db->qnonempty);
  pthread_cond_destroy(&db->qnonfull);
  pthread_mutex_destroy(&db->rlock);
  pthread_mutex_destroy(&db->hook_lock);
  pthread_mutex_destroy(&db->dlock);
  pthread_mutex_destroy(&db->complete_lock);
  pthread_cond_destroy(&db->dnonempty);
  sc__metrics_free(db);
  sc__free(db->path);
  sc__free(db);
}

/* The schema check at open writes (BEGIN IMMEDIATE), so it too waits for
 * the write turn: a process opening beside busy ones would otherwise starve
 * in the busy handler while they pass SQLite's lock among themselves. */
static int migrate_in_turn(sc_db *db) {
  char why[SC__ERRMSG_MAX];
  int rc =
      sc__turn_acquire(db->turn, db->opts.busy_timeout_ms, why, sizeof why);
  if (rc != SC_OK) return sc__fail(rc, "sc_open: %s", why);
  rc = sc__schema_migrate(db->wconn);
  sc__turn_release(db->turn);
  return rc;
}

/* The SQLite file's writer connection, schema, turn and checkpointer. */
static int open_sqlite(sc_db *db) {
  int rc = sc__turn_open(db->path, &db->turn);
  if (rc == SC_OK) {
    rc = sc__conn_open(db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                       &db->wconn);
  }
  if (rc == SC_OK) rc = migrate_in_turn(db);
  if (rc == SC_OK) rc = sc__sqlite_writer_init(db);
  if (rc == SC_OK) rc = sc__checkpointer_start(db, &db->checkpointer);
  return rc;
}

static int open_checked(const char *path, const sc_options *opts, sc_db **out) {
  if (path == NULL || path[0] == '\0') {
    return sc__fail(SC_INVALID, "sc_open: path is NULL or empty");
  }
  if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) {
    return sc__fail(SC_INVALID,
                    "sc_open: %s: the library needs a plain file name", path);
  }
  sc_options o;
  int rc = options_resolve(opts, &o);
  if (rc != SC_OK) return rc;
  sc_db *db = sc__calloc(1, sizeof *db);
  if (db == NULL) return sc__fail(SC_NOMEM, "sc_open: out of memory");
  db->opts = o;
  pthread_mutex_init(&db->qlock, NULL);
  pthread_cond_init(&db->qnonempty, NULL);
  pthread_condattr_t monotonic;
  pthread_condattr_init(&monotonic);
  pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
  pthread_cond_init(&db->qnonfull, &monotonic);
  pthread_condattr_destroy(&monotonic);
  pthread_mutex_init(&db->rlock, NULL);
  pthread_mutex_init(&db->hook_lock, NULL);
  pthread_mutex_init(&db->dlock, NULL);
  pthread_mutex_init(&db->complete_lock, NULL);
  pthread_cond_init(&db->dnonempty, NULL);
  db->path = sc__strdup(path);
  if (db->path == NULL || sc__metrics_init(db) != SC_OK) {
    db_free(db);
    return sc__fail(SC_NOMEM, "sc_open: out of memory");
  }
  rc = sc__pg_is_uri(path) ? sc__pg_open(db, path) : open_sqlite(db);
  if (rc == SC_OK) rc = sc__writer_start(db);
  if (rc != SC_OK) {
    sc__writer_stop(db, stop_checkpointer);
    sc__turn_discard(db->turn); /* a refused open leaves no turn file */
    db->turn = NULL;
    db_free(db);
    return rc;
  }
  *out = db;
  return SC_OK;
}

int sc_open(const char *path, const sc_options *opts, sc_db **out) {
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_open: out is NULL");
  *out = NULL;
  return open_checked(path, opts, out);
}

int sc_close(sc_db *db) {
  if (db == NULL) return SC_OK;
  /* A worker's loop still holds the handle, and until its close callback
   * its rounds in flight and its listener read it: like sqlite3_close with
   * statements open, refuse and keep the handle usable. */
  pthread_mutex_lock(&db->hook_lock);
  bool worker_attached = db->worker_attached;
  pthread_mutex_unlock(&db->hook_lock);
  if (worker_attached) {
    return sc__fail(SC_MISUSE,
                    "sc_close: a worker is still running; stop it first");
  }
  if (atomic_exchange(&db->closing, true)) {
    return sc__fail(SC_MISUSE, "sc_close: the database is already closing");
  }
  /* Calls already inside the library finish first: their operations are
   * queued and the writer is still running. */
  while (atomic_load(&db->calls) > 0)
    sc__sleep_ms(1);
  sc__writer_stop(db, stop_checkpointer);
  if (db->pg != NULL) {
    db_free(db);
    return SC_OK;
  }
  /* Fold the WAL back into the database so the file stands alone. */
  int rc = sqlite3_wal_checkpoint_v2(db->wconn->h, NULL,
                                     SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  int st = rc == SQLITE_OK || rc == SQLITE_BUSY
               ? SC_OK
               : sc__fail(sc__status_from_sqlite(rc), "sc_close: %s",
                          sqlite3_errmsg(db->wconn->h));
  db_free(db);
  return st;
}
