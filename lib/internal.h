/* Internal declarations shared by the modules of lib/. Nothing here is API. */
#ifndef SC_INTERNAL_H
#define SC_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sqlite3.h>

#include "shopcore.h"

#define SC__ERRMSG_MAX 256

#if defined(__GNUC__)
#define SC__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SC__PRINTF(f, a)
#endif

/* ---- allocation (alloc.c) ---------------------------------------------- */

void *sc__malloc(size_t size);
void *sc__calloc(size_t n, size_t size); /* overflow-checked */
void *sc__realloc(void *p, size_t size);
void sc__free(void *p);
char *sc__strdup(const char *s);

/* ---- errors (error.c) --------------------------------------------------- */

/* Records a failure for the calling thread (sc_errmsg) and returns status. */
int sc__fail(int status, const char *fmt, ...) SC__PRINTF(2, 3);
/* Copies a message prepared elsewhere (by the writer) into this thread's
 * errmsg. */
void sc__set_errmsg(const char *msg);
/* Maps an SQLite result code to a status. */
int sc__status_from_sqlite(int rc);

/* ---- time (util.c) ----------------------------------------------------- */

int64_t sc__monotonic_ns(void);
int64_t sc__wall_ms(void);
void sc__sleep_ms(int64_t ms);
/* Checks a name or an idempotency key against its limit (SC_NAME_MAX,
 * SC_KEY_MAX): NULL passes only when optional; NULL, empty or longer than
 * max bytes fails with SC_INVALID and "<fn>: <what> ..." in errmsg. It
 * reads at most max + 1 bytes of s. */
int sc__check_text(const char *fn, const char *what, const char *s, size_t max,
                   bool optional);
/* Copies a stored name of len bytes into out (SC_NAME_MAX + 1 bytes), cut
 * before the UTF-8 character that would not fit (stock.c). */
void sc__name_copy(char *out, const unsigned char *name, size_t len);
/* Checked int64 arithmetic: false on overflow. */
/* Structs that grow (see "Structs that grow" in shopcore.h). sc__struct_in
 * reads a caller's struct of size bytes (0 = v1_size, the first layout) into
 * dst, which holds the library's defaults in known bytes: the caller's
 * fields overwrite them, the rest stay defaults. A larger struct (a newer
 * header) is accepted only when its bytes past known are all zero. On
 * failure returns SC_INVALID naming fn. sc__struct_out writes the first size
 * bytes of the library's src (known bytes) to the caller's dst, zeroing what
 * the library does not know; never a byte past size. */
int sc__struct_in(const char *fn, void *dst, size_t known, const void *src,
                  size_t size, size_t v1_size);
void sc__struct_out(void *dst, size_t size, const void *src, size_t known);
bool sc__add_i64(int64_t a, int64_t b, int64_t *out);
bool sc__mul_i64(int64_t a, int64_t b, int64_t *out);

/* ---- connections (conn.c) ---------------------------------------------- */

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

/* ---- operations and the writer (engine.c) ------------------------------ */

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
/* Fails an operation after an SQLite error on the writer connection. */
int sc__op_fail_sqlite(sc__op *op, sc__conn *w, int rc, const char *what);

/* Submits op and waits for its durable completion; returns its status and
 * copies its message into the caller's errmsg on failure. */
int sc__op_execute(sc_db *db, sc__op *op);
/* Submits op without waiting: op->done will be called exactly once on the
 * writer thread. SC_CLOSED (and done never called) if the db is closing. */
int sc__op_submit(sc_db *db, sc__op *op);
/* The same without waiting for room: SC_BUSY at once when the queue is full
 * (for a libuv loop thread, which must never block). */
int sc__op_try_submit(sc_db *db, sc__op *op);

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
   * refused with SC_AMBIGUOUS until the handle is closed (engine.c). */
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

/* ---- schema (schema.c) ------------------------------------------------- */

int sc__schema_migrate(sc__conn *w);
/* The schema version this library migrates to, and the SQL of migration
 * version (NULL if it is code, not SQL), for the tests of migrations. */
int sc__schema_version(void);
const char *sc__schema_sql(int version);

/* ---- expiry rounds (order.c), for the worker ---------------------------- */

/* One batch of sc_orders_expire_due as an operation the caller submits
 * itself (with sc__op_try_submit and a done callback), so a libuv loop
 * never waits for it: it expires up to one batch of the orders due at now
 * and reads the earliest deadline still ahead. Orders that cannot be
 * expired (damaged rows) are skipped and counted in the metrics. */
typedef struct sc__expire_round {
  sc__op base;
  int64_t now;              /* set by prepare: due means expires_at_ms <= now */
  int expired;              /* out */
  bool more;                /* out: the batch was full; submit another, which
                               goes on after this one's last order */
  int64_t next_deadline_ms; /* out: earliest PENDING deadline after now; 0 */
  void *rows_;              /* private: the batch's rows */
  void *pass_;              /* private: where the next batch starts */
} sc__expire_round;
int sc__expire_round_init(sc__expire_round *r); /* SC_NOMEM */
/* Sets base (run, kind) and now (the given moment, or the full round's
 * before it, whose pass it continues); base.done is the caller's to set. */
