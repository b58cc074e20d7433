#include "bench_util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int64_t bu_thread_cpu_ns(const char *comm) {
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
    long long ns = 0;
    if (f != NULL) {
      if (fscanf(f, "%lld", &ns) != 1) ns = 0;
      fclose(f);
    }
    sum += ns;
  }
  closedir(d);
  return sum;
}

bu_cpu bu_cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (bu_cpu){.wall = now_ns(),
                  .writer = bu_thread_cpu_ns("sc-writer"),
                  .completer = bu_thread_cpu_ns("sc-complete"),
                  .process = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec};
}

void bu_print_writer(sc_db *db, const bu_cpu *before, int64_t ops) {
  bu_cpu now = bu_cpu_now();
  sc_metrics m;
  if (ops <= 0 || sc_metrics_get(db, &m) != SC_OK || m.batch_size.count == 0) {
    return;
  }
  double wall = (double)(now.wall - before->wall);
  double writer = (double)(now.writer - before->writer);
  double in_batch = m.commit_ms.sum * 1e6;
  double off_cpu = in_batch > writer ? in_batch - writer : 0;
  printf(
      "   writer: %llu batches, size mean %.1f p50 %.0f max %.0f;"
      " batch (BEGIN..COMMIT) p50 %.3f ms p99 %.3f ms\n",
      (unsigned long long)m.batch_size.count,
      m.batch_size.sum / (double)m.batch_size.count, m.batch_size.p50,
      m.batch_size.max, m.commit_ms.p50, m.commit_ms.p99);
  printf(
      "   writer: %.2f us CPU per operation, CPU use %.0f%%; in batches"
      " %.0f%% of the time, of which off-CPU (fsync, waits) %.0f%%\n",
      writer / 1e3 / (double)ops, 100 * writer / wall, 100 * in_batch / wall,
      in_batch > 0 ? 100 * off_cpu / in_batch : 0);
  printf(
      "   CPU per operation: completer %.2f us, whole process %.2f us"
      " (%.0f%% of %ld CPUs)\n",
      (double)(now.completer - before->completer) / 1e3 / (double)ops,
      (double)(now.process - before->process) / 1e3 / (double)ops,
      100 * (double)(now.process - before->process) / wall /
          (double)sysconf(_SC_NPROCESSORS_ONLN),
      sysconf(_SC_NPROCESSORS_ONLN));
  printf(
      "BENCH_JSON {\"writer_us_per_op\":%.3f,\"writer_cpu_use\":%.3f,"
      "\"batch_mean\":%.2f,\"in_batch_share\":%.3f,"
      "\"off_cpu_share_of_batch\":%.3f,\"process_us_per_op\":%.3f}\n",
      writer / 1e3 / (double)ops, writer / wall,
      m.batch_size.sum / (double)m.batch_size.count, in_batch / wall,
      in_batch > 0 ? off_cpu / in_batch : 0,
      (double)(now.process - before->process) / 1e3 / (double)ops);
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
