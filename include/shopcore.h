/*
 * libshopcore: the concurrent part of a flash-sale shop (bounded coupons,
 * stock reservation, balance holds, orders that expire), inside the host
 * application, on an embedded SQLite file; with an outbox: every change
 * also writes an event, in the same transaction, for the host to deliver
 * onward (see 7.).
 *
 * This header is the whole public API: if it is not declared here, it is not
 * API. It is ordered one group per object, in the order a user meets them:
 *
 *   1. errors                  7. outbox (claim, ack, nack, dead events,
 *   2. memory                     purge, counts, decoding payloads)
 *   3. database (open, close)  8. asynchronous calls (libuv)
 *   4. catalog and accounts    9. the worker (libuv)
 *   5. coupons                10. metrics and alerts
 *   6. orders                 11. administration (verify, repair, backup,
 *                                 database counts)
 *
 * Conventions. Every function returns an int status (SC_OK == 0) unless
 * said otherwise; results are written through OUT pointers, which are left
 * untouched on failure (the exceptions are named). "The error contract"
 * below says which codes every function may return besides its own.
 *
 * Threads: an sc_db handle may be used from any number of threads at once;
 * every function taking an sc_db is thread-safe unless its comment says
 * otherwise. Write operations are queued to one writer thread per handle,
 * which commits them in batches (group commit: one transaction and one
 * fsync for many operations); a blocking call returns when the commit that
 * holds its operation is durable. Reads run beside the writer, each on one
 * consistent snapshot.
 *
 * Money is int64_t minor units (cents); quantities are int64_t; overflow is
 * checked and refused with SC_INVALID.
 */
#ifndef SHOPCORE_H
#define SHOPCORE_H

#include <stddef.h>
#include <stdint.h>

#include "shopcore/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#if defined(SC_BUILDING_LIBRARY)
#define SC_API __declspec(dllexport)
#elif defined(SC_SHARED)
#define SC_API __declspec(dllimport)
#else
#define SC_API
#endif
#elif defined(__GNUC__) && defined(SC_BUILDING_LIBRARY)
#define SC_API __attribute__((visibility("default")))
#else
#define SC_API
#endif

/* libuv's loop, for the worker and the asynchronous calls. A host that does
 * not use libuv never needs its header. */
typedef struct uv_loop_s uv_loop_t;

typedef struct sc_db sc_db; /* opaque database handle */
typedef int64_t sc_id;      /* ids returned by the library are > 0 */

/*
 * Structs that grow. Later versions of the library add fields to some
 * structs; an application compiled against an older header then hands the
 * library a smaller struct, and one compiled against a newer header a
 * larger one. So that neither reads nor writes a byte the caller does not
 * own:
 *
 * - Structs the caller fills in (sc_options, sc_worker_options) start with
 *   a size field, set by their init macro (sc_options_init ...) to the size
 *   of the struct in the caller's header. The library reads only that many
 *   bytes and takes the defaults for the fields past them. A struct whose
 *   size is 0 (zeroed without the init macro) is read as the first layout
 *   with a size field. A larger struct (a newer header) is accepted when
 *   the fields this library does not know are 0 (their defaults), and
 *   refused with SC_INVALID otherwise: the library cannot do what they ask.
 * - Structs the library fills in that may grow (sc_stats, sc_event_data,
 *   sc_metrics) are written by a macro of the function's name that passes
 *   sizeof the struct in the caller's header (sc_stats_get(db, &s) calls
 *   sc_stats_get_sized(db, &s, sizeof(sc_stats))); the library writes
 *   exactly that many bytes, zeroing what it does not know. Call the macro;
 *   the *_sized functions are for bindings that cannot (FFI).
 * - Requests the library holds while they run (sc_async_req) keep private
 *   room, as libuv's requests do, so that their size does not change.
 * - Counts by status code are read with sc_metrics_count, not kept in a
 *   struct: a new status code changes no struct's size.
 * Small read results (sc_stock, sc_account, sc_product, sc_coupon_policy,
 * sc_order) keep their layout for the life of a major version.
 */

/* ======================================================================== */
/* 1. Errors                                                                */
/* ======================================================================== */

/* One list generates the enum, sc_err_name() and sc_strerror(). */
#define SC_STATUS_MAP(XX)                                                     \
  XX(OK, "not an error")                                                      \
  XX(ERROR, "internal error")                                                 \
  XX(MISUSE, "library used incorrectly")                                      \
  XX(INVALID, "invalid argument")                                             \
  XX(NOMEM, "out of memory")                                                  \
  XX(IOERR, "I/O error")                                                      \
  XX(CORRUPT, "database is corrupt or not a database")                        \
  XX(BUSY, "database is busy")                                                \
  XX(CLOSED, "database is closed")                                            \
  XX(CANCELED, "operation canceled")                                          \
  XX(NOT_FOUND, "not found")                                                  \
  XX(EXISTS, "already exists")                                                \
  XX(SOLD_OUT, "sold out")                                                    \
  XX(LIMIT_REACHED, "per-user limit reached")                                 \
  XX(PAUSED, "paused")                                                        \
  XX(NOT_ACTIVE, "not active")                                                \
  XX(OUT_OF_STOCK, "out of stock")                                            \
  XX(INSUFFICIENT_BALANCE, "insufficient balance")                            \
  XX(COUPON_UNAVAILABLE, "coupon unavailable")                                \
  XX(EXPIRED, "expired")                                                      \
  XX(INVALID_STATE, "invalid state")                                          \
  XX(CONFLICT, "version conflict")                                            \
  XX(IDEMPOTENCY_MISMATCH, "idempotency key reused with a different request") \
  XX(AMBIGUOUS, "outcome unknown: the commit may or may not have happened")

typedef enum {
#define SC__STATUS_ENUM(name, text) SC_##name,
  SC_STATUS_MAP(SC__STATUS_ENUM)
#undef SC__STATUS_ENUM
      SC_STATUS_COUNT_ /* not a status; the number of codes */
} sc_status;

/*
 * The error contract, stated once.
 *
 * Each function's @return lists the codes of its own: what its arguments
 * and the data can make it return. Besides those, a function marked
 * "A write." (it changes the database: its operation is queued to the
 * writer) may return:
 *   SC_MISUSE    db is NULL, or a pointer the function needs is NULL;
 *   SC_CLOSED    the handle is closing (sc_close runs on another thread);
 *   SC_BUSY      the write queue stayed full, or another process held the
 *                write lock, for longer than sc_options.busy_timeout_ms;
 *   SC_NOMEM     an allocation failed;
 *   SC_IOERR     the file system failed (I/O error, disk full, read-only);
 *   SC_AMBIGUOUS the commit holding the operation failed and its outcome is
 *                unknown (below);
 * and, for faults outside the caller's control, SC_CORRUPT (the file is
 * damaged: a broken page, or a row the library did not write) and
 * SC_ERROR (an internal error: a bug, or the system refused a thread or a
 * semaphore). A function marked "A read." may return the same codes but
 * SC_AMBIGUOUS. Functions marked neither list every code they return.
 *
 * What a failed write means. A write that fails with any status but
 * SC_AMBIGUOUS changed nothing, ever: not now, and not after a crash
 * (sc_orders_expire_due and sc_outbox_purge keep the batches they committed
 * before a failure, as they say).
 *
 * SC_AMBIGUOUS: the commit that held the operation failed in a way that
 * leaves its durability unknown (the fsync of the write-ahead log failed, or
 * the commit failed after its commit record may have reached the file). The
 * operation may or may not be there, now or after the next open; every
 * operation of that commit gets SC_AMBIGUOUS, refusals included (a refusal
 * may have rested on an earlier operation of the same commit). What to do:
 * retrying is safe with an idempotency key (a replay returns the first
 * result); without one, read first to learn whether it happened. After a
 * failed fsync the handle refuses every later write with SC_AMBIGUOUS (a
 * retried fsync can report success while the data is gone) until it is
 * closed and reopened; reads go on.
 */

/** Text of a status code ("sold out"). Never NULL; unknown codes give
 * "unknown status". Static storage; any thread. */
