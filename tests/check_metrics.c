/* Metrics and alerts: counts by outcome, percentiles, the Prometheus text
 * format parsed line by line, reset, and each alert firing and recovering
 * with an injected clock. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultvfs.h"
#include "internal.h"
#include "test_util.h"

/* faultvfs.c is compiled into this suite (see check_iofault.c): the slow
 * commit tests slow the WAL's fsyncs through it. */
#include "faultvfs.c"

/* ---- operations a test controls: slow, failing, or trivial -------------- */

typedef struct test_op {
  sc__op base;
  int sleep_ms;
  int status;
  sem_t *done_sem; /* for submitted (non-blocking) ops */
} test_op;

static int test_op_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  (void)w;
  test_op *op = (test_op *)base;
  if (op->sleep_ms) usleep((useconds_t)op->sleep_ms * 1000);
  if (op->status != SC_OK) return sc__op_fail(base, op->status, "test");
  return SC_OK;
}

static int run_test_op(sc_db *db, int sleep_ms, int status) {
  test_op op = {.base = {.run = test_op_run, .kind = SC__OP_ADMIN},
                .sleep_ms = sleep_ms,
                .status = status};
  return sc__op_execute(db, &op.base);
}

/* ---- the alerts a callback saw ------------------------------------------ */

typedef struct seen {
  pthread_mutex_t lock;
  int n;
  sc_alert alerts[16];
} seen;

static void on_alert(const sc_alert *a, void *ud) {
  seen *s = ud;
  pthread_mutex_lock(&s->lock);
  if (s->n < 16) s->alerts[s->n] = *a;
  s->n++;
  pthread_mutex_unlock(&s->lock);
}

static int seen_count(seen *s) {
  pthread_mutex_lock(&s->lock);
  int n = s->n;
  pthread_mutex_unlock(&s->lock);
  return n;
}

static sc_options alert_options(tu_clock *clock, seen *s) {
  sc_options o;
  sc_options_init(&o);
  o.durability = SC_DURABILITY_NORMAL;
  tu_use_clock(&o, clock, 1000000);
  o.on_alert = on_alert;
  o.alert_ud = s;
  o.alert_min_samples = 5;
  o.alert_window_ms = 10000;
  o.alert_p95_ms = -1;
  o.alert_error_rate = -1;
  o.alert_queue_depth = -1;
  pthread_mutex_init(&s->lock, NULL);
  return o;
}

static const sc_op_metrics *op_named(const sc_metrics *m, const char *name) {
  for (int i = 0; i < m->n_ops; i++) {
    if (strcmp(m->ops[i].name, name) == 0) return &m->ops[i];
  }
  ck_abort_msg("no metrics for %s", name);
  return NULL;
}

/* ---- counts and percentiles --------------------------------------------- */

START_TEST(outcomes_are_classified) {
  ck_assert_int_eq(sc_status_outcome(SC_OK), SC_OUTCOME_OK);
  int expected[] = {SC_SOLD_OUT,
                    SC_LIMIT_REACHED,
                    SC_PAUSED,
                    SC_NOT_ACTIVE,
                    SC_OUT_OF_STOCK,
                    SC_INSUFFICIENT_BALANCE,
                    SC_COUPON_UNAVAILABLE,
                    SC_EXPIRED,
                    SC_INVALID_STATE,
                    SC_CONFLICT};
  for (size_t i = 0; i < sizeof expected / sizeof *expected; i++) {
    ck_assert_int_eq(sc_status_outcome(expected[i]), SC_OUTCOME_EXPECTED);
  }
  int errors[] = {SC_ERROR,   SC_IOERR,   SC_BUSY,      SC_NOMEM,
                  SC_INVALID, SC_CORRUPT, SC_NOT_FOUND, 9999};
  for (size_t i = 0; i < sizeof errors / sizeof *errors; i++) {
    ck_assert_int_eq(sc_status_outcome(errors[i]), SC_OUTCOME_ERROR);
  }
}
END_TEST

