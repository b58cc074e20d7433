/* Metrics: lock-free counters and log-linear latency histograms, written by
 * the writer thread and read by any thread; the snapshot, Prometheus and
 * reset calls of the public API. The alert window is in alert.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

#define DEFAULT_SLOW_COMMIT_MS 20
static const int64_t COMMIT_BOUNDS_MS[SC_COMMIT_BUCKETS - 1] =
    SC_COMMIT_BUCKET_BOUNDS_MS;

enum { IO_WRITER, IO_CHECKPOINTER };

/* What the slow-commit recorder saw at the end of the previous commit: the
 * next one is charged with what happened since. Writer thread only. */
typedef struct io_seen {
  int64_t sync_ns[2][2]; /* [IO_*][SC__IO_*] */
  uint64_t ckpt_syncs, ckpt_runs;
  int64_t cpu_ns; /* the writer thread's CPU time */
} io_seen;

struct sc__metrics {
  _Atomic uint64_t outcomes[SC__OP_KIND_COUNT][SC_STATUS_COUNT_];
  histogram latency[SC__OP_KIND_COUNT];
  histogram commit;
  histogram batch_size;
  _Atomic uint64_t events_purged;
  _Atomic uint64_t expire_skipped;
  sc__alerts *alerts;
  /* The slow-commit recorder. */
  _Atomic uint64_t commit_buckets[SC_COMMIT_BUCKETS];
  int64_t slow_ns; /* threshold; < 0: off */
  bool log;        /* SC_DEBUG_SLOW_COMMITS=1 */
  char *wal_path;
  _Atomic uint64_t slow_commits;
  pthread_mutex_t last_lock;
  sc_slow_commit last;
  io_seen seen;
  sc__io_counters io[2]; /* [IO_*] */
  _Atomic int64_t wal_frames;
  _Atomic uint64_t wal_rewinds;
  _Atomic uint64_t ckpt_runs;
  _Atomic bool ckpt_running;
  _Atomic uint64_t ckpt_pages_at_start; /* io[IO_CHECKPOINTER].db_writes */
};

static const char *const KIND_NAMES[] = {
#define SC__OP_KIND_NAME(name, text) text,
    SC__OP_KIND_MAP(SC__OP_KIND_NAME)
#undef SC__OP_KIND_NAME
};

const char *sc__op_kind_name(int kind) {
  return kind >= 0 && kind < SC__OP_KIND_COUNT ? KIND_NAMES[kind] : "unknown";
}

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
  struct sc__metrics *m = sc__calloc(1, sizeof *m);
  if (m == NULL) return SC_NOMEM;
  db->metrics = m;
  pthread_mutex_init(&m->last_lock, NULL);
  int64_t ms = db->opts.slow_commit_ms;
  m->slow_ns = ms < 0 ? -1 : (ms == 0 ? DEFAULT_SLOW_COMMIT_MS : ms) * 1000000;
  const char *env = getenv("SC_DEBUG_SLOW_COMMITS");
  m->log = env != NULL && strcmp(env, "1") == 0;
  size_t n = strlen(db->path);
  m->wal_path = sc__malloc(n + 5);
  if (m->wal_path == NULL ||
      sc__alerts_init(db, &db->metrics->alerts) != SC_OK) {
    sc__metrics_free(db);
    return SC_NOMEM;
  }
  memcpy(m->wal_path, db->path, n);
  memcpy(m->wal_path + n, "-wal", 5);
  return SC_OK;
}

void sc__metrics_free(sc_db *db) {
  struct sc__metrics *m = db->metrics;
  if (m == NULL) return;
  sc__alerts_free(m->alerts);
  pthread_mutex_destroy(&m->last_lock);
  sc__free(m->wal_path);
  sc__free(m);
  db->metrics = NULL;
}

void sc__metrics_bind_writer(sc_db *db) {
  sc__io_bind(&db->metrics->io[IO_WRITER]);
}

void sc__metrics_bind_checkpointer(sc_db *db) {
  sc__io_bind(&db->metrics->io[IO_CHECKPOINTER]);
}

void sc__metrics_checkpoint_begin(sc_db *db) {
  struct sc__metrics *m = db->metrics;
  atomic_store(&m->ckpt_pages_at_start,
               atomic_load(&m->io[IO_CHECKPOINTER].db_writes));
  atomic_fetch_add(&m->ckpt_runs, 1);
  atomic_store(&m->ckpt_running, true);
}

