/* The engine: opening and closing a database, the bounded submission queue,
 * and the writer thread that commits queued operations in batches (group
 * commit): one BEGIN IMMEDIATE, the operations, one COMMIT, so one fsync
 * serves every operation of the batch. A batch that meets an unexpected
 * failure is rolled back and replayed with a SAVEPOINT per operation. */
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "checkpoint.h"
#include "metrics.h"
#include "turn.h"

#define DEFAULT_BATCH_MAX 512
#define WRITER_SPIN_NS 50000
#define DEFAULT_BUSY_TIMEOUT_MS 30000
#define DEFAULT_QUEUE_MAX 4096
#define QUEUE_MAX_MAX (1 << 24)
#define DEFAULT_READ_POOL_MAX 64
#define DEFAULT_ORDER_TTL_MS (15 * 60 * 1000)
#define DEFAULT_OUTBOX_MAX_ATTEMPTS 10
#define DEFAULT_OUTBOX_RETRY_BASE_MS 100
#define DEFAULT_OUTBOX_RETRY_MAX_MS 60000
#define DEFAULT_OUTBOX_RETENTION_MS (7LL * 24 * 3600 * 1000)

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";
static const char SQL_SAVEPOINT[] = "SAVEPOINT sc_op";
static const char SQL_RELEASE[] = "RELEASE sc_op";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO sc_op";

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

/* ---- failing an operation ---------------------------------------------- */

int sc__op_fail(sc__op *op, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(op->errmsg, sizeof op->errmsg, fmt, ap);
  va_end(ap);
  return status;
}

