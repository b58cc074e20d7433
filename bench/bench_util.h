/* The microbenchmark harness: runs a call on N threads for a fixed time,
 * records each call's latency, and prints ops/s and percentiles, as a table
 * row for people and as one JSON line (prefixed "BENCH_JSON ") for
 * bench/run_all.sh. Figures are only comparable within one run: this
 * machine is shared and noisy, so every benchmark measures its baseline in the
 * same process and prints the ratio. */
#ifndef SC_BENCH_UTIL_H
#define SC_BENCH_UTIL_H

#include <sqlite3.h>
#include <stdint.h>

#include "shopcore.h"

/* One timed call. Returns 0 for success, another value for a failure that
 * is counted (not fatal). t is the thread index, i the call's global index. */
typedef int (*bu_call_fn)(int t, int64_t i, void *ud);

typedef struct bu_result {
  char bench[48];   /* e.g. "coupon_issue" */
  char variant[48]; /* e.g. "group_commit" */
  int threads;
  int64_t ops, errors;
  double seconds, ops_per_s;
  double p50_ms, p95_ms, p99_ms, max_ms, mean_ms;
} bu_result;

/* Runs fn on `threads` threads, released together, until `seconds` have
 * passed (each thread finishes its call in flight). */
bu_result bu_run(const char *bench, const char *variant, int threads,
                 double seconds, bu_call_fn fn, void *ud);

/* Prints a result as a table row and as a BENCH_JSON line. */
void bu_print(const bu_result *r);
void bu_print_header(const char *title);
/* Prints "ratio <what>: a/b = x" and a BENCH_JSON ratio line. */
void bu_print_ratio(const char *what, const bu_result *a, const bu_result *b);

/* Prints "bound <what>: a/b = x% of the bound" (a: the library, b: the
 * bound measured in the same run) and a BENCH_JSON ratio line. */
void bu_print_bound(const char *what, const bu_result *a, const bu_result *b);

/* A fresh benchmark database path in $SC_BENCH_DIR (default: the working
 * directory); removes any earlier file and its -wal/-shm/-turn. */
void bu_db_path(char *buf, size_t cap, const char *tag);
void bu_remove_db(const char *path);

/* Opens a plain SQLite connection configured like the library's writer
 * (WAL, synchronous=FULL, a 30 s busy timeout): the baseline's connection. */
sqlite3 *bu_sqlite_open(const char *path);
/* The same, with the library writer's other per-connection settings too
 * (foreign keys, its cache size, temporary tables in memory): the
 * connection of a bound that must differ from the library only in what the
 * library adds around SQLite. */
sqlite3 *bu_sqlite_open_writer(const char *path);
/* CPU time (ns) of the calling thread so far. */
int64_t bu_self_cpu_ns(void);

/* CPU time so far (ns) of this process's threads named comm (e.g.
 * "sc-writer"), from /proc/self/task/<tid>/schedstat; 0 if none. */
int64_t bu_thread_cpu_ns(const char *comm);
int64_t bu_now_ns(void);

/* CPU time of the library's threads and the wall time at one moment, so a
 * run can print what it cost: take one before, pass it after. */
typedef struct bu_cpu {
  int64_t wall, writer, completer, process;
  int64_t writer_runnable; /* the writer's time runnable, not running */
  int64_t wakeups;         /* the process's voluntary context switches */
  double wal_sync_ms; /* time in fsyncs of the WAL (the writer's commits) */
  sc_db *db;          /* whose fsyncs; NULL: none read */
} bu_cpu;
bu_cpu bu_cpu_now(sc_db *db);
/* Prints what bounds the run: ops per batch, the writer's CPU per
 * operation of `kind` and its CPU use, the time inside BEGIN..COMMIT, the
 * share of the wall time the writer spent in the WAL's fsync, the CPU of
 * the completer and of the whole process per operation, the process's
 * wake-ups (voluntary context switches) per operation, and a one-line
 * verdict "bound: ..." naming the resource nearest its limit. ops: the
 * operations completed since `before`. Needs sc_metrics reset at
 * `before`. */
void bu_print_writer(sc_db *db, const char *kind, const bu_cpu *before,
                     int64_t ops);

/* Prints where a blocking call's time went, from means over the run:
 * caller -> writer (in the queue: waiting for the writer to wake, or for
 * the batch before to commit), the batch itself (BEGIN..COMMIT, one
 * fsync), and from the completing thread (the writer for small batches,
 * else the completer) to the caller running again. op: the metrics name of
 * the operation ("coupon_issue"). Needs sc_metrics reset before the run. */
void bu_print_hops(sc_db *db, const char *op, const bu_result *r);

/* Parses "--seconds X", "--events N" and "--threads a,b,c" from argv
 * (defaults given; a value that is not positive takes the default). */
long long bu_arg_events(int argc, char **argv, long long dflt);
double bu_arg_seconds(int argc, char **argv, double dflt);
int bu_arg_threads(int argc, char **argv, int *out, int max, const int *dflt,
                   int n_dflt);
int bu_arg_flag(int argc, char **argv, const char *flag);
/* Parses "<flag> a,b,c" into out (at most max values); without the flag,
 * copies the n_dflt defaults. Returns how many. */
int bu_arg_list(int argc, char **argv, const char *flag, int *out, int max,
                const int *dflt, int n_dflt);

#endif