void sc__expire_round_prepare(sc__expire_round *r, int64_t now);
void sc__expire_round_free(sc__expire_round *r);

/* ---- outbox and codec -------------------------------------------------- */

/* The fields of an event payload, encoded as a msgpack map (codec.c). */
typedef struct sc__event_fields {
  int type;
  sc_id user, order, policy, coupon;
  int64_t amount, discount, expires_at_ms, at_ms;
} sc__event_fields;

#define SC__PAYLOAD_MAX 256
/* Encodes f into buf; returns the length, or 0 if it does not fit. */
size_t sc__event_encode(const sc__event_fields *f, char *buf, size_t cap);
/* Appends the event of a state change in the write transaction (outbox.c):
 * its aggregate is derived from the type (order, coupon, account, policy). */
int sc__outbox_emit(sc_db *db, sc__conn *w, sc__op *op,
                    const sc__event_fields *f);

/* ---- outbox: the worker's round trip (outbox.c) ---- */

/* What becomes of one delivered event. */
enum {
  SC__SETTLE_ACK = 1, /* delivered */
  SC__SETTLE_NACK,    /* failed: retried after a backoff, or dead */
  SC__SETTLE_RELEASE, /* not delivered (stopping): lease dropped, no attempt */
  SC__SETTLE_DEAD     /* can never be delivered (undecodable): dead now */
};
typedef struct sc__settle {
  sc_id id;
  int verdict;        /* SC__SETTLE_* */
  const char *reason; /* NACK, DEAD: stored as last_error; may be NULL */
  int64_t claim;      /* the delivery's token (sc_event.claim): the fence */
} sc__settle;

/* One writer operation that settles the events of the last batch and claims
 * the next: the worker's whole round trip, one op and one commit. Settling
 * an event that changed meanwhile (acked or requeued elsewhere) is skipped.
 * The caller owns every array; the op allocates the claimed payloads, which
 * sc__events_clear frees. */
typedef struct sc__outbox_round {
  sc__op base;
  const sc__settle *settle; /* in */
  int n_settle;
  int claim_max;         /* in: 0 = claim nothing */
  int64_t lease_ms;      /* in */
  sc_event *events;      /* in: room for claim_max; out: the claimed ones */
  int n_events;          /* out */
  int64_t next_due_ms;   /* out: the earliest retry this round's nacks set
                            (db clock); 0 = none */
  int64_t claimed_at_ms; /* out: the db clock when it claimed; the leases of
                            the claimed events end at claimed_at_ms +
                            lease_ms */
} sc__outbox_round;
/* Sets base.run and base.kind; the other fields are the caller's. */
void sc__outbox_round_init(sc__outbox_round *r);
/* Frees the payloads of events[0..n) (not the array). */
void sc__events_clear(sc_event *events, int n);
/* An event from a row whose first six columns are id, type, agg_id, seq,
 * created_at_ms, attempts (the claim's and the dead list's queries); the
 * payload is the caller's copy. */
sc_event sc__event_from_row(sqlite3_stmt *st, const void *payload, size_t len);

/* ---- outbox retention (outbox_purge.c) ---- */

/* Events one purge batch deletes at most: a batch costs the writer about
 * 5 us of CPU per event, 2.5 ms in all (bench/bench_purge). */
#define SC__PURGE_BATCH_MAX 500

/* One batch of sc_outbox_purge as an operation (the worker submits its own,
 * smaller ones): deletes up to limit delivered events acked before
 * before_ms, the newest event of all excepted. */
typedef struct sc__purge_round {
  sc__op base;
  int64_t before_ms; /* in */
  int limit;         /* in: > 0 */
  int purged;        /* out; == limit: more may be left */
} sc__purge_round;
/* Sets base (run, kind) and the inputs; base.done is the caller's. */
void sc__purge_round_prepare(sc__purge_round *r, int64_t before_ms, int limit);

/* ---- write operations prepared for the *_async calls (async.c) ---- */

/* A write operation built but not submitted: validated on the caller's
 * thread as its blocking call does (sc__fail, nothing allocated on
 * failure), with everything it needs copied in, so the caller's arguments
 * may go away. result: where its id is once it has run (NULL: none). free
 * releases it after its completion. */
typedef struct sc__prepared {
  sc__op *op;
  const sc_id *result;
  void (*free)(sc__op *op);
} sc__prepared;
/* coupon.c */
int sc__coupon_issue_prepare(sc_db *db, sc_id policy, sc_id user,
                             sc__prepared *out);
/* order.c */
int sc__checkout_prepare(sc_db *db, const sc_checkout_req *req,
                         sc__prepared *out);
int sc__order_pay_prepare(sc_db *db, sc_id order, sc__prepared *out);
int sc__order_cancel_prepare(sc_db *db, sc_id order, sc__prepared *out);

