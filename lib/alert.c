/* Threshold alerts over a sliding window by the db's clock.
 *
 * The latency and error-rate alerts are decided as each operation completes,
 * on the thread that completes operations, before its caller is woken; the
 * queue-depth alert is decided by the writer after each batch. A lock keeps
 * two callbacks from ever running at once.
 *
 * The window is a ring of SLOTS time slots; each keeps its operations,
 * errors, operations slower than the threshold, and a latency histogram,
 * and the window's sums are kept as slots enter and leave. "p95 > T" is
 * decided in constant time: it holds exactly when more than 5% of the
 * window's operations took longer than T; the histogram is read only to
 * report the p95 when the state changes. */
#include <string.h>

#include "metrics.h"

#define SLOTS 10
#define DEFAULT_P95_MS 1000
#define DEFAULT_ERROR_RATE 0.05
#define DEFAULT_WINDOW_MS 10000
#define DEFAULT_MIN_SAMPLES 20

typedef struct slot {
  uint64_t ops, errors, slow;
  uint32_t hist[SC__HIST_BUCKETS];
} slot;

struct sc__alerts {
  /* thresholds; a negative one is off */
  double p95_ms, error_rate, queue_depth;
  int64_t p95_ns;
  int64_t slot_ms;
  uint64_t min_samples;
  /* the window: touched by the completing thread only */
  int64_t epoch; /* the current slot's number (clock / slot_ms); -1 = none */
  slot slots[SLOTS];
  uint64_t ops, errors, slow; /* sums over the window */
  uint64_t hist[SC__HIST_BUCKETS];
  /* the state */
  pthread_mutex_t lock; /* one decision and callback at a time */
  atomic_int firing;    /* bit per alert; read by sc_metrics_get */
};

const char *sc__alert_name(int kind) {
  static const char *const NAMES[SC_ALERT_COUNT_] = {
      "latency_p95", "error_rate", "queue_depth"};
  return kind >= 0 && kind < SC_ALERT_COUNT_ ? NAMES[kind] : "unknown";
}

/* Zero means the default; negative (or NaN) turns an alert off. */
static void resolve(const sc_options *o, sc__alerts *a) {
  a->p95_ms = o->alert_p95_ms == 0  ? DEFAULT_P95_MS
              : o->alert_p95_ms < 0 ? -1
                                    : (double)o->alert_p95_ms;
  /* A threshold past what nanoseconds in int64 can hold is never reached. */
  a->p95_ns = a->p95_ms < 0 || a->p95_ms >= (double)(INT64_MAX / 1000000)
                  ? INT64_MAX
                  : (int64_t)a->p95_ms * 1000000;
  a->error_rate = o->alert_error_rate == 0  ? DEFAULT_ERROR_RATE
                  : o->alert_error_rate > 0 ? o->alert_error_rate
                                            : -1; /* negative or NaN */
  /* 80% of queue_max by default, as the seeds' 80% connection-pool alert */
  a->queue_depth = o->alert_queue_depth == 0
                       ? (double)((o->queue_max * 4 + 4) / 5)
                   : o->alert_queue_depth < 0 ? -1
                                              : o->alert_queue_depth;
  int64_t window =
      o->alert_window_ms > 0 ? o->alert_window_ms : DEFAULT_WINDOW_MS;
  a->slot_ms = window / SLOTS > 0 ? window / SLOTS : 1;
  a->min_samples = o->alert_min_samples > 0 ? (uint64_t)o->alert_min_samples
                                            : DEFAULT_MIN_SAMPLES;
}

int sc__alerts_init(sc_db *db, sc__alerts **out) {
  sc__alerts *a = sc__calloc(1, sizeof *a);
  if (a == NULL) return SC_NOMEM;
  resolve(&db->opts, a);
  a->epoch = -1;
  pthread_mutex_init(&a->lock, NULL);
  *out = a;
  return SC_OK;
}

void sc__alerts_free(sc__alerts *a) {
  if (a == NULL) return;
  pthread_mutex_destroy(&a->lock);
  sc__free(a);
}

