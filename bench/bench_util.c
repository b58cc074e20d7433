#include "bench_util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bu_now_ns(void) {
  return now_ns();
}

/* Field `field` (0: time on a CPU, 1: time runnable, waiting for one) of
 * /proc/self/task/<tid>/schedstat, summed over the threads named comm. */
static int64_t thread_schedstat_ns(const char *comm, int field) {
  DIR *d = opendir("/proc/self/task");
  if (d == NULL) return 0;
  int64_t sum = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[300], name[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue;
    if (fgets(name, sizeof name, f) == NULL) name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    if (strcmp(name, comm) != 0) continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
    f = fopen(path, "r");
    long long v[2] = {0, 0};
    if (f != NULL) {
      if (fscanf(f, "%lld %lld", &v[0], &v[1]) != 2) v[0] = v[1] = 0;
      fclose(f);
    }
    sum += v[field];
  }
  closedir(d);
  return sum;
}

int64_t bu_thread_cpu_ns(const char *comm) {
  return thread_schedstat_ns(comm, 0);
}

static int64_t wakeups_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (int64_t)ru.ru_nvcsw;
}

static double wal_sync_ms(sc_db *db) {
  sc_metrics m;
  if (db == NULL || sc_metrics_get(db, &m) != SC_OK) return 0;
  return m.fsync_ms[SC_FILE_WAL];
}

bu_cpu bu_cpu_now(sc_db *db) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (bu_cpu){.wall = now_ns(),
                  .writer = bu_thread_cpu_ns("sc-writer"),
                  .writer_runnable = thread_schedstat_ns("sc-writer", 1),
                  .completer = bu_thread_cpu_ns("sc-complete"),
                  .process = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec,
                  .wakeups = wakeups_now(),
                  .wal_sync_ms = wal_sync_ms(db),
                  .db = db};
}

/* The resource nearest its limit, by shares of the wall time: a writer busy
 * in batches (80% of the time or more) is bound by its CPU, by the WAL's
 * fsync, or by the CPUs it waited for (runnable while other threads or
 * processes ran), whichever took most; otherwise by the machine's CPUs
 * when they are nearly all used, or else the writer waited for work, so
 * the callers and the hops to and from them bound the run. */
static const char *bound_of(double in_batch, double writer_use,
                            double fsync_share, double runnable,
                            double process_use) {
  if (in_batch >= 0.8) {
    if (runnable > writer_use && runnable > fsync_share) {
      return "CPUs the writer waited for (other threads or processes ran)";
    }
    return writer_use >= fsync_share ? "the writer's CPU"
                                     : "the WAL's fsync (the writer waits on "
                                       "it)";
  }
  if (process_use >= 0.85) return "the machine's CPUs (callers, hops, writer)";
  return "the callers and the hops to and from the writer (it waits for work)";
}