int sc__op_fail_sqlite(sc__op *op, sc__conn *w, int rc, const char *what) {
  /* A statement that could not be prepared leaves its code on the handle. */
  if (rc == SQLITE_OK || rc == SQLITE_ERROR)
    rc = sqlite3_extended_errcode(w->h);
  return sc__op_fail(op, sc__status_from_sqlite(rc), "%s: %s", what,
                     sqlite3_errmsg(w->h));
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

/* ---- the queue ---------------------------------------------------------- */

/* Queues op; with wait, a full queue is waited on (bounded), else refused
 * at once. */
static int submit(sc_db *db, sc__op *op, bool wait) {
  op->next = NULL;
  op->excluded = false;
  op->status = SC_OK;
  op->errmsg[0] = '\0';
  op->enqueued_ns = sc__monotonic_ns();
  pthread_mutex_lock(&db->qlock);
  if (!wait && db->qlen >= db->opts.queue_max && !db->stopping) {
    pthread_mutex_unlock(&db->qlock);
    return sc__fail(SC_BUSY, "the write queue is full (%d operations)",
                    db->opts.queue_max);
  }
  if (db->qlen >= db->opts.queue_max && !db->stopping) {
    /* Back-pressure, bounded: a caller waits for room at most
     * busy_timeout_ms, then hears SC_BUSY rather than hanging. */
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += db->opts.busy_timeout_ms / 1000;
    deadline.tv_nsec += (long)(db->opts.busy_timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000;
    }
    int wrc = 0;
    while (db->qlen >= db->opts.queue_max && !db->stopping && wrc == 0) {
      wrc = pthread_cond_timedwait(&db->qnonfull, &db->qlock, &deadline);
    }
    if (db->qlen >= db->opts.queue_max && !db->stopping) {
      pthread_mutex_unlock(&db->qlock);
      return sc__fail(SC_BUSY,
                      "the write queue stayed full (%d operations) for %d ms",
                      db->opts.queue_max, db->opts.busy_timeout_ms);
    }
  }
  if (db->stopping) {
    pthread_mutex_unlock(&db->qlock);
    return sc__fail(SC_CLOSED, "the database is closing");
  }
  if (db->qtail) {
    db->qtail->next = op;
  } else {
    db->qhead = op;
  }
  db->qtail = op;
  db->qlen++;
  atomic_store_explicit(&db->qcount, db->qlen, memory_order_relaxed);
  pthread_cond_signal(&db->qnonempty);
  pthread_mutex_unlock(&db->qlock);
  return SC_OK;
}

int sc__op_submit(sc_db *db, sc__op *op) {
  return submit(db, op, true);
}

int sc__op_try_submit(sc_db *db, sc__op *op) {
  return submit(db, op, false);
}

int sc__op_execute(sc_db *db, sc__op *op) {
  int rc = sc__call_enter(db);
  if (rc != SC_OK) return rc;
  op->done = NULL;
  if (sem_init(&op->wake, 0, 0) != 0) {
    sc__call_leave(db);
    return sc__fail(SC_ERROR, "sem_init: %s", strerror(errno));
  }
  rc = sc__op_submit(db, op);
  if (rc == SC_OK) {
    while (sem_wait(&op->wake) != 0 && errno == EINTR) {
    }
    rc = op->status;
    if (rc != SC_OK) sc__set_errmsg(op->errmsg);
  }
  sem_destroy(&op->wake);
  sc__call_leave(db);
  return rc;
}

/* ---- the writer --------------------------------------------------------- */

/* Takes up to batch_max operations off the queue, waiting for the first.
 * Returns NULL when the queue is drained and the db is stopping. */
static sc__op *queue_take_batch(sc_db *db, int *n_out) {
  /* A caller woken by the last commit often submits again at once: a short
   * spin picks its operation up without a futex wake-up (the caller's
   * signal finds no waiter). Bounded, so an idle writer still sleeps. */
  int64_t spin_until = sc__monotonic_ns() + WRITER_SPIN_NS;
  while (atomic_load_explicit(&db->qcount, memory_order_relaxed) == 0 &&
         sc__monotonic_ns() < spin_until) {
    sched_yield();
  }
  pthread_mutex_lock(&db->qlock);
  while (db->qhead == NULL && !db->stopping) {
    pthread_cond_wait(&db->qnonempty, &db->qlock);
  }
  sc__op *head = db->qhead, *last = NULL;
  int n = 0;
  for (sc__op *op = head; op != NULL && n < db->opts.batch_max; op = op->next) {
    last = op;
    n++;
  }
  if (last != NULL) {
    db->qhead = last->next;
    if (db->qhead == NULL) db->qtail = NULL;
    last->next = NULL;
    db->qlen -= n;
    atomic_store_explicit(&db->qcount, db->qlen, memory_order_relaxed);
    pthread_cond_broadcast(&db->qnonfull);
  }
  pthread_mutex_unlock(&db->qlock);
  *n_out = n;
  return head;
}

static void op_complete(sc__op *op) {
  if (op->done) {
    op->done(op);
  } else {
    sem_post(&op->wake);
  }
}

/* Runs one operation in its own savepoint. Returns SC_OK while the
 * transaction lives, else the status that lost it: SQLite rolls everything
 * back on some errors (I/O, out of memory), and an operation whose changes
 * cannot be rolled back alone (ROLLBACK TO failed) must take the whole
 * transaction with it, or its half-done changes would be committed. */
static int run_in_savepoint(sc_db *db, sc__op *op) {
  sc__conn *w = db->wconn;
  int rc = sc__exec(w, SQL_SAVEPOINT);
  if (rc != SQLITE_OK) {
    sc__op_fail_sqlite(op, w, rc, "savepoint");
    op->status = sc__status_from_sqlite(rc);
    return sqlite3_get_autocommit(w->h) ? op->status : SC_OK;
  }
  int events_before = db->batch_events;
  op->status = op->run(db, w, op);
  if (op->status != SC_OK) {
    db->batch_events = events_before;
    if (sqlite3_get_autocommit(w->h)) return op->status;
    rc = sc__exec(w, SQL_ROLLBACK_TO);
    if (rc != SQLITE_OK) return sc__status_from_sqlite(rc);
  }
  sc__exec(w, SQL_RELEASE);
  return sqlite3_get_autocommit(w->h) ? SC_IOERR : SC_OK;
}

/* ---- a batch that did not commit ---------------------------------------
 * The one place that decides what the operations of a failed batch hear.
 * Every operation of the batch gets the batch's status, refusals included:
 * a refusal may have rested on an earlier operation of the batch, which did
 * not commit (or, for SC_AMBIGUOUS, may or may not have). The operation
 * whose own failure lost the transaction (culprit) keeps its message. */

static void fail_batch(sc__op *batch, const sc__op *culprit, int status,
                       const char *why) {
  for (sc__op *op = batch; op != NULL; op = op->next) {
    if (op == culprit && op->status == status) continue;
    if (status == SC_AMBIGUOUS) {
      sc__op_fail(op, status, "%s", why);
    } else {
      sc__op_fail(op, status, "%s (the operation was not committed)", why);
    }
    op->status = status;
  }
}

/* Whether a COMMIT that failed with rc may have made its batch durable all
 * the same. In WAL mode SQLite commits by appending the batch's pages to the
 * log, the commit record last (in the last frame's header, with a checksum
 * over the frame), then syncing the log, then updating the shared index.
 * - BUSY, or any failure that leaves the transaction open: nothing was
 *   appended as committed; SQLite keeps the transaction for a retry.
 * - A write refused (I/O error or disk full): the frame being written is
 *   not whole, and the commit record is in the last frame, so recovery never
 *   takes the batch; unless the log pads commits to a sector with copies of
 *   the commit frame, written after it.
 * - Anything else (a failed sync, a failure updating the index, out of
 *   memory there) may come after the commit record reached the file: a
 *   crash before the next commit would bring the batch back. */
static bool commit_may_be_durable(const sc_db *db, int rc, bool still_open) {
  if (still_open) return false;
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return false;
    case SQLITE_FULL:
      return db->wal_padded;
    default:
      break;
  }
  if (rc == SQLITE_IOERR_WRITE) return db->wal_padded;
  return true;
}