SC_API const char *sc_strerror(int status);
/** Name of a status code ("SC_SOLD_OUT"); "SC_UNKNOWN" for unknown codes.
 * Static storage; any thread. */
SC_API const char *sc_err_name(int status);
/** Detail of the calling thread's last failed call (db may be NULL). The
 * string is owned by the library and valid until this thread's next call. */
SC_API const char *sc_errmsg(sc_db *db);
/** "MAJOR.MINOR.PATCH" of the linked library. */
SC_API const char *sc_version(void);
/** SC_VERSION_HEX of the linked library. */
SC_API unsigned sc_version_hex(void);

/* ======================================================================== */
/* 2. Memory                                                                */
/* ======================================================================== */

/** Frees memory the library returned (sc_verify's report...). NULL is a
 * no-op. Any thread. */
SC_API void sc_free(void *p);

/** The library's allocator. malloc and realloc may return NULL: every
 * library call then fails with SC_NOMEM and leaves the database consistent. */
typedef struct sc_allocator {
  void *(*malloc_fn)(size_t size);
  void *(*realloc_fn)(void *p, size_t size);
  void (*free_fn)(void *p);
} sc_allocator;
/** Replaces the allocator used for the library's own memory and returns the
 * previous one. NULL restores the C library's. Not thread-safe: call it while
 * no sc_db is open (memory allocated by one allocator must be freed by it). */
SC_API sc_allocator sc_set_allocator(const sc_allocator *a);

/* ======================================================================== */
/* 3. Database: opening and closing                                         */
/* ======================================================================== */

enum { SC_DURABILITY_FULL = 0, SC_DURABILITY_NORMAL = 1 };

typedef struct sc_alert sc_alert; /* what on_alert receives; see 10. */

/* Every numeric option takes 0 for the library default. A value outside the
 * range its comment states (a negative count, size or time; an error rate
 * above 1 or NaN; a queue-depth alert past queue_max; queue_max past 2^24)
 * makes sc_open fail with SC_INVALID and a message naming the option
 * ("sc_open: option batch_max is -1; it must be in 0..2147483647"). */
typedef struct sc_options {
  /** Set by sc_options_init: the size of the caller's struct (see "Structs
   * that grow"). Leave it alone. */
  size_t size;
  /** SC_DURABILITY_FULL (default: synchronous=FULL, every acknowledged
   * operation survives power loss) or SC_DURABILITY_NORMAL (survives a
   * process crash; a power loss may lose the last commits). */
  int durability;
  /** Operations per commit; 0 = library default (512); 1 = no group commit. */
  int batch_max;
  /** Total wait for another process's write lock before SC_BUSY; 0 =
   * library default (30,000 ms). Writers of other libshopcore processes on
   * the file take turns, one batch each, and a waiting writer sleeps until
   * its turn (the "<path>-turn" file, see sc_open); any other writer is
   * waited for with exponential backoff. */
  int busy_timeout_ms;
  /** The clock, milliseconds since the epoch; NULL = wall clock. Called from
   * the writer thread and from callers' threads: it must be thread-safe.
   * Tests inject one to make expiry and validity windows deterministic. */
  int64_t (*clock_ms)(void *ud);
  void *clock_ud;
  /** Operations waiting for the writer at most; a full queue makes callers
   * wait (back-pressure) up to busy_timeout_ms, then SC_BUSY. 0 = library
   * default (4096); at most 2^24. */
  int queue_max;
  /** Idle read connections kept open; 0 = library default (64). On
   * PostgreSQL also the most read connections open at once: a reader
   * waits up to busy_timeout_ms for one, then SC_BUSY. */
  int read_pool_max;
  /** Time-to-live of a checkout when its request says 0; 0 = 15 minutes. */
  int64_t default_order_ttl_ms;
  /** Delivery attempts before an outbox event is dead: set aside, no
   * longer handed out, until requeued (see 7.); 0 = 10. */
  int outbox_max_attempts;
  /** First retry delay of a failed delivery (doubled each attempt, with
   * jitter); 0 = 100 ms. */
  int64_t outbox_retry_base_ms;
  /** Cap of the retry delay; 0 = 60,000 ms. */
  int64_t outbox_retry_max_ms;
  /** Retention of delivered outbox events: a running worker purges those
   * acked longer ago than this (db clock), in small batches while idle
   * (see sc_outbox_purge). 0 = 7 days; negative is refused (SC_INVALID). */
  int64_t outbox_retention_ms;
  /* ---- alerts (see 10. metrics and alerts) ---- */
  /** Called when an alert threshold is crossed and again when it recovers;
   * NULL = no callback (the state is still in sc_metrics). It runs on one of
   * the library's threads (the one completing operations, or the writer for
   * the queue-depth alert), never two calls at once: it must be quick and
   * must not call the library for this db (a blocking call would wait for
   * the thread it runs on). */
  void (*on_alert)(const sc_alert *alert, void *ud);
  void *alert_ud;
  /** p95 of operation latency (submission to durable completion, all
   * operations) over the window above which SC_ALERT_LATENCY fires;
   * 0 = 1,000 ms; negative = off. */
  int64_t alert_p95_ms;
  /** Share (0..1) of operations that failed with an error (not an expected
   * outcome: see sc_status_outcome) over the window above which
   * SC_ALERT_ERROR_RATE fires; 0 = 0.05; negative = off; above 1 (or NaN)
   * is SC_INVALID. */
  double alert_error_rate;
  /** Queue depth at or above which SC_ALERT_QUEUE_DEPTH fires, at most
   * queue_max; 0 = 80% of queue_max; negative = off. */
  int alert_queue_depth;
  /** The sliding window, by the db's clock; 0 = 10,000 ms. */
  int64_t alert_window_ms;
  /** Fewest operations in the window for the latency and error-rate alerts
   * to decide (fire or recover); 0 = 20. */
  int alert_min_samples;
  /** A commit (one batch, BEGIN to the durable COMMIT) at least this long
   * is a slow commit: counted in sc_metrics.slow_commits, kept as
   * sc_metrics.last_slow_commit and, when the environment variable
   * SC_DEBUG_SLOW_COMMITS is 1 at sc_open, logged as one line on stderr.
   * 0 = 20 ms; negative = no commit is slow; past INT64_MAX / 1,000,000
   * (too long in nanoseconds) SC_INVALID. */
  int64_t slow_commit_ms;
  /* ... more fields may follow; always start from sc_options_init() */
} sc_options;

/** Fills opts with the defaults (every field 0) and sets opts->size to the
 * size of sc_options in the caller's header. NULL is a no-op. Any thread. */
#define sc_options_init(opts) sc_options_init_sized((opts), sizeof(sc_options))
/** What sc_options_init calls: fills size bytes of opts (see "Structs that
 * grow"). */
SC_API void sc_options_init_sized(sc_options *opts, size_t size);
/* The contract's names are exported as functions too (the parentheses keep
 * the macro out), for a caller that looks symbols up by name (dlsym, an FFI)
 * or was linked before the macros: they assume this header's sizes. */
SC_API void(sc_options_init)(sc_options *opts);

