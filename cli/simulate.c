/* shopcore simulate: a flash sale, in-process. It creates (or
 * reuses) the database, adds this sale's products and coupon policy, runs the
 * virtual users for the duration, then reports like a load-testing tool and
 * runs sc_verify: the exit status is non-zero if any invariant broke. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "sim.h"

static const char HELP[] =
    "usage: shopcore simulate [options]\n"
    "A flash sale in-process: virtual users (threads) top up "
    "points,\nbrowse stock, claim a coupon of a 1,000-coupon policy, check "
    "out and pay (or\ncancel, or walk away), pausing --think ms between "
    "requests, for --duration\nseconds. Then a load-test report and "
    "sc_verify; the exit status is 1 if any\ninvariant broke.\n"
    "  --users N        virtual users (default 100; the stress case "
    "is 500)\n"
    "  --duration S     seconds (default 10)\n"
    "  --db PATH        database, created or reused (default ./shop.db)\n"
    "  --products N     products created for this run (default 10)\n"
    "  --hot SHARE      share of traffic on product 1, 0..1 (default 0.5)\n"
    "  --think MS       mean pause between a user's requests (default 100; "
    "0 =\n                   none: each user sends its next request as soon "
    "as the last\n                   one is answered, a stress run)\n"
    "  --coupons N      coupons in the policy (default 1000)\n"
    "  --durability full|normal   (default full)\n"
    "  --seed N         random seed (default 1)\n"
    "  --json           print the report as JSON instead of text\n"
    "  --report FILE    also write FILE.html or FILE.svg with the charts\n"
    "  --metrics FILE   also write the library's metrics (Prometheus text)\n"
    "  --no-worker      no outbox consumer (events stay pending)\n";

static int parse_config(int argc, char **argv, sim_config *c, bool *help) {
  const char *cmd = "simulate";
  cli_opt o[] = {{"users", true, NULL},      {"duration", true, NULL},
                 {"db", true, NULL},         {"products", true, NULL},
                 {"hot", true, NULL},        {"think", true, NULL},
                 {"durability", true, NULL}, {"seed", true, NULL},
                 {"json", false, NULL},      {"report", true, NULL},
                 {"coupons", true, NULL},    {"metrics", true, NULL},
                 {"no-worker", false, NULL}};
  int n = (int)(sizeof o / sizeof *o), n_pos = 0, rc;
  if ((rc = cli_parse(cmd, argc, argv, o, n, NULL, 0, &n_pos, help))) return rc;
  *c = (sim_config){.users = 100,
                    .duration_s = 10,
                    .db = "shop.db",
                    .products = 10,
                    .hot = 0.5,
                    .think_ms = 100,
                    .seed = 1,
                    .coupons = 1000};
  int64_t v;
  const char *t;
#define INT_OPT(name, lo, hi, field)                                \
  if ((t = cli_get(o, n, name)) != NULL) {                          \
    if ((rc = cli_int64(cmd, "--" name, t, lo, hi, &v))) return rc; \
    c->field = v;                                                   \
  }
  INT_OPT("users", 1, 10000, users)
  INT_OPT("duration", 1, 86400, duration_s)
  INT_OPT("products", 1, 100000, products)
  INT_OPT("think", 0, 60000, think_ms)
  INT_OPT("seed", 0, INT64_MAX, seed)
  INT_OPT("coupons", 1, 100000000, coupons)
#undef INT_OPT
  if ((t = cli_get(o, n, "hot")) &&
      (rc = cli_double(cmd, "--hot", t, 0, 1, &c->hot))) {
    return rc;
  }
  if ((t = cli_get(o, n, "durability")) != NULL) {
    if (strcmp(t, "full") != 0 && strcmp(t, "normal") != 0) {
      return cli_usage(cmd, "--durability: '%s' is neither full nor normal", t);
    }
    c->durability = t[0] == 'n' ? SC_DURABILITY_NORMAL : SC_DURABILITY_FULL;
  }
  if ((t = cli_get(o, n, "db")) != NULL) c->db = t;
  if (c->db[0] == '\0') return cli_usage(cmd, "--db is empty");
  c->json = cli_get(o, n, "json") != NULL;
  c->no_worker = cli_get(o, n, "no-worker") != NULL;
  c->metrics = cli_get(o, n, "metrics");
  if ((c->report = cli_get(o, n, "report")) != NULL) {
    size_t len = strlen(c->report);
    if (len < 5 || (strcmp(c->report + len - 5, ".html") != 0 &&
                    strcmp(c->report + len - 4, ".svg") != 0)) {
      return cli_usage(cmd, "--report: '%s' must end in .html or .svg",
                       c->report);
    }
  }
  return CLI_OK;
}

static void on_alert(const sc_alert *a, void *ud) {
  sim *s = ud;
  pthread_mutex_lock(&s->alert_lock);
  if (s->n_alerts < SIM_ALERTS_MAX) {
    s->alerts[s->n_alerts].at_s = (double)(sim_now_ns() - s->start_ns) / 1e9;
    s->alerts[s->n_alerts].alert = *a;
    s->n_alerts++;
  }
  pthread_mutex_unlock(&s->alert_lock);
}

/* Customers of earlier runs in the same file keep their accounts: this run
 * takes the first unused block of a billion ids. */
