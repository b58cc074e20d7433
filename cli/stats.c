/* shopcore stats: what a database holds, as Prometheus gauges, followed by
 * the library's own metrics (sc_metrics_prometheus) of this process's
 * handle. */
#include <stdio.h>

#include "cli.h"

static void gauge(const char *name, const char *help, const char *labels,
                  int64_t v, bool header) {
  if (header) printf("# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
  printf("%s%s %lld\n", name, labels, (long long)v);
}

static void print_stats(const sc_stats *s) {
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

int cmd_stats(int argc, char **argv) {
  static const cli_spec SPEC = {.cmd = "stats", .usage = "[--db PATH]"};
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_stats s;
  char *text = NULL;
  int src = sc_stats_get(c.db, &s);
  if (src == SC_OK) src = sc_metrics_prometheus(c.db, &text);
  if (src == SC_OK) {
    print_stats(&s);
    fputs(text, stdout);
  }
  sc_free(text);
  return cli_cmd_end(&c, src);
}