void sc__metrics_checkpoint_end(sc_db *db) {
  atomic_store(&db->metrics->ckpt_running, false);
}

void sc__metrics_wal_frames(sc_db *db, int pages) {
  struct sc__metrics *m = db->metrics;
  if (pages < atomic_load_explicit(&m->wal_frames, memory_order_relaxed)) {
    atomic_fetch_add_explicit(&m->wal_rewinds, 1, memory_order_relaxed);
  }
  atomic_store_explicit(&m->wal_frames, pages, memory_order_relaxed);
}

static double ns_ms(int64_t ns) {
  return (double)ns / 1e6;
}

static void log_slow_commit(const sc_slow_commit *c) {
  static const char *const PHASE[] = {"idle", "copying", "syncing"};
  fprintf(stderr,
          "shopcore: slow commit %.1f ms, batch %d: wal %lld frames "
          "%lld bytes, wal fsync %.1f ms, db fsync %.1f ms, cpu %.1f ms; "
          "checkpoint %s, "
          "%lld pages, its db fsync %.1f ms, its wal fsync %.1f ms\n",
          c->duration_ms, c->batch_size, (long long)c->wal_frames,
          (long long)c->wal_bytes, c->wal_sync_ms, c->db_sync_ms,
          c->writer_cpu_ms, PHASE[c->checkpoint],
          (long long)c->checkpoint_pages, c->checkpoint_db_sync_ms,
          c->checkpoint_wal_sync_ms);
}

/* Charges this commit with the fsyncs and checkpoint work since the
 * previous one, and records it if it was slow. Writer thread. */