static void slot_expire(sc__alerts *a, slot *s) {
  a->ops -= s->ops;
  a->errors -= s->errors;
  a->slow -= s->slow;
  for (int b = 0; b < SC__HIST_BUCKETS; b++)
    a->hist[b] -= s->hist[b];
  memset(s, 0, sizeof *s);
}

/* Moves the window to now: the slots that fell out of it are emptied. A
 * clock that goes back keeps filling the current slot. */
static slot *advance(sc__alerts *a, int64_t now) {
  int64_t e = (now > 0 ? now : 0) / a->slot_ms;
  if (a->epoch < 0) a->epoch = e;
  int64_t steps = e - a->epoch;
  if (steps > SLOTS) steps = SLOTS;
  for (int64_t i = 1; i <= steps; i++) {
    slot_expire(a, &a->slots[(a->epoch + i) % SLOTS]);
  }
  if (e > a->epoch) a->epoch = e;
  return &a->slots[a->epoch % SLOTS];
}

static double window_p95_ms(const sc__alerts *a) {
  uint64_t rank = (a->ops * 95 + 99) / 100, seen = 0;
  for (int b = 0; b < SC__HIST_BUCKETS; b++) {
    seen += a->hist[b];
    if (seen >= rank && seen > 0) return sc__hist_value(b) / 1e6;
  }
  return 0;
}

/* Fires or recovers one alert when its state changes; value() is computed
 * only then. */
static void decide(sc_db *db, sc__alerts *a, int kind, bool breached,
                   double value, double threshold, uint64_t samples,
                   int64_t now) {
  int bit = 1 << kind;
  if (breached == ((atomic_load(&a->firing) & bit) != 0)) return;
  pthread_mutex_lock(&a->lock);
  if (breached) {
    atomic_fetch_or(&a->firing, bit);
  } else {
    atomic_fetch_and(&a->firing, ~bit);
  }
  if (db->opts.on_alert != NULL) {
    sc_alert ev = {.kind = kind,
                   .name = sc__alert_name(kind),
                   .firing = breached,
                   .value = value,
                   .threshold = threshold,
                   .samples = samples,
                   .at_ms = now};
    db->opts.on_alert(&ev, db->opts.alert_ud);
  }
  pthread_mutex_unlock(&a->lock);
}

/* The latency and error-rate alerts; below min_samples the state stands. */
static void evaluate_window(sc_db *db, sc__alerts *a, int64_t now) {
  if (a->ops < a->min_samples) return;
  if (a->p95_ms >= 0) {
    /* Nearest rank: p95 > T iff fewer than ceil(0.95 n) samples are <= T. */
    bool breached = a->slow > a->ops - (a->ops * 95 + 99) / 100;
    int firing = (atomic_load(&a->firing) >> SC_ALERT_LATENCY) & 1;
    if (breached != firing) {
      decide(db, a, SC_ALERT_LATENCY, breached, window_p95_ms(a), a->p95_ms,
             a->ops, now);
    }
  }
  if (a->error_rate >= 0) {
    double rate = (double)a->errors / (double)a->ops;
    decide(db, a, SC_ALERT_ERROR_RATE, rate > a->error_rate, rate,
           a->error_rate, a->ops, now);
  }
}

void sc__alerts_record(sc_db *db, sc__alerts *a, int status,
                       int64_t latency_ns) {
  int64_t now = sc__now_ms(db);
  slot *s = advance(a, now);
  int b = sc__hist_bucket(latency_ns);
  bool error = sc_status_outcome(status) == SC_OUTCOME_ERROR;
  bool slow = latency_ns > a->p95_ns;
  s->ops++;
  s->errors += error;
  s->slow += slow;
  s->hist[b]++;
  a->ops++;
  a->errors += error;
  a->slow += slow;
  a->hist[b]++;
  evaluate_window(db, a, now);
}

void sc__alerts_queue(sc_db *db, sc__alerts *a, int depth) {
  if (a->queue_depth < 0) return;
  decide(db, a, SC_ALERT_QUEUE_DEPTH, depth >= a->queue_depth, depth,
         a->queue_depth, 0, sc__now_ms(db));
}

int sc__alerts_firing(sc__alerts *a) {
  return atomic_load(&a->firing);
}