START_TEST(counts_by_outcome_and_percentiles) {
  char *path = tu_db_path("metrics");
  sc_db *db = tu_open(path, NULL);
  sc_coupon_policy_spec spec = {.name = "m", .max_count = 3};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  for (int u = 1; u <= 5; u++)
    sc_coupon_issue(db, policy, u, NULL);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_SOLD_OUT);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  const sc_op_metrics *issue = op_named(&m, "coupon_issue");
  ck_assert_uint_eq(issue->count, 6);
  ck_assert_uint_eq(issue->ok, 3);
  ck_assert_uint_eq(issue->expected, 3);
  ck_assert_uint_eq(issue->errors, 0);
  uint64_t n = 99;
  ck_assert_sc(sc_metrics_count(db, "coupon_issue", SC_SOLD_OUT, &n), SC_OK);
  ck_assert_uint_eq(n, 3);
  ck_assert_sc(sc_metrics_count(db, "coupon_issue", SC_OK, &n), SC_OK);
  ck_assert_uint_eq(n, 3);
  ck_assert_sc(sc_metrics_count(db, NULL, SC_OK, &n), SC_OK);
  ck_assert_uint_eq(n, 4); /* the three coupons and the policy */
  ck_assert_sc(sc_metrics_count(db, "checkout", SC_SOLD_OUT, &n), SC_OK);
  ck_assert_uint_eq(n, 0);
  n = 99;
  ck_assert_sc(sc_metrics_count(db, "no_such_op", SC_OK, &n), SC_NOT_FOUND);
  ck_assert_str_eq(sc_errmsg(db),
                   "sc_metrics_count: no operation \"no_such_op\"");
  ck_assert_sc(sc_metrics_count(db, NULL, SC_STATUS_COUNT_, &n), SC_INVALID);
  ck_assert_sc(sc_metrics_count(db, NULL, -1, &n), SC_INVALID);
  ck_assert_uint_eq(n, 99); /* untouched on failure */
  ck_assert_sc(sc_metrics_count(db, NULL, SC_OK, NULL), SC_MISUSE);
  ck_assert_sc(sc_metrics_count(NULL, NULL, SC_OK, &n), SC_MISUSE);
  ck_assert_uint_eq(issue->latency_ms.count, 6);
  ck_assert(issue->latency_ms.p50 > 0);
  ck_assert(issue->latency_ms.p50 <= issue->latency_ms.p95);
  ck_assert(issue->latency_ms.p95 <= issue->latency_ms.p99);
  ck_assert(issue->latency_ms.p99 <= issue->latency_ms.max);
  ck_assert_uint_eq(op_named(&m, "coupon_policy_create")->count, 1);
  ck_assert_uint_eq(m.batch_size.count, 7); /* one caller: one op a batch */
  ck_assert(m.batch_size.max == 1.0);
  ck_assert_uint_eq(m.commit_ms.count, 7);
  ck_assert_int_eq(m.queue_depth, 0);
  ck_assert_int_eq(m.alerts_firing, 0);
  ck_assert_sc(sc_metrics_reset(db), SC_OK);
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_eq(op_named(&m, "coupon_issue")->count, 0);
  ck_assert_sc(sc_metrics_count(db, "coupon_issue", SC_SOLD_OUT, &n), SC_OK);
  ck_assert_uint_eq(n, 0);
  ck_assert_uint_eq(m.commit_ms.count, 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(bad_arguments_are_refused) {
  sc_metrics m;
  char *text = (char *)"untouched";
  ck_assert_sc(sc_metrics_get(NULL, &m), SC_MISUSE);
  ck_assert_sc(sc_metrics_prometheus(NULL, &text), SC_MISUSE);
  ck_assert_sc(sc_metrics_reset(NULL), SC_MISUSE);
  char *path = tu_db_path("metrics-bad");
  sc_db *db = tu_open(path, NULL);
  ck_assert_sc(sc_metrics_get(db, NULL), SC_MISUSE);
  ck_assert_sc(sc_metrics_prometheus(db, NULL), SC_MISUSE);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "NULL"));
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- the Prometheus text format ----------------------------------------- */

/* A metric or label name: [a-zA-Z_:][a-zA-Z0-9_:]* (labels without ':'). */
static const char *scan_name(const char *p, bool label) {
  if (!(isalpha((unsigned char)*p) || *p == '_' || (!label && *p == ':'))) {
    return NULL;
  }
  while (isalnum((unsigned char)*p) || *p == '_' || (!label && *p == ':')) {
    p++;
  }
  return p;
}