/**
 * Opens (creating if needed) the database at path, creates or migrates the
 * library's tables (all prefixed sc_, tracked in sc_meta, so the file may be
 * shared with a host application's own tables), and starts the writer thread.
 * Ids of every table are never reused, even after rows are deleted
 * (AUTOINCREMENT: SQLite's sqlite_sequence table appears in the file).
 * Beside the database it keeps "<path>-turn", a small file through which
 * the writers of every libshopcore process on the database take turns
 * (next to the real file when path goes through symbolic links, as SQLite's
 * "-wal" and "-shm" are; created with the database file's mode, like SQLite's
 * "-shm"; every process writing the database needs read-write access to it; it
 * may be deleted while no process has the database open).
 *
 * PostgreSQL: a path that is a libpq connection URI ("postgresql://..." or
 * "postgres://...", PostgreSQL 14 or newer) opens the same API on that
 * server, for several application hosts sharing one database. The query
 * parameter "schema=NAME" (a lower-case name; default "shopcore") names the
 * schema the library's tables and functions live in; it is created if
 * needed and migrated under an advisory lock, so hosts opening at once are
 * safe. Each handle keeps one writer connection (its batches are one
 * pipelined transaction each) and a pool of read connections. Connecting
 * waits at most busy_timeout_ms. A connection lost during a batch is
 * reconnected by itself; a batch whose COMMIT may have happened is looked up
 * in the library's batch log, and reported SC_AMBIGUOUS only when that
 * cannot answer. Not supported there (SC_MISUSE, "... is not supported
 * on PostgreSQL yet"): sc_backup (pg_dump is the tool).
 *
 * @param[in] path  file name, or a PostgreSQL URI; ":memory:" and "file:"
 *                  URIs are refused (the writer and the readers need one
 *                  shared file).
 * @param[in] opts  NULL for defaults.
 * @param[out] out  the handle, or NULL on failure.
 * @return SC_OK; SC_INVALID (an option out of range, named in sc_errmsg; an
 *   options struct from a newer header that sets a field this library does
 *   not know; a NULL, empty or in-memory path); SC_MISUSE (NULL out);
 *   SC_IOERR (cannot open or create the file; or the file is on a network
 *   file system, NFS, SMB/CIFS and the like, where processes on different
 *   machines could share neither the write turn nor SQLite's WAL index);
 *   SC_CORRUPT (not a database, or a schema from a newer library); SC_BUSY
 *   (another process held the file past busy_timeout_ms); SC_ERROR (the
 *   turn file is in use by an incompatible build of the library, or a
 *   thread could not be started); SC_NOMEM. On PostgreSQL: SC_INVALID (a
 *   URI libpq refuses, or a bad schema name), SC_IOERR (no connection
 *   within busy_timeout_ms, named in sc_errmsg), SC_CORRUPT (a schema from
 *   a newer library).
 * Any thread.
 */
SC_API int sc_open(const char *path, const sc_options *opts, sc_db **out);

/**
 * Closes the handle: calls in progress finish first (operations already
 * queued are committed and completed), the writer thread and every other
 * thread the library started for this handle are joined, and the memory is
 * freed. Calls racing a close (made from other threads while sc_close runs)
 * get SC_CLOSED; calls after it returns are undefined, like using freed
 * memory: the handle is gone, and the host must make sure no thread uses it
 * then (as with sqlite3_close). NULL is a no-op.
 * Stop workers (sc_worker_stop*) and close sc_async handles before closing.
 * @return SC_OK; SC_MISUSE (a worker still runs on db, including a
 *   stopped one whose close_cb has not run yet: the handle stays open and
 *   usable; or another sc_close is already closing it); or the
 *   error of the final checkpoint, SC_IOERR, SC_NOMEM or SC_CORRUPT (the
 *   handle is freed all the same). Any thread.
 */
SC_API int sc_close(sc_db *db);

/* ======================================================================== */
/* 4. Catalog and accounts                                                  */
/* ======================================================================== */

/* Input limits. Past one, a call returns SC_INVALID with a message that
 * names the limit, and stores nothing. They bound what one call may make
 * the writer (and every caller queued behind it) do. Names and idempotency
 * keys are text: well-formed UTF-8 (ASCII is), else SC_INVALID, on either
 * backend alike. */
/** The longest product or policy name, in bytes (UTF-8, without the NUL). */
#define SC_NAME_MAX 255
/** The longest idempotency key, in bytes (UTF-8, without the NUL). */
#define SC_KEY_MAX 255
/** The most lines one checkout may have. */
#define SC_CHECKOUT_LINES_MAX 1000

/** Creates a product. A write.
 * @param[in] name  non-empty, at most SC_NAME_MAX bytes; copied.
 * @param[in] price >= 0.  @param[in] stock >= 0, the units on hand.
 * @param[out] out  the new product's id.
 * @return SC_OK, SC_INVALID (a NULL, empty or too long name; a negative
 *   price or stock). */
SC_API int sc_product_create(sc_db *db, const char *name, int64_t price,
                             int64_t stock, sc_id *out);
/** Adds qty (> 0) to a product's total stock. A write.
 * @return SC_OK, SC_INVALID (qty <= 0, or the total would overflow),
 *   SC_NOT_FOUND. */
SC_API int sc_product_restock(sc_db *db, sc_id product, int64_t qty);

typedef struct sc_stock {
  int64_t total;     /* units on hand, reserved ones included */
  int64_t reserved;  /* units held by PENDING orders */
  int64_t available; /* total - reserved */
  int64_t version;   /* +1 on every reservation, release and restock;
                        a payment keeps it (available does not change) */
} sc_stock;
/** Reads a product's stock. A read. @return SC_OK, SC_NOT_FOUND. */
SC_API int sc_stock_get(sc_db *db, sc_id product, sc_stock *out);

typedef struct sc_product {
  /** The name, NUL-terminated, copied into the caller's struct (nothing to
   * free; valid as long as the struct). The library stores at most
   * SC_NAME_MAX bytes; a longer name edited into the file by hand is cut
   * before the UTF-8 character that would not fit. */
  char name[SC_NAME_MAX + 1];
  int64_t price;
  sc_stock stock;
} sc_product;
/** Reads a product: its name, price and stock, on one snapshot. A read.
 * @param[out] out  untouched on failure.
 * @return SC_OK, SC_NOT_FOUND. */
SC_API int sc_product_get(sc_db *db, sc_id product, sc_product *out);

/** Credits amount (> 0) to user's account, creating it on first use. A
 * replay with the same idempotency_key and amount returns SC_OK and changes
 * nothing; with another amount or user, SC_IDEMPOTENCY_MISMATCH. NULL key =
 * not idempotent; a key is non-empty and at most SC_KEY_MAX bytes. A write.
 * @return SC_OK, SC_INVALID (user <= 0, amount <= 0, an empty or too long
 *   key, a balance that would overflow), SC_IDEMPOTENCY_MISMATCH. */
SC_API int sc_account_deposit(sc_db *db, sc_id user, int64_t amount,
                              const char *idempotency_key);

typedef struct sc_account {
  int64_t balance;   /* sum of the ledger */
  int64_t held;      /* totals of the user's PENDING orders */
  int64_t available; /* balance - held */
} sc_account;
/** Reads an account. A read. @return SC_OK, SC_NOT_FOUND (no deposit yet). */
SC_API int sc_account_get(sc_db *db, sc_id user, sc_account *out);

/* ======================================================================== */
/* 5. Coupons                                                               */
/* ======================================================================== */

/* A policy is a coupon campaign: at most max_count coupons, each user at
 * most per_user_limit, each worth a fixed amount or a percentage off. */
typedef struct sc_coupon_policy_spec {
  const char *name;         /* non-empty, at most SC_NAME_MAX bytes */
  int64_t max_count;        /* > 0: never more coupons than this */
  int32_t per_user_limit;   /* 0 = 1; negative is SC_INVALID */
  int64_t discount_amount;  /* fixed discount, or */
  int32_t discount_percent; /* percent off (1..100), capped by max_discount
                               when that is > 0; not both */
  int64_t max_discount;
  int64_t starts_at_ms, ends_at_ms; /* 0 = unbounded; active while
                                       starts <= now < ends */
} sc_coupon_policy_spec;
/** Creates a coupon policy. A write.
 * @return SC_OK, SC_INVALID (a NULL, empty or too long name; max_count
 *   <= 0; a negative per_user_limit, discount or time; a percent past 100;
 *   both a fixed discount and a percent; an empty validity window, ends at
 *   or before starts). */
SC_API int sc_coupon_policy_create(sc_db *db, const sc_coupon_policy_spec *spec,
                                   sc_id *out);
/** The kill switch: paused != 0 stops issuance from the next operation on
 * (operations committed before it stand); 0 resumes. Pausing a paused
 * policy (or resuming a running one) changes nothing and writes no event.
 * A write. @return SC_OK, SC_NOT_FOUND. */
SC_API int sc_coupon_policy_pause(sc_db *db, sc_id policy, int paused);
/** Resumes issuance: sc_coupon_policy_pause(db, policy, 0). A write.
 * @return SC_OK, SC_NOT_FOUND. */
SC_API int sc_coupon_policy_resume(sc_db *db, sc_id policy);