static bool sync_failed(int rc) {
  return rc == SQLITE_IOERR_FSYNC || rc == SQLITE_IOERR_DIR_FSYNC;
}

/* A COMMIT failed with rc: rolls back what is left and fails the batch,
 * with SC_AMBIGUOUS when it may be durable all the same. After a failed
 * sync the handle is poisoned: the kernel may have dropped the pages it
 * could not write and a later fsync would succeed without them (PostgreSQL
 * learned this in 2018), so nothing is written through this handle again. */
static void commit_failed(sc_db *db, sc__op *batch, int rc) {
  sc__conn *w = db->wconn;
  char why[SC__ERRMSG_MAX];
  bool still_open = !sqlite3_get_autocommit(w->h);
  bool ambiguous = commit_may_be_durable(db, rc, still_open);
  if (ambiguous && sync_failed(rc)) db->poisoned = true;
  if (ambiguous) {
    snprintf(why, sizeof why,
             "commit: %s: the outcome is unknown (it may or may not be "
             "durable); retry with the same idempotency key, or read first%s",
             sqlite3_errmsg(w->h),
             db->poisoned ? "; this handle refuses writes until reopened" : "");
  } else {
    snprintf(why, sizeof why, "commit: %s", sqlite3_errmsg(w->h));
  }
  if (still_open) sc__exec(w, SQL_ROLLBACK);
  fail_batch(batch, NULL, ambiguous ? SC_AMBIGUOUS : sc__status_from_sqlite(rc),
             why);
}

/* ---- the fast path and its replay ---------------------------------------
 * Operations validate, then apply: a refusal comes before the operation's
 * first write. So the batch runs straight in its transaction, without a
 * savepoint per operation (each costs a copy of every page it touches).
 * What that rule does not cover, the engine catches: an operation that
 * failed after writing (a bug, a damaged row), or with an error that may
 * have left the connection in doubt (I/O, out of memory, corruption), or
 * that lost the transaction. Then the whole batch is rolled back and run
 * again on the slow path, each operation in its own savepoint, so that only
 * the failing one fails. */

/* Whether a failed operation may stand in a batch that goes on: it wrote
 * nothing, the transaction lives, and its status is a refusal, not an
 * error that may have left the connection in doubt. */
static bool clean_refusal(sc__conn *w, int status, int64_t changes_before) {
  switch (status) {
    case SC_ERROR:
    case SC_NOMEM:
    case SC_IOERR:
    case SC_CORRUPT:
    case SC_BUSY:
    case SC_MISUSE:
    case SC_AMBIGUOUS:
      return false;
    default:
      return sqlite3_total_changes64(w->h) == changes_before &&
             !sqlite3_get_autocommit(w->h);
  }
}

/* Runs the batch straight in the open transaction. Returns false as soon as
 * an operation failed in a way that needs the slow path; the caller then
 * rolls the batch back. */
