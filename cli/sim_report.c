/* The end-of-run report of `shopcore simulate`, as text (like a load-testing
 * tool's summary) or as JSON with the same numbers. Every request is counted
 * once under its status, so successes plus each other outcome add up to the
 * requests. */
#include <string.h>

#include "sim.h"

const char *sim_verify_text(const sim *s) {
  return s->verify_report ? s->verify_report : s->verify_msg;
}

void sim_totals(sim *s, uint64_t *requests, uint64_t *ok, uint64_t *expected,
                uint64_t *errors) {
  uint64_t t[3] = {0, 0, 0};
  for (int op = 0; op < OP_COUNT; op++) {
    for (int st = 0; st < SC_STATUS_COUNT_; st++) {
      t[sc_status_outcome(st)] += atomic_load(&s->ops[op].by_status[st]);
    }
  }
  *ok = t[SC_OUTCOME_OK];
  *expected = t[SC_OUTCOME_EXPECTED];
  *errors = t[SC_OUTCOME_ERROR];
  *requests = t[0] + t[1] + t[2];
}

static uint64_t op_count(sim *s, int op, int outcome) {
  uint64_t n = 0;
  for (int st = 0; st < SC_STATUS_COUNT_; st++) {
    if (outcome < 0 || sc_status_outcome(st) == outcome) {
      n += atomic_load(&s->ops[op].by_status[st]);
    }
  }
  return n;
}

static uint64_t status_count(sim *s, int st) {
  uint64_t n = 0;
  for (int op = 0; op < OP_COUNT; op++)
    n += atomic_load(&s->ops[op].by_status[st]);
  return n;
}

/* One operation's line of the report: the text and JSON forms print the
 * same numbers, so they are gathered once. */
typedef struct op_row {
  unsigned long long requests, ok, expected, errors;
  double p50_ms, p95_ms, p99_ms, max_ms;
} op_row;

static op_row op_row_of(sim *s, int op) {
  hist *h = &s->ops[op].latency;
  return (op_row){op_count(s, op, -1),
                  op_count(s, op, SC_OUTCOME_OK),
                  op_count(s, op, SC_OUTCOME_EXPECTED),
                  op_count(s, op, SC_OUTCOME_ERROR),
                  hist_quantile_ms(h, 0.50),
                  hist_quantile_ms(h, 0.95),
                  hist_quantile_ms(h, 0.99),
                  hist_max_ms(h)};
}

/* The outbox at the end of the run, likewise printed by both forms. */
typedef struct outbox_row {
  unsigned long long delivered;
  double lag_p50_ms, lag_p95_ms, lag_max_ms; /* commit to handler */
  long long pending, dead;
} outbox_row;

static outbox_row outbox_row_of(sim *s) {
  return (outbox_row){atomic_load(&s->delivered),
                      hist_quantile_ms(&s->event_lag, 0.5),
                      hist_quantile_ms(&s->event_lag, 0.95),
                      hist_max_ms(&s->event_lag),
                      s->outbox_end.pending,
                      s->outbox_end.dead};
}

static double pct(uint64_t part, uint64_t whole) {
  return whole ? 100.0 * (double)part / (double)whole : 0;
}

static const char *outcome_word(int st) {
  static const char *const W[] = {"", "expected", "error"};
  return W[sc_status_outcome(st)];
}

/* ---- text ------------------------------------------------------------------
 */

static void text_header(sim *s, FILE *out) {
  const sim_config *c = &s->cfg;
  fprintf(out,
          "\n  scenario: flash sale, %d virtual users for %d s, think %d ms "
          "(50%%..150%%), random seed %llu\n"
          "  database: %s, durability %s; %d products (product %lld is hot: "
          "%.0f%% of traffic, %lld in stock), coupon policy %lld (%d coupons)"
          "\n\n",
          c->users, c->duration_s, c->think_ms, (unsigned long long)c->seed,
          c->db, c->durability == SC_DURABILITY_NORMAL ? "normal" : "full",
          c->products, (long long)s->products[0], c->hot * 100,
          (long long)s->hot_stock, (long long)s->policy, c->coupons);
}

static void text_totals(sim *s, FILE *out) {
  uint64_t req, ok, exp, err;
  sim_totals(s, &req, &ok, &exp, &err);
  double secs = s->elapsed_s > 0 ? s->elapsed_s : 1;
  uint64_t it = atomic_load(&s->iterations);
  fprintf(out, "  requests.....................: %-9llu %.1f/s\n",
          (unsigned long long)req, (double)req / secs);
  fprintf(out, "  succeeded....................: %-9llu %.2f%%\n",
          (unsigned long long)ok, pct(ok, req));
  fprintf(out,
          "  expected outcomes............: %-9llu %.2f%%  (sold out, "
          "out of stock ...: not errors)\n",
          (unsigned long long)exp, pct(exp, req));
  fprintf(out, "  errors.......................: %-9llu %.2f%%\n",
          (unsigned long long)err, pct(err, req));
  fprintf(out, "  iterations...................: %-9llu %.1f/s\n\n",
          (unsigned long long)it, (double)it / secs);
}

