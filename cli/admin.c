/* Administration: init, product, coupon, account and order commands. Each
 * takes --db PATH (default ./shop.db); numbers are checked strictly before
 * the database is opened, so bad input changes nothing. The shape they
 * share (parse, open, report, close) is cli_cmd's, in dbcmd.c. */
#include <stdio.h>
#include <unistd.h>

#include "cli.h"

/* A show subcommand: its one argument is an id, named what in messages;
 * it prints one line, or one JSON object with --json. */
#define SHOW_ID(name, what)                                                    \
  {                                                                            \
    .cmd = name, .usage = what " [--json]", .n_pos = 1, .pos = {CLI_ID(what)}, \
    .json = true                                                               \
  }
/* A subcommand whose one argument is an id. */
#define ONE_ID(name, what)                                          \
  {                                                                 \
    .cmd = name, .usage = what, .n_pos = 1, .pos = { CLI_ID(what) } \
  }

/* ---- init ---------------------------------------------------------------- */

int cmd_init(int argc, char **argv) {
  static const cli_spec SPEC = {.cmd = "init", .usage = "[--db PATH]"};
  cli_cmd c;
  int rc = cli_cmd_parse(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  /* sc_open, not cli_cmd_open: creating the database is init's job. */
  const char *path = cli_db_path(c.opts, c.n_opts);
  bool existed = cli_is_uri(path) || access(path, F_OK) == 0;
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

/* --price and --stock are required; NAME is checked after them, so a bad
 * number is what gets reported when both are wrong. */
static int product_numbers(const cli_cmd *c, int64_t *price, int64_t *stock) {
  const char *price_s = cli_get(c->opts, c->n_opts, "price");
  const char *stock_s = cli_get(c->opts, c->n_opts, "stock");
  if (!price_s || !stock_s) {
    return cli_usage(c->cmd, "--price and --stock are needed");
  }
  int rc;
  if ((rc = cli_int64(c->cmd, "--price", price_s, 0, MONEY_MAX, price)) ||
      (rc = cli_int64(c->cmd, "--stock", stock_s, 0, MONEY_MAX, stock))) {
    return rc;
  }
  if (c->pos[0][0] == '\0') return cli_usage(c->cmd, "NAME is empty");
  return CLI_OK;
}

static int product_add(int argc, char **argv) {
  static const cli_spec SPEC = {.cmd = "product add",
                                .usage = "NAME --price P --stock N",
                                .n_pos = 1,
                                .opts = {"price", "stock"}};
  cli_cmd c;
  int64_t price = 0, stock = 0;
  int rc = cli_cmd_parse(&c, &SPEC, argc, argv);
  if (rc == CLI_OK) rc = product_numbers(&c, &price, &stock);
  if (rc == CLI_OK) rc = cli_cmd_open(&c);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_id id;
  int src = sc_product_create(c.db, c.pos[0], price, stock, &id);
  if (src == SC_OK) printf("%lld\n", (long long)id); /* the bare id */
  return cli_cmd_end(&c, src);
}

static int product_restock(int argc, char **argv) {
  static const cli_spec SPEC = {.cmd = "product restock",
                                .usage = "ID QTY",
                                .n_pos = 2,
                                .pos = {CLI_ID("ID"), {"QTY", 1, MONEY_MAX}}};
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int src = sc_product_restock(c.db, c.num[0], c.num[1]);
  if (src == SC_OK) {
    printf("product %lld: +%lld\n", (long long)c.num[0], (long long)c.num[1]);
  }
  return cli_cmd_end(&c, src);
}

static int product_show(int argc, char **argv) {
  static const cli_spec SPEC = SHOW_ID("product show", "ID");
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_stock s;
  int src = sc_stock_get(c.db, c.num[0], &s);
  if (src == SC_OK && c.json) {
    printf(
        "{\"id\": %lld, \"total\": %lld, \"reserved\": %lld, "
        "\"available\": %lld, \"version\": %lld}\n",
        (long long)c.num[0], (long long)s.total, (long long)s.reserved,
        (long long)s.available, (long long)s.version);
  } else if (src == SC_OK) {
    printf(
        "product %lld: total %lld, reserved %lld, available %lld, "
        "version %lld\n",
        (long long)c.num[0], (long long)s.total, (long long)s.reserved,
        (long long)s.available, (long long)s.version);
  }
  return cli_cmd_end(&c, src);
}

int cmd_product(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"add", product_add, "NAME --price P --stock N [--db PATH]",
       "creates a product (price in minor units); prints its bare id"},
      {"restock", product_restock, "ID QTY [--db PATH]", "adds QTY units"},
      {"show", product_show, "ID [--json] [--db PATH]", "prints the stock"},
  };
  return cli_dispatch("product", "shopcore product: the catalog", SUBS, 3, argc,
                      argv);
}