typedef struct sc_coupon_policy {
  int64_t max_count, issued_count;
  int32_t per_user_limit;
  int paused;
} sc_coupon_policy;
/** Reads a policy. A read. @return SC_OK, SC_NOT_FOUND. */
SC_API int sc_coupon_policy_get(sc_db *db, sc_id policy, sc_coupon_policy *out);

/** Issues one coupon of policy to user: one conditional UPDATE ... WHERE
 * issued_count < max_count inside the write transaction, so the cap holds
 * whatever the concurrency, across threads and processes. A write.
 * @param[out] coupon_out  the new coupon's id (may be NULL).
 * @return SC_OK, SC_SOLD_OUT, SC_LIMIT_REACHED (the user holds
 *   per_user_limit of it), SC_PAUSED, SC_NOT_ACTIVE (outside the validity
 *   window), SC_NOT_FOUND (no such policy), SC_INVALID (user <= 0). */
SC_API int sc_coupon_issue(sc_db *db, sc_id policy, sc_id user,
                           sc_id *coupon_out);

/* ======================================================================== */
/* 6. Orders                                                                */
/* ======================================================================== */

typedef struct sc_line {
  sc_id product;
  int64_t qty; /* > 0 */
} sc_line;

typedef struct sc_checkout_req {
  sc_id user;
  const sc_line *lines;
  size_t n_lines;              /* 1..SC_CHECKOUT_LINES_MAX; each product
                                  at most once */
  sc_id coupon;                /* 0 = none */
  int64_t ttl_ms;              /* 0 = options' default_order_ttl_ms */
  const char *idempotency_key; /* NULL = none; a replay returns the first
                                  order id; at most SC_KEY_MAX bytes */
  /** NULL = no check; else one expected stock version per line: a product
   * whose version differs makes the checkout fail with SC_CONFLICT. */
  const int64_t *expected_versions;
} sc_checkout_req;
/** Reserves every line's stock, holds the coupon and the total against the
 * user's balance - held, and creates a PENDING order: all or nothing. The
 * total is the lines' price x qty less the coupon's discount (a fixed amount,
 * or a percentage capped by max_discount when that is > 0; never more than
 * the lines). A refused checkout changes nothing and records nothing under
 * its idempotency key, which may then be retried; a replay of a recorded
 * key returns the first order's id even if that order was paid since.
 * A write.
 * @param[out] order_out  the order's id; must not be NULL.
 * @return SC_OK, SC_OUT_OF_STOCK, SC_INSUFFICIENT_BALANCE,
 *   SC_COUPON_UNAVAILABLE (another user's, held, used, or its policy not
 *   active), SC_CONFLICT (an expected version differs), SC_INVALID (user
 *   <= 0, no lines or more than SC_CHECKOUT_LINES_MAX, qty <= 0, a product
 *   twice, ttl_ms < 0, an overflowing total or deadline, an empty key or
 *   one longer than SC_KEY_MAX, an expected version < 0), SC_NOT_FOUND
 *   (product, user account or coupon), SC_IDEMPOTENCY_MISMATCH (the key was
 *   used for another request). */
SC_API int sc_checkout(sc_db *db, const sc_checkout_req *req, sc_id *order_out);
/** Pays a PENDING order before its deadline: debits the balance, consumes the
 * stock, uses the coupon. Paying a paid order is SC_OK and changes nothing.
 * A write.
 * @return SC_OK, SC_EXPIRED (its deadline passed, expired or not yet),
 *   SC_INVALID_STATE (cancelled), SC_NOT_FOUND. */
SC_API int sc_order_pay(sc_db *db, sc_id order);
/** Cancels a PENDING order, releasing stock, hold and coupon; a PENDING
 * order past its deadline may still be cancelled until it is expired.
 * Cancelling a cancelled order is SC_OK and changes nothing. A write.
 * @return SC_OK, SC_INVALID_STATE (paid or expired), SC_NOT_FOUND. */
SC_API int sc_order_cancel(sc_db *db, sc_id order);

enum {
  SC_ORDER_PENDING = 1,
  SC_ORDER_CONFIRMED,
  SC_ORDER_CANCELLED,
  SC_ORDER_EXPIRED
};
typedef struct sc_order {
  sc_id user;
  int status; /* SC_ORDER_* */
  int64_t total, discount, expires_at_ms;
} sc_order;
/** Reads an order. A read. @return SC_OK, SC_NOT_FOUND. */
SC_API int sc_order_get(sc_db *db, sc_id order, sc_order *out);
/** Expires every PENDING order with expires_at_ms <= now (the db's clock,
 * read once at the call), releasing stock, hold and coupon, in as many
 * internal batches (write operations of a few hundred orders) as needed.
 * An order that cannot be released (a damaged row: a hold or a reservation
 * edited by hand) does not stop the others: it is left PENDING and
 * untouched, counted in sc_metrics.expire_skipped, and named by sc_verify;
 * the call still returns SC_OK. A write; after a failure the batches
 * committed before it stay expired and *expired_out is left untouched.
 * @param[out] expired_out  how many were expired; may be NULL.
 * @return SC_OK. */
SC_API int sc_orders_expire_due(sc_db *db, int *expired_out);

/* ======================================================================== */
/* 7. Outbox                                                                */
/* ======================================================================== */

/* The outbox is a table in the same database in which every state change
 * (a coupon issued, an order created, paid, cancelled or expired, a deposit,
 * a policy paused or resumed) writes an event, in the same transaction as
 * the change: an event exists exactly when its change committed. The host
 * delivers the events onward (to a message broker, a mailer, another
 * service): it claims a batch, hands each on, and acks it (done) or nacks
 * it (failed: retried later). Delivery is at least once: deduplicate by
 * the event's id.
 *
 * Each event belongs to an aggregate, the thing it is about: order events
 * to the order, a coupon-issued event to the coupon, a deposit to the
 * account (the user), a pause or resume to the policy. Events of one
 * aggregate are numbered 1, 2, 3 ... and handed out in that order, each
 * only once the one before it is acked. An operation that changes nothing
 * (an idempotent replay, pausing a paused policy, paying a paid order)
 * writes no event.
 *
 * A dead event is one whose delivery failed outbox_max_attempts times: it is
 * set aside, no longer handed out, and holds back the later events of its
 * aggregate until someone requeues it (makes it pending again, after
 * fixing what made it fail). */

enum {
  SC_EVENT_COUPON_ISSUED = 1,
  SC_EVENT_ORDER_CREATED,
  SC_EVENT_ORDER_PAID,
  SC_EVENT_ORDER_CANCELLED,
  SC_EVENT_ORDER_EXPIRED,
  SC_EVENT_DEPOSIT,
  SC_EVENT_POLICY_PAUSED,
  SC_EVENT_POLICY_RESUMED
};

typedef struct sc_event {
  sc_id id;           /* unique, never reused; the consumer's
                         deduplication key */
  int type;           /* SC_EVENT_* */
  sc_id aggregate_id; /* the order, coupon, account (user) or policy */
  int64_t seq;        /* 1, 2, 3 ... per aggregate, no gaps (delivered ones
                         may be purged: sc_outbox_purge) */
  int64_t created_at_ms;
  int attempts;        /* deliveries before this one */
  int64_t claim;       /* this delivery's fencing token, > 0 (new on every
                          claim); pass it to sc_outbox_ack / sc_outbox_nack */
  const void *payload; /* the msgpack map; see sc_event_decode() */
  size_t payload_len;
} sc_event;

/** Most events one sc_outbox_claim or sc_outbox_dead_list call returns. */
#define SC_OUTBOX_CLAIM_MAX 4096

/* ---- claim, ack, nack ---- */

