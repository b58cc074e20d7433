/* The --report file of `shopcore simulate`: throughput over time, latency
 * percentiles and latency histograms as inline SVG, either alone (.svg) or
 * in a self-contained HTML page (.html) that needs no network: no script,
 * no font, no stylesheet from elsewhere. */
#include <math.h>
#include <string.h>

#include "sim.h"

#define W 760
#define CHART_H 260
#define HIST_H 170

static const char *const COLORS[3] = {"#2b8a3e", "#e8890c", "#c92a2a"};

static void axis(FILE *f, int x, int y, int w, int h, double ymax,
                 const char *unit) {
  fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#333'/>", x, y + h,
          x + w, y + h);
  fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#333'/>", x, y, x,
          y + h);
  for (int i = 0; i <= 4; i++) {
    int gy = y + h - h * i / 4;
    fprintf(
        f,
        "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#ddd'/>"
        "<text x='%d' y='%d' font-size='10' text-anchor='end'>%.4g%s</text>",
        x + 1, gy, x + w, gy, x - 4, gy + 3, ymax * i / 4, unit);
  }
}

static void title(FILE *f, int x, int y, const char *text) {
  fprintf(f, "<text x='%d' y='%d' font-size='14' font-weight='bold'>%s</text>",
          x, y, text);
}

/* Requests per second, by outcome, one polyline each. */
static void chart_throughput(FILE *f, sim *s, int top) {
  int x = 60, y = top + 30, w = W - 90, h = CHART_H - 70;
  double ymax = 1;
  for (int i = 0; i < s->seconds; i++) {
    double t = 0;
    for (int k = 0; k < 3; k++)
      t += (double)atomic_load(&s->timeline[i][k]);
    if (t > ymax) ymax = t;
  }
  title(f, x, top + 16, "Requests per second, by outcome");
  axis(f, x, y, w, h, ymax, "");
  static const char *const NAMES[3] = {"ok", "expected", "errors"};
  for (int k = 0; k < 3; k++) {
    fprintf(f,
            "<polyline class='series' fill='none' stroke='%s' "
            "stroke-width='2' points='",
            COLORS[k]);
    for (int i = 0; i < s->seconds; i++) {
      double v = (double)atomic_load(&s->timeline[i][k]);
      double px =
          x + (s->seconds > 1 ? w * i / (double)(s->seconds - 1) : w / 2.0);
      fprintf(f, "%.1f,%.1f ", px, y + h - h * v / ymax);
    }
    fprintf(f, "'/><text x='%d' y='%d' font-size='11' fill='%s'>%s</text>",
            x + 10 + 90 * k, y + h + 30, COLORS[k], NAMES[k]);
  }
  fprintf(f, "<text x='%d' y='%d' font-size='10' text-anchor='end'>%d s</text>",
          x + w, y + h + 14, s->seconds);
}