/* ---- coupon -------------------------------------------------------------- */

/* Reads the optional numeric options of a policy into spec; NAME is checked
 * last, after every number. */
static int coupon_spec(const cli_cmd *c, sc_coupon_policy_spec *spec) {
  static const struct {
    const char *name;
    int64_t min, max;
    bool time; /* ms since the epoch or ISO 8601 */
  } NUMS[] = {
      {"max", 1, MONEY_MAX, false},          {"per-user", 1, INT32_MAX, false},
      {"discount", 0, MONEY_MAX, false},     {"percent", 1, 100, false},
      {"max-discount", 0, MONEY_MAX, false}, {"starts", 0, INT64_MAX, true},
      {"ends", 1, INT64_MAX, true}};
  int64_t v[7] = {0};
  for (int i = 0; i < 7; i++) {
    const char *text = cli_get(c->opts, c->n_opts, NUMS[i].name);
    char what[32];
    snprintf(what, sizeof what, "--%s", NUMS[i].name);
    int rc = CLI_OK;
    if (text && NUMS[i].time) {
      rc = cli_time(c->cmd, what, text, NUMS[i].min, NUMS[i].max, &v[i]);
    } else if (text) {
      rc = cli_int64(c->cmd, what, text, NUMS[i].min, NUMS[i].max, &v[i]);
    }
    if (rc != CLI_OK) return rc;
  }
  if (v[0] == 0) return cli_usage(c->cmd, "--max is needed");
  if (v[2] > 0 && v[3] > 0) {
    return cli_usage(c->cmd, "--discount and --percent are exclusive");
  }
  *spec = (sc_coupon_policy_spec){.name = c->pos[0],
                                  .max_count = v[0],
                                  .per_user_limit = (int32_t)v[1],
                                  .discount_amount = v[2],
                                  .discount_percent = (int32_t)v[3],
                                  .max_discount = v[4],
                                  .starts_at_ms = v[5],
                                  .ends_at_ms = v[6]};
  if (c->pos[0][0] == '\0') return cli_usage(c->cmd, "NAME is empty");
  return CLI_OK;
}

static int coupon_create(int argc, char **argv) {
  static const cli_spec SPEC = {
      .cmd = "coupon create",
      .usage =
          "NAME --max N [--per-user N] [--discount AMOUNT | --percent P "
          "[--max-discount AMOUNT]] [--starts TIME] [--ends TIME]",
      .help =
          "  --starts, --ends TIME   the window in which coupons are "
          "issued: ISO 8601\n"
          "              (2026-12-01T09:00:00Z; no zone means UTC) or ms "
          "since the epoch\n",
      .n_pos = 1,
      .opts = {"max", "per-user", "discount", "percent", "max-discount",
               "starts", "ends"}};
  cli_cmd c;
  sc_coupon_policy_spec spec = {0};
  int rc = cli_cmd_parse(&c, &SPEC, argc, argv);
  if (rc == CLI_OK) rc = coupon_spec(&c, &spec);
  if (rc == CLI_OK) rc = cli_cmd_open(&c);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_id id;
  int src = sc_coupon_policy_create(c.db, &spec, &id);
  if (src == SC_OK) printf("%lld\n", (long long)id); /* the bare id */
  return cli_cmd_end(&c, src);
}

