/* Operations and the writer that commits them in batches (writer.c), and
 * the handle they belong to, struct sc_db, opened and closed by open.c. */
#ifndef SC_WRITER_H
#define SC_WRITER_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "base.h"
#include "sqlite/conn.h"

/* ---- operations and the writer (writer.c) ------------------------------ */

typedef struct sc__op sc__op;
/* Runs one operation on the writer connection, inside the batch's write
 * transaction. It reads and checks everything first and writes only once
 * nothing can refuse it (validate, then apply), so a refusal writes
 * nothing. Returns SC_OK, or the failure (with sc__op_fail). A failure
 * after a write, or an error (I/O, out of memory, corruption), makes the
 * engine roll the batch back and run it again with a SAVEPOINT per
 * operation, so that only this one fails. An operation may thus run more
 * than once: it sets every output afresh. */
typedef int (*sc__op_run_fn)(sc_db *db, sc__conn *w, sc__op *op);
/* Called once the operation's commit is durable (or its failure is final),
 * on the completer thread, or on the writer's for a small batch: it must
 * be quick and must never wait for the writer. NULL: a blocking caller is
 * woken. */
typedef void (*sc__op_done_fn)(sc__op *op);

/* Operation kinds, for metrics. */
#define SC__OP_KIND_MAP(XX)                 \
  XX(PRODUCT_CREATE, "product_create")      \
  XX(PRODUCT_RESTOCK, "product_restock")    \
  XX(DEPOSIT, "account_deposit")            \
  XX(POLICY_CREATE, "coupon_policy_create") \
  XX(POLICY_PAUSE, "coupon_policy_pause")   \
  XX(COUPON_ISSUE, "coupon_issue")          \
  XX(CHECKOUT, "checkout")                  \
  XX(ORDER_PAY, "order_pay")                \
  XX(ORDER_CANCEL, "order_cancel")          \
  XX(ORDERS_EXPIRE, "orders_expire_due")    \
  XX(OUTBOX, "outbox")                      \
  XX(ADMIN, "admin")

typedef enum {
#define SC__OP_KIND_ENUM(name, text) SC__OP_##name,
  SC__OP_KIND_MAP(SC__OP_KIND_ENUM)
#undef SC__OP_KIND_ENUM
      SC__OP_KIND_COUNT
} sc__op_kind;

struct sc__op {
  sc__op_run_fn run;
  /* How the PostgreSQL backend runs it (pg/pg.h); NULL: not there yet. */
  const struct sc__op_pg *pg;
  sc__op_done_fn done;
  int kind;   /* sc__op_kind */
  int status; /* the result, set by the writer */
  int64_t enqueued_ns;
  sc__op *next;  /* queue link */
  bool excluded; /* writer: lost the transaction on the slow path */
  sem_t wake;    /* blocking callers only */
  char errmsg[SC__ERRMSG_MAX];
};

/* Fails an operation with a message; returns status (for `return`). */
int sc__op_fail(sc__op *op, int status, const char *fmt, ...) SC__PRINTF(3, 4);
/* Fails every operation of a batch that did not commit with status and
 * why, refusals included: a refusal may have rested on an earlier
 * operation of the batch, which did not commit (or, for SC_AMBIGUOUS, may
 * or may not have). The operation whose own failure lost the transaction
 * (culprit, may be NULL) keeps its message. */
void sc__batch_fail(sc__op *batch, const sc__op *culprit, int status,
                    const char *why);

/* Submits op and waits for its durable completion; returns its status and
 * copies its message into the caller's errmsg on failure. */
int sc__op_execute(sc_db *db, sc__op *op);
/* Submits op without waiting: op->done will be called exactly once on the
 * writer thread. SC_CLOSED (and done never called) if the db is closing. */
int sc__op_submit(sc_db *db, sc__op *op);
/* The same without waiting for room: SC_BUSY at once when the queue is full
 * (for a libuv loop thread, which must never block). */
int sc__op_try_submit(sc_db *db, sc__op *op);

/* Starts the completer and writer threads of an opened db (open.c). */
int sc__writer_start(sc_db *db);
/* Stops the writer once the queue is drained and joins it, calls
 * after_writer (may be NULL), then stops and joins the completer once every
 * caller is woken. */
void sc__writer_stop(sc_db *db, void (*after_writer)(sc_db *db));

/* Public calls bracket themselves with these so sc_close can wait for them. */
int sc__call_enter(sc_db *db);
void sc__call_leave(sc_db *db);

/* Called by the writer after each commit with the number of events written in
 * it (so the worker can be woken); set by the worker module. */
typedef void (*sc__commit_hook_fn)(void *ud, int events_written);

struct sc_db {
  char *path;
  sc_options opts;

  /* The submission queue: bounded, many producers, one consumer. */
  pthread_mutex_t qlock;
  pthread_cond_t qnonempty;
  pthread_cond_t qnonfull;
  sc__op *qhead, *qtail;
  int qlen;
  atomic_int qcount; /* qlen, readable without the lock (the writer's spin) */
  bool stopping;     /* the writer leaves once the queue is drained */

  pthread_t writer;
  bool writer_started;

  /* Completed batches waiting for their callers to be woken. A thread of its
   * own wakes them, so the writer starts the next batch (and its fsync)
   * without paying for a futex wake-up per caller. */
  pthread_mutex_t dlock;
  pthread_cond_t dnonempty;
  sc__op *dhead, *dtail;
  bool dstopping;
  pthread_t completer;
  bool completer_started;
  /* Held by whichever thread wakes callers (the completer, or the writer
   * for a small batch): the alert window has one completing thread. */
  pthread_mutex_t complete_lock;

  struct sc__checkpointer *checkpointer; /* checkpoint.c */
  struct sc__turn *turn;                 /* turn.c: batches of processes */
  sc__conn *wconn;
  int batch_events; /* events written by the batch being committed */
  /* Set by the writer when a commit's fsync failed: every later write is
   * refused with SC_AMBIGUOUS until the handle is closed (writer.c). */
  bool poisoned;
  /* The WAL pads a commit to a sector with copies of its commit frame (the
   * file system lacks powersafe overwrite): a write failing there comes
   * after the commit record. Set at open, read by the writer. */
  bool wal_padded;
  atomic_long replays; /* batches rolled back and replayed on the slow path */

  pthread_mutex_t rlock; /* the read pool */
  sc__conn *ridle;
  int nidle;

  atomic_int calls; /* public calls in progress */
  atomic_bool closing;

  pthread_mutex_t hook_lock;
  sc__commit_hook_fn commit_hook;
  void *commit_hook_ud;
  /* A worker uses the handle: from its start until its close callback
   * (sc_close refuses meanwhile; its rounds in flight still read db). */
  bool worker_attached;
  /* Earliest order deadline committed since the worker last looked. */
  _Atomic int64_t earliest_deadline_ms;

  struct sc__metrics *metrics; /* metrics.c, may be NULL */

  /* The PostgreSQL backend (pg/), or NULL for an SQLite file: it runs the
   * writer's batches and answers the reads. */
  struct sc__pg *pg;
};

int64_t sc__now_ms(sc_db *db);
void sc__set_commit_hook(sc_db *db, sc__commit_hook_fn fn, void *ud);
/* Tells the writer's commit hook that an order deadline was committed. */
void sc__note_deadline(sc_db *db, int64_t deadline_ms);

#endif /* SC_WRITER_H */
