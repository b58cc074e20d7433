/* The PostgreSQL backend's internal header. The queue and the writer thread
 * (writer.c) are shared with the SQLite backend; below them this backend
 * runs a batch as one pipelined transaction of server-side function calls
 * (batch.c), one per operation, each returning a status: a refusal is a
 * returned status, never an SQL error, so a batch needs no savepoints. */
#ifndef SC_PG_H
#define SC_PG_H

#include <libpq-fe.h>

#include "../internal.h"

/* ---- parameters of one call ---------------------------------------------- */

#define SC__PG_PARAMS_MAX 12

/* Parameters in text format, except where fmt says binary (bytea). */
typedef struct sc__pg_params {
  int n;
  const char *v[SC__PG_PARAMS_MAX];
  int len[SC__PG_PARAMS_MAX];
  int fmt[SC__PG_PARAMS_MAX];
  char buf[SC__PG_PARAMS_MAX][24];
  char *owned[4]; /* allocated texts (array literals), freed by clear */
  int nowned;
} sc__pg_params;

void sc__pg_param_i64(sc__pg_params *p, int64_t v);
void sc__pg_param_text(sc__pg_params *p, const char *s); /* NULL = SQL NULL */
void sc__pg_param_bytes(sc__pg_params *p, const void *b, size_t len);
/* An int8[] literal of n values read through get(i, ud); SC_NOMEM. */
int sc__pg_param_i64_array(sc__pg_params *p, size_t n,
                           int64_t (*get)(size_t i, const void *ud),
                           const void *ud);
/* A text[] literal of n texts (NULL = SQL NULL) read through get(i, ud),
 * each of at most *len bytes; SC_NOMEM. */
int sc__pg_param_text_array(sc__pg_params *p, size_t n,
                            const char *(*get)(size_t i, const void *ud,
                                               size_t *len),
                            const void *ud);
void sc__pg_params_clear(sc__pg_params *p);

/* ---- operations ------------------------------------------------------------
 * Every server-side function returns one row (st int, msg text, id bigint,
 * ev int): the status, its message, the operation's output id, and the
 * number of events it wrote (for the worker's wake-up). */

typedef struct sc__op_pg {
  const char *name; /* the prepared statement's name */
  const char *sql;  /* SELECT * FROM sc_fn($1, ...) */
  /* Fills the parameters from the operation; now_ms is the batch's clock
   * (sc_options' clock), the one time every call of the batch uses. */
  int (*encode)(sc_db *db, sc__op *op, int64_t now_ms, sc__pg_params *p);
  /* Stores the outputs of a call that returned SC_OK (rid in column 2,
   * any further OUT columns after ev); NULL = none. */
  void (*decode)(sc_db *db, sc__op *op, const PGresult *r);
  /* The row the call locks first (a policy, a product); NULL = 0. Not
   * used to sort a batch: its calls run in submission order, as on
   * SQLite, except that grouped operations are gathered (batch.c,
   * gather_groups). Each function takes its own locks in one global order
   * (schema.c), but two calls of a batch can still lock rows in the
   * opposite order of another host's batch: PostgreSQL then fails one
   * with a deadlock (40P01) and that batch runs again. */
  int64_t (*lock_key)(const sc__op *op);
  /* Optional: operations of this kind with the same lock_key, side by side
   * in a batch, go as one call (many_sql, prepared as many_name) whose rows
   * answer them in order: their row is then locked and updated once per
   * batch, not once per operation (each update of a row leaves a version
   * the next one walks past, until the transaction ends). */
  const char *many_name, *many_sql;
  int (*encode_many)(sc_db *db, sc__op *const *ops, int n, int64_t now_ms,
                     sc__pg_params *p);
  void (*decode_row)(sc__op *op, const PGresult *r, int row);
  /* For an operation that wraps another (an async request): the one to
   * run, whose status the wrapper then takes; NULL with *status set (and
   * the wrapper failed) when it must not run. The other fields are unused. */
  sc__op *(*unwrap)(sc__op *op, int *status);
  /* For an administrator's operation that is a transaction of its own (a
   * repair): runs it on the writer's connection after the batch's calls
   * and returns its status. The other fields are unused. */
  int (*alone)(sc_db *db, sc__op *op);
} sc__op_pg;

/* Every descriptor, prepared on each writer connection. */
extern const sc__op_pg sc__pg_policy_create, sc__pg_policy_pause,
    sc__pg_coupon_issue, sc__pg_product_create, sc__pg_product_restock,
    sc__pg_deposit, sc__pg_checkout, sc__pg_order_pay, sc__pg_order_cancel,
    sc__pg_orders_expire, sc__pg_expire_round, sc__pg_outbox_round,
    sc__pg_outbox_event, sc__pg_requeue_all, sc__pg_purge, sc__pg_async,
    sc__pg_repair;

/* Column col of a call's row as an int64 (NULL reads as 0). */
int64_t sc__pg_col(const PGresult *r, int col);

/* ---- connections (conn.c) ------------------------------------------------ */

typedef struct sc__pg_read {
  PGconn *c;
  struct sc__pg_read *next;
} sc__pg_read;

