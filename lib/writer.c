/* The writer: the bounded submission queue, the writer thread that takes
 * batches off it and has the backend commit each in one transaction (group
 * commit: one fsync serves every operation of the batch), and the
 * completion of the batch's operations, by the writer itself for a small
 * batch or by a completer thread. Opening and closing is open.c; the SQLite
 * transaction of a batch is sqlite/batch.c. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "metrics.h"
#include "pg/pg.h"
#include "sqlite/checkpoint.h"

#define WRITER_SPIN_NS 50000

/* ---- failing an operation ---------------------------------------------- */

int sc__op_fail(sc__op *op, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(op->errmsg, sizeof op->errmsg, fmt, ap);
  va_end(ap);
  return status;
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
    sc__deadline_in_ms(&deadline, db->opts.busy_timeout_ms);
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

/* ---- a batch that did not commit ---------------------------------------
 * The one place that decides what the operations of a failed batch hear.
 * Every operation of the batch gets the batch's status, refusals included:
 * a refusal may have rested on an earlier operation of the batch, which did
 * not commit (or, for SC_AMBIGUOUS, may or may not have). The operation
 * whose own failure lost the transaction (culprit) keeps its message. */

void sc__batch_fail(sc__op *batch, const sc__op *culprit, int status,
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

static void run_batch(sc_db *db, sc__op *batch, int n) {
  int64_t begin_ns = sc__monotonic_ns();
  /* PostgreSQL: the server's locks order the hosts; no turn file. */
  bool committed = db->pg != NULL ? sc__pg_run_batch(db, batch, n)
                                  : sc__sqlite_run_batch(db, batch);
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

int sc__writer_start(sc_db *db) {
  if (pthread_create(&db->completer, NULL, completer_main, db) != 0) {
    return sc__fail(SC_ERROR, "sc_open: cannot start the completion thread");
  }
  db->completer_started = true;
  if (pthread_create(&db->writer, NULL, writer_main, db) != 0) {
    return sc__fail(SC_ERROR, "sc_open: cannot start the writer thread");
  }
  db->writer_started = true;
  return SC_OK;
}

void sc__writer_stop(sc_db *db, void (*after_writer)(sc_db *db)) {
  pthread_mutex_lock(&db->qlock);
  db->stopping = true;
  pthread_cond_broadcast(&db->qnonempty);
  pthread_cond_broadcast(&db->qnonfull);
  pthread_mutex_unlock(&db->qlock);
  if (db->writer_started) pthread_join(db->writer, NULL);
  db->writer_started = false;
  if (after_writer != NULL) after_writer(db);
  pthread_mutex_lock(&db->dlock);
  db->dstopping = true;
  pthread_cond_signal(&db->dnonempty);
  pthread_mutex_unlock(&db->dlock);
  if (db->completer_started) pthread_join(db->completer, NULL);
  db->completer_started = false;
}
