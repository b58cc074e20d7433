/* sc_metrics_prometheus: a metrics snapshot in the Prometheus text
 * exposition format (version 0.0.4). Every family gets its HELP and TYPE
 * lines once, before its samples; counters end in _total; latencies are
 * summaries in seconds with quantile labels, _sum and _count. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"

static void family(sc__strbuf *b, const char *name, const char *type,
                   const char *help) {
  sc__strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Values in Prometheus' float syntax ("%.17g" would be exact; "%.9g" is
 * plenty for metrics and easier to read). */
static void sample(sc__strbuf *b, const char *name, const char *labels,
                   double v) {
  if (isnan(v)) {
    sc__strbuf_printf(b, "%s%s NaN\n", name, labels);
  } else {
    sc__strbuf_printf(b, "%s%s %.9g\n", name, labels, v);
  }
}

/* A summary's quantiles, _sum and _count; label is "" or `op="x",`. */
static void summary(sc__strbuf *b, const char *name, const char *label,
                    const sc_quantiles *q, double scale) {
  static const char *const QN[3] = {"0.5", "0.95", "0.99"};
  const double qv[3] = {q->p50, q->p95, q->p99};
  char labels[160];
  for (int i = 0; i < 3; i++) {
    snprintf(labels, sizeof labels, "{%squantile=\"%s\"}", label, QN[i]);
    sample(b, name, labels, qv[i] * scale);
  }
  char suffixed[128];
  size_t n = strlen(label);
  /* The label list without its trailing comma, for _sum and _count. */
  if (n > 0) {
    snprintf(labels, sizeof labels, "{%.*s}", (int)(n - 1), label);
  } else {
    labels[0] = '\0';
  }
  snprintf(suffixed, sizeof suffixed, "%s_sum", name);
  sample(b, suffixed, labels, q->sum * scale);
  snprintf(suffixed, sizeof suffixed, "%s_count", name);
  sample(b, suffixed, labels, (double)q->count);
}

static void operations(sc__strbuf *b, sc_db *db, const sc_metrics *m) {
  static const char *const OUTCOME[] = {"ok", "expected", "error"};
  family(b, "shopcore_operations_total", "counter",
         "Write operations completed by the writer, by kind and status.");
  for (int k = 0; k < m->n_ops; k++) {
    for (int s = 0; s < SC_STATUS_COUNT_; s++) {
      uint64_t n = 0;
      if (sc_metrics_count(db, m->ops[k].name, s, &n) != SC_OK || n == 0) {
        continue;
      }
      sc__strbuf_printf(b,
                        "shopcore_operations_total{op=\"%s\",status=\"%s\","
                        "outcome=\"%s\"} %llu\n",
                        m->ops[k].name, sc_err_name(s),
                        OUTCOME[sc_status_outcome(s)], (unsigned long long)n);
    }
  }
}

static void latencies(sc__strbuf *b, const sc_metrics *m) {
  char label[96];
  family(b, "shopcore_operation_duration_seconds", "summary",
         "Time from submission to durable completion, by operation.");
  for (int k = 0; k < m->n_ops; k++) {
    if (m->ops[k].count == 0) continue;
    snprintf(label, sizeof label, "op=\"%s\",", m->ops[k].name);
    summary(b, "shopcore_operation_duration_seconds", label,
            &m->ops[k].latency_ms, 1e-3);
  }
  family(b, "shopcore_operation_duration_max_seconds", "gauge",
         "Longest time from submission to durable completion, by operation.");
  for (int k = 0; k < m->n_ops; k++) {
    if (m->ops[k].count == 0) continue;
    snprintf(label, sizeof label, "{op=\"%s\"}", m->ops[k].name);
    sample(b, "shopcore_operation_duration_max_seconds", label,
           m->ops[k].latency_ms.max * 1e-3);
  }
}

/* The commit-duration histogram (cumulative buckets), slow commits and
 * fsyncs by file. */
