/* The SQLite side of a batch: the write turn among processes, one BEGIN
 * IMMEDIATE, the operations straight in the transaction (validate, then
 * apply), a replay with a SAVEPOINT per operation when one failed after
 * writing, and one COMMIT, whose failure is told apart: clean, or
 * ambiguous (it may be durable all the same). The writer (writer.c) calls
 * sc__sqlite_run_batch once per batch. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "sqlite/turn.h"

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";
static const char SQL_SAVEPOINT[] = "SAVEPOINT sc_op";
static const char SQL_RELEASE[] = "RELEASE sc_op";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO sc_op";

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

/* ---- a batch that did not commit ---------------------------------------- */

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
  sc__batch_fail(batch, NULL,
                 ambiguous ? SC_AMBIGUOUS : sc__status_from_sqlite(rc), why);
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
  sc__batch_fail(batch, NULL, sc__status_from_sqlite(rc), why);
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

/* Takes this process's turn among the libshopcore processes writing the
 * file (turn.c), for one batch; a batch that waited past busy_timeout_ms
 * fails with SC_BUSY, uncommitted. */
static bool take_write_turn(sc_db *db, sc__op *batch) {
  char why[SC__ERRMSG_MAX];
  /* A poisoned handle (commit_failed) writes nothing, so needs no turn. */
  if (db->poisoned) {
    sc__batch_fail(batch, NULL, SC_AMBIGUOUS,
                   "refused, nothing done: an earlier commit's fsync failed on "
                   "this handle, whose writes may no longer be durable; close "
                   "and reopen the database (reads still work)");
    return false;
  }
  int rc =
      sc__turn_acquire(db->turn, db->opts.busy_timeout_ms, why, sizeof why);
  if (rc != SC_OK) sc__batch_fail(batch, NULL, rc, why);
  return rc == SC_OK;
}

bool sc__sqlite_run_batch(sc_db *db, sc__op *batch) {
  if (!take_write_turn(db, batch)) return false;
  bool committed = commit_batch(db, batch);
  sc__turn_release(db->turn);
  return committed;
}

int sc__sqlite_writer_init(sc_db *db) {
  int rc = writer_prepare(db->wconn);
  if (rc == SC_OK) db->wal_padded = wal_pads_commits(db->wconn);
  return rc;
}