void bu_print_writer(sc_db *db, const char *kind, const bu_cpu *before,
                     int64_t ops) {
  bu_cpu now = bu_cpu_now(db);
  sc_metrics m;
  if (ops <= 0 || sc_metrics_get(db, &m) != SC_OK || m.batch_size.count == 0) {
    return;
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  double wall = (double)(now.wall - before->wall);
  double writer = (double)(now.writer - before->writer);
  double in_batch = m.commit_ms.sum * 1e6;
  double fsync = (now.wal_sync_ms - before->wal_sync_ms) * 1e6;
  double process = (double)(now.process - before->process);
  double wakeups = (double)(now.wakeups - before->wakeups);
  double batch_mean = m.batch_size.sum / (double)m.batch_size.count;
  double runnable = (double)(now.writer_runnable - before->writer_runnable);
  printf(
      "   writer: %llu batches, size mean %.1f p50 %.0f max %.0f;"
      " batch (BEGIN..COMMIT) p50 %.3f ms p99 %.3f ms\n",
      (unsigned long long)m.batch_size.count, batch_mean, m.batch_size.p50,
      m.batch_size.max, m.commit_ms.p50, m.commit_ms.p99);
  printf(
      "   writer: %.2f us CPU per %s, CPU use %.0f%%; in batches %.0f%% of"
      " the time; in the WAL's fsync %.0f%% of the time (%.0f us each);"
      " runnable, waiting for a CPU, %.0f%% of the time\n",
      writer / 1e3 / (double)ops, kind, 100 * writer / wall,
      100 * in_batch / wall, 100 * fsync / wall,
      fsync / 1e3 / (double)m.batch_size.count, 100 * runnable / wall);
  double completer = (double)(now.completer - before->completer);
  /* What is neither the writer nor the completer: the callers' own calls
   * and their wake-ups (the futex sleeps and the scheduler's switches). */
  double callers = process - writer - completer;
  printf(
      "   per %s: completer CPU %.2f us, callers' CPU (the rest) %.2f us,"
      " process CPU %.2f us (%.0f%% of %ld CPUs), %.2f wake-ups (voluntary"
      " context switches)\n",
      kind, completer / 1e3 / (double)ops, callers / 1e3 / (double)ops,
      process / 1e3 / (double)ops, 100 * process / wall / (double)cpus, cpus,
      wakeups / (double)ops);
  /* Group commit's own bound at this batch size: a batch costs one fsync
   * plus its operations' writer CPU, and the next batch waits for both
   * (one connection commits synchronously). With N callers each waiting
   * for its call, batches hold at most N: this is the rate if the writer
   * never waited for a CPU and callers came back at once. */
  double fsync_each = fsync / (double)m.batch_size.count;
  double per_batch = fsync_each + batch_mean * writer / (double)ops;
  printf(
      "   group commit bound at this batch size: %.0f/s (counting each %s;"
      " an fsync of %.0f us plus %.1f x %.2f us of writer CPU per batch)\n",
      per_batch > 0 ? batch_mean * 1e9 / per_batch : 0, kind, fsync_each / 1e3,
      batch_mean, writer / 1e3 / (double)ops);
  const char *bound = bound_of(in_batch / wall, writer / wall, fsync / wall,
                               runnable / wall, process / wall / (double)cpus);
  printf("   bound: %s\n", bound);
  printf(
      "BENCH_JSON {\"kind\":\"%s\",\"writer_us_per_op\":%.3f,"
      "\"writer_cpu_use\":%.3f,\"batch_mean\":%.2f,\"in_batch_share\":%.3f,"
      "\"fsync_share\":%.3f,\"runnable_share\":%.3f,"
      "\"process_us_per_op\":%.3f,\"callers_us_per_op\":%.3f,"
      "\"process_cpu_use\":%.3f,\"wakeups_per_op\":%.3f,\"bound\":\"%s\"}\n",
      kind, writer / 1e3 / (double)ops, writer / wall, batch_mean,
      in_batch / wall, fsync / wall, runnable / wall,
      process / 1e3 / (double)ops, callers / 1e3 / (double)ops,
      process / wall / (double)cpus, wakeups / (double)ops, bound);
  fflush(stdout);
}

void bu_print_hops(sc_db *db, const char *op, const bu_result *r) {
  sc_metrics m;
  if (sc_metrics_get(db, &m) != SC_OK || m.batch_size.count == 0) return;
  const sc_op_metrics *om = NULL;
  for (int i = 0; i < m.n_ops; i++) {
    if (strcmp(m.ops[i].name, op) == 0) om = &m.ops[i];
  }
  if (om == NULL || om->count == 0 || r->ops == 0) return;
  /* An operation's latency in the metrics ends when the completing thread
   * wakes its caller; the caller's ends when it runs again. The batch an
   * operation rides in is weighted by its size: the mean batch duration
   * an operation sees is sum(size x duration) / sum(size), approximated by
   * the mean duration (batches of one size in these runs). */
  double caller_us = r->mean_ms * 1e3;
  double done_us = om->latency_ms.sum / (double)om->count * 1e3;
  double batch_us = m.commit_ms.sum / (double)m.commit_ms.count * 1e3;
  double queue_us = done_us > batch_us ? done_us - batch_us : 0;
  double wake_us = caller_us > done_us ? caller_us - done_us : 0;
  printf(
      "   hops (means): caller -> writer, in the queue %.0f us; the batch"
      " (BEGIN..COMMIT) %.0f us; completion -> caller running %.0f us;"
      " total %.0f us\n",
      queue_us, batch_us, wake_us, caller_us);
  printf(
      "BENCH_JSON {\"hops\":\"%s\",\"threads\":%d,\"queue_us\":%.1f,"
      "\"batch_us\":%.1f,\"wake_us\":%.1f,\"caller_us\":%.1f}\n",
      op, r->threads, queue_us, batch_us, wake_us, caller_us);
  fflush(stdout);
}

typedef struct samples {
  int64_t *ns;
  size_t n, cap;
} samples;

static void samples_add(samples *s, int64_t v) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 4096;
    s->ns = realloc(s->ns, s->cap * sizeof *s->ns);
    if (s->ns == NULL) abort();
  }
  s->ns[s->n++] = v;
}