/* ---- text buffers (strbuf.c), for metrics and repair reports ---- */

typedef struct sc__strbuf {
  char *text;
  size_t len, cap;
  bool nomem; /* an allocation failed: the text is incomplete */
} sc__strbuf;
/* Appends formatted text; after a failed allocation it does nothing. */
void sc__strbuf_printf(sc__strbuf *b, const char *fmt, ...) SC__PRINTF(2, 3);
/* Hands over the text ("" if none was added), or NULL if an allocation
 * failed; the buffer is empty afterwards. */
char *sc__strbuf_take(sc__strbuf *b);
void sc__strbuf_free(sc__strbuf *b);

/* ---- orders: stock, accounts, coupon holds, idempotency ---------------- */
/* These run inside an operation on the writer connection. Each returns
 * SC_OK or fails op with a message and returns the status. The checks
 * (sc__stock_check, sc__account_check_hold, sc__coupon_discount) change
 * nothing; the writes come after every check, and a failure of theirs
 * (SC_CORRUPT, SC_ERROR: the books are wrong, or a bug) makes the engine
 * roll the batch back (see sc__op_run_fn). */

/* stock.c. Checks that qty (> 0) of product can be reserved, changing
 * nothing; expected_version < 0 means no version check. Writes the unit
 * price. SC_NOT_FOUND, SC_CONFLICT (version differs), SC_OUT_OF_STOCK. */
int sc__stock_check(sc__conn *w, sc__op *op, sc_id product, int64_t qty,
                    int64_t expected_version, int64_t *price_out);
/* Reserves what sc__stock_check allowed and bumps the version by one; the
 * UPDATE keeps its guard, and a refusal now is a bug (SC_ERROR). */
int sc__stock_reserve(sc__conn *w, sc__op *op, sc_id product, int64_t qty);
/* Releases every line of order (version + 1 per product). */
int sc__stock_release_order(sc__conn *w, sc__op *op, sc_id order);
/* Consumes every line of order: total and reserved drop, version stays. */
int sc__stock_consume_order(sc__conn *w, sc__op *op, sc_id order);

/* account.c. Checks that amount (>= 0) can be held against balance -
 * held, changing nothing: SC_NOT_FOUND (no account),
 * SC_INSUFFICIENT_BALANCE. */
int sc__account_check_hold(sc__conn *w, sc__op *op, sc_id user, int64_t amount);
/* Holds what sc__account_check_hold allowed; the UPDATE keeps its guard,
 * and a refusal now is a bug (SC_ERROR). */
int sc__account_hold(sc__conn *w, sc__op *op, sc_id user, int64_t amount);
/* Gives back a hold; SC_CORRUPT if less than amount is held. */
int sc__account_release(sc__conn *w, sc__op *op, sc_id user, int64_t amount);
/* Pays a held amount: balance and held drop, a payment ledger row (-amount,
 * order) is written. SC_CORRUPT if less than amount is held. */
int sc__account_debit(sc_db *db, sc__conn *w, sc__op *op, sc_id user,
                      int64_t amount, sc_id order);

/* coupon.c. Checks that user may use coupon at now (SC_NOT_FOUND,
 * SC_COUPON_UNAVAILABLE: another user's, held, used, policy not active) and
 * computes its discount on subtotal (at most subtotal). Changes nothing. */
int sc__coupon_discount(sc__conn *w, sc__op *op, sc_id coupon, sc_id user,
                        int64_t now, int64_t subtotal, int64_t *discount);
/* available -> held by order; used by order; back to available. */
int sc__coupon_hold(sc__conn *w, sc__op *op, sc_id coupon, sc_id order);
int sc__coupon_use(sc__conn *w, sc__op *op, sc_id order);
int sc__coupon_release(sc__conn *w, sc__op *op, sc_id order);

/* idempotency.c. Scopes of sc_idempotency. */
enum { SC__IDEM_CHECKOUT = 1, SC__IDEM_DEPOSIT = 2 };
/* Writes v big-endian: requests are compared byte for byte, in any process
 * on any machine. */
void sc__idem_put_i64(unsigned char *p, int64_t v);
/* SC_OK with *result_id if key holds this very request, SC_NOT_FOUND (no
 * message) if key is new, SC_IDEMPOTENCY_MISMATCH if it holds another. */
int sc__idem_find(sc__conn *w, sc__op *op, int scope, const char *key,
                  const void *request, size_t len, sc_id *result_id);
/* Records key for request and its result, in the write transaction. */
int sc__idem_record(sc__conn *w, sc__op *op, int scope, const char *key,
                    const void *request, size_t len, sc_id result_id,
                    int64_t now);

/* Convenience: check a handle and an out pointer at the top of a call. */
#define SC__CHECK_DB(db)                                                      \
  do {                                                                        \
    if ((db) == NULL) return sc__fail(SC_MISUSE, "%s: db is NULL", __func__); \
  } while (0)

#endif /* SC_INTERNAL_H */
