/* The load and the checks shared by the crash suites: check_crash (SIGKILL
 * of the process) and check_powerloss (a simulated power loss).
 *
 * A forked child runs a mixed load on several threads (deposits with
 * idempotency keys, coupon issues, restocks, pauses, checkouts, payments,
 * cancels, expiry sweeps, outbox claim+ack), closing and reopening its
 * handle now and then, and reports every operation to the parent through a
 * pipe: first its intent (before the call), then its result (after the call
 * returns, before the thread starts its next call). Once the child is gone,
 * the parent reopens the file and checks it against the records:
 *   - every acknowledged operation (SC_OK) is there; in a lossy run
 *     (SC_DURABILITY_NORMAL after a power loss) only those acknowledged
 *     before an operation that survived was submitted, since a power loss
 *     may only cost NORMAL its last commits;
 *   - nothing refused left a trace;
 *   - operations in flight, or reported SC_AMBIGUOUS (looked up by name, so
 *     this compiles with and without that status), are all or nothing;
 *   - in a run with an injected I/O fault (cl_world.faulted), an operation
 *     failed with SC_IOERR left no trace either;
 *   - balances plus paid totals equal the deposits present, stock plus units
 *     paid equals the restocks present;
 *   - sc_verify and PRAGMA integrity_check pass. */
#ifndef SC_CRASHLOAD_H
#define SC_CRASHLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "test_util.h"

#define CL_THREADS 4
#define CL_PRODUCTS 4

typedef struct cl_world {
  uint64_t seed;
  sc_id policy_small, policy_big; /* max 40, limit 3; max 1e6, limit 1e6 */
  sc_id products[CL_PRODUCTS];
  int64_t initial_stock;
  bool faulted; /* the child's I/O may fail: SC_IOERR results are allowed */
} cl_world;

typedef struct cl_rec cl_rec;

/* What the child reported, in pipe order. */
typedef struct cl_log {
  cl_rec *recs;
  size_t n;
  size_t *pair; /* per record: the index of its intent / its result
                 * (SIZE_MAX: none, the operation was in flight) */
} cl_log;

/* What the check found, for the round's summary. */
typedef struct cl_summary {
  int64_t acked, refused, uncertain;
  int64_t ioerr, ambiguous; /* results of those statuses (injected faults) */
  int64_t lost;             /* acknowledged but absent (a lossy run only) */
  int64_t ok_by_op[16];
} cl_summary;

/* Creates the policies and products of the load in a new file. */
void cl_setup_world(const char *path, cl_world *w);

/* Forks the child and reads its records. If kill_after_us >= 0 the parent
 * SIGKILLs it then (the child may also end by itself, with status 0);
 * otherwise the child ends by itself and must exit with exit_status.
 * child_init(ud), if set, runs first in the child (and may end it). */
void cl_run(const char *path, const cl_world *w, int durability,
            int64_t kill_after_us, void (*child_init)(void *ud), void *ud,
            int exit_status, cl_log *lg);

/* cl_run with a kill whose moment the caller picks: from kill_after_us on,
 * the child is stopped (SIGSTOP) about every 0.2 ms and kill_now(ud, child)
 * asked while it cannot move, until it says so, for at most 3 s; the kill
 * then finds the child as kill_now saw it. killed_at_ns: when the kill was
 * sent (CLOCK_MONOTONIC). */
void cl_run_kill_when(const char *path, const cl_world *w, int durability,
                      int64_t kill_after_us,
                      bool (*kill_now)(void *ud, pid_t child),
                      void (*child_init)(void *ud), void *ud, cl_log *lg,
                      int64_t *killed_at_ns);

/* Reopens the file and checks it against the records (see above). */
void cl_check(const char *path, const cl_world *w, const cl_log *lg, bool lossy,
              cl_summary *out);

void cl_log_free(cl_log *lg);

/* Adds one round's summary to a total and prints the totals. */
void cl_summary_add(cl_summary *total, const cl_summary *round);
void cl_summary_print(const char *suite, const cl_summary *total);

/* Bytes read from a pipe. */
typedef struct cl_bytes {
  char *buf;
  size_t len, cap;
} cl_bytes;
/* Appends what fd delivers until EOF or until deadline_ns (CLOCK_MONOTONIC;
 * 0 = EOF only). */
void cl_drain(int fd, cl_bytes *b, int64_t deadline_ns);

/* An unsigned environment variable, or dflt. */
uint64_t cl_env_u64(const char *name, uint64_t dflt);

#endif
