/* The outbox through the worker:
 *   (a) commit-to-handler latency: from the return of a durable
 *       sc_coupon_issue (its commit is done by then) to the worker's handler
 *       receiving that coupon's event; paced (one issue per ms, an idle
 *       system) and loaded (16 threads issuing flat out);
 *   (b) events/s through the worker: a backlog of events drained (claim,
 *       decode, handler, ack), and sustained while 16 threads produce;
 * each with synchronous=FULL (default) and NORMAL: the worker's claims are
 * commits too, so durability is on its path.
 *
 *   bench_outbox [--seconds S] [--events N] [--drain]
 *
 * --drain: only (b)'s backlog drains, with what bounds each.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_IDS (8 << 20)

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* What the producers and the handler record, per coupon id (= the event's
 * aggregate id: coupons are numbered 1, 2, 3 ... in a fresh file). */
typedef struct run {
  sc_db *db;
  sc_id policy;
  _Atomic int64_t *t_return, *t_handled;
  atomic_llong handled, issued, bad;
  atomic_bool stop;
  int pace_us; /* > 0: one issue per pace_us per producer */
} run;

static int on_event(const sc_event *ev, void *ud) {
  run *r = ud;
  sc_event_data d;
  if (sc_event_decode(ev->payload, ev->payload_len, &d) != SC_OK ||
      d.coupon <= 0 || d.coupon >= MAX_IDS) {
    atomic_fetch_add(&r->bad, 1);
    return SC_OK;
  }
  atomic_store(&r->t_handled[d.coupon], now_ns());
  atomic_fetch_add(&r->handled, 1);
  return SC_OK;
}

static void *produce(void *arg) {
  run *r = arg;
  while (!atomic_load(&r->stop)) {
    sc_id coupon = 0;
    int rc = sc_coupon_issue(r->db, r->policy,
                             atomic_fetch_add(&r->issued, 1) + 1, &coupon);
    if (rc != SC_OK || coupon >= MAX_IDS) {
      atomic_fetch_add(&r->bad, 1);
      continue;
    }
    atomic_store(&r->t_return[coupon], now_ns());
    if (r->pace_us > 0) usleep((useconds_t)r->pace_us);
  }
  return NULL;
}

static void run_open(run *r, const char *tag, int durability) {
  memset(r, 0, sizeof *r);
  char path[1024];
  bu_db_path(path, sizeof path, tag);
  sc_options o;
  sc_options_init(&o);
  o.durability = durability;
  if (sc_open(path, &o, &r->db) != SC_OK) {
    fprintf(stderr, "open: %s\n", sc_errmsg(NULL));
    exit(1);
  }
  sc_coupon_policy_spec spec = {
      .name = "bench", .max_count = INT64_MAX / 2, .per_user_limit = 1000};
  if (sc_coupon_policy_create(r->db, &spec, &r->policy) != SC_OK) exit(1);
  r->t_return = calloc(MAX_IDS, sizeof *r->t_return);
  r->t_handled = calloc(MAX_IDS, sizeof *r->t_handled);
  if (r->t_return == NULL || r->t_handled == NULL) exit(1);
}

static void run_close(run *r, const char *tag) {
  char path[1024];
  bu_db_path(path, sizeof path, tag); /* the same name: removes the file */
  sc_close(r->db);
  bu_remove_db(path);
  free(r->t_return);
  free(r->t_handled);
}

static sc_worker *worker_start(run *r, int batch_max) {
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = on_event;
  o.ud = r;
  o.batch_max = batch_max;
  sc_worker *w = NULL;
  if (sc_worker_start_thread(r->db, &o, &w) != SC_OK) {
    fprintf(stderr, "worker: %s\n", sc_errmsg(NULL));
    exit(1);
  }
  return w;
}

static void wait_handled(run *r, long long n) {
  int64_t give_up = now_ns() + 120 * (int64_t)1000000000;
  while (atomic_load(&r->handled) < n && now_ns() < give_up)
    usleep(200);
}