/* {name="value",...}: returns the end, or NULL if malformed. */
static const char *scan_labels(const char *p) {
  if (*p != '{') return p;
  p++;
  while (*p != '}') {
    p = scan_name(p, true);
    if (p == NULL || *p++ != '=' || *p++ != '"') return NULL;
    while (*p != '"') {
      if (*p == '\0' || *p == '\n') return NULL;
      if (*p == '\\') p++;
      p++;
    }
    p++;
    if (*p == ',') p++;
  }
  return p + 1;
}

typedef struct family {
  char name[128];
  char type[16];
} family;

/* The family a sample belongs to: itself, or a summary's base name. */
static const family *family_of(const family *fams, int n, const char *name,
                               size_t len) {
  for (int i = 0; i < n; i++) {
    size_t fl = strlen(fams[i].name);
    if (fl == len && strncmp(fams[i].name, name, len) == 0) return &fams[i];
    if (strcmp(fams[i].type, "summary") == 0 &&
        strncmp(fams[i].name, name, fl) == 0 &&
        (strncmp(name + fl, "_sum", len - fl) == 0 ||
         strncmp(name + fl, "_count", len - fl) == 0) &&
        len > fl) {
      return &fams[i];
    }
    if (strcmp(fams[i].type, "histogram") == 0 &&
        strncmp(fams[i].name, name, fl) == 0 && len > fl &&
        (strncmp(name + fl, "_bucket", len - fl) == 0 ||
         strncmp(name + fl, "_sum", len - fl) == 0 ||
         strncmp(name + fl, "_count", len - fl) == 0)) {
      return &fams[i];
    }
  }
  return NULL;
}

/* Checks every line against the exposition format; returns the samples. */
static int parse_exposition(const char *text) {
  family fams[64];
  int nfam = 0, samples = 0;
  const char *line = text;
  while (*line != '\0') {
    const char *end = strchr(line, '\n');
    ck_assert_msg(end != NULL, "last line lacks its newline");
    char buf[512];
    size_t len = (size_t)(end - line);
    ck_assert_uint_lt(len, sizeof buf);
    memcpy(buf, line, len);
    buf[len] = '\0';
    if (strncmp(buf, "# HELP ", 7) == 0) {
      const char *p = scan_name(buf + 7, false);
      ck_assert_msg(p && *p == ' ' && p[1] != '\0', "bad HELP: %s", buf);
    } else if (strncmp(buf, "# TYPE ", 7) == 0) {
      const char *p = scan_name(buf + 7, false);
      ck_assert_msg(p && *p == ' ', "bad TYPE: %s", buf);
      ck_assert_int_lt(nfam, 64);
      family *f = &fams[nfam++];
      snprintf(f->name, sizeof f->name, "%.*s", (int)(p - buf - 7), buf + 7);
      snprintf(f->type, sizeof f->type, "%s", p + 1);
      ck_assert_msg(strcmp(f->type, "counter") == 0 ||
                        strcmp(f->type, "gauge") == 0 ||
                        strcmp(f->type, "summary") == 0 ||
                        strcmp(f->type, "histogram") == 0,
                    "bad type: %s", buf);
      for (int i = 0; i < nfam - 1; i++) {
        ck_assert_msg(strcmp(fams[i].name, f->name) != 0, "TYPE twice: %s",
                      buf);
      }
      if (strcmp(f->type, "counter") == 0) {
        size_t n = strlen(f->name);
        ck_assert_msg(n > 6 && strcmp(f->name + n - 6, "_total") == 0,
                      "counter without _total: %s", f->name);
      }
    } else {
      ck_assert_msg(buf[0] != '#' && buf[0] != '\0', "stray line: '%s'", buf);
      const char *p = scan_name(buf, false);
      ck_assert_msg(p != NULL, "bad sample name: %s", buf);
      const family *f = family_of(fams, nfam, buf, (size_t)(p - buf));
      ck_assert_msg(f != NULL, "sample before its TYPE: %s", buf);
      p = scan_labels(p);
      ck_assert_msg(p && *p == ' ', "bad labels: %s", buf);
      char *num_end;
      errno = 0;
      double v = strtod(p + 1, &num_end);
      ck_assert_msg(*num_end == '\0' && errno == 0, "bad value: %s", buf);
      /* The one gauge that may be negative: a threshold that is off. */
      ck_assert_msg(!isnan(v) && (v >= 0 || strstr(buf, "_threshold_")),
                    "negative or NaN value: %s", buf);
      samples++;
    }
    line = end + 1;
  }
  return samples;
}

