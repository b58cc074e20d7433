/* Administration: init, product, coupon, account and order commands. Each
 * takes --db PATH (default ./shop.db); numbers are checked strictly before
 * the database is opened, so bad input changes nothing. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* ---- init ---------------------------------------------------------------- */

int cmd_init(int argc, char **argv) {
  cli_opt opts[] = {{"db", true, NULL}};
  int rc = cli_parse_sub("init", "[--db PATH]", argc, argv, opts, 1, NULL, 0);
  if (rc != CLI_OK) return CLI_DONE(rc);
  const char *path = cli_db_path(opts, 1);
  bool existed = access(path, F_OK) == 0;
  sc_db *db = NULL;
  int src = sc_open(path, NULL, &db);
  if (src != SC_OK) return cli_sc_fail("init", src);
  src = sc_close(db);
  if (src != SC_OK) return cli_sc_fail("init", src);
  printf("%s: %s (libshopcore %s)\n", path,
         existed ? "ready, schema up to date" : "created", sc_version());
  return CLI_OK;
}

/* ---- product ------------------------------------------------------------- */

static int product_add(int argc, char **argv) {
  const char *cmd = "product add";
  cli_opt opts[] = {
      {"db", true, NULL}, {"price", true, NULL}, {"stock", true, NULL}};
  const char *pos[1];
  int rc = cli_parse_sub(cmd, "NAME --price P --stock N", argc, argv, opts, 3,
                         pos, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  const char *price_s = cli_get(opts, 3, "price");
  const char *stock_s = cli_get(opts, 3, "stock");
  if (!price_s || !stock_s)
    return cli_usage(cmd, "--price and --stock are needed");
  int64_t price, stock;
  if ((rc = cli_int64(cmd, "--price", price_s, 0, MONEY_MAX, &price)) ||
      (rc = cli_int64(cmd, "--stock", stock_s, 0, MONEY_MAX, &stock))) {
    return rc;
  }
  if (pos[0][0] == '\0') return cli_usage(cmd, "NAME is empty");
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 3), NULL);
  if (db == NULL) return CLI_FAILED;
  sc_id id;
  int src = sc_product_create(db, pos[0], price, stock, &id);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) printf("product %lld\n", (long long)id);
  sc_close(db);
  return rc;
}

static int product_restock(int argc, char **argv) {
  const char *cmd = "product restock";
  cli_opt opts[] = {{"db", true, NULL}};
  const char *pos[2];
  int rc = cli_parse_sub(cmd, "ID QTY", argc, argv, opts, 1, pos, 2);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int64_t id, qty;
  if ((rc = cli_int64(cmd, "ID", pos[0], 1, ID_MAX, &id)) ||
      (rc = cli_int64(cmd, "QTY", pos[1], 1, MONEY_MAX, &qty))) {
    return rc;
  }
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 1), NULL);
  if (db == NULL) return CLI_FAILED;
  int src = sc_product_restock(db, id, qty);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK)
    printf("product %lld: +%lld\n", (long long)id, (long long)qty);
  sc_close(db);
  return rc;
}

static int product_show(int argc, char **argv) {
  const char *cmd = "product show";
  cli_opt opts[] = {{"db", true, NULL}};
  const char *pos[1];
  int rc = cli_parse_sub(cmd, "ID", argc, argv, opts, 1, pos, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int64_t id;
  if ((rc = cli_int64(cmd, "ID", pos[0], 1, ID_MAX, &id))) return rc;
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 1), NULL);
  if (db == NULL) return CLI_FAILED;
  sc_stock s;
  int src = sc_stock_get(db, id, &s);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) {
    printf(
        "product %lld: total %lld, reserved %lld, available %lld, "
        "version %lld\n",
        (long long)id, (long long)s.total, (long long)s.reserved,
        (long long)s.available, (long long)s.version);
  }
  sc_close(db);
  return rc;
}

int cmd_product(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"add", product_add, "NAME --price P --stock N [--db PATH]",
       "creates a product (price in minor units); prints its id"},
      {"restock", product_restock, "ID QTY [--db PATH]", "adds QTY units"},
      {"show", product_show, "ID [--db PATH]", "prints the stock"},
  };
  return cli_dispatch("product", "shopcore product: the catalog", SUBS, 3, argc,
                      argv);
}

/* ---- coupon -------------------------------------------------------------- */