/** Claims up to max deliverable events for lease_ms: a claimed event is
 * leased to the caller (handed to nobody else) until the lease ends, and
 * handed out again after it unless acked or nacked.
 * Deliverable: pending, due (new, or its retry delay passed), not leased,
 * and no earlier event of its aggregate undelivered (a dead one holds back
 * its aggregate until requeued). Claiming is a write (it sets the leases),
 * committed like every other; the events come in id order, at most one per
 * aggregate. Times are the db's clock. An event's attempts counts its
 * deliveries before this one: nacks, and deliveries whose lease ran out
 * without an ack or a nack (once those reach outbox_max_attempts the event
 * is dead, with last_error saying so, instead of being handed out again).
 * A write.
 * @param[in] max       1..SC_OUTBOX_CLAIM_MAX.
 * @param[in] lease_ms  > 0: ack or nack before it ends, or the event is
 *                      handed out again (at least once delivery).
 * @param[out] events_out  freed with sc_events_free; NULL when *n_out is 0.
 * @return SC_OK (also with none), SC_INVALID (max or lease_ms out of
 *   range). Any thread. */
SC_API int sc_outbox_claim(sc_db *db, int max, int64_t lease_ms,
                           sc_event **events_out, int *n_out);
/** Frees what sc_outbox_claim returned. NULL is a no-op. */
SC_API void sc_events_free(sc_event *events, int n);
/* Settling a delivery (ack or nack) is fenced by its claim token
 * (sc_event.claim): each claim of an event gets a new token, and only the
 * latest claim's token settles it. A token that is not the event's latest
 * claim (its lease ran out and someone claimed it again), or any token for
 * an event never claimed, gets SC_CONFLICT and changes nothing: a consumer
 * whose lease ran out cannot undo or finish the work of the one that holds
 * the event now. */
/** Marks a delivery done: the event is delivered, and the next event of its
 * aggregate becomes deliverable. With the latest claim's token: acking again
 * is SC_OK and changes nothing; a late ack (the lease ran out and nobody
 * claimed it since, even if it went dead meanwhile) makes it delivered.
 * A write.
 * @param[in] claim  the delivery's sc_event.claim.
 * @return SC_OK, SC_NOT_FOUND, SC_CONFLICT (not the latest claim, or never
 *   claimed). Any thread. */
SC_API int sc_outbox_ack(sc_db *db, sc_id event_id, int64_t claim);
/** A failed delivery: retried later (backoff with jitter), or dead after
 * outbox_max_attempts. reason may be NULL; it is kept as the event's
 * last_error, truncated to 500 bytes (at a UTF-8 character boundary).
 * attempts grows by one; once it reaches sc_options.outbox_max_attempts the
 * event is dead (listed by sc_outbox_dead_list, holding back its aggregate);
 * before that it is deliverable again after outbox_retry_base_ms x
 * 2^(attempts - 1), capped at outbox_retry_max_ms, each delay spread by
 * +-20% at random (db clock). A delivery is settled once: a second nack with
 * the same token, or a nack after an ack, is SC_INVALID_STATE. A write.
 * @param[in] claim  the delivery's sc_event.claim.
 * @return SC_OK, SC_NOT_FOUND, SC_CONFLICT (not the latest claim, or never
 *   claimed), SC_INVALID_STATE (delivered, dead, or this claim already
 *   nacked). Any thread. */
SC_API int sc_outbox_nack(sc_db *db, sc_id event_id, int64_t claim,
                          const char *reason);

/* ---- dead events ---- */

/** A dead event: it failed outbox_max_attempts deliveries. */
typedef struct sc_dead_event {
  sc_event event;         /* attempts: the failed deliveries; claim: 0 (a
                             listing is no delivery) */
  const char *last_error; /* the last nack's reason; "" if none */
} sc_dead_event;
/**
 * Lists dead events in id order, from the first with an id > after_id (0 to
 * start; pass the last id seen to page on). A read.
 * @param[in] max  1..SC_OUTBOX_CLAIM_MAX.
 * @param[out] events_out  freed with sc_dead_events_free; NULL when *n_out
 *   is 0.
 * @return SC_OK, SC_INVALID (max out of range). Any thread.
 */
SC_API int sc_outbox_dead_list(sc_db *db, sc_id after_id, int max,
                               sc_dead_event **events_out, int *n_out);
/** Frees what sc_outbox_dead_list returned. NULL is a no-op. */
SC_API void sc_dead_events_free(sc_dead_event *events, int n);
/** Requeues a dead event: makes it pending again, with attempts 0,
 * deliverable now (its aggregate's later events follow it). A running
 * worker is woken. A write.
 * @return SC_OK, SC_NOT_FOUND, SC_INVALID_STATE (not dead). Any thread. */
SC_API int sc_outbox_requeue(sc_db *db, sc_id event_id);
/** Requeues every dead event. A write.
 * @param[out] requeued_out  how many; may be NULL.
 * @return SC_OK. Any thread. */
SC_API int sc_outbox_requeue_all(sc_db *db, int *requeued_out);

/* ---- purge ---- */

/**
 * Removes delivered events acked before delivered_before_ms (db clock), so
 * that the outbox does not grow forever. A time past now means now (what
 * is acked while it runs is left for the next purge). Pending (leased or not)
 * and dead events are never removed, nor is the newest event of all (ids are
 * never reused). It works in batches of at most 500 events, each one writer
 * operation of a few milliseconds committed on its own, so other writes go
 * on between them; it returns once a batch finds fewer. An aggregate's
 * sequence goes on from its last number after a purge (the number is kept
 * apart), and sc_verify checks the events kept, from the oldest kept of an
 * aggregate to its last number. (Should the clock step back, an event
 * counts as acked no earlier than the one before it in its aggregate, so
 * that a purge always removes the oldest of an aggregate first.) A running
 * worker does the same on its own for sc_options.outbox_retention_ms.
 * A write, in batches: the batches committed before a failure stay purged.
 * @param[out] purged_out  events removed, also those of the batches
 *   committed before a failure (written on failure too); may be NULL.
 * @return SC_OK. Any thread.
 */
SC_API int sc_outbox_purge(sc_db *db, int64_t delivered_before_ms,
                           int64_t *purged_out);

/* ---- counts ---- */

typedef struct sc_outbox_stats {
  int64_t pending; /* not yet delivered, not dead */
  int64_t dead;
  int64_t oldest_pending_ms; /* created_at_ms of the oldest pending; 0 */
} sc_outbox_stats;
/** Counts the outbox's events, on one snapshot. A read. @return SC_OK.
 * Any thread. */
SC_API int sc_outbox_stats_get(sc_db *db, sc_outbox_stats *out);

/* ---- decoding payloads ---- */

/** The schema version every payload carries in "v". */
#define SC_EVENT_SCHEMA_VERSION 1
/** Payloads longer than this are refused by sc_event_decode. */
#define SC_EVENT_PAYLOAD_MAX 1024

/** An event payload, decoded. The payload is a msgpack map with the keys
 * "type", "v", "at" and the type's own fields below; a field the type does
 * not carry reads 0. May grow: see "Structs that grow". */
typedef struct sc_event_data {
  int type;              /* SC_EVENT_*, the payload's "type" */
  int version;           /* "v": SC_EVENT_SCHEMA_VERSION */
  int64_t at_ms;         /* "at": when the change committed, db clock */
  sc_id user;            /* coupon issued, order events, deposit */
  sc_id order;           /* order events */
  sc_id policy;          /* coupon issued, policy paused/resumed */
  sc_id coupon;          /* coupon issued; order events (0 = none) */
  int64_t amount;        /* order events: the total; deposit: the amount */
  int64_t discount;      /* order events */
  int64_t expires_at_ms; /* order created: the payment deadline */
} sc_event_data;

/**
 * Decodes and validates an event payload (sc_event.payload). Accepted only
 * when it is exactly one msgpack map (no trailing bytes) whose keys are the
 * ones its type carries, each once, each with an integer value in range,
 * with "v" == SC_EVENT_SCHEMA_VERSION and a known "type". Nothing is ever
 * converted: a float, string or boolean where an integer belongs is refused.
 * The decoder never reads outside [payload, payload + len).
 * int sc_event_decode(const void *payload, size_t len, sc_event_data *out);
 * @param[out] out  filled on success; untouched on failure.
 * @return SC_OK; SC_INVALID for anything malformed, truncated, of the wrong
 *   type, of an unknown type or version, or longer than SC_EVENT_PAYLOAD_MAX
 *   (sc_errmsg says what); SC_MISUSE (NULL out, or NULL payload with len >
 *   0); SC_NOMEM. Any thread; no database needed.
 */