START_TEST(prometheus_text_parses_as_the_exposition_format) {
  char *path = tu_db_path("prom");
  sc_db *db = tu_open(path, NULL);
  char *text = NULL;
  /* Before any operation: families with no per-op samples still parse. */
  ck_assert_sc(sc_metrics_prometheus(db, &text), SC_OK);
  ck_assert_int_gt(parse_exposition(text), 0);
  sc_free(text);
  sc_coupon_policy_spec spec = {.name = "p", .max_count = 2};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  for (int u = 1; u <= 4; u++)
    sc_coupon_issue(db, policy, u, NULL);
  ck_assert_sc(sc_metrics_prometheus(db, &text), SC_OK);
  ck_assert_int_gt(parse_exposition(text), 10);
  ck_assert_ptr_nonnull(strstr(
      text,
      "shopcore_operations_total{op=\"coupon_issue\",status=\"SC_SOLD_OUT\","
      "outcome=\"expected\"} 2\n"));
  ck_assert_ptr_nonnull(
      strstr(text,
             "shopcore_operations_total{op=\"coupon_issue\",status=\"SC_OK\","
             "outcome=\"ok\"} 2\n"));
  ck_assert_ptr_nonnull(
      strstr(text,
             "shopcore_operation_duration_seconds{op=\"coupon_issue\","
             "quantile=\"0.95\"} "));
  ck_assert_ptr_nonnull(strstr(
      text,
      "shopcore_operation_duration_seconds_count{op=\"coupon_issue\"} 4\n"));
  ck_assert_ptr_nonnull(strstr(text, "shopcore_queue_depth 0\n"));
  ck_assert_ptr_nonnull(
      strstr(text, "shopcore_alert_firing{alert=\"latency_p95\"} 0\n"));
  /* The commit histogram counts every commit in its +Inf bucket. */
  ck_assert_ptr_nonnull(
      strstr(text, "shopcore_commit_seconds_bucket{le=\"+Inf\"} 5\n"));
  ck_assert_ptr_nonnull(strstr(text, "shopcore_commit_seconds_count 5\n"));
  ck_assert_ptr_nonnull(strstr(text, "shopcore_slow_commits_total "));
  ck_assert_ptr_nonnull(
      strstr(text, "shopcore_slow_commit_threshold_seconds 0.02\n"));
  ck_assert_ptr_nonnull(strstr(text, "shopcore_fsyncs_total{file=\"wal\"} "));
  ck_assert_ptr_nonnull(
      strstr(text, "shopcore_fsync_seconds_total{file=\"db\"} "));
  sc_free(text);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- slow commits ------------------------------------------------------- */

/* The histogram bucket a commit of ms milliseconds is counted in. */
static int bucket_holding(double ms) {
  static const int64_t bounds[] = SC_COMMIT_BUCKET_BOUNDS_MS;
  for (int i = 0; i < SC_COMMIT_BUCKETS - 1; i++) {
    if (ms <= (double)bounds[i]) return i;
  }
  return SC_COMMIT_BUCKETS - 1;
}

START_TEST(a_slow_wal_fsync_is_a_recorded_slow_commit) {
  char *path = tu_db_path("slow");
  sc_db *db = tu_open(path, NULL); /* FULL: every commit fsyncs the WAL */
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert(m.slow_commit_ms == 20.0);
  uint64_t slow_before = m.slow_commits;
  ck_assert_uint_gt(m.fsyncs[SC_FILE_WAL], 0);
  fv_slow_sync(SQLITE_OPEN_WAL, 60);
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  fv_slow_sync(0, 0);
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  /* The commit whose fsync was slowed (the first may have been slow too on
   * a loaded machine; thresholds that record nothing are tested below). */
  ck_assert_uint_ge(m.slow_commits, slow_before + 1);
  const sc_slow_commit *c = &m.last_slow_commit;
  ck_assert(c->duration_ms >= 60);
  ck_assert_int_eq(c->batch_size, 1);
  /* The time is the WAL's fsync, by the writer, not the database file's. */
  ck_assert(c->wal_sync_ms >= 60);
  ck_assert(c->wal_sync_ms <= c->duration_ms);
  ck_assert(c->db_sync_ms < 20);
  ck_assert(c->writer_cpu_ms < c->duration_ms);
  ck_assert_int_gt(c->wal_frames, 0);
  ck_assert_int_gt(c->wal_bytes, 0);
  ck_assert_int_gt(c->at_ms, 0);
  ck_assert(m.fsync_ms[SC_FILE_WAL] >= 60);
  /* Counted in its bucket (which one depends on the disk beyond the 60 ms:
   * 50 < ms <= 100 on a quiet machine, the next one on a busy one). */
  ck_assert_int_ge(bucket_holding(c->duration_ms), bucket_holding(60));
  ck_assert_uint_ge(m.commit_buckets[bucket_holding(c->duration_ms)], 1);
  uint64_t total = 0;
  for (int i = 0; i < SC_COMMIT_BUCKETS; i++)
    total += m.commit_buckets[i];
  ck_assert_uint_eq(total, m.commit_ms.count);
  char *text = NULL;
  ck_assert_sc(sc_metrics_prometheus(db, &text), SC_OK);
  char want[80];
  snprintf(want, sizeof want, "shopcore_slow_commits_total %llu\n",
           (unsigned long long)m.slow_commits);
  ck_assert_ptr_nonnull(strstr(text, want));
  sc_free(text);
  /* Reset forgets them. */
  ck_assert_sc(sc_metrics_reset(db), SC_OK);
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_eq(m.slow_commits, 0);
  ck_assert(m.last_slow_commit.duration_ms == 0);
  for (int i = bucket_holding(60); i < SC_COMMIT_BUCKETS; i++)
    ck_assert_uint_eq(m.commit_buckets[i], 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(slow_commits_follow_the_threshold_option) {
  char *path = tu_db_path("slowopt");
  sc_options o;
  sc_options_init(&o);
  /* A threshold past int64 in nanoseconds is refused, and opens nothing. */
  o.slow_commit_ms = INT64_MAX;
  sc_db *db = NULL;
  ck_assert_sc(sc_open(path, &o, &db), SC_INVALID);
  ck_assert_ptr_null(db);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "slow_commit_ms"));
  o.slow_commit_ms = -1; /* off */
  db = tu_open(path, &o);
  fv_slow_sync(SQLITE_OPEN_WAL, 30);
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_eq(m.slow_commits, 0);
  ck_assert(m.slow_commit_ms < 0);
  ck_assert(m.commit_ms.max >= 30); /* slow it was, but not recorded */
  sc_close(db);
  /* A threshold above the slowed fsync records nothing either; one below
   * records it. */
  o.slow_commit_ms = 1000;
  db = tu_open(path, &o);
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_eq(m.slow_commits, 0);
  sc_close(db);
  o.slow_commit_ms = 25;
  db = tu_open(path, &o);
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_ge(m.slow_commits, 1);
  ck_assert(m.slow_commit_ms == 25.0);
  fv_slow_sync(0, 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(the_debug_log_prints_one_line_per_slow_commit) {
  char *path = tu_db_path("slowlog");
  char log[600];
  snprintf(log, sizeof log, "%s.log", path);
  FILE *f = fopen(log, "w+");
  ck_assert_ptr_nonnull(f);
  fflush(stderr);
  int saved = dup(2);
  ck_assert_int_ge(saved, 0);
  dup2(fileno(f), 2);
  setenv("SC_DEBUG_SLOW_COMMITS", "1", 1);
  sc_db *db = tu_open(path, NULL);
  fv_slow_sync(SQLITE_OPEN_WAL, 40);
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  fv_slow_sync(0, 0);
  sc_close(db);
  unsetenv("SC_DEBUG_SLOW_COMMITS");
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  char line[512];
  int lines = 0;
  rewind(f);
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "shopcore: slow commit ", 22) != 0) continue;
    lines++;
    ck_assert_ptr_nonnull(strstr(line, "batch 1: wal "));
    double wal_ms = 0;
    const char *p = strstr(line, "wal fsync ");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(sscanf(p, "wal fsync %lf ms", &wal_ms), 1);
    ck_assert(wal_ms >= 40);
    ck_assert_ptr_nonnull(strstr(line, "checkpoint "));
  }
  fclose(f);
  unlink(log);
  ck_assert_int_eq(lines, 2);
  tu_remove_db(path);
}
END_TEST

