/* Built-in metrics: per-operation counters by outcome, latency histograms,
 * batch sizes and commit latency. Recorded by the writer; read by
 * sc_metrics_*(). Internal header. */
#ifndef SC_METRICS_H
#define SC_METRICS_H

#include "internal.h"

int sc__metrics_init(sc_db *db);
void sc__metrics_free(sc_db *db);
/* One committed (or failed) batch of n operations that took commit_ns; the
 * queue-depth alert is decided here. Writer thread. */
void sc__metrics_batch(sc_db *db, int n, int64_t commit_ns);
/* One completed operation of kind with its status and queue-to-done time;
 * the latency and error-rate alerts are decided here, before the caller is
 * woken. The thread that completes operations (one at a time). */
void sc__metrics_op(sc_db *db, int kind, int status, int64_t latency_ns);
/* The name of an operation kind (SC__OP_KIND_MAP's), "unknown" if none. */
const char *sc__op_kind_name(int kind);

/* n delivered events purged by a committed batch. Any thread. */
void sc__metrics_purged(sc_db *db, int64_t n);

/* Due orders an expiry round left PENDING because they cannot be released
 * (damaged rows). Writer thread. */
void sc__metrics_expire_skipped(sc_db *db, int n);

/* ---- fsync timing (iotime.c) ---- */
enum { SC__IO_DB = SC_FILE_DB, SC__IO_WAL = SC_FILE_WAL };
#define SC__IO_VFS "shopcore-iotime"
/* What the files of one thread's connection did: fsyncs and their time by
 * file, pages written to the database file, the fsync in progress. Written
 * by that thread, read by the writer and sc_metrics_get. */
typedef struct sc__io_counters {
  _Atomic int64_t sync_ns[2];
  _Atomic uint64_t syncs[2];
  _Atomic uint64_t db_writes;
  _Atomic int64_t sync_since_ns; /* start of the fsync in progress; 0 */
  _Atomic int sync_file;         /* its file */
} sc__io_counters;
/* The name of the timing VFS over the current default VFS (registered on
 * first use), or NULL if there is none (more distinct default VFSes than
 * it keeps shims for): connections then open on the default VFS, untimed. */
const char *sc__io_vfs(void);
/* Counts the calling thread's fsyncs and writes into c (NULL: none). */
void sc__io_bind(sc__io_counters *c);

/* The writer and checkpoint threads bind their fsyncs to the db's metrics
 * (called first thing on each). */
void sc__metrics_bind_writer(sc_db *db);
void sc__metrics_bind_checkpointer(sc_db *db);

/* The checkpoint thread around each checkpoint it runs, and the writer's
 * WAL hook with the WAL's size in pages after a commit (sqlite/checkpoint.c).
 */
void sc__metrics_checkpoint_begin(sc_db *db);
void sc__metrics_checkpoint_end(sc_db *db);
void sc__metrics_wal_frames(sc_db *db, int pages);

/* The log-linear bucket scheme, shared with the alert window (alert.c):
 * 8 sub-buckets per power of two. */
#define SC__HIST_SUB_BITS 3
#define SC__HIST_BUCKETS (64 << SC__HIST_SUB_BITS)
int sc__hist_bucket(int64_t v);
/* A representative value of bucket b: its midpoint. */
double sc__hist_value(int b);

/* ---- alerts (alert.c) ---- */
typedef struct sc__alerts sc__alerts;
/* Allocates the window with the thresholds resolved from db->opts. */
int sc__alerts_init(sc_db *db, sc__alerts **out);
void sc__alerts_free(sc__alerts *a);
/* Adds one completed operation to the window and decides the latency and
 * error-rate alerts. The completing thread only. */
void sc__alerts_record(sc_db *db, sc__alerts *a, int status,
                       int64_t latency_ns);
/* Decides the queue-depth alert with the depth after a batch. Writer. */
void sc__alerts_queue(sc_db *db, sc__alerts *a, int depth);
/* Bit (1 << SC_ALERT_*) per firing alert. Any thread. */
int sc__alerts_firing(sc__alerts *a);
/* "latency_p95", "error_rate", "queue_depth". */
const char *sc__alert_name(int kind);

#endif