static int pick_customer_base(sim *s) {
  for (sc_id base = 1;; base += 1000000000) {
    sc_account a;
    int rc = sc_account_get(s->db, base, &a);
    if (rc == SC_NOT_FOUND) {
      s->customer_base = base;
      return SC_OK;
    }
    if (rc != SC_OK) return rc;
  }
}

/* A new sale in the file: its products (the first is the hot one, with
 * little stock, so it sells out) and its coupon policy. */
static int stock_shop(sim *s) {
  int n = s->cfg.products;
  s->hot_stock = 500;
  s->stock = 100000;
  s->discount = 3000;
  for (int i = 0; i < n; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s product %d", i == 0 ? "hot" : "sale",
             i + 1);
    s->prices[i] =
        10000 + 1000 * (int64_t)((s->cfg.seed + (uint64_t)i * 7) % 41);
    int rc =
        sc_product_create(s->db, name, s->prices[i],
                          i == 0 ? s->hot_stock : s->stock, &s->products[i]);
    if (rc != SC_OK) return rc;
  }
  sc_coupon_policy_spec spec = {.name = "flash sale",
                                .max_count = s->cfg.coupons,
                                .per_user_limit = 1,
                                .discount_amount = s->discount};
  int rc = sc_coupon_policy_create(s->db, &spec, &s->policy);
  return rc == SC_OK ? pick_customer_base(s) : rc;
}

static int open_and_stock(sim *s) {
  sc_options o;
  sc_options_init(&o);
  o.durability = s->cfg.durability;
  o.on_alert = on_alert;
  o.alert_ud = s;
  s->products = calloc((size_t)s->cfg.products, sizeof *s->products);
  s->prices = calloc((size_t)s->cfg.products, sizeof *s->prices);
  if (!s->products || !s->prices) return cli_fail("simulate", "out of memory");
  int rc = sc_open(s->cfg.db, &o, &s->db);
  if (rc == SC_OK) rc = stock_shop(s);
  return rc == SC_OK ? CLI_OK : cli_sc_fail("simulate", rc);
}

/* The host's side of the outbox, as a shop would run it: every event is
 * handed to this handler by the worker as soon as its commit is durable. */
static int on_event(const sc_event *ev, void *ud) {
  sim *s = ud;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  int64_t lag_ms = now_ms - ev->created_at_ms;
  hist_add(&s->event_lag, (lag_ms > 0 ? lag_ms : 0) * 1000000);
  atomic_fetch_add(&s->delivered, 1);
  return SC_OK;
}