/* ---- alerts ---------------------------------------------------------------
 */

START_TEST(a_huge_latency_threshold_is_never_reached) {
  /* 10^13 ms in nanoseconds overflows int64 (UBSan checks the arithmetic):
   * such a threshold must simply never fire. */
  tu_clock clock;
  seen s = {0};
  sc_options o = alert_options(&clock, &s);
  o.alert_p95_ms = 10000000000000LL;
  char *path = tu_db_path("alert-huge");
  sc_db *db = tu_open(path, &o);
  for (int i = 0; i < 6; i++)
    ck_assert_sc(run_test_op(db, 5, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

#define SLOW_OP_MS 450

START_TEST(latency_alert_fires_and_recovers_by_the_injected_clock) {
  tu_clock clock;
  seen s = {0};
  sc_options o = alert_options(&clock, &s);
  o.alert_p95_ms = 300; /* far above a quick operation on a loaded machine */
  char *path = tu_db_path("alert-latency");
  sc_db *db = tu_open(path, &o);
  /* Four slow operations are fewer than min_samples: no decision yet. */
  for (int i = 0; i < 4; i++)
    ck_assert_sc(run_test_op(db, SLOW_OP_MS, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 0);
  ck_assert_sc(run_test_op(db, SLOW_OP_MS, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 1);
  ck_assert_int_eq(s.alerts[0].kind, SC_ALERT_LATENCY);
  ck_assert_str_eq(s.alerts[0].name, "latency_p95");
  ck_assert_int_eq(s.alerts[0].firing, 1);
  ck_assert(s.alerts[0].value > 300 && s.alerts[0].threshold == 300);
  ck_assert_uint_eq(s.alerts[0].samples, 5);
  ck_assert_int_eq(s.alerts[0].at_ms, 1000000);
  sc_metrics m;
  sc_metrics_get(db, &m);
  ck_assert_int_eq(m.alerts_firing, 1 << SC_ALERT_LATENCY);
  /* Still slow: it fired once, it does not fire again. */
  ck_assert_sc(run_test_op(db, SLOW_OP_MS, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 1);
  /* The slow operations leave the window only when the clock moves on. */
  for (int i = 0; i < 5; i++)
    ck_assert_sc(run_test_op(db, 0, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 1);
  atomic_fetch_add(&clock.now_ms, 20000);
  for (int i = 0; i < 4; i++)
    ck_assert_sc(run_test_op(db, 0, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 1); /* too few samples to decide */
  ck_assert_sc(run_test_op(db, 0, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 2);
  ck_assert_int_eq(s.alerts[1].firing, 0);
  ck_assert(s.alerts[1].value < 300);
  ck_assert_int_eq(s.alerts[1].at_ms, 1020000);
  sc_metrics_get(db, &m);
  ck_assert_int_eq(m.alerts_firing, 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(error_rate_alert_counts_errors_not_expected_outcomes) {
  tu_clock clock;
  seen s = {0};
  sc_options o = alert_options(&clock, &s);
  o.alert_error_rate = 0.25;
  char *path = tu_db_path("alert-errors");
  sc_db *db = tu_open(path, &o);
  /* Sold out is an expected outcome: many of them raise no alert. */
  sc_coupon_policy_spec spec = {.name = "e", .max_count = 1};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  for (int u = 1; u <= 20; u++)
    sc_coupon_issue(db, policy, u, NULL);
  ck_assert_int_eq(seen_count(&s), 0);
  /* 21 operations so far, none an error; 7 more errors are 7/28 = 25%,
   * not over the threshold; the 8th makes 8/29 and fires. */
  for (int i = 0; i < 7; i++)
    ck_assert_sc(run_test_op(db, 0, SC_IOERR), SC_IOERR);
  ck_assert_int_eq(seen_count(&s), 0);
  ck_assert_sc(run_test_op(db, 0, SC_IOERR), SC_IOERR);
  ck_assert_int_eq(seen_count(&s), 1);
  ck_assert_int_eq(s.alerts[0].kind, SC_ALERT_ERROR_RATE);
  ck_assert_int_eq(s.alerts[0].firing, 1);
  ck_assert_double_eq_tol(s.alerts[0].value, 8.0 / 29.0, 1e-9);
  atomic_fetch_add(&clock.now_ms, 10000);
  for (int i = 0; i < 5; i++)
    ck_assert_sc(run_test_op(db, 0, SC_OK), SC_OK);
  ck_assert_int_eq(seen_count(&s), 2);
  ck_assert_int_eq(s.alerts[1].firing, 0);
  ck_assert_double_eq(s.alerts[1].value, 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

static void post_done(sc__op *op) {
  sem_post(((test_op *)op)->done_sem);
}

START_TEST(queue_depth_alert_fires_while_the_writer_is_held_up) {
  tu_clock clock;
  seen s = {0};
  sc_options o = alert_options(&clock, &s);
  o.alert_queue_depth = 5;
  char *path = tu_db_path("alert-queue");
  sc_db *db = tu_open(path, &o);
  sem_t done;
  sem_init(&done, 0, 0);
  test_op quick[10];
  tu_gate *held = tu_gate_close(db);
  /* The writer is held inside a batch: these ten wait in the queue. */
  for (int i = 0; i < 10; i++) {
    quick[i] = (test_op){
        .base = {.run = test_op_run, .done = post_done, .kind = SC__OP_ADMIN},
        .done_sem = &done};
    ck_assert_sc(sc__op_submit(db, &quick[i].base), SC_OK);
  }
  tu_wait_queued(db, 10);
  tu_gate_open(held);
  for (int i = 0; i < 10; i++)
    sem_wait(&done);
  ck_assert_int_eq(seen_count(&s), 2);
  ck_assert_int_eq(s.alerts[0].kind, SC_ALERT_QUEUE_DEPTH);
  ck_assert_int_eq(s.alerts[0].firing, 1);
  ck_assert_double_eq(s.alerts[0].value, 10);
  ck_assert_double_eq(s.alerts[0].threshold, 5);
  ck_assert_int_eq(s.alerts[1].kind, SC_ALERT_QUEUE_DEPTH);
  ck_assert_int_eq(s.alerts[1].firing, 0);
  ck_assert_double_eq(s.alerts[1].value, 0);
  sem_destroy(&done);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(disabled_alerts_stay_silent) {
  tu_clock clock;
  seen s = {0};
  sc_options o = alert_options(&clock, &s); /* every alert off */
  char *path = tu_db_path("alert-off");
  sc_db *db = tu_open(path, &o);
  for (int i = 0; i < 6; i++)
    run_test_op(db, 0, SC_IOERR);
  for (int i = 0; i < 6; i++)
    run_test_op(db, 30, SC_OK);
  ck_assert_int_eq(seen_count(&s), 0);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_int_eq(m.alerts_firing, 0);
  ck_assert_uint_eq(op_named(&m, "admin")->errors, 6);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

Suite *metrics_suite(void) {
  Suite *s = suite_create("metrics");
  TCase *tc = tu_tcase("metrics");
  tcase_add_test(tc, outcomes_are_classified);
  tcase_add_test(tc, counts_by_outcome_and_percentiles);
  tcase_add_test(tc, bad_arguments_are_refused);
  tcase_add_test(tc, prometheus_text_parses_as_the_exposition_format);
  tcase_add_test(tc, a_slow_wal_fsync_is_a_recorded_slow_commit);
  tcase_add_test(tc, slow_commits_follow_the_threshold_option);
  tcase_add_test(tc, the_debug_log_prints_one_line_per_slow_commit);
  tcase_add_test(tc, a_huge_latency_threshold_is_never_reached);
  tcase_add_test(tc, latency_alert_fires_and_recovers_by_the_injected_clock);
  tcase_add_test(tc, error_rate_alert_counts_errors_not_expected_outcomes);
  tcase_add_test(tc, queue_depth_alert_fires_while_the_writer_is_held_up);
  tcase_add_test(tc, disabled_alerts_stay_silent);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (fv_register() != SQLITE_OK) return 2;
  return tu_run_suite(metrics_suite());
}