/* p50, p95 and p99 per operation as grouped bars on a log scale. */
static void chart_percentiles(FILE *f, sim *s, int top) {
  int x = 60, y = top + 30, w = W - 90, h = CHART_H - 70;
  static const double QS[3] = {0.50, 0.95, 0.99};
  static const char *const QN[3] = {"p50", "p95", "p99"};
  static const char *const QC[3] = {"#4dabf7", "#1971c2", "#0b3d91"};
  double vmax = 0.01;
  for (int op = 0; op < OP_COUNT; op++) {
    double v = hist_quantile_ms(&s->ops[op].latency, 0.99);
    if (v > vmax) vmax = v;
  }
  double lmin = -3, lmax = ceil(log10(vmax)); /* 1 µs .. */
  if (lmax <= lmin) lmax = lmin + 1;
  title(f, x, top + 16, "Latency percentiles per operation (ms, log scale)");
  fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#333'/>", x, y + h,
          x + w, y + h);
  for (double l = lmin; l <= lmax; l++) {
    int gy = y + h - (int)(h * (l - lmin) / (lmax - lmin));
    fprintf(f,
            "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#ddd'/>"
            "<text x='%d' y='%d' font-size='10' text-anchor='end'>%g</text>",
            x, gy, x + w, gy, x - 4, gy + 3, pow(10, l));
  }
  double group = w / (double)OP_COUNT;
  for (int op = 0; op < OP_COUNT; op++) {
    for (int q = 0; q < 3; q++) {
      double v = hist_quantile_ms(&s->ops[op].latency, QS[q]);
      double l = v > 0 ? log10(v) : lmin;
      if (l < lmin) l = lmin;
      double bh = h * (l - lmin) / (lmax - lmin);
      if (v > 0 && bh < 1) bh = 1;
      fprintf(f,
              "<rect class='bar' x='%.1f' y='%.1f' width='%.1f' "
              "height='%.1f' fill='%s'><title>%s %s %.3f ms</title></rect>",
              x + group * op + 10 + q * (group - 20) / 3, y + h - bh,
              (group - 24) / 3, bh, QC[q], SIM_OP_NAMES[op], QN[q], v);
    }
    fprintf(f,
            "<text x='%.1f' y='%d' font-size='11' text-anchor='middle'>%s"
            "</text>",
            x + group * op + group / 2, y + h + 14, SIM_OP_NAMES[op]);
  }
  for (int q = 0; q < 3; q++) {
    fprintf(f, "<text x='%d' y='%d' font-size='11' fill='%s'>%s</text>",
            x + 10 + 60 * q, y + h + 32, QC[q], QN[q]);
  }
}

/* One operation's latency histogram: a bar per power of two. */
static void chart_histogram(FILE *f, sim *s, int op, int left, int top,
                            int width) {
  int x = left + 10, y = top + 24, w = width - 20, h = HIST_H - 60;
  uint64_t bins[64] = {0}, ymax = 1;
  int lo = 63, hi = 0;
  for (int b = 0; b < HIST_BUCKETS; b++) {
    uint64_t n = atomic_load(&s->ops[op].latency.counts[b]);
    if (n == 0) continue;
    double low = hist_bucket_low_ns(b);
    int p = low > 1 ? (int)log2(low) : 0;
    if (p > 63) p = 63;
    bins[p] += n;
    if (p < lo) lo = p;
    if (p > hi) hi = p;
  }
  for (int p = 0; p < 64; p++)
    ymax = bins[p] > ymax ? bins[p] : ymax;
  fprintf(f, "<text x='%d' y='%d' font-size='12' font-weight='bold'>%s</text>",
          x, top + 14, SIM_OP_NAMES[op]);
  fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#333'/>", x, y + h,
          x + w, y + h);
  if (lo > hi) {
    fprintf(f, "<text x='%d' y='%d' font-size='11'>no requests</text>", x,
            y + h / 2);
    return;
  }
  double bw = w / (double)(hi - lo + 1);
  for (int p = lo; p <= hi; p++) {
    double bh = h * (double)bins[p] / (double)ymax;
    if (bins[p] && bh < 1) bh = 1;
    fprintf(f,
            "<rect class='bar' x='%.1f' y='%.1f' width='%.1f' height='%.1f'"
            " fill='#1971c2'><title>%.3g..%.3g ms: %llu</title></rect>",
            x + bw * (p - lo) + 1, y + h - bh, bw - 2 > 1 ? bw - 2 : 1, bh,
            ldexp(1, p) / 1e6, ldexp(1, p + 1) / 1e6,
            (unsigned long long)bins[p]);
  }
  fprintf(f,
          "<text x='%d' y='%d' font-size='10'>%.3g ms</text>"
          "<text x='%d' y='%d' font-size='10' text-anchor='end'>%.3g ms</text>",
          x, y + h + 13, ldexp(1, lo) / 1e6, x + w, y + h + 13,
          ldexp(1, hi + 1) / 1e6);
}