static void commits(sc__strbuf *b, const sc_metrics *m) {
  static const int64_t BOUNDS[SC_COMMIT_BUCKETS - 1] =
      SC_COMMIT_BUCKET_BOUNDS_MS;
  static const char *const FILES[2] = {"db", "wal"};
  char label[64];
  family(b, "shopcore_commit_seconds", "histogram",
         "Time of one batch, from BEGIN to the durable COMMIT.");
  uint64_t total = 0;
  for (int i = 0; i < SC_COMMIT_BUCKETS; i++) {
    total += m->commit_buckets[i];
    if (i < SC_COMMIT_BUCKETS - 1) {
      snprintf(label, sizeof label, "{le=\"%g\"}", (double)BOUNDS[i] * 1e-3);
    } else {
      snprintf(label, sizeof label, "{le=\"+Inf\"}");
    }
    sample(b, "shopcore_commit_seconds_bucket", label, (double)total);
  }
  sample(b, "shopcore_commit_seconds_sum", "", m->commit_ms.sum * 1e-3);
  sample(b, "shopcore_commit_seconds_count", "", (double)total);
  family(b, "shopcore_slow_commits_total", "counter",
         "Commits at least slow_commit_ms long (the threshold gauge).");
  sample(b, "shopcore_slow_commits_total", "", (double)m->slow_commits);
  family(b, "shopcore_slow_commit_threshold_seconds", "gauge",
         "The slow-commit threshold; negative when off.");
  sample(b, "shopcore_slow_commit_threshold_seconds", "",
         m->slow_commit_ms * 1e-3);
  family(b, "shopcore_fsyncs_total", "counter",
         "fsyncs by the writer and the checkpoint thread, by file.");
  for (int f = 0; f < 2; f++) {
    snprintf(label, sizeof label, "{file=\"%s\"}", FILES[f]);
    sample(b, "shopcore_fsyncs_total", label, (double)m->fsyncs[f]);
  }
  family(b, "shopcore_fsync_seconds_total", "counter",
         "Time spent in those fsyncs, by file.");
  for (int f = 0; f < 2; f++) {
    snprintf(label, sizeof label, "{file=\"%s\"}", FILES[f]);
    sample(b, "shopcore_fsync_seconds_total", label, m->fsync_ms[f] * 1e-3);
  }
  family(b, "shopcore_checkpoints_total", "counter",
         "Checkpoints run by the checkpoint thread.");
  sample(b, "shopcore_checkpoints_total", "", (double)m->checkpoints);
  family(b, "shopcore_wal_rewinds_total", "counter",
         "Times the WAL started over from its beginning.");
  sample(b, "shopcore_wal_rewinds_total", "", (double)m->wal_rewinds);
}

static void writer(sc__strbuf *b, const sc_metrics *m) {
  family(b, "shopcore_batch_size", "summary",
         "Operations committed together by one transaction (group commit).");
  summary(b, "shopcore_batch_size", "", &m->batch_size, 1);
  family(b, "shopcore_commit_duration_seconds", "summary",
         "Time of one batch, from BEGIN to the durable COMMIT.");
  summary(b, "shopcore_commit_duration_seconds", "", &m->commit_ms, 1e-3);
  commits(b, m);
  family(b, "shopcore_orders_expire_skipped_total", "counter",
         "Due orders expiry left PENDING because they cannot be released"
         " (damaged rows; sc_verify names them).");
  sample(b, "shopcore_orders_expire_skipped_total", "",
         (double)m->expire_skipped);
  family(b, "shopcore_queue_depth", "gauge",
         "Operations waiting for the writer.");
  sample(b, "shopcore_queue_depth", "", m->queue_depth);
  family(b, "shopcore_queue_capacity", "gauge",
         "Operations the queue holds before callers wait (queue_max).");
  sample(b, "shopcore_queue_capacity", "", m->queue_max);
  family(b, "shopcore_outbox_events_purged_total", "counter",
         "Delivered outbox events removed by retention (sc_outbox_purge and "
         "the worker).");
  sample(b, "shopcore_outbox_events_purged_total", "",
         (double)m->events_purged);
}

static void alerts(sc__strbuf *b, const sc_metrics *m) {
  char label[64];
  family(b, "shopcore_alert_firing", "gauge",
         "1 while the alert's threshold is crossed, else 0.");
  for (int a = 0; a < SC_ALERT_COUNT_; a++) {
    snprintf(label, sizeof label, "{alert=\"%s\"}", sc__alert_name(a));
    sample(b, "shopcore_alert_firing", label, (m->alerts_firing >> a) & 1);
  }
  family(b, "shopcore_build_info", "gauge",
         "The library's version, as a label; always 1.");
  sc__strbuf_printf(b, "shopcore_build_info{version=\"%s\"} 1\n", sc_version());
}

int sc_metrics_prometheus(sc_db *db, char **text_out) {
  SC__CHECK_DB(db);
  if (text_out == NULL) {
    return sc__fail(SC_MISUSE, "sc_metrics_prometheus: text_out is NULL");
  }
  *text_out = NULL;
  sc_metrics *m = sc__malloc(sizeof *m);
  if (m == NULL) return sc__fail(SC_NOMEM, "sc_metrics_prometheus: no memory");
  sc_metrics_get(db, m);
  sc__strbuf b = {0};
  operations(&b, db, m);
  latencies(&b, m);
  writer(&b, m);
  alerts(&b, m);
  sc__free(m);
  char *text = sc__strbuf_take(&b);
  if (text == NULL)
    return sc__fail(SC_NOMEM, "sc_metrics_prometheus: no memory");
  *text_out = text;
  return SC_OK;
}
