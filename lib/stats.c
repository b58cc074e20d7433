/* sc_stats_get: what the database holds, counted on one read snapshot, for
 * `shopcore stats` and hosts' dashboards. */
#include "internal.h"

static const char SQL_STATS[] =
    "SELECT (SELECT count(*) FROM sc_product),"
    " (SELECT coalesce(sum(total), 0) FROM sc_product),"
    " (SELECT coalesce(sum(reserved), 0) FROM sc_product),"
    " (SELECT count(*) FROM sc_account),"
    " (SELECT coalesce(sum(balance), 0) FROM sc_account),"
    " (SELECT coalesce(sum(held), 0) FROM sc_account),"
    " (SELECT count(*) FROM sc_order WHERE status = 1),"
    " (SELECT count(*) FROM sc_order WHERE status = 2),"
    " (SELECT count(*) FROM sc_order WHERE status = 3),"
    " (SELECT count(*) FROM sc_order WHERE status = 4),"
    " (SELECT count(*) FROM sc_coupon_policy),"
    " (SELECT count(*) FROM sc_coupon),"
    " (SELECT count(*) FROM sc_outbox WHERE state = 0),"
    " (SELECT count(*) FROM sc_outbox WHERE state = 2)"
    " WHERE ?1 = ?1";

int sc_stats_get_sized(sc_db *db, sc_stats *out, size_t size) {
  if (db == NULL) return sc__fail(SC_MISUSE, "sc_stats_get: db is NULL");
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_stats_get: out is NULL");
  int64_t c[14];
  int rc = sc__read_row(db, SQL_STATS, 0, c, 14, "stats");
  if (rc != SC_OK) return rc;
  sc_stats s = {.products = c[0],
                .units_total = c[1],
                .units_reserved = c[2],
                .accounts = c[3],
                .balance_total = c[4],
                .held_total = c[5],
                .orders_pending = c[6],
                .orders_confirmed = c[7],
                .orders_cancelled = c[8],
                .orders_expired = c[9],
                .policies = c[10],
                .coupons = c[11],
                .events_pending = c[12],
                .events_dead = c[13]};
  sc__struct_out(out, size, &s, sizeof s);
  return SC_OK;
}

int(sc_stats_get)(sc_db *db, sc_stats *out) {
  return sc_stats_get_sized(db, out, sizeof *out);
}