static bool run_fast(sc_db *db, sc__op *batch) {
  sc__conn *w = db->wconn;
  for (sc__op *op = batch; op != NULL; op = op->next) {
    int64_t changes = sqlite3_total_changes64(w->h);
    int events_before = db->batch_events;
    op->status = op->run(db, w, op);
    if (op->status == SC_OK) continue;
    db->batch_events = events_before;
    if (!clean_refusal(w, op->status, changes)) return false;
  }
  return true;
}

/* Forgets the outcome of a failed run of the batch before it runs again,
 * except for the operations that lost a transaction on the slow path. */
static void batch_reset(sc_db *db, sc__op *batch) {
  for (sc__op *op = batch; op != NULL; op = op->next) {
    if (op->excluded) continue;
    op->status = SC_OK;
    op->errmsg[0] = '\0';
  }
  db->batch_events = 0;
}

/* Begins the write transaction; on failure every operation still in the
 * batch fails with it. */
static bool begin(sc_db *db, sc__op *batch, const char *what) {
  sc__conn *w = db->wconn;
  int rc = sc__exec(w, SQL_BEGIN);
  if (rc == SQLITE_OK) return true;
  char why[SC__ERRMSG_MAX];
  snprintf(why, sizeof why, "%s: %s", what, sqlite3_errmsg(w->h));
  fail_batch(batch, NULL, sc__status_from_sqlite(rc), why);
  return false;
}

/* The slow path: the batch runs again, each operation in its own
 * savepoint, so a failing one is rolled back alone. An operation during
 * which the transaction itself was lost (SQLite abandons it on some I/O
 * and out-of-memory errors, or its savepoint could not be rolled back)
 * keeps its failure and is left out, and the others run again without it:
 * each round leaves out one more, so it ends. Returns true with the
 * transaction open and ready to commit. */
static bool run_slow(sc_db *db, sc__op *batch) {
  sc__conn *w = db->wconn;
  atomic_fetch_add(&db->replays, 1);
  for (;;) {
    batch_reset(db, batch);
    if (!sqlite3_get_autocommit(w->h)) sc__exec(w, SQL_ROLLBACK);
    if (!begin(db, batch, "replay")) return false;
    sc__op *culprit = NULL;
    int lost = SC_OK;
    for (sc__op *op = batch; op != NULL && lost == SC_OK; op = op->next) {
      if (op->excluded) continue;
      lost = run_in_savepoint(db, op);
      culprit = op;
    }
    if (lost == SC_OK) return true;
    if (culprit->status == SC_OK) {
      sc__op_fail(culprit, lost, "transaction lost: %s", sqlite3_errmsg(w->h));
      culprit->status = lost;
    }
    culprit->excluded = true;
  }
}

/* Runs the batch in one transaction; returns true if it committed. */
static bool commit_batch(sc_db *db, sc__op *batch) {
  sc__conn *w = db->wconn;
  db->batch_events = 0;
  /* A batch whose ROLLBACK failed (out of memory) left its transaction open;
   * its operations were all reported failed, so it goes now, or every later
   * BEGIN would fail. */
  if (!sqlite3_get_autocommit(w->h)) sc__exec(w, SQL_ROLLBACK);
  if (!begin(db, batch, "begin")) return false;
  if (!run_fast(db, batch) && !run_slow(db, batch)) {
    db->batch_events = 0;
    return false;
  }
  int rc = sc__exec(w, SQL_COMMIT);
  if (rc == SQLITE_OK) return true;
  commit_failed(db, batch, rc);
  db->batch_events = 0;
  return false;
}

/* Prepares the statements a failing batch needs, while memory is there:
 * preparing ROLLBACK only when out of memory would fail and leave the
 * transaction open. */
static int writer_prepare(sc__conn *w) {
  const char *const sql[] = {SQL_BEGIN,     SQL_COMMIT,  SQL_ROLLBACK,
                             SQL_SAVEPOINT, SQL_RELEASE, SQL_ROLLBACK_TO};
  for (size_t i = 0; i < sizeof sql / sizeof *sql; i++) {
    if (sc__stmt(w, sql[i]) == NULL) {
      return sc__fail(sc__status_from_sqlite(sqlite3_errcode(w->h)),
                      "sc_open: cannot prepare %s: %s", sql[i],
                      sqlite3_errmsg(w->h));
    }
  }
  return SC_OK;
}