/* Every chart, stacked, inside one <svg>; returns its height. */
static int all_charts(FILE *f, sim *s, bool standalone) {
  int rows = (OP_COUNT + 2) / 3;
  int height = 2 * CHART_H + 30 + rows * HIST_H;
  fprintf(f,
          "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
          "viewBox='0 0 %d %d' font-family='sans-serif'>",
          W, height, W, height);
  if (standalone) {
    fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>");
  }
  chart_throughput(f, s, 0);
  chart_percentiles(f, s, CHART_H);
  title(f, 60, 2 * CHART_H + 16, "Latency histograms (log2 buckets)");
  for (int op = 0; op < OP_COUNT; op++) {
    chart_histogram(f, s, op, (op % 3) * (W / 3),
                    2 * CHART_H + 30 + (op / 3) * HIST_H, W / 3);
  }
  fprintf(f, "</svg>\n");
  return height;
}

static void html_summary(FILE *f, sim *s) {
  uint64_t req, ok, exp, err;
  sim_totals(s, &req, &ok, &exp, &err);
  fprintf(f,
          "<table><tr><th>requests</th><th>succeeded</th><th>expected "
          "outcomes</th><th>errors</th><th>requests/s</th><th>verify</th></tr>"
          "<tr><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%.1f"
          "</td><td>%s</td></tr></table>\n",
          (unsigned long long)req, (unsigned long long)ok,
          (unsigned long long)exp, (unsigned long long)err,
          (double)req / (s->elapsed_s > 0 ? s->elapsed_s : 1),
          s->verify_rc == SC_OK ? "ok" : "FAILED");
  fprintf(f,
          "<table><tr><th>operation</th><th>requests</th><th>p50 ms</th>"
          "<th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>\n");
  for (int op = 0; op < OP_COUNT; op++) {
    hist *h = &s->ops[op].latency;
    fprintf(f,
            "<tr><td>%s</td><td>%llu</td><td>%.3f</td><td>%.3f</td>"
            "<td>%.3f</td><td>%.3f</td></tr>\n",
            SIM_OP_NAMES[op], (unsigned long long)atomic_load(&h->total),
            hist_quantile_ms(h, 0.5), hist_quantile_ms(h, 0.95),
            hist_quantile_ms(h, 0.99), hist_max_ms(h));
  }
  fprintf(f, "</table>\n");
}

static void html_page(FILE *f, sim *s) {
  fprintf(f,
          "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
          "<title>shopcore simulate: %d users, %d s</title>\n<style>body{"
          "font-family:sans-serif;margin:24px;color:#222}table{border-"
          "collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;"
          "padding:4px 10px;text-align:right}th{background:#f1f3f5}</style>"
          "</head><body>\n<h1>shopcore simulate</h1>\n<p>Flash sale: %d "
          "virtual users for %d s, think %d ms, %d products (%.0f%% of "
          "traffic on the hot one), %d coupons, durability %s, libshopcore "
          "%s.</p>\n",
          s->cfg.users, s->cfg.duration_s, s->cfg.users, s->cfg.duration_s,
          s->cfg.think_ms, s->cfg.products, s->cfg.hot * 100, s->cfg.coupons,
          s->cfg.durability == SC_DURABILITY_NORMAL ? "normal" : "full",
          sc_version());
  html_summary(f, s);
  all_charts(f, s, false);
  fprintf(f, "</body></html>\n");
}

int sim_write_report(sim *s, const char *path) {
  FILE *f = fopen(path, "w");
  if (f == NULL) return cli_fail("simulate", "--report: cannot write %s", path);
  size_t len = strlen(path);
  if (len >= 4 && strcmp(path + len - 4, ".svg") == 0) {
    fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n");
    all_charts(f, s, true);
  } else {
    html_page(f, s);
  }
  if (ferror(f) | (fclose(f) != 0)) {
    return cli_fail("simulate", "--report: cannot write %s", path);
  }
  return CLI_OK;
}