/* pause and resume differ only in the flag they set. */
static int coupon_set_paused(const cli_spec *spec, int paused, int argc,
                             char **argv) {
  cli_cmd c;
  int rc = cli_cmd_start(&c, spec, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  int src = sc_coupon_policy_pause(c.db, c.num[0], paused);
  if (src == SC_OK) {
    printf("coupon policy %lld: %s\n", (long long)c.num[0],
           paused ? "paused" : "issuing");
  }
  return cli_cmd_end(&c, src);
}

static int coupon_pause(int argc, char **argv) {
  static const cli_spec SPEC = ONE_ID("coupon pause", "ID");
  return coupon_set_paused(&SPEC, 1, argc, argv);
}

static int coupon_resume(int argc, char **argv) {
  static const cli_spec SPEC = ONE_ID("coupon resume", "ID");
  return coupon_set_paused(&SPEC, 0, argc, argv);
}

static int coupon_show(int argc, char **argv) {
  static const cli_spec SPEC = SHOW_ID("coupon show", "ID");
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_coupon_policy p;
  int src = sc_coupon_policy_get(c.db, c.num[0], &p);
  if (src == SC_OK && c.json) {
    printf(
        "{\"id\": %lld, \"issued_count\": %lld, \"max_count\": %lld, "
        "\"per_user_limit\": %d, \"paused\": %s}\n",
        (long long)c.num[0], (long long)p.issued_count, (long long)p.max_count,
        (int)p.per_user_limit, p.paused ? "true" : "false");
  } else if (src == SC_OK) {
    printf("coupon policy %lld: issued %lld of %lld, per-user limit %d, %s\n",
           (long long)c.num[0], (long long)p.issued_count,
           (long long)p.max_count, (int)p.per_user_limit,
           p.paused ? "paused" : "issuing");
  }
  return cli_cmd_end(&c, src);
}

int cmd_coupon(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"create", coupon_create,
       "NAME --max N [--per-user N] [--discount AMOUNT | --percent P "
       "[--max-discount AMOUNT]] [--starts TIME] [--ends TIME] [--db PATH]",
       "creates a policy that never issues more than N coupons; prints its "
       "bare id.\n      TIME: ISO 8601 (2026-12-01T09:00:00Z; no zone means "
       "UTC) or ms since the epoch"},
      {"pause", coupon_pause, "ID [--db PATH]",
       "the kill switch: stops issuance"},
      {"resume", coupon_resume, "ID [--db PATH]", "resumes issuance"},
      {"show", coupon_show, "ID [--json] [--db PATH]",
       "prints issued and max counts"},
  };
  return cli_dispatch("coupon", "shopcore coupon: coupon policies", SUBS, 4,
                      argc, argv);
}

/* ---- account and order --------------------------------------------------- */

static int account_deposit(int argc, char **argv) {
  static const cli_spec SPEC = {
      .cmd = "account deposit",
      .usage = "USER AMOUNT [--key IDEMPOTENCY_KEY]",
      .n_pos = 2,
      .pos = {CLI_ID("USER"), {"AMOUNT", 1, MONEY_MAX}},
      .opts = {"key"}};
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  const char *key = cli_get(c.opts, c.n_opts, "key");
  int src = sc_account_deposit(c.db, c.num[0], c.num[1], key);
  if (src == SC_OK) {
    printf("user %lld: deposited %lld\n", (long long)c.num[0],
           (long long)c.num[1]);
  }
  return cli_cmd_end(&c, src);
}

static int account_show(int argc, char **argv) {
  static const cli_spec SPEC = SHOW_ID("account show", "USER");
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_account a;
  int src = sc_account_get(c.db, c.num[0], &a);
  if (src == SC_OK && c.json) {
    printf(
        "{\"user\": %lld, \"balance\": %lld, \"held\": %lld, "
        "\"available\": %lld}\n",
        (long long)c.num[0], (long long)a.balance, (long long)a.held,
        (long long)a.available);
  } else if (src == SC_OK) {
    printf("user %lld: balance %lld, held %lld, available %lld\n",
           (long long)c.num[0], (long long)a.balance, (long long)a.held,
           (long long)a.available);
  }
  return cli_cmd_end(&c, src);
}

int cmd_account(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"deposit", account_deposit,
       "USER AMOUNT [--key IDEMPOTENCY_KEY] [--db PATH]",
       "credits AMOUNT (minor units); a replayed key changes nothing"},
      {"show", account_show, "USER [--json] [--db PATH]",
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
  static const cli_spec SPEC = SHOW_ID("order show", "ID");
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_order o;
  int src = sc_order_get(c.db, c.num[0], &o);
  if (src == SC_OK && c.json) {
    printf(
        "{\"id\": %lld, \"user\": %lld, \"status\": \"%s\", "
        "\"total\": %lld, \"discount\": %lld, \"expires_at_ms\": %lld}\n",
        (long long)c.num[0], (long long)o.user, order_status_name(o.status),
        (long long)o.total, (long long)o.discount, (long long)o.expires_at_ms);
  } else if (src == SC_OK) {
    char at[CLI_TIME_LEN];
    printf(
        "order %lld: user %lld, %s, total %lld, discount %lld, expires at "
        "%s\n",
        (long long)c.num[0], (long long)o.user, order_status_name(o.status),
        (long long)o.total, (long long)o.discount,
        cli_iso_time(o.expires_at_ms, at));
  }
  return cli_cmd_end(&c, src);
}

int cmd_order(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"show", order_show, "ID [--json] [--db PATH]",
       "prints the order's user, state, total and deadline"},
  };
  return cli_dispatch("order", "shopcore order: orders", SUBS, 1, argc, argv);
}