static int start_worker(sim *s) {
  sc_worker_options w;
  sc_worker_options_init(&w);
  w.on_event = on_event;
  w.ud = s;
  int rc = sc_worker_start_thread(s->db, &w, &s->worker);
  return rc == SC_OK ? CLI_OK : cli_sc_fail("simulate", rc);
}

/* Lets the worker deliver what the last commits wrote (at most 2 s), then
 * stops it. */
static int stop_worker(sim *s) {
  for (int i = 0; i < 200; i++) {
    if (sc_outbox_stats_get(s->db, &s->outbox_end) != SC_OK ||
        s->outbox_end.pending == 0) {
      break;
    }
    nanosleep(&(struct timespec){0, 10000000}, NULL);
  }
  int rc = sc_worker_stop_thread(s->worker);
  s->worker = NULL;
  sc_outbox_stats_get(s->db, &s->outbox_end);
  return rc == SC_OK ? CLI_OK : cli_sc_fail("simulate", rc);
}

static int write_metrics(sim *s) {
  char *text = NULL;
  int rc = sc_metrics_prometheus(s->db, &text);
  if (rc != SC_OK) return cli_sc_fail("simulate", rc);
  FILE *f = fopen(s->cfg.metrics, "w");
  bool ok = f && fputs(text, f) >= 0;
  if (f && fclose(f) != 0) ok = false;
  sc_free(text);
  return ok ? CLI_OK
            : cli_fail("simulate", "--metrics: cannot write %s",
                       s->cfg.metrics);
}

/* After the run: the library's view, memory, verify, the outputs. */
static int finish(sim *s) {
  sc_metrics_get(s->db, &s->lib);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  s->peak_rss_kib = ru.ru_maxrss;
  s->verify_rc = sc_verify(s->db, &s->verify_report);
  if (s->verify_report == NULL) {
    snprintf(s->verify_msg, sizeof s->verify_msg, "%s: %s\n",
             sc_err_name(s->verify_rc), sc_errmsg(NULL));
  }
  int rc = CLI_OK;
  if (s->cfg.metrics) rc = write_metrics(s);
  if (s->cfg.json) {
    sim_print_json(s, stdout);
  } else {
    sim_print_text(s, stdout);
  }
  if (rc == CLI_OK && s->cfg.report) rc = sim_write_report(s, s->cfg.report);
  if (s->verify_rc != SC_OK) {
    fprintf(stderr, "shopcore simulate: verify failed: %s", sim_verify_text(s));
    return CLI_FAILED;
  }
  return rc;
}

int cmd_simulate(int argc, char **argv) {
  sim *s = calloc(1, sizeof *s);
  if (s == NULL) return cli_fail("simulate", "out of memory");
  bool help = false;
  int rc = parse_config(argc, argv, &s->cfg, &help);
  if (rc == CLI_OK && help) fputs(HELP, stdout);
  if (rc == CLI_OK && !help) {
    pthread_mutex_init(&s->alert_lock, NULL);
    s->seconds = s->cfg.duration_s;
    s->timeline = calloc((size_t)s->seconds, sizeof *s->timeline);
    rc =
        s->timeline ? open_and_stock(s) : cli_fail("simulate", "out of memory");
    if (rc == CLI_OK && !s->cfg.no_worker) rc = start_worker(s);
    if (rc == CLI_OK) rc = sim_run_users(s);
    if (s->worker != NULL) {
      int wrc = stop_worker(s);
      if (rc == CLI_OK) rc = wrc;
    } else if (rc == CLI_OK) {
      sc_outbox_stats_get(s->db, &s->outbox_end);
    }
    if (rc == CLI_OK) rc = finish(s);
    int crc = sc_close(s->db);
    if (crc != SC_OK && rc == CLI_OK) rc = cli_sc_fail("simulate", crc);
    pthread_mutex_destroy(&s->alert_lock);
  }
  free(s->products);
  free(s->prices);
  free(s->timeline);
  sc_free(s->verify_report);
  free(s);
  return rc;
}
