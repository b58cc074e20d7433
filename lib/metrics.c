/* Metrics: lock-free counters and log-linear latency histograms, written by
 * the writer thread and read by any thread; the snapshot, Prometheus and
 * reset calls of the public API. The alert window is in alert.c. */
#include <string.h>

#include "metrics.h"

#define SUB (1 << SC__HIST_SUB_BITS)

/* A histogram of non-negative values (nanoseconds, or a batch size): a
 * percentile read from it is within 12.5% of the true value. */
typedef struct histogram {
  _Atomic uint64_t counts[SC__HIST_BUCKETS];
  _Atomic int64_t max;
  _Atomic int64_t sum;
  _Atomic uint64_t total;
} histogram;

struct sc__metrics {
  _Atomic uint64_t outcomes[SC__OP_KIND_COUNT][SC_STATUS_COUNT_];
  histogram latency[SC__OP_KIND_COUNT];
  histogram commit;
  histogram batch_size;
  _Atomic uint64_t events_purged;
  _Atomic uint64_t expire_skipped;
  sc__alerts *alerts;
};

static const char *const KIND_NAMES[] = {
#define SC__OP_KIND_NAME(name, text) text,
    SC__OP_KIND_MAP(SC__OP_KIND_NAME)
#undef SC__OP_KIND_NAME
};

int sc__hist_bucket(int64_t v) {
  if (v < SUB) return (int)(v < 0 ? 0 : v);
  int msb = 63 - __builtin_clzll((unsigned long long)v);
  int sub = (int)((v >> (msb - SC__HIST_SUB_BITS)) & (SUB - 1));
  return (msb - SC__HIST_SUB_BITS + 1) * SUB + sub;
}

double sc__hist_value(int b) {
  if (b < SUB) return b;
  int msb = b / SUB + SC__HIST_SUB_BITS - 1;
  int sub = b % SUB;
  double width = (double)(1ULL << (msb - SC__HIST_SUB_BITS));
  return (double)(1ULL << msb) + sub * width + width / 2;
}

static void histogram_add(histogram *h, int64_t v) {
  if (v < 0) v = 0;
  atomic_fetch_add_explicit(&h->counts[sc__hist_bucket(v)], 1,
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
  int64_t cur = atomic_load_explicit(&h->max, memory_order_relaxed);
  while (v > cur && !atomic_compare_exchange_weak(&h->max, &cur, v)) {
  }
}

static void histogram_reset(histogram *h) {
  for (int b = 0; b < SC__HIST_BUCKETS; b++)
    atomic_store(&h->counts[b], 0);
  atomic_store(&h->max, 0);
  atomic_store(&h->sum, 0);
  atomic_store(&h->total, 0);
}

/* Percentiles of h, each value multiplied by scale (1e-6: ns to ms). The
 * nearest-rank percentile, capped by the exact maximum. */
static void histogram_quantiles(histogram *h, double scale, sc_quantiles *q) {
  static const double QS[3] = {0.50, 0.95, 0.99};
  uint64_t counts[SC__HIST_BUCKETS], total = 0;
  for (int b = 0; b < SC__HIST_BUCKETS; b++) {
    counts[b] = atomic_load_explicit(&h->counts[b], memory_order_relaxed);
    total += counts[b];
  }
  double max = (double)atomic_load(&h->max) * scale;
  double out[3] = {0, 0, 0};
  for (int i = 0; i < 3 && total > 0; i++) {
    uint64_t rank = (uint64_t)(QS[i] * (double)total + 0.999999);
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < SC__HIST_BUCKETS; b++) {
      seen += counts[b];
      if (seen >= rank) {
        out[i] = sc__hist_value(b) * scale;
        break;
      }
    }
    if (out[i] > max) out[i] = max;
  }
  q->count = total;
  q->sum = (double)atomic_load(&h->sum) * scale;
  q->p50 = out[0];
  q->p95 = out[1];
  q->p99 = out[2];
  q->max = max;
}

/* ---- recording (writer thread) ------------------------------------------ */

int sc__metrics_init(sc_db *db) {
  db->metrics = sc__calloc(1, sizeof *db->metrics);
  if (db->metrics == NULL) return SC_NOMEM;
  if (sc__alerts_init(db, &db->metrics->alerts) != SC_OK) {
    sc__metrics_free(db);
    return SC_NOMEM;
  }
  return SC_OK;
}

void sc__metrics_free(sc_db *db) {
  if (db->metrics != NULL) sc__alerts_free(db->metrics->alerts);
  sc__free(db->metrics);
  db->metrics = NULL;
}