/* Reads the optional numeric options of a policy into spec. */
static int coupon_spec(const char *cmd, const cli_opt *o, int n,
                       sc_coupon_policy_spec *spec) {
  static const struct {
    const char *name;
    int64_t min, max;
  } NUMS[] = {{"max", 1, MONEY_MAX},          {"per-user", 1, INT32_MAX},
              {"discount", 0, MONEY_MAX},     {"percent", 1, 100},
              {"max-discount", 0, MONEY_MAX}, {"starts", 0, INT64_MAX},
              {"ends", 1, INT64_MAX}};
  int64_t v[7] = {0};
  for (int i = 0; i < 7; i++) {
    const char *text = cli_get(o, n, NUMS[i].name);
    char what[32];
    snprintf(what, sizeof what, "--%s", NUMS[i].name);
    int rc = text ? cli_int64(cmd, what, text, NUMS[i].min, NUMS[i].max, &v[i])
                  : CLI_OK;
    if (rc != CLI_OK) return rc;
  }
  if (v[0] == 0) return cli_usage(cmd, "--max is needed");
  if (v[2] > 0 && v[3] > 0) {
    return cli_usage(cmd, "--discount and --percent are exclusive");
  }
  spec->max_count = v[0];
  spec->per_user_limit = (int32_t)v[1];
  spec->discount_amount = v[2];
  spec->discount_percent = (int32_t)v[3];
  spec->max_discount = v[4];
  spec->starts_at_ms = v[5];
  spec->ends_at_ms = v[6];
  return CLI_OK;
}

static int coupon_create(int argc, char **argv) {
  const char *cmd = "coupon create";
  cli_opt opts[] = {{"db", true, NULL},       {"max", true, NULL},
                    {"per-user", true, NULL}, {"discount", true, NULL},
                    {"percent", true, NULL},  {"max-discount", true, NULL},
                    {"starts", true, NULL},   {"ends", true, NULL}};
  const char *pos[1];
  int rc = cli_parse_sub(cmd,
                         "NAME --max N [--per-user N] [--discount AMOUNT | "
                         "--percent P [--max-discount AMOUNT]] [--starts MS] "
                         "[--ends MS]",
                         argc, argv, opts, 8, pos, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_coupon_policy_spec spec = {.name = pos[0]};
  if ((rc = coupon_spec(cmd, opts, 8, &spec)) != CLI_OK) return rc;
  if (pos[0][0] == '\0') return cli_usage(cmd, "NAME is empty");
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 8), NULL);
  if (db == NULL) return CLI_FAILED;
  sc_id id;
  int src = sc_coupon_policy_create(db, &spec, &id);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) printf("coupon policy %lld\n", (long long)id);
  sc_close(db);
  return rc;
}

static int coupon_set_paused(const char *cmd, int paused, int argc,
                             char **argv) {
  cli_opt opts[] = {{"db", true, NULL}};
  const char *pos[1];
  int rc = cli_parse_sub(cmd, "ID", argc, argv, opts, 1, pos, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int64_t id;
  if ((rc = cli_int64(cmd, "ID", pos[0], 1, ID_MAX, &id))) return rc;
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 1), NULL);
  if (db == NULL) return CLI_FAILED;
  int src = sc_coupon_policy_pause(db, id, paused);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) {
    printf("coupon policy %lld: %s\n", (long long)id,
           paused ? "paused" : "issuing");
  }
  sc_close(db);
  return rc;
}

static int coupon_pause(int argc, char **argv) {
  return coupon_set_paused("coupon pause", 1, argc, argv);
}

static int coupon_resume(int argc, char **argv) {
  return coupon_set_paused("coupon resume", 0, argc, argv);
}

static int coupon_show(int argc, char **argv) {
  const char *cmd = "coupon show";
  cli_opt opts[] = {{"db", true, NULL}};
  const char *pos[1];
  int rc = cli_parse_sub(cmd, "ID", argc, argv, opts, 1, pos, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int64_t id;
  if ((rc = cli_int64(cmd, "ID", pos[0], 1, ID_MAX, &id))) return rc;
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 1), NULL);
  if (db == NULL) return CLI_FAILED;
  sc_coupon_policy p;
  int src = sc_coupon_policy_get(db, id, &p);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) {
    printf("coupon policy %lld: issued %lld of %lld, per-user limit %d, %s\n",
           (long long)id, (long long)p.issued_count, (long long)p.max_count,
           (int)p.per_user_limit, p.paused ? "paused" : "issuing");
  }
  sc_close(db);
  return rc;
}