/* Whether the WAL pads commits to a sector (see commit_may_be_durable):
 * SQLite does unless the database file's device has powersafe overwrite.
 * Unknown counts as padded, the cautious side. */
static bool wal_pads_commits(sc__conn *w) {
  sqlite3_file *f = NULL;
  if (sqlite3_file_control(w->h, "main", SQLITE_FCNTL_FILE_POINTER, &f) !=
          SQLITE_OK ||
      f == NULL || f->pMethods == NULL) {
    return true;
  }
  return !(f->pMethods->xDeviceCharacteristics(f) &
           SQLITE_IOCAP_POWERSAFE_OVERWRITE);
}

/* Hands a finished batch to the completer thread. */
static void completions_push(sc_db *db, sc__op *batch) {
  sc__op *last = batch;
  while (last->next != NULL)
    last = last->next;
  pthread_mutex_lock(&db->dlock);
  if (db->dtail) {
    db->dtail->next = batch;
  } else {
    db->dhead = batch;
  }
  db->dtail = last;
  pthread_cond_signal(&db->dnonempty);
  pthread_mutex_unlock(&db->dlock);
}

/* Wakes the callers of completed operations. Reads next first: a woken
 * caller may free its op at once. The caller holds complete_lock: the
 * alert window takes one completing thread at a time. */
static void complete_ops(sc_db *db, sc__op *ops) {
  for (sc__op *op = ops, *next; op != NULL; op = next) {
    next = op->next;
    sc__metrics_op(db, op->kind, op->status,
                   sc__monotonic_ns() - op->enqueued_ns);
    op_complete(op);
  }
}

static void *completer_main(void *arg) {
  sc_db *db = arg;
  pthread_setname_np(pthread_self(), "sc-complete");
  for (;;) {
    pthread_mutex_lock(&db->dlock);
    while (db->dhead == NULL && !db->dstopping) {
      pthread_cond_wait(&db->dnonempty, &db->dlock);
    }
    sc__op *ops = db->dhead;
    db->dhead = db->dtail = NULL;
    pthread_mutex_unlock(&db->dlock);
    if (ops == NULL) return NULL; /* stopping, and nothing left */
    pthread_mutex_lock(&db->complete_lock);
    complete_ops(db, ops);
    pthread_mutex_unlock(&db->complete_lock);
  }
}

static void commit_hook_call(sc_db *db, bool committed, int events) {
  pthread_mutex_lock(&db->hook_lock);
  if (db->commit_hook != NULL && committed) {
    db->commit_hook(db->commit_hook_ud, events);
  }
  pthread_mutex_unlock(&db->hook_lock);
}

/* A batch this small is completed by the writer itself: handing it to the
 * completer would cost its callers a third cross-CPU wake-up (caller ->
 * writer -> completer -> caller) to save the writer a few sem_posts. A
 * large batch goes to the completer, so the writer starts the next batch
 * (and its fsync) without waking every caller first. 64 rather than 8:
 * at 16 and 64 callers (batches of about 10 and 33) that took the
 * process's CPU per coupon issue from a median 41.5 to 33.8 us at 64
 * callers and the issue rate up by a median 1.2x to 1.8x (bench_coupon,
 * 5 alternated pairs on a loaded 2-core machine). */
#define INLINE_COMPLETE_MAX 64

/* Takes this process's turn among the libshopcore processes writing the
 * file (turn.c), for one batch; a batch that waited past busy_timeout_ms
 * fails with SC_BUSY, uncommitted. */
static bool take_write_turn(sc_db *db, sc__op *batch) {
  char why[SC__ERRMSG_MAX];
  /* A poisoned handle (commit_failed) writes nothing, so needs no turn. */
  if (db->poisoned) {
    fail_batch(batch, NULL, SC_AMBIGUOUS,
               "refused, nothing done: an earlier commit's fsync failed on "
               "this handle, whose writes may no longer be durable; close "
               "and reopen the database (reads still work)");
    return false;
  }
  int rc =
      sc__turn_acquire(db->turn, db->opts.busy_timeout_ms, why, sizeof why);
  if (rc != SC_OK) fail_batch(batch, NULL, rc, why);
  return rc == SC_OK;
}

