/* shopcore stats and metrics: what a database holds (sc_stats_get), read
 * on one snapshot. stats prints it for a person (or as JSON), metrics as
 * Prometheus gauges for a scraper. Neither prints the library's operation
 * counters (sc_metrics): those count the calls of the process that makes
 * them, and this program's handle has made none. */
#include <stdio.h>

#include "cli.h"

static const char METRICS_HELP[] =
    "  The gauges describe the database. The library's operation counters "
    "and\n  latencies count the calls of the process that makes them: a "
    "shop exports\n  them with sc_metrics_prometheus(), and `shopcore "
    "simulate --metrics FILE`\n  writes those of its run.\n";

static void gauge(const char *name, const char *help, const char *labels,
                  int64_t v, bool header) {
  if (header) printf("# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
  printf("%s%s %lld\n", name, labels, (long long)v);
}

static void print_prometheus(const sc_stats *s) {
  gauge("shopcore_db_products", "Products in the catalog.", "", s->products,
        true);
  gauge("shopcore_db_units", "Units of stock, by state.", "{state=\"total\"}",
        s->units_total, true);
  gauge("shopcore_db_units", "", "{state=\"reserved\"}", s->units_reserved,
        false);
  gauge("shopcore_db_accounts", "Accounts.", "", s->accounts, true);
  gauge("shopcore_db_money", "Sums over accounts, minor units.",
        "{kind=\"balance\"}", s->balance_total, true);
  gauge("shopcore_db_money", "", "{kind=\"held\"}", s->held_total, false);
  gauge("shopcore_db_orders", "Orders by status.", "{status=\"pending\"}",
        s->orders_pending, true);
  gauge("shopcore_db_orders", "", "{status=\"confirmed\"}", s->orders_confirmed,
        false);
  gauge("shopcore_db_orders", "", "{status=\"cancelled\"}", s->orders_cancelled,
        false);
  gauge("shopcore_db_orders", "", "{status=\"expired\"}", s->orders_expired,
        false);
  gauge("shopcore_db_coupon_policies", "Coupon policies.", "", s->policies,
        true);
  gauge("shopcore_db_coupons", "Coupons issued (all policies).", "", s->coupons,
        true);
  gauge("shopcore_db_outbox_events", "Outbox events by state.",
        "{state=\"pending\"}", s->events_pending, true);
  gauge("shopcore_db_outbox_events", "", "{state=\"dead\"}", s->events_dead,
        false);
}

static void print_text(const sc_stats *s) {
  printf("products         %lld\n", (long long)s->products);
  printf("stock            %lld units, %lld reserved by pending orders\n",
         (long long)s->units_total, (long long)s->units_reserved);
  printf("accounts         %lld: balance %lld, held %lld (minor units)\n",
         (long long)s->accounts, (long long)s->balance_total,
         (long long)s->held_total);
  printf(
      "orders           %lld pending, %lld confirmed, %lld cancelled, "
      "%lld expired\n",
      (long long)s->orders_pending, (long long)s->orders_confirmed,
      (long long)s->orders_cancelled, (long long)s->orders_expired);
  printf("coupon policies  %lld, coupons issued %lld\n", (long long)s->policies,
         (long long)s->coupons);
  printf("outbox events    %lld pending, %lld dead\n",
         (long long)s->events_pending, (long long)s->events_dead);
}

static void print_json(const sc_stats *s) {
  printf(
      "{\"products\": %lld, \"units_total\": %lld, \"units_reserved\": "
      "%lld, \"accounts\": %lld, \"balance_total\": %lld, \"held_total\": "
      "%lld, \"orders_pending\": %lld, \"orders_confirmed\": %lld, "
      "\"orders_cancelled\": %lld, \"orders_expired\": %lld, "
      "\"policies\": %lld, \"coupons\": %lld, \"events_pending\": %lld, "
      "\"events_dead\": %lld}\n",
      (long long)s->products, (long long)s->units_total,
      (long long)s->units_reserved, (long long)s->accounts,
      (long long)s->balance_total, (long long)s->held_total,
      (long long)s->orders_pending, (long long)s->orders_confirmed,
      (long long)s->orders_cancelled, (long long)s->orders_expired,
      (long long)s->policies, (long long)s->coupons,
      (long long)s->events_pending, (long long)s->events_dead);
}

/* stats and metrics: the same snapshot, printed by print. */
static int run(const cli_spec *spec, int argc, char **argv,
               void (*print)(const sc_stats *, bool json)) {
  cli_cmd c;
  int rc = cli_cmd_start(&c, spec, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_stats s;
  int src = sc_stats_get(c.db, &s);
  if (src == SC_OK) print(&s, c.json);
  return cli_cmd_end(&c, src);
}

static void print_stats(const sc_stats *s, bool json) {
  (json ? print_json : print_text)(s);
}

static void print_metrics(const sc_stats *s, bool json) {
  (void)json;
  print_prometheus(s);
}

int cmd_stats(int argc, char **argv) {
  static const cli_spec SPEC = {
      .cmd = "stats", .usage = "[--json]", .json = true};
  return run(&SPEC, argc, argv, print_stats);
}

int cmd_metrics(int argc, char **argv) {
  static const cli_spec SPEC = {
      .cmd = "metrics", .usage = "", .help = METRICS_HELP};
  return run(&SPEC, argc, argv, print_metrics);
}