#define sc_event_decode(payload, len, out) \
  sc_event_decode_sized((payload), (len), (out), sizeof(sc_event_data))
/** What sc_event_decode calls: writes size bytes of out. */
SC_API int(sc_event_decode)(const void *payload, size_t len,
                            sc_event_data *out); /* see sc_options_init */
SC_API int sc_event_decode_sized(const void *payload, size_t len,
                                 sc_event_data *out, size_t size);
/** "order_paid" ... for SC_EVENT_*; "unknown" otherwise. Static storage. */
SC_API const char *sc_event_type_name(int type);

/* ======================================================================== */
/* 8. Asynchronous calls (libuv)                                            */
/* ======================================================================== */

/* For hosts on a libuv loop. An sc_async handle binds a database handle to
 * a loop; each *_async call queues its operation to the writer like the
 * blocking call does, and returns at once. The callback runs later on the
 * loop's thread (never on the writer's), once the commit holding the
 * operation is durable, exactly once for each call that returned SC_OK,
 * and never for one that returned an error. In the callback, status is the
 * status the blocking call would have returned, and sc_errmsg() its detail.
 *
 * Thread rule (libuv's): the handle and its calls belong to the loop's
 * thread. A call never blocks the loop: when the writer queue is full
 * (sc_options.queue_max) it returns SC_BUSY at once (and no callback
 * follows); try again later. Close the handle (and let its close
 * callback run) before sc_close; requests queued before sc_close still
 * complete. */
typedef struct sc_async sc_async;
typedef struct sc_async_req sc_async_req;
typedef void (*sc_async_cb)(sc_async_req *req, int status);
/** One asynchronous call, owned by the caller: keep it alive and untouched
 * until its callback; it may then be reused or freed (also from within the
 * callback). */
struct sc_async_req {
  void *data; /* the caller's; the library never touches it */
  int status; /* set before the callback: the result */
  sc_id id;   /* set before the callback: the new coupon (issue) or order
                 (checkout) on success; 0 otherwise */
  void *op_;  /* private */
  /* Private room to grow (as libuv's UV_REQ_FIELDS keeps): the library may
   * use it in a later version without changing the struct's size. */
  void *reserved_[4];
};

/** Binds db to loop. @param[out] out  the handle, or NULL on failure.
 * @return SC_OK, SC_MISUSE (NULL db, loop or out), SC_NOMEM, SC_ERROR
 *   (libuv refused the uv_async handle). On the loop's thread. */
SC_API int sc_async_open(sc_db *db, uv_loop_t *loop, sc_async **out);
/** Closes the handle: requests the writer has not started yet complete
 * with SC_CANCELED (and changed nothing); started ones complete with their
 * real result. Once every callback has run, the handle's uv_async is closed
 * with uv_close, close_cb(a, ud) runs (close_cb may be NULL) and a is
 * freed. Keep running the loop until then. Further calls on a get
 * SC_CLOSED until it is freed.
 * @return SC_OK, SC_MISUSE (NULL, already closing). On the loop's thread
 *   (a callback may call it). */
SC_API int sc_async_close(sc_async *a, void (*close_cb)(sc_async *a, void *ud),
                          void *ud);
/* Each *_async call returns at once: SC_OK (the callback will come), the
 * argument errors of its blocking call (checked before queueing),
 * SC_MISUSE (NULL a, req or cb), SC_CLOSED (a or its db is closing),
 * SC_NOMEM, or SC_BUSY (the queue is full); with an error no callback
 * comes. The callback gets every other code of the blocking call, and
 * SC_CANCELED when sc_async_close cancelled the request. */
/** sc_coupon_issue, asynchronously: req->id is the coupon. */
SC_API int sc_coupon_issue_async(sc_async *a, sc_async_req *req, sc_id policy,
                                 sc_id user, sc_async_cb cb);
/** sc_checkout, asynchronously: req->id is the order. The request and its
 * arrays and key are copied: they may go away once the call returns. */
SC_API int sc_checkout_async(sc_async *a, sc_async_req *req,
                             const sc_checkout_req *creq, sc_async_cb cb);
/** sc_order_pay, asynchronously. */
SC_API int sc_order_pay_async(sc_async *a, sc_async_req *req, sc_id order,
                              sc_async_cb cb);
/** sc_order_cancel, asynchronously. */
SC_API int sc_order_cancel_async(sc_async *a, sc_async_req *req, sc_id order,
                                 sc_async_cb cb);

/* ======================================================================== */
/* 9. The worker (libuv)                                                    */
/* ======================================================================== */

/* The worker runs, inside a libuv loop, the two jobs that need a clock and
 * a wake-up: expiring PENDING orders at their deadline (one uv_timer armed
 * for the earliest deadline, re-armed when a checkout commits an earlier
 * one), and delivering outbox events to a handler as soon as the commit
 * that wrote them is durable (the writer wakes the loop with uv_async; a
 * slow poll picks up events other processes wrote). On PostgreSQL, other
 * hosts' commits wake it too: their batches send NOTIFY, which the worker
 * hears on a listening connection of its own (watched in the loop, made
 * again by itself if lost; the poll covers the gap). It never blocks the
 * loop (one exception on PostgreSQL: a host name in the URI is looked up by
 * libpq's getaddrinfo, which blocks, each time the listening connection is
 * made; name the server by IP address or socket directory where the loop
 * must never wait): claims, acks and expiry run in the writer (submitted
 * without waiting: a full write queue means a retry shortly), and their
 * completions come back through uv_async. It starts no thread and uses no
 * thread pool (sc_worker_start_thread's own thread excepted).
 *
 * Timers run on real time, but what is due is decided by the db's clock
 * (sc_options.clock_ms): each timer waits (due - clock now), at most
 * poll_interval_ms, and checks the clock again when it fires. An injected
 * clock that jumps forward is thus seen within poll_interval_ms.
 *
 * One worker per sc_db handle. Stop it (and let its close callback run)
 * before sc_close. */
typedef struct sc_worker sc_worker;
/** Called on the worker's loop thread for each event; SC_OK acks it, any
 * other value retries it later. The event and its payload are valid during
 * the call only; the payload has already passed sc_event_decode (one that does
 * not is dead at once and never reaches the handler). Events of one aggregate
 * come in sequence order, each once every earlier one is acked; delivery is at
 * least once, so deduplicate by ev->id. A retry follows the nack rules of
 * sc_outbox_nack. The worker settles each delivery with its claim token
 * (see sc_outbox_ack), and never calls the handler for an event whose lease
 * (lease_ms from the claim, db clock) has run out while earlier handlers of
 * its batch ran: that event is released, undelivered, for the next claim.
 * The handler may call sc_worker_stop (the rest of the batch is then
 * released, undelivered) but not sc_worker_stop_thread. */
typedef int (*sc_event_handler)(const sc_event *ev, void *ud);
typedef struct sc_worker_options {
  /** Set by sc_worker_options_init: the size of the caller's struct (see
   * "Structs that grow"). Leave it alone. */
  size_t size;
  sc_event_handler on_event; /* NULL = expiry only, no dispatch */
  void *ud;
  /** Events claimed per round trip (1..SC_OUTBOX_CLAIM_MAX); 0 = 512.
   * Larger drains a backlog faster but holds the writer longer per round
   * (about 6 us per event). */
  int batch_max;
  /** Lease of claimed events: if this process dies holding them, they are
   * delivered again after it. 0 = 30,000 ms. */
  int64_t lease_ms;
  /** The fallback poll for events and order deadlines other processes (or
   * other handles) wrote (on PostgreSQL, a fallback for the wake-up by
   * NOTIFY), and the longest any timer waits before it checks
   * the db clock again: an idle worker runs one expiry round (a write
   * transaction that changes nothing) per interval. 0 = 1,000 ms. */
  int64_t poll_interval_ms;
  /** Non-zero: no expiry (another process expires orders). */
  int no_expiry;
  /* ... more fields may follow; always start from sc_worker_options_init() */
} sc_worker_options;
/** Fills opts with the defaults (all zero) and sets opts->size, as
 * sc_options_init does. NULL is a no-op. Any thread. */