static void record_commit(sc_db *db, int n, int64_t commit_ns) {
  struct sc__metrics *m = db->metrics;
  int b = 0;
  while (b < SC_COMMIT_BUCKETS - 1 && commit_ns > COMMIT_BOUNDS_MS[b] * 1000000)
    b++;
  atomic_fetch_add_explicit(&m->commit_buckets[b], 1, memory_order_relaxed);
  io_seen now, *was = &m->seen;
  for (int who = 0; who < 2; who++) {
    for (int f = 0; f < 2; f++)
      now.sync_ns[who][f] = atomic_load(&m->io[who].sync_ns[f]);
  }
  sc__io_counters *cp = &m->io[IO_CHECKPOINTER];
  now.ckpt_syncs = atomic_load(&cp->syncs[0]) + atomic_load(&cp->syncs[1]);
  now.ckpt_runs = atomic_load(&m->ckpt_runs);
  struct timespec cpu;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
  now.cpu_ns = (int64_t)cpu.tv_sec * 1000000000 + cpu.tv_nsec;
  if (m->slow_ns >= 0 && commit_ns >= m->slow_ns) {
    sc_slow_commit c = {.at_ms = sc__wall_ms(),
                        .duration_ms = ns_ms(commit_ns),
                        .batch_size = n,
                        .wal_frames = atomic_load(&m->wal_frames)};
    struct stat st;
    if (stat(m->wal_path, &st) == 0) c.wal_bytes = (int64_t)st.st_size;
    c.wal_sync_ms = ns_ms(now.sync_ns[IO_WRITER][SC__IO_WAL] -
                          was->sync_ns[IO_WRITER][SC__IO_WAL]);
    c.db_sync_ms = ns_ms(now.sync_ns[IO_WRITER][SC__IO_DB] -
                         was->sync_ns[IO_WRITER][SC__IO_DB]);
    c.writer_cpu_ms = ns_ms(now.cpu_ns - was->cpu_ns);
    int64_t ck[2];
    for (int f = 0; f < 2; f++)
      ck[f] =
          now.sync_ns[IO_CHECKPOINTER][f] - was->sync_ns[IO_CHECKPOINTER][f];
    /* An fsync still running counts for the time it has run so far. */
    int64_t since = atomic_load(&cp->sync_since_ns);
    if (since != 0)
      ck[atomic_load(&cp->sync_file)] += sc__monotonic_ns() - since;
    c.checkpoint_db_sync_ms = ns_ms(ck[SC__IO_DB]);
    c.checkpoint_wal_sync_ms = ns_ms(ck[SC__IO_WAL]);
    if (since != 0 || now.ckpt_syncs != was->ckpt_syncs) {
      c.checkpoint = SC_CHECKPOINT_SYNCING;
    } else if (atomic_load(&m->ckpt_running) ||
               now.ckpt_runs != was->ckpt_runs) {
      c.checkpoint = SC_CHECKPOINT_COPYING;
    }
    c.checkpoint_pages = (int64_t)(atomic_load(&cp->db_writes) -
                                   atomic_load(&m->ckpt_pages_at_start));
    pthread_mutex_lock(&m->last_lock);
    m->last = c;
    pthread_mutex_unlock(&m->last_lock);
    atomic_fetch_add(&m->slow_commits, 1);
    if (m->log) log_slow_commit(&c);
  }
  *was = now;
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
  record_commit(db, n, commit_ns);
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

/* The snapshot, into the library's own (current) layout. */
static void metrics_snapshot(sc_db *db, sc_metrics *out) {
  memset(out, 0, sizeof *out);
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
  for (int b = 0; b < SC_COMMIT_BUCKETS; b++)
    out->commit_buckets[b] = atomic_load(&m->commit_buckets[b]);
  out->slow_commit_ms = m->slow_ns < 0 ? -1 : ns_ms(m->slow_ns);
  out->slow_commits = atomic_load(&m->slow_commits);
  pthread_mutex_lock(&m->last_lock);
  out->last_slow_commit = m->last;
  pthread_mutex_unlock(&m->last_lock);
  out->checkpoints = atomic_load(&m->ckpt_runs);
  out->wal_rewinds = atomic_load(&m->wal_rewinds);
  for (int f = 0; f < 2; f++) {
    out->fsyncs[f] = atomic_load(&m->io[IO_WRITER].syncs[f]) +
                     atomic_load(&m->io[IO_CHECKPOINTER].syncs[f]);
    out->fsync_ms[f] = ns_ms(atomic_load(&m->io[IO_WRITER].sync_ns[f]) +
                             atomic_load(&m->io[IO_CHECKPOINTER].sync_ns[f]));
  }
  out->events_purged =
      atomic_load_explicit(&m->events_purged, memory_order_relaxed);
  out->expire_skipped = atomic_load(&m->expire_skipped);
}

int sc_metrics_get_sized(sc_db *db, sc_metrics *out, size_t size) {
  if (db == NULL) return sc__fail(SC_MISUSE, "sc_metrics_get: db is NULL");
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_metrics_get: out is NULL");
  sc_metrics snap;
  metrics_snapshot(db, &snap);
  sc__struct_out(out, size, &snap, sizeof snap);
  return SC_OK;
}

int(sc_metrics_get)(sc_db *db, sc_metrics *out) {
  return sc_metrics_get_sized(db, out, sizeof *out);
}

int sc_metrics_count(sc_db *db, const char *op, int status, uint64_t *n_out) {
  SC__CHECK_DB(db);
  if (n_out == NULL) {
    return sc__fail(SC_MISUSE, "sc_metrics_count: n_out is NULL");
  }
  if (status < 0 || status >= SC_STATUS_COUNT_) {
    return sc__fail(SC_INVALID, "sc_metrics_count: %d is not a status code",
                    status);
  }
  int kind = -1;
  for (int k = 0; op != NULL && k < SC__OP_KIND_COUNT; k++) {
    if (strcmp(op, KIND_NAMES[k]) == 0) kind = k;
  }
  if (op != NULL && kind < 0) {
    return sc__fail(SC_NOT_FOUND, "sc_metrics_count: no operation \"%s\"", op);
  }
  uint64_t n = 0;
  for (int k = 0; k < SC__OP_KIND_COUNT; k++) {
    if (kind < 0 || k == kind) {
      n += atomic_load_explicit(&db->metrics->outcomes[k][status],
                                memory_order_relaxed);
    }
  }
  *n_out = n;
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
  for (int b = 0; b < SC_COMMIT_BUCKETS; b++)
    atomic_store(&m->commit_buckets[b], 0);
  atomic_store(&m->slow_commits, 0);
  pthread_mutex_lock(&m->last_lock);
  memset(&m->last, 0, sizeof m->last);
  pthread_mutex_unlock(&m->last_lock);
  atomic_store(&m->events_purged, 0);
  atomic_store(&m->expire_skipped, 0);
  return SC_OK;
}
