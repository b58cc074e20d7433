/* Metrics: lock-free counters and log-linear latency histograms, written by
 * the writer thread and read by any thread. */
#include <string.h>

#include "metrics.h"

/* A histogram of nanosecond values: 8 sub-buckets per power of two, so a
 * percentile read from it is within 12.5% of the true value. */
#define SUB_BITS 3
#define SUB (1 << SUB_BITS)
#define BUCKETS (64 * SUB)

typedef struct histogram {
  _Atomic uint64_t counts[BUCKETS];
  _Atomic int64_t max;
  _Atomic uint64_t total;
} histogram;

struct sc__metrics {
  _Atomic uint64_t outcomes[SC__OP_KIND_COUNT][SC_STATUS_COUNT_];
  histogram latency[SC__OP_KIND_COUNT];
  histogram commit;
  histogram batch_size;
};

static int bucket_of(int64_t v) {
  if (v < SUB) return (int)(v < 0 ? 0 : v);
  int msb = 63 - __builtin_clzll((unsigned long long)v);
  int sub = (int)((v >> (msb - SUB_BITS)) & (SUB - 1));
  return (msb - SUB_BITS + 1) * SUB + sub;
}

static void histogram_add(histogram *h, int64_t v) {
  atomic_fetch_add_explicit(&h->counts[bucket_of(v)], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
  int64_t cur = atomic_load_explicit(&h->max, memory_order_relaxed);
  while (v > cur && !atomic_compare_exchange_weak(&h->max, &cur, v)) {
  }
}

int sc__metrics_init(sc_db *db) {
  db->metrics = sc__calloc(1, sizeof *db->metrics);
  return db->metrics ? SC_OK : SC_NOMEM;
}

void sc__metrics_free(sc_db *db) {
  sc__free(db->metrics);
  db->metrics = NULL;
}

void sc__metrics_batch(sc_db *db, int n, int64_t commit_ns) {
  histogram_add(&db->metrics->batch_size, n);
  histogram_add(&db->metrics->commit, commit_ns);
}

void sc__metrics_op(sc_db *db, int kind, int status, int64_t latency_ns) {
  if (kind < 0 || kind >= SC__OP_KIND_COUNT) return;
  if (status < 0 || status >= SC_STATUS_COUNT_) status = SC_ERROR;
  atomic_fetch_add_explicit(&db->metrics->outcomes[kind][status], 1,
                            memory_order_relaxed);
  histogram_add(&db->metrics->latency[kind], latency_ns);
}
