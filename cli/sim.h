/* The flash-sale simulation: configuration, the counters the virtual users
 * fill, and the reports drawn from them. */
#ifndef SC_CLI_SIM_H
#define SC_CLI_SIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "cli.h"

/* The requests of one iteration, in the order a customer makes them. */
enum {
  OP_DEPOSIT,
  OP_BROWSE,
  OP_COUPON,
  OP_CHECKOUT,
  OP_PAY,
  OP_CANCEL,
  OP_COUNT
};
extern const char *const SIM_OP_NAMES[OP_COUNT];

/* ---- latency histograms (hist.c): log-linear, 8 sub-buckets a power of
 * two, so a percentile is within 12.5%; max is exact ---- */
#define HIST_SUB_BITS 3
#define HIST_BUCKETS (64 << HIST_SUB_BITS)
typedef struct hist {
  _Atomic uint64_t counts[HIST_BUCKETS];
  _Atomic int64_t max_ns;
  _Atomic uint64_t total;
} hist;
void hist_add(hist *h, int64_t ns);
/* The nearest-rank percentile q (0..1) in milliseconds. */
double hist_quantile_ms(hist *h, double q);
double hist_max_ms(hist *h);
/* Bucket b's lower bound in nanoseconds. */
double hist_bucket_low_ns(int b);
int hist_bucket_of(int64_t ns);

typedef struct sim_config {
  int users;
  int duration_s;
  const char *db;
  int products;
  double hot;   /* share of browsing and buying on product 1 */
  int think_ms; /* mean pause between a user's requests; 0 = none */
  int durability;
  uint64_t seed; /* the random seed (--seed) */
  int coupons;
  bool json;
  bool no_worker;      /* no sc_worker delivering the outbox */
  const char *report;  /* .html or .svg, or NULL */
  const char *metrics; /* Prometheus text file, or NULL */
} sim_config;

typedef struct sim_op {
  _Atomic uint64_t by_status[SC_STATUS_COUNT_];
  hist latency;
} sim_op;

#define SIM_ALERTS_MAX 64
typedef struct sim_alert {
  double at_s;
  sc_alert alert;
} sim_alert;

typedef struct sim {
  sim_config cfg;
  sc_db *db;
  sc_id policy;
  sc_id *products; /* cfg.products ids; products[0] is the hot one */
  int64_t *prices;
  int64_t hot_stock, stock, discount;
  sc_id customer_base;
  _Atomic int64_t next_customer;
  int64_t start_ns, deadline_ns;
  sim_op ops[OP_COUNT];
  _Atomic uint64_t requests, errors, iterations;
  /* per second of the run: requests by outcome */
  int seconds;
  _Atomic uint64_t (*timeline)[3];
  /* the worker: the host's consumer of the outbox */
  sc_worker *worker;
  _Atomic uint64_t delivered;
  hist event_lag; /* commit to delivery, by the wall clock (ms resolution) */
  sc_outbox_stats outbox_end;
  pthread_mutex_t alert_lock;
  int n_alerts;
  sim_alert alerts[SIM_ALERTS_MAX];
  /* the end */
  double elapsed_s;
  sc_metrics lib;
  long peak_rss_kib;
  int verify_rc;
  char *verify_report; /* NULL if sc_verify could not run: see verify_msg */
  char verify_msg[256];
} sim;

int64_t sim_now_ns(void);
/* sc_verify's report, or why it could not run. */
const char *sim_verify_text(const sim *s);
/* Totals over every operation, by outcome. */
void sim_totals(sim *s, uint64_t *requests, uint64_t *ok, uint64_t *expected,
                uint64_t *errors);

/* The virtual users (vu.c). */
int sim_run_users(sim *s);

/* The reports (sim_report.c, report.c). */
void sim_print_text(sim *s, FILE *out);
void sim_print_json(sim *s, FILE *out);
/* Writes the self-contained HTML page or SVG picture; CLI_OK or
 * CLI_FAILED (after printing why). */
int sim_write_report(sim *s, const char *path);

#endif