int cmd_coupon(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"create", coupon_create,
       "NAME --max N [--per-user N] [--discount AMOUNT | --percent P "
       "[--max-discount AMOUNT]] [--starts MS] [--ends MS] [--db PATH]",
       "creates a policy that never issues more than N coupons"},
      {"pause", coupon_pause, "ID [--db PATH]",
       "the kill switch: stops issuance"},
      {"resume", coupon_resume, "ID [--db PATH]", "resumes issuance"},
      {"show", coupon_show, "ID [--db PATH]", "prints issued and max counts"},
  };
  return cli_dispatch("coupon", "shopcore coupon: coupon policies", SUBS, 4,
                      argc, argv);
}

/* ---- account and order --------------------------------------------------- */

static int account_deposit(int argc, char **argv) {
  const char *cmd = "account deposit";
  cli_opt opts[] = {{"db", true, NULL}, {"key", true, NULL}};
  const char *pos[2];
  int rc = cli_parse_sub(cmd, "USER AMOUNT [--key IDEMPOTENCY_KEY]", argc, argv,
                         opts, 2, pos, 2);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int64_t user, amount;
  if ((rc = cli_int64(cmd, "USER", pos[0], 1, ID_MAX, &user)) ||
      (rc = cli_int64(cmd, "AMOUNT", pos[1], 1, MONEY_MAX, &amount))) {
    return rc;
  }
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 2), NULL);
  if (db == NULL) return CLI_FAILED;
  int src = sc_account_deposit(db, user, amount, cli_get(opts, 2, "key"));
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) {
    printf("user %lld: deposited %lld\n", (long long)user, (long long)amount);
  }
  sc_close(db);
  return rc;
}

static int account_show(int argc, char **argv) {
  const char *cmd = "account show";
  cli_opt opts[] = {{"db", true, NULL}};
  const char *pos[1];
  int rc = cli_parse_sub(cmd, "USER", argc, argv, opts, 1, pos, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int64_t user;
  if ((rc = cli_int64(cmd, "USER", pos[0], 1, ID_MAX, &user))) return rc;
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 1), NULL);
  if (db == NULL) return CLI_FAILED;
  sc_account a;
  int src = sc_account_get(db, user, &a);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) {
    printf("user %lld: balance %lld, held %lld, available %lld\n",
           (long long)user, (long long)a.balance, (long long)a.held,
           (long long)a.available);
  }
  sc_close(db);
  return rc;
}

int cmd_account(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"deposit", account_deposit,
       "USER AMOUNT [--key IDEMPOTENCY_KEY] [--db PATH]",
       "credits AMOUNT (minor units); a replayed key changes nothing"},
      {"show", account_show, "USER [--db PATH]",
       "prints balance, held and available"},
  };
  return cli_dispatch("account", "shopcore account: balances", SUBS, 2, argc,
                      argv);
}

static const char *order_status_name(int status) {
  static const char *const NAMES[] = {"?", "PENDING", "CONFIRMED", "CANCELLED",
                                      "EXPIRED"};
  return status >= 1 && status <= 4 ? NAMES[status] : "?";
}

static int order_show(int argc, char **argv) {
  const char *cmd = "order show";
  cli_opt opts[] = {{"db", true, NULL}};
  const char *pos[1];
  int rc = cli_parse_sub(cmd, "ID", argc, argv, opts, 1, pos, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int64_t id;
  if ((rc = cli_int64(cmd, "ID", pos[0], 1, ID_MAX, &id))) return rc;
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 1), NULL);
  if (db == NULL) return CLI_FAILED;
  sc_order o;
  int src = sc_order_get(db, id, &o);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) {
    printf(
        "order %lld: user %lld, %s, total %lld, discount %lld, expires at "
        "%lld ms\n",
        (long long)id, (long long)o.user, order_status_name(o.status),
        (long long)o.total, (long long)o.discount, (long long)o.expires_at_ms);
  }
  sc_close(db);
  return rc;
}

int cmd_order(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"show", order_show, "ID [--db PATH]",
       "prints the order's user, state, total and deadline"},
  };
  return cli_dispatch("order", "shopcore order: orders", SUBS, 1, argc, argv);
}