static void run_batch(sc_db *db, sc__op *batch, int n) {
  int64_t begin_ns = sc__monotonic_ns();
  bool committed = false;
  if (take_write_turn(db, batch)) {
    committed = commit_batch(db, batch);
    sc__turn_release(db->turn);
  }
  sc__metrics_batch(db, n, sc__monotonic_ns() - begin_ns);
  int events = db->batch_events;
  if (n <= INLINE_COMPLETE_MAX &&
      pthread_mutex_trylock(&db->complete_lock) == 0) {
    commit_hook_call(db, committed, events);
    complete_ops(db, batch);
    pthread_mutex_unlock(&db->complete_lock);
  } else {
    completions_push(db, batch);
    commit_hook_call(db, committed, events);
  }
  /* The writer's own checkpoint, if due, only once this batch's callers
   * and the worker have been told: they need not wait for its fsync. */
  sc__checkpointer_writer_turn(db->checkpointer);
}

static void *writer_main(void *arg) {
  sc_db *db = arg;
  pthread_setname_np(pthread_self(), "sc-writer");
  sc__metrics_bind_writer(db);
  for (;;) {
    int n = 0;
    sc__op *batch = queue_take_batch(db, &n);
    if (batch == NULL) break;
    run_batch(db, batch, n);
  }
  return NULL;
}

void sc__set_commit_hook(sc_db *db, sc__commit_hook_fn fn, void *ud) {
  pthread_mutex_lock(&db->hook_lock);
  db->commit_hook = fn;
  db->commit_hook_ud = ud;
  pthread_mutex_unlock(&db->hook_lock);
}

void sc__note_deadline(sc_db *db, int64_t deadline_ms) {
  int64_t cur = atomic_load(&db->earliest_deadline_ms);
  while ((cur == 0 || deadline_ms < cur) &&
         !atomic_compare_exchange_weak(&db->earliest_deadline_ms, &cur,
                                       deadline_ms)) {
  }
}

/* ---- open and close ----------------------------------------------------- */

/* Stops the writer once the queue is drained, then the completer once every
 * caller is woken, and joins both. */
static void stop_threads(sc_db *db) {
  pthread_mutex_lock(&db->qlock);
  db->stopping = true;
  pthread_cond_broadcast(&db->qnonempty);
  pthread_cond_broadcast(&db->qnonfull);
  pthread_mutex_unlock(&db->qlock);
  if (db->writer_started) pthread_join(db->writer, NULL);
  db->writer_started = false;
  sc__checkpointer_stop(db->checkpointer, db->wconn ? db->wconn->h : NULL);
  db->checkpointer = NULL;
  pthread_mutex_lock(&db->dlock);
  db->dstopping = true;
  pthread_cond_signal(&db->dnonempty);
  pthread_mutex_unlock(&db->dlock);
  if (db->completer_started) pthread_join(db->completer, NULL);
  db->completer_started = false;
}

static void db_free(sc_db *db) {
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
  rc = sc__turn_open(db->path, &db->turn);
  if (rc == SC_OK) {
    rc = sc__conn_open(db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                       &db->wconn);
  }
  if (rc == SC_OK) rc = migrate_in_turn(db);
  if (rc == SC_OK) rc = writer_prepare(db->wconn);
  if (rc == SC_OK) db->wal_padded = wal_pads_commits(db->wconn);
  if (rc == SC_OK) rc = sc__checkpointer_start(db, &db->checkpointer);
  if (rc == SC_OK) {
    if (pthread_create(&db->completer, NULL, completer_main, db) != 0) {
      rc = sc__fail(SC_ERROR, "sc_open: cannot start the completion thread");
    } else {
      db->completer_started = true;
    }
  }
  if (rc == SC_OK) {
    if (pthread_create(&db->writer, NULL, writer_main, db) != 0) {
      rc = sc__fail(SC_ERROR, "sc_open: cannot start the writer thread");
    } else {
      db->writer_started = true;
    }
  }
  if (rc != SC_OK) {
    stop_threads(db);
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
  /* A worker's loop still holds the handle and would be woken by commits
   * after it is freed: like sqlite3_close with statements open, refuse and
   * keep the handle usable. */
  pthread_mutex_lock(&db->hook_lock);
  bool worker_attached = db->commit_hook != NULL;
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
  stop_threads(db);
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