static void producers(run *r, int n, double seconds) {
  pthread_t t[64];
  for (int i = 0; i < n; i++)
    pthread_create(&t[i], NULL, produce, r);
  usleep((useconds_t)(seconds * 1e6));
  atomic_store(&r->stop, true);
  for (int i = 0; i < n; i++)
    pthread_join(t[i], NULL);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Latency percentiles from the return of each issue to its handler. A
 * handler may run before the producer's thread is even woken: 0 then. */
static bu_result latency_result(run *r, const char *variant, int threads,
                                double seconds) {
  bu_result res = {.threads = threads, .seconds = seconds};
  snprintf(res.bench, sizeof res.bench, "outbox_commit_to_handler");
  snprintf(res.variant, sizeof res.variant, "%s", variant);
  int64_t *lat = malloc(MAX_IDS * sizeof *lat);
  size_t n = 0;
  double sum = 0;
  for (size_t id = 1; id < MAX_IDS; id++) {
    int64_t ret = atomic_load(&r->t_return[id]);
    int64_t h = atomic_load(&r->t_handled[id]);
    if (ret == 0 || h == 0) continue;
    lat[n] = h > ret ? h - ret : 0;
    sum += (double)lat[n++];
  }
  qsort(lat, n, sizeof *lat, cmp_i64);
  res.ops = (int64_t)n;
  res.errors = atomic_load(&r->bad);
  res.ops_per_s = (double)n / seconds;
  if (n > 0) {
    res.p50_ms = (double)lat[(size_t)(0.50 * (double)(n - 1))] / 1e6;
    res.p95_ms = (double)lat[(size_t)(0.95 * (double)(n - 1))] / 1e6;
    res.p99_ms = (double)lat[(size_t)(0.99 * (double)(n - 1))] / 1e6;
    res.max_ms = (double)lat[n - 1] / 1e6;
    res.mean_ms = sum / (double)n / 1e6;
  }
  free(lat);
  return res;
}

static void bench_latency(const char *variant, int durability, int threads,
                          int pace_us, double seconds) {
  run r;
  run_open(&r, "outbox-lat", durability);
  r.pace_us = pace_us;
  sc_worker *w = worker_start(&r, 0);
  producers(&r, threads, seconds);
  wait_handled(&r, atomic_load(&r.issued) - atomic_load(&r.bad));
  sc_worker_stop_thread(w);
  bu_result res = latency_result(&r, variant, threads, seconds);
  bu_print(&res);
  run_close(&r, "outbox-lat");
}

/* ---- throughput ------------------------------------------------------------
 */

typedef struct fill {
  run *r;
  long long per_thread;
} fill;

static void *fill_main(void *arg) {
  fill *f = arg;
  for (long long i = 0; i < f->per_thread; i++) {
    if (sc_coupon_issue(f->r->db, f->r->policy,
                        atomic_fetch_add(&f->r->issued, 1) + 1,
                        NULL) != SC_OK) {
      atomic_fetch_add(&f->r->bad, 1);
    }
  }
  return NULL;
}

/* A backlog of n events, then the worker drains it. */
static void bench_drain(const char *variant, int durability, int batch_max,
                        long long n) {
  run r;
  run_open(&r, "outbox-drain", durability);
  enum { FILLERS = 32 };
  pthread_t t[FILLERS];
  fill f = {&r, n / FILLERS};
  for (int i = 0; i < FILLERS; i++)
    pthread_create(&t[i], NULL, fill_main, &f);
  for (int i = 0; i < FILLERS; i++)
    pthread_join(t[i], NULL);
  long long events = f.per_thread * FILLERS - atomic_load(&r.bad);
  sc_metrics_reset(r.db);
  bu_cpu before = bu_cpu_now(r.db);
  int64_t t0 = now_ns();
  sc_worker *w = worker_start(&r, batch_max);
  int64_t worker_cpu0 = bu_thread_cpu_ns("sc-worker");
  wait_handled(&r, events);
  double seconds = (double)(now_ns() - t0) / 1e9;
  /* The loop thread's CPU: decoding, the handler, building the next round,
   * the wake-ups; the writer's: settling and claiming (bu_print_writer). */
  double worker_us = (double)(bu_thread_cpu_ns("sc-worker") - worker_cpu0) /
                     1e3 / (double)(events > 0 ? events : 1);
  sc_worker_stop_thread(w);
  sc_outbox_stats st;
  sc_outbox_stats_get(r.db, &st);
  bu_result res = {.threads = 1,
                   .seconds = seconds,
                   .ops = atomic_load(&r.handled),
                   .errors = atomic_load(&r.bad) + st.pending};
  snprintf(res.bench, sizeof res.bench, "outbox_drain");
  snprintf(res.variant, sizeof res.variant, "%s", variant);
  res.ops_per_s = (double)res.ops / seconds;
  bu_print(&res);
  bu_print_writer(r.db, "event (ack + claim)", &before, res.ops);
  printf(
      "   worker thread: %.2f us CPU per event (decode, handler, next"
      " round)\n",
      worker_us);
  run_close(&r, "outbox-drain");
}

/* Producers and the worker at once: events handled per second, and whether
 * the worker kept up (backlog left when the producers stop). */
static void bench_sustained(const char *variant, int durability, int threads,
                            double seconds) {
  run r;
  run_open(&r, "outbox-sus", durability);
  sc_worker *w = worker_start(&r, 0);
  producers(&r, threads, seconds);
  long long at_stop = atomic_load(&r.handled);
  long long made = atomic_load(&r.issued) - atomic_load(&r.bad);
  wait_handled(&r, made);
  sc_worker_stop_thread(w);
  bu_result res = latency_result(&r, variant, threads, seconds);
  snprintf(res.bench, sizeof res.bench, "outbox_sustained");
  res.ops_per_s = (double)at_stop / seconds;
  bu_print(&res);
  printf(
      "  produced %lld events, handled %lld while producing (backlog at "
      "stop: %lld)\n",
      made, at_stop, made - at_stop);
  run_close(&r, "outbox-sus");
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 2.0);
  long long events = bu_arg_events(argc, argv, 200000);
  bool drain_only = bu_arg_flag(argc, argv, "--drain");
  if (!drain_only) {
    bu_print_header("outbox: commit to handler latency (p50/p99 in ms)");
    bench_latency("paced_full", SC_DURABILITY_FULL, 1, 1000, seconds);
    bench_latency("paced_normal", SC_DURABILITY_NORMAL, 1, 1000, seconds);
    bench_latency("loaded_full", SC_DURABILITY_FULL, 16, 0, seconds);
    bench_latency("loaded_normal", SC_DURABILITY_NORMAL, 16, 0, seconds);
  }
  bu_print_header("outbox: events/s through the worker (ops/s = events/s)");
  bench_drain("drain_full_b256", SC_DURABILITY_FULL, 256, events);
  bench_drain("drain_full_b512", SC_DURABILITY_FULL, 512, events);
  bench_drain("drain_full_b1024", SC_DURABILITY_FULL, 1024, events);
  bench_drain("drain_normal_b512", SC_DURABILITY_NORMAL, 512, events);
  if (!drain_only) {
    bench_sustained("sustained_full", SC_DURABILITY_FULL, 16, seconds);
  }
  return 0;
}