typedef struct sc__pg {
  char *conninfo;    /* the URI without ?schema= */
  char schema[64];   /* a plain identifier */
  PGconn *w;         /* the writer's connection, in pipeline mode */
  char wstart[64];   /* its backend's backend_start: with the pid, names it */
  int64_t batch_seq; /* batch-log ids: a random base + this */
  int64_t batch_base;
  int64_t batches; /* committed, for the batch log's trimming */
  pthread_mutex_t rlock;
  sc__pg_read *ridle;
  int nidle;
  int nread;              /* read connections open, idle or in use */
  pthread_cond_t rfree;   /* one was released: a waiting reader may go */
  char channel[64];       /* the schema's NOTIFY channel (notify.c) */
  int64_t notified_ns;    /* the last batch that notified (monotonic) */
  int64_t notified_d_ns;  /* the last that notified a deadline */
  int64_t quiet_until_ns; /* no notifying before (a NOTIFY failed) */
} sc__pg;

/* Whether path is a PostgreSQL URI (postgresql:// or postgres://). */
bool sc__pg_is_uri(const char *path);
/* Parses the URI, connects the writer, migrates the schema and prepares
 * the calls. On failure db->pg is freed and NULL, with sc__fail's message. */
int sc__pg_open(sc_db *db, const char *uri);
void sc__pg_close(sc_db *db);
/* Starts a connection without waiting (PQconnectStartParams; the caller
 * polls it), with the same parameters as every other: for the worker's
 * listening connection, which must not block the host's loop. NULL when
 * out of memory. */
PGconn *sc__pg_connect_start(sc_db *db);
/* A new connection with the schema as search_path, within busy_timeout_ms;
 * on failure a message in why. */
PGconn *sc__pg_connect(sc_db *db, char *why, size_t cap);
/* The same within the caller's deadline (sc__monotonic_ns's clock): a
 * retry loop spends one budget, not a new busy timeout per connect. */
PGconn *sc__pg_connect_until(sc_db *db, int64_t deadline_ns, char *why,
                             size_t cap);
/* Connects the writer (again, after a loss) within deadline_ns and
 * prepares its calls. */
int sc__pg_writer_connect(sc_db *db, int64_t deadline_ns, char *why,
                          size_t cap);
int sc__pg_read_acquire(sc_db *db, PGconn **out);
void sc__pg_read_release(sc_db *db, PGconn *c, bool broken);
/* PQexecParams on a read connection, taking a new connection once if the
 * pooled one was dropped by the server (*c may change). */
PGresult *sc__pg_read_exec(sc_db *db, PGconn **c, const char *sql, int nparams,
                           const Oid *types, const char *const *vals);
/* sc__read_row on PostgreSQL: sql is the SQLite text, ?N become $N. */
int sc__pg_read_row(sc_db *db, const char *sql, sc_id id, int64_t *cols,
                    int ncols, const char *what);
/* Maps a failed result's SQLSTATE to a status. */
int sc__pg_status(const PGresult *r);

/* ---- schema (schema.c) --------------------------------------------------- */

int sc__pg_migrate(sc_db *db, PGconn *c);
/* Migration version's statements, NULL-terminated (NULL past the last
 * version): the tests build a database as an older library left it. */
const char *const *sc__pg_migration(int version);

/* ---- batches (batch.c) --------------------------------------------------- */

/* Prepares every call on a fresh writer connection. */
int sc__pg_prepare(PGconn *c, char *why, size_t cap);
/* The next result of the writer's pipeline, with the NULL that ends it
 * consumed; NULL when the connection broke. */
PGresult *sc__pg_next_result(PGconn *c);
/* Runs the batch as one transaction; every op gets its status. Returns
 * whether it committed. */
bool sc__pg_run_batch(sc_db *db, sc__op *batch, int n);

/* ---- wake-up across hosts (notify.c) ------------------------------------- */

/* The NOTIFY channel of a schema: the same name for every host. */
void sc__pg_channel(const char *schema, char channel[64]);
/* The payload of the NOTIFY that the batch ops[0, n) sends before its
 * COMMIT, or NULL for none: none when no operation of it can write an
 * event, or when this handle notified less than a few ms ago. "d" when it
 * holds a checkout (a new expiry deadline), else "". Writer thread. */
const char *sc__pg_notify_payload(sc_db *db, sc__op *const *ops, int n);
/* The batch that sent payload committed: the throttle counts from now. */
void sc__pg_notified(sc_db *db, const char *payload);
/* A batch that notified failed otherwise than by a lost connection: keep
 * quiet for a while, so that a full NOTIFY queue (a listener elsewhere that
 * stopped reading) costs listeners their speed, never the batch. */
void sc__pg_notify_failed(sc_db *db);
/* The prepared NOTIFY: pg_notify(channel, payload). */
extern const char sc__pg_notify_name[], sc__pg_notify_sql[];

/* ---- invariants (verify.c) ----------------------------------------------- */

int sc__pg_verify(sc_db *db, char **report_out);

#endif /* SC_PG_H */
