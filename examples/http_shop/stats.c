/* The server's own metrics: answers by route and status code, and a
 * Prometheus histogram of each route's latency, from the moment a request
 * is complete to the moment its answer is handed to the socket. The bucket
 * bounds step by about 1.25x to 1.5x, so a quantile read from them
 * (histogram_quantile, or bench/http/run.py) is within one bucket. */
#include <stdio.h>
#include <stdlib.h>

#include "server.h"

static const double bounds_ms[HS_N_BUCKETS] = {
    0.1, 0.2, 0.3, 0.5, 0.75, 1,   1.25, 1.5,  2,    2.5,  3,  4,
    5,   6,   8,   10,  12.5, 15,  20,   25,   30,   40,   50, 75,
    100, 150, 200, 300, 500,  750, 1000, 2000, 5000, 10000};

void hs_stats_record(hs_stats *s, hs_route route, int status, double ms) {
  if (status >= 100 && status < 600) s->by_code[route][status - 100]++;
  int b = 0;
  while (b < HS_N_BUCKETS && ms > bounds_ms[b])
    b++;
  s->buckets[route][b]++;
  s->sum_s[route] += ms / 1000.0;
}

char *hs_stats_text(const hs_stats *s, int connections) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (f == NULL) return NULL;
  fprintf(f,
          "# HELP http_shop_requests_total Answers by route and status.\n"
          "# TYPE http_shop_requests_total counter\n");
  for (int r = 0; r < HS_ROUTE_COUNT_; r++) {
    for (int code = 0; code < 500; code++) {
      if (s->by_code[r][code] == 0) continue;
      fprintf(f, "http_shop_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
              hs_route_name(r), code + 100,
              (unsigned long long)s->by_code[r][code]);
    }
  }
  fprintf(f,
          "# HELP http_shop_request_duration_seconds From a complete request "
          "to its answer queued to the socket.\n"
          "# TYPE http_shop_request_duration_seconds histogram\n");
  for (int r = 0; r < HS_ROUTE_COUNT_; r++) {
    uint64_t cum = 0;
    for (int b = 0; b <= HS_N_BUCKETS; b++) {
      cum += s->buckets[r][b];
      if (b < HS_N_BUCKETS) {
        fprintf(f,
                "http_shop_request_duration_seconds_bucket{route=\"%s\","
                "le=\"%g\"} %llu\n",
                hs_route_name(r), bounds_ms[b] / 1000.0,
                (unsigned long long)cum);
      } else {
        fprintf(f,
                "http_shop_request_duration_seconds_bucket{route=\"%s\","
                "le=\"+Inf\"} %llu\n",
                hs_route_name(r), (unsigned long long)cum);
      }
    }
    fprintf(f, "http_shop_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
            hs_route_name(r), s->sum_s[r]);
    fprintf(f, "http_shop_request_duration_seconds_count{route=\"%s\"} %llu\n",
            hs_route_name(r), (unsigned long long)cum);
  }
  fprintf(f,
          "# HELP http_shop_events_total Outbox events the worker handled.\n"
          "# TYPE http_shop_events_total counter\n");
  for (int t = 1; t < HS_N_EVENT_TYPES; t++) {
    if (s->events[t] == 0) continue;
    fprintf(f, "http_shop_events_total{type=\"%s\"} %llu\n",
            sc_event_type_name(t), (unsigned long long)s->events[t]);
  }
  fprintf(f,
          "# HELP http_shop_connections Open client connections.\n"
          "# TYPE http_shop_connections gauge\n"
          "http_shop_connections %d\n",
          connections);
  if (fclose(f) != 0) {
    free(text);
    return NULL;
  }
  return text;
}