static void text_ops(sim *s, FILE *out) {
  fprintf(out, "  %-13s %9s %9s %9s %7s %9s %9s %9s %9s\n", "operation",
          "requests", "ok", "expected", "errors", "p50 ms", "p95 ms", "p99 ms",
          "max ms");
  for (int op = 0; op < OP_COUNT; op++) {
    op_row r = op_row_of(s, op);
    fprintf(out, "  %-13s %9llu %9llu %9llu %7llu %9.3f %9.3f %9.3f %9.3f\n",
            SIM_OP_NAMES[op], r.requests, r.ok, r.expected, r.errors, r.p50_ms,
            r.p95_ms, r.p99_ms, r.max_ms);
  }
  fprintf(out, "\n  outcomes by status:\n");
  for (int st = 0; st < SC_STATUS_COUNT_; st++) {
    uint64_t n = status_count(s, st);
    if (n == 0) continue;
    fprintf(out, "    %-26s %9llu  %s\n", sc_err_name(st),
            (unsigned long long)n, outcome_word(st));
  }
}

static void text_outbox(sim *s, FILE *out) {
  outbox_row r = outbox_row_of(s);
  if (s->cfg.no_worker) {
    fprintf(out, "  outbox: no worker (--no-worker); %lld events pending\n",
            r.pending);
    return;
  }
  fprintf(out,
          "  outbox: %llu events delivered by the worker, commit to "
          "handler p50 %.0f ms p95 %.0f ms max %.0f ms; %lld pending, %lld "
          "dead at the end\n",
          r.delivered, r.lag_p50_ms, r.lag_p95_ms, r.lag_max_ms, r.pending,
          r.dead);
}

static void text_tail(sim *s, FILE *out) {
  const sc_metrics *m = &s->lib;
  fprintf(out,
          "\n  library writer: %llu commits, batch size p50 %.0f max "
          "%.0f, commit p95 %.3f ms max %.1f ms, %llu commits >= %.0f ms\n",
          (unsigned long long)m->commit_ms.count, m->batch_size.p50,
          m->batch_size.max, m->commit_ms.p95, m->commit_ms.max,
          (unsigned long long)m->slow_commits, m->slow_commit_ms);
  text_outbox(s, out);
  if (s->n_alerts == 0) fprintf(out, "  alerts: none\n");
  for (int i = 0; i < s->n_alerts; i++) {
    const sc_alert *a = &s->alerts[i].alert;
    fprintf(out, "  alert at %.1fs: %s %s (%.4g, threshold %.4g)\n",
            s->alerts[i].at_s, a->name, a->firing ? "FIRING" : "recovered",
            a->value, a->threshold);
  }
  fprintf(out, "  peak memory: %.1f MiB\n", (double)s->peak_rss_kib / 1024);
  fprintf(out, "  verify: %s\n", sim_verify_text(s));
}

void sim_print_text(sim *s, FILE *out) {
  text_header(s, out);
  text_totals(s, out);
  text_ops(s, out);
  text_tail(s, out);
}

/* ---- JSON ------------------------------------------------------------------
 */

static void json_statuses(FILE *out, sim *s, int op) {
  fprintf(out, "{");
  bool first = true;
  for (int st = 0; st < SC_STATUS_COUNT_; st++) {
    uint64_t n =
        op < 0 ? status_count(s, st) : atomic_load(&s->ops[op].by_status[st]);
    if (n == 0) continue;
    fprintf(out, "%s\"%s\": %llu", first ? "" : ", ", sc_err_name(st),
            (unsigned long long)n);
    first = false;
  }
  fprintf(out, "}");
}

static void json_ops(FILE *out, sim *s) {
  fprintf(out, "  \"operations\": {\n");
  for (int op = 0; op < OP_COUNT; op++) {
    op_row r = op_row_of(s, op);
    fprintf(out,
            "    \"%s\": {\"requests\": %llu, \"ok\": %llu, \"expected\": "
            "%llu, \"errors\": %llu, \"p50_ms\": %.4f, \"p95_ms\": %.4f, "
            "\"p99_ms\": %.4f, \"max_ms\": %.4f, \"statuses\": ",
            SIM_OP_NAMES[op], r.requests, r.ok, r.expected, r.errors, r.p50_ms,
            r.p95_ms, r.p99_ms, r.max_ms);
    json_statuses(out, s, op);
    fprintf(out, "}%s\n", op + 1 < OP_COUNT ? "," : "");
  }
  fprintf(out, "  },\n");
}

