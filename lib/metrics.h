/* Built-in metrics: per-operation counters by outcome, latency histograms,
 * batch sizes and commit latency. Recorded by the writer; read by
 * sc_metrics_*(). Internal header. */
#ifndef SC_METRICS_H
#define SC_METRICS_H

#include "internal.h"

int sc__metrics_init(sc_db *db);
void sc__metrics_free(sc_db *db);
/* One committed (or failed) batch of n operations that took commit_ns. */
void sc__metrics_batch(sc_db *db, int n, int64_t commit_ns);
/* One completed operation of kind with its status and queue-to-done time. */
void sc__metrics_op(sc_db *db, int kind, int status, int64_t latency_ns);

#endif