#define sc_worker_options_init(opts) \
  sc_worker_options_init_sized((opts), sizeof(sc_worker_options))
/** What sc_worker_options_init calls: fills size bytes of opts. */
SC_API void sc_worker_options_init_sized(sc_worker_options *opts, size_t size);
SC_API void(sc_worker_options_init)(sc_worker_options *opts); /* as above */
/**
 * Starts a worker on loop: at once it expires the overdue orders, finds the
 * earliest deadline and claims the events already waiting; then it runs as
 * long as the loop does, until sc_worker_stop.
 * @param[in] opts  NULL = defaults (expiry only).
 * @param[out] out  the worker, or NULL on failure.
 * @return SC_OK, SC_MISUSE (NULL db, loop or out; a worker already runs on
 *   db), SC_INVALID (an option out of range, named in sc_errmsg; a struct
 *   from a newer header that sets a field this library does not know),
 *   SC_CLOSED, SC_NOMEM, SC_ERROR (libuv refused a handle). On the loop's
 *   thread only.
 */
SC_API int sc_worker_start(sc_db *db, uv_loop_t *loop,
                           const sc_worker_options *opts, sc_worker **out);
/**
 * Stops a worker: no handler is called from now on (the rest of a batch in
 * hand is released undelivered, its events delivered again later); work in
 * flight (a round trip or an expiry batch with the writer) is completed;
 * then the worker's handles are closed with
 * uv_close, close_cb(w, ud) runs (close_cb may be NULL) on the loop thread,
 * and w is freed: it must not be used after close_cb. Keep running the loop
 * until then. Nothing of the worker runs after close_cb.
 * @return SC_OK, SC_MISUSE (NULL, already stopping, or started with
 *   sc_worker_start_thread). On the loop's thread only (a handler may call
 *   it).
 */
SC_API int sc_worker_stop(sc_worker *w,
                          void (*close_cb)(sc_worker *w, void *ud), void *ud);
/**
 * Starts a worker on a loop and a thread of its own (for hosts without
 * libuv). The handler then runs on that thread. Returns once the worker has
 * started, or with the error sc_worker_start gave.
 * @return as sc_worker_start, and SC_ERROR (the thread or its loop could
 *   not be started). Any thread.
 */
SC_API int sc_worker_start_thread(sc_db *db, const sc_worker_options *opts,
                                  sc_worker **out);
/**
 * Stops a worker started by sc_worker_start_thread, as sc_worker_stop does,
 * and joins its thread; w is freed when it returns.
 * @return SC_OK, SC_MISUSE (NULL; a worker on the host's loop; called from
 *   the worker's own thread, i.e. its handler). Any other thread.
 */
SC_API int sc_worker_stop_thread(sc_worker *w);

/* ======================================================================== */
/* 10. Metrics and alerts                                                   */
/* ======================================================================== */

/* Built-in metrics of one handle: every write operation is counted by kind
 * and status when the writer completes it, with the latency from submission
 * to durable completion; batches and commits are measured too. Reads
 * (sc_stock_get, sc_order_get ...) do not go through the writer and are not
 * counted. A few terms: the WAL (write-ahead log, the "-wal" file) is where
 * SQLite appends each commit; a checkpoint copies its pages back into the
 * database file, after which the WAL can start over from its beginning. */

/** How an outcome counts: SC_OUTCOME_OK; SC_OUTCOME_EXPECTED for the
 * business outcomes a shop expects under contention (SC_SOLD_OUT,
 * SC_LIMIT_REACHED, SC_PAUSED, SC_NOT_ACTIVE, SC_OUT_OF_STOCK,
 * SC_INSUFFICIENT_BALANCE, SC_COUPON_UNAVAILABLE, SC_EXPIRED,
 * SC_INVALID_STATE, SC_CONFLICT), which are not errors for the error rate;
 * SC_OUTCOME_ERROR for every other status (bad input, unknown ids, I/O,
 * busy, out of memory ...). */
enum { SC_OUTCOME_OK = 0, SC_OUTCOME_EXPECTED, SC_OUTCOME_ERROR };
/** The SC_OUTCOME_* of a status (no error code). Any thread. */
SC_API int sc_status_outcome(int status);

/** Latency or size percentiles read from a log-linear histogram (within
 * 12.5% of the true value; max is exact). */
typedef struct sc_quantiles {
  uint64_t count;
  double sum, p50, p95, p99, max;
} sc_quantiles;

typedef struct sc_op_metrics {
  const char *name; /* "checkout", "coupon_issue" ...; static storage */
  uint64_t count;   /* completed operations of this kind */
  uint64_t ok, expected, errors; /* count by SC_OUTCOME_*; by status code:
                                    sc_metrics_count */
  sc_quantiles latency_ms;       /* submission to durable completion */
} sc_op_metrics;

/** What the checkpoint thread was doing during a commit (the furthest phase
 * it reached). It copies pages from the WAL into the database file, then
 * fsyncs the database file. */
enum {
  SC_CHECKPOINT_IDLE = 0, /* no checkpoint ran */
  SC_CHECKPOINT_COPYING,  /* copying pages, no fsync */
  SC_CHECKPOINT_SYNCING   /* in an fsync (of the database file or WAL) */
};

/** One slow commit (see sc_options.slow_commit_ms) and what the process was
 * doing meanwhile. "Meanwhile" is from the end of the previous commit to the
 * end of this one: under load, the time of this commit. */
typedef struct sc_slow_commit {
  int64_t at_ms;            /* when it ended, by the wall clock */
  double duration_ms;       /* BEGIN to the durable COMMIT, with the wait
                               for the write turn (other processes) */
  int batch_size;           /* operations in it */
  int64_t wal_frames;       /* pages in the WAL after it */
  int64_t wal_bytes;        /* size of the -wal file after it */
  double wal_sync_ms;       /* the writer's fsyncs of the WAL */
  double db_sync_ms;        /* the writer's fsyncs of the database file (when
                               it finished a checkpoint itself) */
  double writer_cpu_ms;     /* CPU time of the writer thread: the rest of
                               duration_ms, less the fsyncs, is time it waited
                               off the CPU (another thread ran) */
  int checkpoint;           /* SC_CHECKPOINT_*, the checkpoint thread */
  int64_t checkpoint_pages; /* pages its current (or last) checkpoint
                               copied into the database file */
  double checkpoint_db_sync_ms;  /* its fsyncs of the database file */
  double checkpoint_wal_sync_ms; /* its fsyncs of the WAL */
} sc_slow_commit;

/** Upper bounds (ms) of the commit-duration histogram buckets
 * (sc_metrics.commit_buckets; the last bucket has no bound). */
#define SC_COMMIT_BUCKET_BOUNDS_MS \
  { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000 }
#define SC_COMMIT_BUCKETS 11

/** fsyncs by file, of the writer and the checkpoint thread together. */
enum { SC_FILE_DB = 0, SC_FILE_WAL = 1 };

#define SC_METRICS_OPS_MAX 32
/** May grow: see "Structs that grow". */
typedef struct sc_metrics {
  int n_ops;                             /* entries used in ops[] */
  sc_op_metrics ops[SC_METRICS_OPS_MAX]; /* every kind, counted or not */
  sc_quantiles batch_size;               /* operations per commit */
  sc_quantiles commit_ms;                /* one batch, BEGIN to COMMIT */
  int queue_depth;                       /* operations waiting now */
  int queue_max;
  int alerts_firing;      /* bit (1 << SC_ALERT_*) per alert */
  uint64_t events_purged; /* delivered events removed by sc_outbox_purge
                             and the worker's retention */
  /** Due orders expiry had to leave PENDING, counted each time one is
   * skipped: a damaged row (a hand-edited hold or stock) whose release
   * fails. The other orders expire all the same; sc_verify names it. */
  uint64_t expire_skipped;
  /* Commits by duration: commit_buckets[i] counts those over bound i - 1
   * and at most bound i of SC_COMMIT_BUCKET_BOUNDS_MS (not cumulative). */
  uint64_t commit_buckets[SC_COMMIT_BUCKETS];
  double slow_commit_ms;           /* the threshold in force */
  uint64_t slow_commits;           /* commits at least that long */
  sc_slow_commit last_slow_commit; /* all zero before the first */
  uint64_t fsyncs[2];              /* by SC_FILE_*, since sc_open (not reset) */
  double fsync_ms[2];              /* their total time */
  uint64_t checkpoints;            /* run by the checkpoint thread */
  uint64_t wal_rewinds; /* times the WAL started over from its beginning */
} sc_metrics;