static void json_timeline_alerts(FILE *out, sim *s) {
  fprintf(out, "  \"timeline\": [");
  for (int i = 0; i < s->seconds; i++) {
    fprintf(out,
            "%s{\"second\": %d, \"ok\": %llu, \"expected\": %llu, "
            "\"errors\": %llu}",
            i ? ", " : "", i + 1,
            (unsigned long long)atomic_load(&s->timeline[i][0]),
            (unsigned long long)atomic_load(&s->timeline[i][1]),
            (unsigned long long)atomic_load(&s->timeline[i][2]));
  }
  fprintf(out, "],\n  \"alerts\": [");
  for (int i = 0; i < s->n_alerts; i++) {
    const sc_alert *a = &s->alerts[i].alert;
    fprintf(out,
            "%s{\"at_s\": %.3f, \"alert\": \"%s\", \"firing\": %s, "
            "\"value\": %.6g, \"threshold\": %.6g}",
            i ? ", " : "", s->alerts[i].at_s, a->name,
            a->firing ? "true" : "false", a->value, a->threshold);
  }
  fprintf(out, "],\n");
}

static void json_outbox(FILE *out, sim *s) {
  outbox_row r = outbox_row_of(s);
  fprintf(out,
          "  \"outbox\": {\"delivered\": %llu, \"lag_p50_ms\": %.0f, "
          "\"lag_p95_ms\": %.0f, \"lag_max_ms\": %.0f, "
          "\"pending_at_end\": %lld, \"dead_at_end\": %lld},\n",
          r.delivered, r.lag_p50_ms, r.lag_p95_ms, r.lag_max_ms, r.pending,
          r.dead);
}

void sim_print_json(sim *s, FILE *out) {
  uint64_t req, ok, exp, err;
  sim_totals(s, &req, &ok, &exp, &err);
  const sim_config *c = &s->cfg;
  double secs = s->elapsed_s > 0 ? s->elapsed_s : 1;
  fprintf(out,
          "{\n  \"scenario\": {\"users\": %d, \"duration_s\": %d, "
          "\"think_ms\": %d, \"products\": %d, \"hot\": %g, \"coupons\": %d, "
          "\"durability\": \"%s\", \"seed\": %llu, \"db\": ",
          c->users, c->duration_s, c->think_ms, c->products, c->hot, c->coupons,
          c->durability == SC_DURABILITY_NORMAL ? "normal" : "full",
          (unsigned long long)c->seed);
  cli_json_string(out, c->db);
  fprintf(out, ", \"policy\": %lld, \"hot_product\": %lld},\n",
          (long long)s->policy, (long long)s->products[0]);
  fprintf(out,
          "  \"elapsed_s\": %.3f,\n  \"requests\": %llu,\n  "
          "\"requests_per_s\": %.1f,\n  \"succeeded\": %llu,\n  \"expected\": "
          "%llu,\n  \"errors\": %llu,\n  \"iterations\": %llu,\n",
          s->elapsed_s, (unsigned long long)req, (double)req / secs,
          (unsigned long long)ok, (unsigned long long)exp,
          (unsigned long long)err,
          (unsigned long long)atomic_load(&s->iterations));
  fprintf(out, "  \"statuses\": ");
  json_statuses(out, s, -1);
  fprintf(out, ",\n");
  json_ops(out, s);
  json_timeline_alerts(out, s);
  json_outbox(out, s);
  fprintf(out,
          "  \"library\": {\"commits\": %llu, \"batch_size_p50\": %.1f, "
          "\"batch_size_max\": %.0f, \"commit_p95_ms\": %.4f, "
          "\"commit_max_ms\": %.4f, \"slow_commit_ms\": %.1f, "
          "\"slow_commits\": %llu},\n",
          (unsigned long long)s->lib.commit_ms.count, s->lib.batch_size.p50,
          s->lib.batch_size.max, s->lib.commit_ms.p95, s->lib.commit_ms.max,
          s->lib.slow_commit_ms, (unsigned long long)s->lib.slow_commits);
  fprintf(out,
          "  \"peak_rss_kib\": %ld,\n  \"verify\": {\"ok\": %s, "
          "\"report\": ",
          s->peak_rss_kib, s->verify_rc == SC_OK ? "true" : "false");
  cli_json_string(out, sim_verify_text(s));
  fprintf(out, "}\n}\n");
}