typedef struct run_ctx {
  bu_call_fn fn;
  void *ud;
  pthread_barrier_t start;
  atomic_bool stop;
  atomic_llong next;
  atomic_llong errors;
} run_ctx;

typedef struct worker {
  run_ctx *ctx;
  int index;
  samples lat;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  run_ctx *c = w->ctx;
  pthread_barrier_wait(&c->start);
  while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
    int64_t i = atomic_fetch_add(&c->next, 1);
    int64_t t0 = now_ns();
    int rc = c->fn(w->index, i, c->ud);
    samples_add(&w->lat, now_ns() - t0);
    if (rc != 0) atomic_fetch_add(&c->errors, 1);
  }
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static double percentile_ms(const int64_t *sorted, size_t n, double p) {
  if (n == 0) return 0;
  size_t k = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)sorted[k] / 1e6;
}

bu_result bu_run(const char *bench, const char *variant, int threads,
                 double seconds, bu_call_fn fn, void *ud) {
  run_ctx ctx = {.fn = fn, .ud = ud};
  pthread_barrier_init(&ctx.start, NULL, (unsigned)threads + 1);
  worker *ws = calloc((size_t)threads, sizeof *ws);
  pthread_t *tids = calloc((size_t)threads, sizeof *tids);
  for (int t = 0; t < threads; t++) {
    ws[t] = (worker){.ctx = &ctx, .index = t};
    pthread_create(&tids[t], NULL, worker_main, &ws[t]);
  }
  pthread_barrier_wait(&ctx.start);
  int64_t t0 = now_ns();
  struct timespec d = {(time_t)seconds,
                       (long)((seconds - (double)(time_t)seconds) * 1e9)};
  nanosleep(&d, NULL);
  atomic_store(&ctx.stop, true);
  for (int t = 0; t < threads; t++)
    pthread_join(tids[t], NULL);
  int64_t elapsed = now_ns() - t0;

  samples all = {0};
  double sum = 0;
  for (int t = 0; t < threads; t++) {
    for (size_t k = 0; k < ws[t].lat.n; k++) {
      samples_add(&all, ws[t].lat.ns[k]);
      sum += (double)ws[t].lat.ns[k];
    }
    free(ws[t].lat.ns);
  }
  qsort(all.ns, all.n, sizeof *all.ns, cmp_i64);
  bu_result r = {.threads = threads,
                 .ops = (int64_t)all.n,
                 .errors = atomic_load(&ctx.errors),
                 .seconds = (double)elapsed / 1e9};
  snprintf(r.bench, sizeof r.bench, "%s", bench);
  snprintf(r.variant, sizeof r.variant, "%s", variant);
  r.ops_per_s = (double)(r.ops - r.errors) / r.seconds;
  r.p50_ms = percentile_ms(all.ns, all.n, 0.50);
  r.p95_ms = percentile_ms(all.ns, all.n, 0.95);
  r.p99_ms = percentile_ms(all.ns, all.n, 0.99);
  r.max_ms = all.n ? (double)all.ns[all.n - 1] / 1e6 : 0;
  r.mean_ms = all.n ? sum / (double)all.n / 1e6 : 0;
  free(all.ns);
  free(ws);
  free(tids);
  pthread_barrier_destroy(&ctx.start);
  return r;
}

