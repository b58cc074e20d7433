/* Helpers shared by the Check suites. */
#ifndef SC_TEST_UTIL_H
#define SC_TEST_UTIL_H

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shopcore.h"

/* Asserts a status, printing both names and the thread's errmsg. */
#define ck_assert_sc(expr, expected)                                        \
  do {                                                                      \
    int ck_sc_got_ = (expr);                                                \
    int ck_sc_want_ = (expected);                                           \
    ck_assert_msg(ck_sc_got_ == ck_sc_want_, "%s: got %s, want %s (%s)",    \
                  #expr, sc_err_name(ck_sc_got_), sc_err_name(ck_sc_want_), \
                  sc_errmsg(NULL));                                         \
  } while (0)

/* A fresh database file path under SC_TEST_TMPDIR (or /tmp), unique per
 * call; the caller frees it with tu_remove_db (which also removes -wal,
 * -shm and -turn). */
char *tu_db_path(const char *tag);
void tu_remove_db(char *path);
/* A file of the test's own beside the database: "<path>.<i>", or in
 * PostgreSQL mode one in the temporary directory named after the schema. */
void tu_side_path(const char *path, int i, char *out, size_t cap);

/* Whether the suite runs against PostgreSQL (SC_TEST_DB=pg): tu_db_path
 * then returns a URI with a fresh schema on the server at SC_TEST_PG_URI
 * (or libpq's PGHOST, ...), tu_remove_db drops it, and tu_count/tu_exec
 * run their SQL there. A test of the SQLite file itself returns early in
 * this mode (and its suite is not registered as a PostgreSQL test). */
bool tu_pg_mode(void);
/* 77 (ctest's skip) when in PostgreSQL mode without a reachable server;
 * tu_run_suite returns it before running anything. */
int tu_pg_skip_unless_server(void);

/* A manual clock for sc_options.clock_ms: thread-safe. */
typedef struct tu_clock {
  _Atomic int64_t now_ms;
} tu_clock;
int64_t tu_clock_read(void *ud);
void tu_use_clock(sc_options *o, tu_clock *c, int64_t start_ms);

/* Opens a new database with the given options (NULL = defaults), failing
 * the test if it cannot. */
sc_db *tu_open(const char *path, const sc_options *opts);

/* Asserts that sc_verify reports every invariant holding. */
void tu_assert_verify(sc_db *db);

/* Runs fn(i, ud) on n threads released together; waits for them all. */
typedef void (*tu_thread_fn)(int i, void *ud);
void tu_race(int n, tu_thread_fn fn, void *ud);

/* Runs fn(i, ud) in n forked processes; fails the test unless each exits 0.
 * The child must not use a db handle opened by the parent. */
typedef int (*tu_process_fn)(int i, void *ud);
void tu_fork_race(int n, tu_process_fn fn, void *ud);

/* Counts rows: SELECT count(*) ... through a separate plain SQLite
 * connection, to check the library's work from outside. */
int64_t tu_count(const char *path, const char *sql);
/* Runs sql on the file through a connection of its own (an edit by hand,
 * as a host or an administrator would make), failing the test on error. */
void tu_exec(const char *path, const char *sql);

/* Every row of each of n queries, as one string ("v|v|...\n" per row,
 * NULL as "NULL"), through a separate plain SQLite connection (or, in
 * PostgreSQL mode, a connection of its own): to compare a database's
 * contents before and after. Freed with free(). */
char *tu_rows(const char *path, const char *const *sql, size_t n);

/* PostgreSQL mode: a connection of the test's own to path's schema (as its
 * search_path), for a test that runs many queries; close it with PQfinish. */
struct pg_conn *tu_pg_connect(const char *path);

/* A gate: an operation that holds db's writer inside its batch until the
 * gate opens, so that the operations queued meanwhile are committed
 * together, as one batch. tu_gate_close returns once the writer is held;
 * tu_gate_open lets it go, waits for the gate's own batch to complete, and
 * frees the gate. */
typedef struct tu_gate tu_gate;
tu_gate *tu_gate_close(sc_db *db);
void tu_gate_open(tu_gate *g);
/* Waits until n operations are queued for db's writer. */
void tu_wait_queued(sc_db *db, int n);

/* A seeded generator (splitmix64): the same seed gives the same sequence,
 * so a failing seed reruns the same choices. */
uint64_t tu_rng_next(uint64_t *state);
/* Uniform in [lo, hi]. */
int64_t tu_rng_range(uint64_t *state, int64_t lo, int64_t hi);

/* Builds a suite runner with a generous per-test timeout, runs it, and
 * returns the process exit status. */
int tu_run_suite(Suite *s);
TCase *tu_tcase(const char *name);

#endif