static int queue_depth(sc_db *db) {
  pthread_mutex_lock(&db->qlock);
  int n = db->qlen;
  pthread_mutex_unlock(&db->qlock);
  return n;
}

void sc__metrics_batch(sc_db *db, int n, int64_t commit_ns) {
  histogram_add(&db->metrics->batch_size, n);
  histogram_add(&db->metrics->commit, commit_ns);
  sc__alerts_queue(db, db->metrics->alerts, queue_depth(db));
}

void sc__metrics_purged(sc_db *db, int64_t n) {
  if (db->metrics != NULL && n > 0) {
    atomic_fetch_add_explicit(&db->metrics->events_purged, (uint64_t)n,
                              memory_order_relaxed);
  }
}

void sc__metrics_op(sc_db *db, int kind, int status, int64_t latency_ns) {
  struct sc__metrics *m = db->metrics;
  if (kind < 0 || kind >= SC__OP_KIND_COUNT) return;
  if (status < 0 || status >= SC_STATUS_COUNT_) status = SC_ERROR;
  atomic_fetch_add_explicit(&m->outcomes[kind][status], 1,
                            memory_order_relaxed);
  histogram_add(&m->latency[kind], latency_ns);
  sc__alerts_record(db, m->alerts, status, latency_ns);
}

void sc__metrics_expire_skipped(sc_db *db, int n) {
  if (db->metrics != NULL && n > 0) {
    atomic_fetch_add_explicit(&db->metrics->expire_skipped, (uint64_t)n,
                              memory_order_relaxed);
  }
}

/* ---- the public API ----------------------------------------------------- */

int sc_status_outcome(int status) {
  switch (status) {
    case SC_OK:
      return SC_OUTCOME_OK;
    case SC_SOLD_OUT:
    case SC_LIMIT_REACHED:
    case SC_PAUSED:
    case SC_NOT_ACTIVE:
    case SC_OUT_OF_STOCK:
    case SC_INSUFFICIENT_BALANCE:
    case SC_COUPON_UNAVAILABLE:
    case SC_EXPIRED:
    case SC_INVALID_STATE:
    case SC_CONFLICT:
      return SC_OUTCOME_EXPECTED;
    default:
      return SC_OUTCOME_ERROR;
  }
}

static void op_snapshot(struct sc__metrics *m, int kind, sc_op_metrics *o) {
  memset(o, 0, sizeof *o);
  o->name = KIND_NAMES[kind];
  for (int s = 0; s < SC_STATUS_COUNT_; s++) {
    uint64_t n =
        atomic_load_explicit(&m->outcomes[kind][s], memory_order_relaxed);
    o->by_status[s] = n;
    o->count += n;
    switch (sc_status_outcome(s)) {
      case SC_OUTCOME_OK:
        o->ok += n;
        break;
      case SC_OUTCOME_EXPECTED:
        o->expected += n;
        break;
      default:
        o->errors += n;
    }
  }
  histogram_quantiles(&m->latency[kind], 1e-6, &o->latency_ms);
}

int sc_metrics_get(sc_db *db, sc_metrics *out) {
  SC__CHECK_DB(db);
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_metrics_get: out is NULL");
  struct sc__metrics *m = db->metrics;
  _Static_assert(SC__OP_KIND_COUNT <= SC_METRICS_OPS_MAX,
                 "SC_METRICS_OPS_MAX is too small");
  out->n_ops = SC__OP_KIND_COUNT;
  for (int k = 0; k < SC__OP_KIND_COUNT; k++)
    op_snapshot(m, k, &out->ops[k]);
  histogram_quantiles(&m->batch_size, 1, &out->batch_size);
  histogram_quantiles(&m->commit, 1e-6, &out->commit_ms);
  out->queue_depth = queue_depth(db);
  out->queue_max = db->opts.queue_max;
  out->alerts_firing = sc__alerts_firing(m->alerts);
  out->events_purged =
      atomic_load_explicit(&m->events_purged, memory_order_relaxed);
  out->expire_skipped = atomic_load(&m->expire_skipped);
  return SC_OK;
}

int sc_metrics_reset(sc_db *db) {
  SC__CHECK_DB(db);
  struct sc__metrics *m = db->metrics;
  for (int k = 0; k < SC__OP_KIND_COUNT; k++) {
    for (int s = 0; s < SC_STATUS_COUNT_; s++) {
      atomic_store(&m->outcomes[k][s], 0);
    }
    histogram_reset(&m->latency[k]);
  }
  histogram_reset(&m->commit);
  histogram_reset(&m->batch_size);
  atomic_store(&m->events_purged, 0);
  atomic_store(&m->expire_skipped, 0);
  return SC_OK;
}