void bu_print_header(const char *title) {
  printf("\n== %s\n", title);
  printf("%-22s %-16s %7s %12s %9s %9s %9s %9s %8s\n", "bench", "variant",
         "threads", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors");
  fflush(stdout);
}

void bu_print(const bu_result *r) {
  printf("%-22s %-16s %7d %12.0f %9.3f %9.3f %9.3f %9.3f %8lld\n", r->bench,
         r->variant, r->threads, r->ops_per_s, r->p50_ms, r->p95_ms, r->p99_ms,
         r->max_ms, (long long)r->errors);
  printf(
      "BENCH_JSON {\"bench\":\"%s\",\"variant\":\"%s\",\"threads\":%d,"
      "\"ops\":%lld,\"errors\":%lld,\"seconds\":%.3f,\"ops_per_s\":%.1f,"
      "\"p50_ms\":%.4f,\"p95_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f,"
      "\"mean_ms\":%.4f}\n",
      r->bench, r->variant, r->threads, (long long)r->ops, (long long)r->errors,
      r->seconds, r->ops_per_s, r->p50_ms, r->p95_ms, r->p99_ms, r->max_ms,
      r->mean_ms);
  fflush(stdout);
}

void bu_print_ratio(const char *what, const bu_result *a, const bu_result *b) {
  double ratio = b->ops_per_s > 0 ? a->ops_per_s / b->ops_per_s : 0;
  printf("ratio %s at %d threads: %s/%s = %.1fx\n", what, a->threads,
         a->variant, b->variant, ratio);
  printf(
      "BENCH_JSON {\"bench\":\"%s\",\"ratio\":\"%s\",\"threads\":%d,"
      "\"numerator\":\"%s\",\"denominator\":\"%s\",\"value\":%.2f}\n",
      a->bench, what, a->threads, a->variant, b->variant, ratio);
  fflush(stdout);
}

void bu_print_bound(const char *what, const bu_result *a, const bu_result *b) {
  double ratio = b->ops_per_s > 0 ? a->ops_per_s / b->ops_per_s : 0;
  printf("bound %s at %d threads: %s %.0f/s is %.1f%% of %s %.0f/s\n", what,
         a->threads, a->variant, a->ops_per_s, 100 * ratio, b->variant,
         b->ops_per_s);
  printf(
      "BENCH_JSON {\"bench\":\"%s\",\"ratio\":\"%s\",\"threads\":%d,"
      "\"numerator\":\"%s\",\"denominator\":\"%s\",\"value\":%.3f}\n",
      a->bench, what, a->threads, a->variant, b->variant, ratio);
  fflush(stdout);
}

void bu_remove_db(const char *path) {
  char side[1100];
  unlink(path);
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-turn", path);
  unlink(side);
}

void bu_db_path(char *buf, size_t cap, const char *tag) {
  const char *dir = getenv("SC_BENCH_DIR");
  snprintf(buf, cap, "%s/bench-%s.db", dir && dir[0] ? dir : ".", tag);
  bu_remove_db(buf);
}

sqlite3 *bu_sqlite_open(const char *path) {
  sqlite3 *h = NULL;
  if (sqlite3_open(path, &h) != SQLITE_OK) {
    fprintf(stderr, "sqlite3_open %s: %s\n", path, sqlite3_errmsg(h));
    exit(1);
  }
  sqlite3_busy_timeout(h, 30000);
  sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL,
               NULL, NULL);
  return h;
}

sqlite3 *bu_sqlite_open_writer(const char *path) {
  sqlite3 *h = bu_sqlite_open(path);
  /* lib/sqlite/conn.c's PRAGMAS_FULL, less what bu_sqlite_open set. */
  sqlite3_exec(h,
               "PRAGMA foreign_keys=ON; PRAGMA cache_size=-16000;"
               " PRAGMA temp_store=MEMORY;",
               NULL, NULL, NULL);
  return h;
}

int64_t bu_self_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *arg_value(int argc, char **argv, const char *flag) {
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], flag) == 0) return argv[i + 1];
  }
  return NULL;
}

int bu_arg_list(int argc, char **argv, const char *flag, int *out, int max,
                const int *dflt, int n_dflt) {
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], flag) != 0) continue;
    int n = 0;
    for (char *s = argv[i + 1]; *s && n < max;) {
      out[n++] = (int)strtol(s, &s, 10);
      if (*s == ',') s++;
    }
    return n;
  }
  memcpy(out, dflt, sizeof *dflt * (size_t)n_dflt);
  return n_dflt;
}

int bu_arg_flag(int argc, char **argv, const char *flag) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], flag) == 0) return 1;
  }
  return 0;
}

long long bu_arg_events(int argc, char **argv, long long dflt) {
  const char *v = arg_value(argc, argv, "--events");
  long long n = v ? atoll(v) : dflt;
  return n > 0 ? n : dflt;
}

double bu_arg_seconds(int argc, char **argv, double dflt) {
  const char *v = arg_value(argc, argv, "--seconds");
  double s = v ? atof(v) : dflt;
  return s > 0 ? s : dflt;
}

int bu_arg_threads(int argc, char **argv, int *out, int max, const int *dflt,
                   int n_dflt) {
  const char *v = arg_value(argc, argv, "--threads");
  if (v == NULL) {
    for (int i = 0; i < n_dflt && i < max; i++)
      out[i] = dflt[i];
    return n_dflt < max ? n_dflt : max;
  }
  int n = 0;
  char *copy = strdup(v), *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok && n < max;
       tok = strtok_r(NULL, ",", &save)) {
    if (atoi(tok) > 0) out[n++] = atoi(tok);
  }
  free(copy);
  return n;
}