/**
 * A snapshot of the handle's metrics since sc_open (or sc_metrics_reset).
 * Counters are read one by one while the writer runs, so a snapshot taken
 * under load may be off by the operations completing meanwhile.
 * int sc_metrics_get(sc_db *db, sc_metrics *out);
 * @return SC_OK, SC_MISUSE (NULL db or out). Any thread.
 */
#define sc_metrics_get(db, out) \
  sc_metrics_get_sized((db), (out), sizeof(sc_metrics))
/** What sc_metrics_get calls: writes size bytes of out. */
SC_API int sc_metrics_get_sized(sc_db *db, sc_metrics *out, size_t size);
SC_API int(sc_metrics_get)(sc_db *db, sc_metrics *out); /* see options_init */

/**
 * Operations of kind op (an sc_op_metrics.name: "checkout", "coupon_issue"
 * ...; NULL = every kind) completed with status, since sc_open or
 * sc_metrics_reset. The counts by status live behind this call, not in
 * sc_op_metrics, so that a new status code changes no struct's size.
 * @param[out] n_out  the count; untouched on failure.
 * @return SC_OK, SC_INVALID (status is not a status code), SC_NOT_FOUND (no
 *   operation of that name), SC_MISUSE (NULL db or n_out). Any thread.
 */
SC_API int sc_metrics_count(sc_db *db, const char *op, int status,
                            uint64_t *n_out);

/**
 * The metrics in the Prometheus text exposition format (version 0.0.4):
 * shopcore_operations_total{op,status,outcome} counters, latency summaries
 * shopcore_operation_duration_seconds{op,quantile} with _sum and _count and
 * a _max gauge, batch size and commit summaries, the commit-duration
 * histogram shopcore_commit_seconds{le}, the slow-commit counter
 * shopcore_slow_commits_total, fsync counters shopcore_fsyncs_total{file}
 * and shopcore_fsync_seconds_total{file} (file="db" or "wal"),
 * shopcore_checkpoints_total and shopcore_wal_rewinds_total, the queue
 * depth gauge, the shopcore_outbox_events_purged_total and
 * shopcore_orders_expire_skipped_total counters and one
 * shopcore_alert_firing{alert} gauge per alert.
 * @param[out] text_out NUL-terminated text, freed with sc_free.
 * @return SC_OK, SC_MISUSE (NULL db or text_out), SC_NOMEM. Any thread.
 */
SC_API int sc_metrics_prometheus(sc_db *db, char **text_out);

/** Zeroes the counters and histograms, slow commits included (not the
 * alert window or state, nor the fsync counters).
 * Operations completing meanwhile may be counted either side. Any thread.
 * @return SC_OK, SC_MISUSE (NULL db). */
SC_API int sc_metrics_reset(sc_db *db);

enum {
  SC_ALERT_LATENCY = 0, /* p95 latency over the window > alert_p95_ms */
  SC_ALERT_ERROR_RATE,  /* errors / operations over the window >
                           alert_error_rate */
  SC_ALERT_QUEUE_DEPTH, /* operations waiting >= alert_queue_depth */
  SC_ALERT_COUNT_       /* not an alert; the number of them */
};

/** What sc_options.on_alert receives. The latency and error-rate alerts
 * are decided as each operation completes (before its caller is woken),
 * over a sliding window of alert_window_ms by the db's clock
 * (sc_options.clock_ms, so tests can inject time), once the window holds
 * alert_min_samples operations; the queue-depth alert after each batch. An
 * alert fires once when its threshold is crossed and once more when it
 * recovers. The struct is valid during the call only. */
struct sc_alert {
  int kind;         /* SC_ALERT_* */
  const char *name; /* "latency_p95", "error_rate", "queue_depth" */
  int firing;       /* 1: crossed; 0: recovered */
  double value;     /* p95 in ms, error share 0..1, or queue depth */
  double threshold;
  uint64_t samples; /* operations in the window (0 for queue_depth) */
  int64_t at_ms;    /* the db's clock */
};

/* ======================================================================== */
/* 11. Administration: verify, repair, backup, database counts              */
/* ======================================================================== */

/** Checks every invariant of the design on one snapshot: coupon counts
 * within their caps, stock and balance holds matching the PENDING orders,
 * balances matching their ledgers, one outbox event per state change with
 * no gaps, no PENDING order that expiry had to skip, and SQLite's own
 * check of the file (PRAGMA integrity_check: every page, b-tree and index
 * well-formed). A read.
 * @param[out] report_out  may be NULL; else a NUL-terminated report (one
 *   line per finding, "ok" when none), freed with sc_free.
 * @return SC_OK when all hold, SC_CORRUPT when one does not. Any thread. */
SC_API int sc_verify(sc_db *db, char **report_out);

/**
 * The usual recovery steps, for a database written by something else or
 * imported: removes the lines of orders that no longer exist; releases
 * orphan holds (coupons held by orders that no longer exist or are closed;
 * a used coupon stays used, even when its order is gone: it was paid with);
 * revokes (deletes) the newest unused coupons issued past a policy's
 * max_count or a user's per_user_limit; recomputes every counter from the
 * rows (issued_count, reserved, balance from the ledger, held from PENDING
 * orders). All in one transaction on the writer; no outbox event is
 * written. Run sc_verify afterwards: findings repair does not handle
 * (order totals, events ...) remain. A write.
 * @param[in] dry_run  non-zero: list the changes, make none.
 * @param[out] changes_out  number of changes made (or that would be); may
 *   be NULL.
 * @param[out] report_out  one line per change ("nothing to repair" when
 *   none; "cannot repair: ..." for a change a constraint refused), freed
 *   with sc_free; may be NULL.
 * @return SC_OK; SC_CORRUPT when some finding could not be repaired (the
 *   others are, and the report lists both). Any thread; it holds up other
 *   writes of this db while it runs (on PostgreSQL, other hosts' writes to
 *   the tables it corrects too: it locks them for its transaction).
 */
SC_API int sc_repair(sc_db *db, int dry_run, int *changes_out,
                     char **report_out);

/**
 * Copies the database to dest_path with SQLite's online backup, as one
 * consistent snapshot while writers go on. dest_path must not exist (it is
 * never overwritten); on failure nothing is left there. A read.
 * @return SC_OK, SC_INVALID (NULL or empty path), SC_EXISTS, SC_IOERR
 *   (dest_path cannot be created or written); SC_MISUSE on PostgreSQL (not
 *   supported there yet: use pg_dump). Any thread.
 */
SC_API int sc_backup(sc_db *db, const char *dest_path);

/** What the database holds. May grow: see "Structs that grow". */
typedef struct sc_stats {
  int64_t products, units_total, units_reserved;
  int64_t accounts, balance_total, held_total;
  int64_t orders_pending, orders_confirmed, orders_cancelled, orders_expired;
  int64_t policies, coupons;
  int64_t events_pending, events_dead; /* outbox: not yet delivered; dead */
} sc_stats;
/** Counts what the database holds, on one read snapshot (full scans of the
 * tables: for an administrator or a slow dashboard, not a hot path).
 * A read.
 * int sc_stats_get(sc_db *db, sc_stats *out);
 * @return SC_OK. Any thread. */
#define sc_stats_get(db, out) sc_stats_get_sized((db), (out), sizeof(sc_stats))
/** What sc_stats_get calls: writes size bytes of out. */
SC_API int sc_stats_get_sized(sc_db *db, sc_stats *out, size_t size);
SC_API int(sc_stats_get)(sc_db *db, sc_stats *out); /* see sc_options_init */

#ifdef __cplusplus
}
#endif
#endif /* SHOPCORE_H */
