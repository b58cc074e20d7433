/* Bad input across the whole public API, as one table: every function with
 * NULL, zero, negative, maximal and unknown arguments, and with arguments
 * the state refuses (a sold-out policy, a cancelled order ...). Each row
 * runs on a fresh fixture and must return the code its declaration in
 * shopcore.h documents, with a message in sc_errmsg; out-parameters are
 * left untouched; and the database does not change (every sc_ table
 * hashed before and after through a separate connection, and sc_verify). */
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "internal.h"
#include "test_util.h"

#define T0 1000000000000LL /* the fixture's clock, ms */
#define HOUR (3600 * 1000LL)

/* ---- the fixture ----------------------------------------------------------
 */

typedef struct fx {
  char *path;
  char *other; /* a path that exists and is not a database */
  sc_db *db;
  tu_clock clock;
  sc_id product, dear; /* price 100 stock 10; price INT64_MAX/4 */
  sc_id policy, sold_out, paused, future, one_each;
  sc_id coupon, coupon_user2, used_coupon_of_1;
  sc_id pending, confirmed, cancelled, expired;
  sc_id event_delivered, event_pending, event_unclaimed;
  int64_t claim_delivered, claim_pending; /* their tokens */
  int64_t version;                        /* the product's stock version */
  /* Out-parameters, filled with a pattern the failed call must leave. */
  sc_id id_out;
  sc_stock stock_out;
  sc_product product_out;
  sc_account account_out;
  sc_coupon_policy policy_out;
  sc_order order_out;
  sc_event *events_out;
  sc_dead_event *dead_out;
  int n_out;
  char *text_out;
  sc_metrics *metrics_out;
  sc_stats stats_out;
  sc_outbox_stats obstats_out;
  sc_event_data data_out;
  sc_worker *worker_out;
  sc_db *db_probe; /* sc_open's out: NULL after a failure */
  char big[SC_EVENT_PAYLOAD_MAX + 1];
  uv_loop_t loop;
} fx;

static sc_id make_policy(fx *f, int64_t max, int32_t limit, int64_t starts) {
  sc_coupon_policy_spec s = {.name = "p",
                             .max_count = max,
                             .per_user_limit = limit,
                             .discount_amount = 10,
                             .starts_at_ms = starts};
  sc_id id = 0;
  ck_assert_sc(sc_coupon_policy_create(f->db, &s, &id), SC_OK);
  return id;
}

static sc_id make_order(fx *f, sc_id user, int64_t ttl, const char *key) {
  sc_line line = {f->product, 1};
  sc_checkout_req req = {.user = user,
                         .lines = &line,
                         .n_lines = 1,
                         .ttl_ms = ttl,
                         .idempotency_key = key};
  sc_id id = 0;
  ck_assert_sc(sc_checkout(f->db, &req, &id), SC_OK);
  return id;
}

static void make_orders(fx *f) {
  f->pending = make_order(f, 1, HOUR, "co-1");
  f->confirmed = make_order(f, 1, HOUR, NULL);
  ck_assert_sc(sc_order_pay(f->db, f->confirmed), SC_OK);
  f->cancelled = make_order(f, 1, HOUR, NULL);
  ck_assert_sc(sc_order_cancel(f->db, f->cancelled), SC_OK);
  f->expired = make_order(f, 1, 10, NULL);
  /* Another, used: so a coupon is in each state. */
  sc_line line = {f->product, 1};
  sc_checkout_req req = {
      .user = 1, .lines = &line, .n_lines = 1, .coupon = f->used_coupon_of_1};
  sc_id used = 0;
  ck_assert_sc(sc_checkout(f->db, &req, &used), SC_OK);
  ck_assert_sc(sc_order_pay(f->db, used), SC_OK);
  atomic_fetch_add(&f->clock.now_ms, 20);
  int n = 0;
  ck_assert_sc(sc_orders_expire_due(f->db, &n), SC_OK);
  ck_assert_int_eq(n, 1);
}

/* One event delivered (acked), one left pending. */
static void make_events(fx *f) {
  sc_event *ev = NULL;
  int n = 0;
  ck_assert_sc(sc_outbox_claim(f->db, 2, 60000, &ev, &n), SC_OK);
  ck_assert_int_eq(n, 2);
  f->event_delivered = ev[0].id;
  f->event_pending = ev[1].id;
  f->claim_delivered = ev[0].claim;
  f->claim_pending = ev[1].claim;
  sc_events_free(ev, n);
  ck_assert_sc(sc_outbox_ack(f->db, f->event_delivered, f->claim_delivered),
               SC_OK);
  f->event_unclaimed =
      tu_count(f->path, "SELECT max(id) FROM sc_outbox WHERE claim = 0");
  ck_assert_int_gt(f->event_unclaimed, 0);
}

static void fixture_setup(fx *f) {
  memset(f, 0, sizeof *f);
  f->path = tu_db_path("bad");
  if (tu_pg_mode()) {
    /* A file beside the schema, in the temporary directory. */
    f->other = malloc(512);
    ck_assert_ptr_nonnull(f->other);
    tu_side_path(f->path, 0, f->other, 512);
  } else {
    f->other = tu_db_path("bad-notdb");
  }
  FILE *fp = fopen(f->other, "w");
  ck_assert_ptr_nonnull(fp);
  fputs(
      "this is not an SQLite database, only some text long enough to "
      "fill a header of one hundred bytes ...............................",
      fp);
  fclose(fp);
  sc_options o;
  sc_options_init(&o);
  o.durability = SC_DURABILITY_NORMAL;
  tu_use_clock(&o, &f->clock, T0);
  f->db = tu_open(f->path, &o);
  ck_assert_sc(sc_product_create(f->db, "p", 100, 10, &f->product), SC_OK);
  ck_assert_sc(sc_product_create(f->db, "dear", INT64_MAX / 4, 10, &f->dear),
               SC_OK);
  ck_assert_sc(sc_account_deposit(f->db, 1, 10000, "dep-1"), SC_OK);
  ck_assert_sc(sc_account_deposit(f->db, 2, 50, NULL), SC_OK);
  f->policy = make_policy(f, 100, 100, 0);
  f->sold_out = make_policy(f, 1, 1, 0);
  f->paused = make_policy(f, 10, 1, 0);
  f->future = make_policy(f, 10, 1, T0 + HOUR);
  f->one_each = make_policy(f, 10, 1, 0);
  ck_assert_sc(sc_coupon_policy_pause(f->db, f->paused, 1), SC_OK);
  ck_assert_sc(sc_coupon_issue(f->db, f->sold_out, 3, NULL), SC_OK);
  ck_assert_sc(sc_coupon_issue(f->db, f->one_each, 1, NULL), SC_OK);
  ck_assert_sc(sc_coupon_issue(f->db, f->policy, 1, &f->coupon), SC_OK);
  ck_assert_sc(sc_coupon_issue(f->db, f->policy, 2, &f->coupon_user2), SC_OK);
  ck_assert_sc(sc_coupon_issue(f->db, f->policy, 1, &f->used_coupon_of_1),
               SC_OK);
  make_orders(f);
  make_events(f);
  sc_stock s;
  ck_assert_sc(sc_stock_get(f->db, f->product, &s), SC_OK);
  f->version = s.version;
  ck_assert_int_eq(uv_loop_init(&f->loop), 0);
  f->metrics_out = malloc(sizeof *f->metrics_out);
  ck_assert_ptr_nonnull(f->metrics_out);
}

static void pg_digest_close(void);

static void fixture_teardown(fx *f) {
  ck_assert_sc(sc_close(f->db), SC_OK);
  ck_assert_int_eq(uv_loop_close(&f->loop), 0);
  free(f->metrics_out);
  if (tu_pg_mode()) pg_digest_close(); /* before the schema is dropped */
  tu_remove_db(f->path);
  if (tu_pg_mode()) {
    unlink(f->other);
    free(f->other);
  } else {
    tu_remove_db(f->other);
  }
}

/* ---- the table -------------------------------------------------------------
 * X(name, expected status, call). The call sees the fixture as f. */

static const sc_line LINE_ZERO_QTY[] = {{1, 0}};
static const sc_line LINE_NEG_QTY[] = {{1, -1}};
static const sc_line LINE_MIN_QTY[] = {{1, INT64_MIN}};
static const sc_line LINE_PRODUCT_0[] = {{0, 1}};
static const sc_line LINE_PRODUCT_NEG[] = {{-5, 1}};
static const sc_line LINE_PRODUCT_UNKNOWN[] = {{999999, 1}};
static const int64_t VERSION_NEG[] = {-1};
/* Past the limits: a name or key one byte too long, one of 10 MiB, and a
 * checkout of one line too many (distinct products, each qty 1, so only
 * the count is wrong). Filled by limits_setup. */
static char TOO_LONG[SC_NAME_MAX + 2];
static char HUGE_TEXT[10 << 20];
static sc_line TOO_MANY_LINES[SC_CHECKOUT_LINES_MAX + 1];

static void limits_setup(void) {
  memset(TOO_LONG, 'k', sizeof TOO_LONG - 1);
  memset(HUGE_TEXT, 'h', sizeof HUGE_TEXT - 1);
  for (int i = 0; i <= SC_CHECKOUT_LINES_MAX; i++) {
    TOO_MANY_LINES[i] = (sc_line){.product = i + 1, .qty = 1};
  }
}

/* Each row states only what it changes from a valid request: the later
 * designated initializer overriding the default is the point. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Winitializer-overrides"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Woverride-init"
#pragma GCC diagnostic ignored "-Woverride-init-side-effects"
#endif

/* A checkout of the fixture's product with one field changed. */
#define REQ(...)                                             \
  (&(sc_checkout_req){.user = 1,                             \
                      .lines = (sc_line[]){{f->product, 1}}, \
                      .n_lines = 1,                          \
                      __VA_ARGS__})
#define SPEC(...) \
  (&(sc_coupon_policy_spec){.name = "x", .max_count = 1, __VA_ARGS__})
#define OPTS(...) (&(sc_options){.durability = 0, __VA_ARGS__})

#define BAD_CALLS(X)                                                           \
  /* opening */                                                                \
  X(open_out_null, SC_MISUSE, sc_open(f->path, NULL, NULL))                    \
  X(open_path_null, SC_INVALID, sc_open(NULL, NULL, &f->db_probe))             \
  X(open_path_empty, SC_INVALID, sc_open("", NULL, &f->db_probe))              \
  X(open_memory, SC_INVALID, sc_open(":memory:", NULL, &f->db_probe))          \
  X(open_uri, SC_INVALID, sc_open("file:x.db", NULL, &f->db_probe))            \
  X(open_durability_unknown, SC_INVALID,                                       \
    sc_open(f->path, OPTS(.durability = 2), &f->db_probe))                     \
  X(open_durability_negative, SC_INVALID,                                      \
    sc_open(f->path, OPTS(.durability = -1), &f->db_probe))                    \
  X(open_batch_negative, SC_INVALID,                                           \
    sc_open(f->path, OPTS(.batch_max = -1), &f->db_probe))                     \
  X(open_busy_negative, SC_INVALID,                                            \
    sc_open(f->path, OPTS(.busy_timeout_ms = INT32_MIN), &f->db_probe))        \
  X(open_queue_negative, SC_INVALID,                                           \
    sc_open(f->path, OPTS(.queue_max = -1), &f->db_probe))                     \
  X(open_ttl_negative, SC_INVALID,                                             \
    sc_open(f->path, OPTS(.default_order_ttl_ms = INT64_MIN), &f->db_probe))   \
  X(open_missing_dir, SC_IOERR,                                                \
    sc_open("/nonexistent-dir/x/y.db", NULL, &f->db_probe))                    \
  X(open_not_a_database, SC_CORRUPT, sc_open(f->other, NULL, &f->db_probe))    \
  /* products and stock */                                                     \
  X(product_db_null, SC_MISUSE,                                                \
    sc_product_create(NULL, "p", 1, 1, &f->id_out))                            \
  X(product_out_null, SC_MISUSE, sc_product_create(f->db, "p", 1, 1, NULL))    \
  X(product_name_null, SC_INVALID,                                             \
    sc_product_create(f->db, NULL, 1, 1, &f->id_out))                          \
  X(product_name_empty, SC_INVALID,                                            \
    sc_product_create(f->db, "", 1, 1, &f->id_out))                            \
  X(product_name_too_long, SC_INVALID,                                         \
    sc_product_create(f->db, TOO_LONG, 1, 1, &f->id_out))                      \
  X(product_name_huge, SC_INVALID,                                             \
    sc_product_create(f->db, HUGE_TEXT, 1, 1, &f->id_out))                     \
  X(product_name_not_utf8, SC_INVALID,                                         \
    sc_product_create(f->db, "p\xff", 1, 1, &f->id_out))                       \
  X(product_name_overlong, SC_INVALID,                                         \
    sc_product_create(f->db, "\xc0\xaf", 1, 1, &f->id_out))                    \
  X(product_name_surrogate, SC_INVALID,                                        \
    sc_product_create(f->db, "\xed\xa0\x80", 1, 1, &f->id_out))                \
  X(product_name_cut_char, SC_INVALID,                                         \
    sc_product_create(f->db, "ab\xe2\x82", 1, 1, &f->id_out))                  \
  X(product_price_negative, SC_INVALID,                                        \
    sc_product_create(f->db, "p", -1, 1, &f->id_out))                          \
  X(product_price_min, SC_INVALID,                                             \
    sc_product_create(f->db, "p", INT64_MIN, 1, &f->id_out))                   \
  X(product_stock_negative, SC_INVALID,                                        \
    sc_product_create(f->db, "p", 1, -1, &f->id_out))                          \
  X(restock_db_null, SC_MISUSE, sc_product_restock(NULL, f->product, 1))       \
  X(restock_zero, SC_INVALID, sc_product_restock(f->db, f->product, 0))        \
  X(restock_negative, SC_INVALID, sc_product_restock(f->db, f->product, -1))   \
  X(restock_min, SC_INVALID, sc_product_restock(f->db, f->product, INT64_MIN)) \
  X(restock_overflow, SC_INVALID,                                              \
    sc_product_restock(f->db, f->product, INT64_MAX))                          \
  X(restock_product_zero, SC_NOT_FOUND, sc_product_restock(f->db, 0, 1))       \
  X(restock_product_negative, SC_NOT_FOUND, sc_product_restock(f->db, -1, 1))  \
  X(restock_product_unknown, SC_NOT_FOUND,                                     \
    sc_product_restock(f->db, 999999, 1))                                      \
  X(restock_product_max, SC_NOT_FOUND,                                         \
    sc_product_restock(f->db, INT64_MAX, 1))                                   \
  X(stock_db_null, SC_MISUSE, sc_stock_get(NULL, f->product, &f->stock_out))   \
  X(stock_out_null, SC_MISUSE, sc_stock_get(f->db, f->product, NULL))          \
  X(stock_unknown, SC_NOT_FOUND, sc_stock_get(f->db, 999999, &f->stock_out))   \
  X(stock_zero, SC_NOT_FOUND, sc_stock_get(f->db, 0, &f->stock_out))           \
  X(stock_negative, SC_NOT_FOUND, sc_stock_get(f->db, -1, &f->stock_out))      \
  X(product_get_db_null, SC_MISUSE,                                            \
    sc_product_get(NULL, f->product, &f->product_out))                         \
  X(product_get_out_null, SC_MISUSE, sc_product_get(f->db, f->product, NULL))  \
  X(product_get_unknown, SC_NOT_FOUND,                                         \
    sc_product_get(f->db, 999999, &f->product_out))                            \
  X(product_get_zero, SC_NOT_FOUND, sc_product_get(f->db, 0, &f->product_out)) \
  /* accounts */                                                               \
  X(deposit_db_null, SC_MISUSE, sc_account_deposit(NULL, 1, 1, NULL))          \
  X(deposit_user_zero, SC_INVALID, sc_account_deposit(f->db, 0, 1, NULL))      \
  X(deposit_user_negative, SC_INVALID, sc_account_deposit(f->db, -1, 1, NULL)) \
  X(deposit_amount_zero, SC_INVALID, sc_account_deposit(f->db, 1, 0, NULL))    \
  X(deposit_amount_negative, SC_INVALID,                                       \
    sc_account_deposit(f->db, 1, -5, NULL))                                    \
  X(deposit_amount_min, SC_INVALID,                                            \
    sc_account_deposit(f->db, 1, INT64_MIN, NULL))                             \
  X(deposit_overflow, SC_INVALID,                                              \
    sc_account_deposit(f->db, 1, INT64_MAX, NULL))                             \
  X(deposit_key_empty, SC_INVALID, sc_account_deposit(f->db, 1, 1, ""))        \
  X(deposit_key_too_long, SC_INVALID,                                          \
    sc_account_deposit(f->db, 1, 1, TOO_LONG))                                 \
  X(deposit_key_huge, SC_INVALID, sc_account_deposit(f->db, 1, 1, HUGE_TEXT))  \
  X(deposit_key_not_utf8, SC_INVALID,                                          \
    sc_account_deposit(f->db, 1, 1, "k\xf5"))                                  \
  X(deposit_key_other_amount, SC_IDEMPOTENCY_MISMATCH,                         \
    sc_account_deposit(f->db, 1, 9999, "dep-1"))                               \
  X(deposit_key_other_user, SC_IDEMPOTENCY_MISMATCH,                           \
    sc_account_deposit(f->db, 2, 10000, "dep-1"))                              \
  X(account_db_null, SC_MISUSE, sc_account_get(NULL, 1, &f->account_out))      \
  X(account_out_null, SC_MISUSE, sc_account_get(f->db, 1, NULL))               \
  X(account_unknown, SC_NOT_FOUND, sc_account_get(f->db, 77, &f->account_out)) \
  X(account_zero, SC_NOT_FOUND, sc_account_get(f->db, 0, &f->account_out))     \
  /* coupon policies */                                                        \
  X(policy_db_null, SC_MISUSE,                                                 \
    sc_coupon_policy_create(NULL, SPEC(.per_user_limit = 0), &f->id_out))      \
  X(policy_spec_null, SC_MISUSE,                                               \
    sc_coupon_policy_create(f->db, NULL, &f->id_out))                          \
  X(policy_out_null, SC_MISUSE,                                                \
    sc_coupon_policy_create(f->db, SPEC(.per_user_limit = 0), NULL))           \
  X(policy_name_null, SC_INVALID,                                              \
    sc_coupon_policy_create(f->db, SPEC(.name = NULL), &f->id_out))            \
  X(policy_name_empty, SC_INVALID,                                             \
    sc_coupon_policy_create(f->db, SPEC(.name = ""), &f->id_out))              \
  X(policy_name_too_long, SC_INVALID,                                          \
    sc_coupon_policy_create(f->db, SPEC(.name = TOO_LONG), &f->id_out))        \
  X(policy_name_huge, SC_INVALID,                                              \
    sc_coupon_policy_create(f->db, SPEC(.name = HUGE_TEXT), &f->id_out))       \
  X(policy_name_not_utf8, SC_INVALID,                                          \
    sc_coupon_policy_create(f->db, SPEC(.name = "\x80"), &f->id_out))          \
  X(policy_max_zero, SC_INVALID,                                               \
    sc_coupon_policy_create(f->db, SPEC(.max_count = 0), &f->id_out))          \
  X(policy_max_negative, SC_INVALID,                                           \
    sc_coupon_policy_create(f->db, SPEC(.max_count = INT64_MIN), &f->id_out))  \
  X(policy_limit_negative, SC_INVALID,                                         \
    sc_coupon_policy_create(f->db, SPEC(.per_user_limit = -1), &f->id_out))    \
  X(policy_amount_negative, SC_INVALID,                                        \
    sc_coupon_policy_create(f->db, SPEC(.discount_amount = -1), &f->id_out))   \
  X(policy_percent_over, SC_INVALID,                                           \
    sc_coupon_policy_create(f->db, SPEC(.discount_percent = 101), &f->id_out)) \
  X(policy_percent_negative, SC_INVALID,                                       \
    sc_coupon_policy_create(f->db, SPEC(.discount_percent = -1), &f->id_out))  \
  X(policy_cap_negative, SC_INVALID,                                           \
    sc_coupon_policy_create(f->db, SPEC(.max_discount = -1), &f->id_out))      \
  X(policy_amount_and_percent, SC_INVALID,                                     \
    sc_coupon_policy_create(                                                   \
        f->db, SPEC(.discount_amount = 5, .discount_percent = 5), &f->id_out)) \
  X(policy_window_empty, SC_INVALID,                                           \
    sc_coupon_policy_create(f->db, SPEC(.starts_at_ms = 10, .ends_at_ms = 10), \
                            &f->id_out))                                       \
  X(policy_starts_negative, SC_INVALID,                                        \
    sc_coupon_policy_create(f->db, SPEC(.starts_at_ms = -1), &f->id_out))      \
  X(pause_db_null, SC_MISUSE, sc_coupon_policy_pause(NULL, f->policy, 1))      \
  X(pause_zero, SC_NOT_FOUND, sc_coupon_policy_pause(f->db, 0, 1))             \
  X(pause_negative, SC_NOT_FOUND, sc_coupon_policy_pause(f->db, -1, 1))        \
  X(pause_unknown, SC_NOT_FOUND, sc_coupon_policy_pause(f->db, 999999, 1))     \
  X(policy_get_db_null, SC_MISUSE,                                             \
    sc_coupon_policy_get(NULL, f->policy, &f->policy_out))                     \
  X(policy_get_out_null, SC_MISUSE,                                            \
    sc_coupon_policy_get(f->db, f->policy, NULL))                              \
  X(policy_get_unknown, SC_NOT_FOUND,                                          \
    sc_coupon_policy_get(f->db, 999999, &f->policy_out))                       \
  /* issuing */                                                                \
  X(issue_db_null, SC_MISUSE, sc_coupon_issue(NULL, f->policy, 1, &f->id_out)) \
  X(issue_user_zero, SC_INVALID,                                               \
    sc_coupon_issue(f->db, f->policy, 0, &f->id_out))                          \
  X(issue_user_negative, SC_INVALID,                                           \
    sc_coupon_issue(f->db, f->policy, INT64_MIN, &f->id_out))                  \
  X(issue_policy_zero, SC_NOT_FOUND, sc_coupon_issue(f->db, 0, 1, &f->id_out)) \
  X(issue_policy_unknown, SC_NOT_FOUND,                                        \
    sc_coupon_issue(f->db, 999999, 1, &f->id_out))                             \
  X(issue_sold_out, SC_SOLD_OUT,                                               \
    sc_coupon_issue(f->db, f->sold_out, 4, &f->id_out))                        \
  X(issue_paused, SC_PAUSED, sc_coupon_issue(f->db, f->paused, 4, &f->id_out)) \
  X(issue_not_active, SC_NOT_ACTIVE,                                           \
    sc_coupon_issue(f->db, f->future, 4, &f->id_out))                          \
  X(issue_limit, SC_LIMIT_REACHED,                                             \
    sc_coupon_issue(f->db, f->one_each, 1, &f->id_out))                        \
  /* checkout */                                                               \
  X(checkout_db_null, SC_MISUSE, sc_checkout(NULL, REQ(), &f->id_out))         \
  X(checkout_req_null, SC_MISUSE, sc_checkout(f->db, NULL, &f->id_out))        \
  X(checkout_out_null, SC_MISUSE, sc_checkout(f->db, REQ(), NULL))             \
  X(checkout_user_zero, SC_INVALID,                                            \
    sc_checkout(f->db, REQ(.user = 0), &f->id_out))                            \
  X(checkout_user_negative, SC_INVALID,                                        \
    sc_checkout(f->db, REQ(.user = -1), &f->id_out))                           \
  X(checkout_no_lines, SC_INVALID,                                             \
    sc_checkout(f->db, REQ(.n_lines = 0), &f->id_out))                         \
  X(checkout_lines_null, SC_INVALID,                                           \
    sc_checkout(f->db, REQ(.lines = NULL), &f->id_out))                        \
  X(checkout_qty_zero, SC_INVALID,                                             \
    sc_checkout(f->db, REQ(.lines = LINE_ZERO_QTY), &f->id_out))               \
  X(checkout_qty_negative, SC_INVALID,                                         \
    sc_checkout(f->db, REQ(.lines = LINE_NEG_QTY), &f->id_out))                \
  X(checkout_qty_min, SC_INVALID,                                              \
    sc_checkout(f->db, REQ(.lines = LINE_MIN_QTY), &f->id_out))                \
  X(checkout_product_zero, SC_NOT_FOUND,                                       \
    sc_checkout(f->db, REQ(.lines = LINE_PRODUCT_0), &f->id_out))              \
  X(checkout_product_negative, SC_NOT_FOUND,                                   \
    sc_checkout(f->db, REQ(.lines = LINE_PRODUCT_NEG), &f->id_out))            \
  X(checkout_product_unknown, SC_NOT_FOUND,                                    \
    sc_checkout(f->db, REQ(.lines = LINE_PRODUCT_UNKNOWN), &f->id_out))        \
  X(checkout_same_product_twice, SC_INVALID,                                   \
    sc_checkout(f->db,                                                         \
                REQ(.lines = (sc_line[]){{f->product, 1}, {f->product, 1}},    \
                    .n_lines = 2),                                             \
                &f->id_out))                                                   \
  X(checkout_ttl_negative, SC_INVALID,                                         \
    sc_checkout(f->db, REQ(.ttl_ms = -1), &f->id_out))                         \
  X(checkout_ttl_overflow, SC_INVALID,                                         \
    sc_checkout(f->db, REQ(.ttl_ms = INT64_MAX), &f->id_out))                  \
  X(checkout_key_empty, SC_INVALID,                                            \
    sc_checkout(f->db, REQ(.idempotency_key = ""), &f->id_out))                \
  X(checkout_key_too_long, SC_INVALID,                                         \
    sc_checkout(f->db, REQ(.idempotency_key = TOO_LONG), &f->id_out))          \
  X(checkout_key_huge, SC_INVALID,                                             \
    sc_checkout(f->db, REQ(.idempotency_key = HUGE_TEXT), &f->id_out))         \
  X(checkout_key_not_utf8, SC_INVALID,                                         \
    sc_checkout(f->db, REQ(.idempotency_key = "\xf4\x90\x80\x80"),             \
                &f->id_out))                                                   \
  X(checkout_too_many_lines, SC_INVALID,                                       \
    sc_checkout(                                                               \
        f->db,                                                                 \
        REQ(.lines = TOO_MANY_LINES, .n_lines = SC_CHECKOUT_LINES_MAX + 1),    \
        &f->id_out))                                                           \
  X(checkout_lines_size_max, SC_INVALID,                                       \
    sc_checkout(f->db, REQ(.lines = TOO_MANY_LINES, .n_lines = SIZE_MAX),      \
                &f->id_out))                                                   \
  X(checkout_key_other_request, SC_IDEMPOTENCY_MISMATCH,                       \
    sc_checkout(f->db, REQ(.idempotency_key = "co-1", .ttl_ms = 5),            \
                &f->id_out))                                                   \
  X(checkout_coupon_negative, SC_NOT_FOUND,                                    \
    sc_checkout(f->db, REQ(.coupon = -1), &f->id_out))                         \
  X(checkout_coupon_unknown, SC_NOT_FOUND,                                     \
    sc_checkout(f->db, REQ(.coupon = 999999), &f->id_out))                     \
  X(checkout_coupon_of_other_user, SC_COUPON_UNAVAILABLE,                      \
    sc_checkout(f->db, REQ(.coupon = f->coupon_user2), &f->id_out))            \
  X(checkout_coupon_used, SC_COUPON_UNAVAILABLE,                               \
    sc_checkout(f->db, REQ(.coupon = f->used_coupon_of_1), &f->id_out))        \
  X(checkout_version_negative, SC_INVALID,                                     \
    sc_checkout(f->db, REQ(.expected_versions = VERSION_NEG), &f->id_out))     \
  X(checkout_version_stale, SC_CONFLICT,                                       \
    sc_checkout(f->db, REQ(.expected_versions = (int64_t[]){f->version - 1}),  \
                &f->id_out))                                                   \
  X(checkout_out_of_stock, SC_OUT_OF_STOCK,                                    \
    sc_checkout(f->db, REQ(.lines = (sc_line[]){{f->product, 1000}}),          \
                &f->id_out))                                                   \
  X(checkout_qty_max, SC_OUT_OF_STOCK,                                         \
    sc_checkout(f->db, REQ(.lines = (sc_line[]){{f->product, INT64_MAX}}),     \
                &f->id_out))                                                   \
  X(checkout_total_overflow, SC_INVALID,                                       \
    sc_checkout(f->db, REQ(.lines = (sc_line[]){{f->dear, 5}}), &f->id_out))   \
  X(checkout_no_account, SC_NOT_FOUND,                                         \
    sc_checkout(f->db, REQ(.user = 77), &f->id_out))                           \
  X(checkout_insufficient, SC_INSUFFICIENT_BALANCE,                            \
    sc_checkout(f->db, REQ(.user = 2), &f->id_out))                            \
  /* orders */                                                                 \
  X(pay_db_null, SC_MISUSE, sc_order_pay(NULL, f->pending))                    \
  X(pay_zero, SC_NOT_FOUND, sc_order_pay(f->db, 0))                            \
  X(pay_negative, SC_NOT_FOUND, sc_order_pay(f->db, INT64_MIN))                \
  X(pay_unknown, SC_NOT_FOUND, sc_order_pay(f->db, 999999))                    \
  X(pay_cancelled, SC_INVALID_STATE, sc_order_pay(f->db, f->cancelled))        \
  X(pay_expired, SC_EXPIRED, sc_order_pay(f->db, f->expired))                  \
  X(cancel_db_null, SC_MISUSE, sc_order_cancel(NULL, f->pending))              \
  X(cancel_zero, SC_NOT_FOUND, sc_order_cancel(f->db, 0))                      \
  X(cancel_unknown, SC_NOT_FOUND, sc_order_cancel(f->db, 999999))              \
  X(cancel_confirmed, SC_INVALID_STATE, sc_order_cancel(f->db, f->confirmed))  \
  X(cancel_expired, SC_INVALID_STATE, sc_order_cancel(f->db, f->expired))      \
  X(order_get_db_null, SC_MISUSE,                                              \
    sc_order_get(NULL, f->pending, &f->order_out))                             \
  X(order_get_out_null, SC_MISUSE, sc_order_get(f->db, f->pending, NULL))      \
  X(order_get_unknown, SC_NOT_FOUND,                                           \
    sc_order_get(f->db, 999999, &f->order_out))                                \
  X(expire_db_null, SC_MISUSE, sc_orders_expire_due(NULL, &f->n_out))          \
  /* verify, stats, metrics, administration */                                 \
  X(verify_db_null, SC_MISUSE, sc_verify(NULL, &f->text_out))                  \
  X(stats_db_null, SC_MISUSE, sc_stats_get(NULL, &f->stats_out))               \
  X(stats_out_null, SC_MISUSE, sc_stats_get(f->db, NULL))                      \
  X(metrics_db_null, SC_MISUSE, sc_metrics_get(NULL, f->metrics_out))          \
  X(metrics_out_null, SC_MISUSE, sc_metrics_get(f->db, NULL))                  \
  X(prometheus_db_null, SC_MISUSE, sc_metrics_prometheus(NULL, &f->text_out))  \
  X(prometheus_out_null, SC_MISUSE, sc_metrics_prometheus(f->db, NULL))        \
  X(metrics_reset_db_null, SC_MISUSE, sc_metrics_reset(NULL))                  \
  X(repair_db_null, SC_MISUSE, sc_repair(NULL, 1, &f->n_out, &f->text_out))    \
  X(backup_db_null, SC_MISUSE, sc_backup(NULL, "x.db"))                        \
  X(backup_path_null, SC_INVALID, sc_backup(f->db, NULL))                      \
  X(backup_path_empty, SC_INVALID, sc_backup(f->db, ""))                       \
  X(backup_path_exists, SC_EXISTS, sc_backup(f->db, f->other))                 \
  /* the outbox */                                                             \
  X(claim_db_null, SC_MISUSE,                                                  \
    sc_outbox_claim(NULL, 1, 1000, &f->events_out, &f->n_out))                 \
  X(claim_events_null, SC_MISUSE,                                              \
    sc_outbox_claim(f->db, 1, 1000, NULL, &f->n_out))                          \
  X(claim_n_null, SC_MISUSE,                                                   \
    sc_outbox_claim(f->db, 1, 1000, &f->events_out, NULL))                     \
  X(claim_max_zero, SC_INVALID,                                                \
    sc_outbox_claim(f->db, 0, 1000, &f->events_out, &f->n_out))                \
  X(claim_max_negative, SC_INVALID,                                            \
    sc_outbox_claim(f->db, -1, 1000, &f->events_out, &f->n_out))               \
  X(claim_max_over, SC_INVALID,                                                \
    sc_outbox_claim(f->db, SC_OUTBOX_CLAIM_MAX + 1, 1000, &f->events_out,      \
                    &f->n_out))                                                \
  X(claim_lease_zero, SC_INVALID,                                              \
    sc_outbox_claim(f->db, 1, 0, &f->events_out, &f->n_out))                   \
  X(claim_lease_negative, SC_INVALID,                                          \
    sc_outbox_claim(f->db, 1, INT64_MIN, &f->events_out, &f->n_out))           \
  X(ack_db_null, SC_MISUSE, sc_outbox_ack(NULL, f->event_pending, 1))          \
  X(ack_zero, SC_NOT_FOUND, sc_outbox_ack(f->db, 0, 1))                        \
  X(ack_unknown, SC_NOT_FOUND, sc_outbox_ack(f->db, 999999, 1))                \
  X(ack_stale_claim, SC_CONFLICT,                                              \
    sc_outbox_ack(f->db, f->event_pending, f->claim_pending + 1))              \
  X(ack_claim_zero, SC_CONFLICT, sc_outbox_ack(f->db, f->event_pending, 0))    \
  X(ack_never_claimed, SC_CONFLICT,                                            \
    sc_outbox_ack(f->db, f->event_unclaimed, 1))                               \
  X(nack_db_null, SC_MISUSE, sc_outbox_nack(NULL, f->event_pending, 1, "x"))   \
  X(nack_unknown, SC_NOT_FOUND, sc_outbox_nack(f->db, 999999, 1, "x"))         \
  X(nack_negative, SC_NOT_FOUND, sc_outbox_nack(f->db, -1, 1, NULL))           \
  X(nack_stale_claim, SC_CONFLICT,                                             \
    sc_outbox_nack(f->db, f->event_pending, f->claim_pending - 1, "x"))        \
  X(nack_never_claimed, SC_CONFLICT,                                           \
    sc_outbox_nack(f->db, f->event_unclaimed, 1, "x"))                         \
  X(nack_delivered, SC_INVALID_STATE,                                          \
    sc_outbox_nack(f->db, f->event_delivered, f->claim_delivered, "x"))        \
  X(dead_list_db_null, SC_MISUSE,                                              \
    sc_outbox_dead_list(NULL, 0, 1, &f->dead_out, &f->n_out))                  \
  X(dead_list_out_null, SC_MISUSE,                                             \
    sc_outbox_dead_list(f->db, 0, 1, NULL, &f->n_out))                         \
  X(dead_list_max_zero, SC_INVALID,                                            \
    sc_outbox_dead_list(f->db, 0, 0, &f->dead_out, &f->n_out))                 \
  X(dead_list_max_over, SC_INVALID,                                            \
    sc_outbox_dead_list(f->db, 0, INT32_MAX, &f->dead_out, &f->n_out))         \
  X(requeue_db_null, SC_MISUSE, sc_outbox_requeue(NULL, f->event_pending))     \
  X(requeue_unknown, SC_NOT_FOUND, sc_outbox_requeue(f->db, 999999))           \
  X(requeue_not_dead, SC_INVALID_STATE,                                        \
    sc_outbox_requeue(f->db, f->event_pending))                                \
  X(requeue_all_db_null, SC_MISUSE, sc_outbox_requeue_all(NULL, &f->n_out))    \
  X(outbox_stats_db_null, SC_MISUSE,                                           \
    sc_outbox_stats_get(NULL, &f->obstats_out))                                \
  X(outbox_stats_out_null, SC_MISUSE, sc_outbox_stats_get(f->db, NULL))        \
  /* payloads */                                                               \
  X(decode_out_null, SC_MISUSE, sc_event_decode("\x80", 1, NULL))              \
  X(decode_payload_null, SC_MISUSE, sc_event_decode(NULL, 4, &f->data_out))    \
  X(decode_empty, SC_INVALID, sc_event_decode("", 0, &f->data_out))            \
  X(decode_garbage, SC_INVALID, sc_event_decode("\xc1\xc1", 2, &f->data_out))  \
  X(decode_empty_map, SC_INVALID, sc_event_decode("\x80", 1, &f->data_out))    \
  X(decode_too_long, SC_INVALID,                                               \
    sc_event_decode(f->big, sizeof f->big, &f->data_out))                      \
  /* the worker */                                                             \
  X(worker_db_null, SC_MISUSE,                                                 \
    sc_worker_start(NULL, &f->loop, NULL, &f->worker_out))                     \
  X(worker_loop_null, SC_MISUSE,                                               \
    sc_worker_start(f->db, NULL, NULL, &f->worker_out))                        \
  X(worker_out_null, SC_MISUSE, sc_worker_start(f->db, &f->loop, NULL, NULL))  \
  X(worker_batch_negative, SC_INVALID,                                         \
    sc_worker_start(f->db, &f->loop, &(sc_worker_options){.batch_max = -1},    \
                    &f->worker_out))                                           \
  X(worker_batch_over, SC_INVALID,                                             \
    sc_worker_start(                                                           \
        f->db, &f->loop,                                                       \
        &(sc_worker_options){.batch_max = SC_OUTBOX_CLAIM_MAX + 1},            \
        &f->worker_out))                                                       \
  X(worker_lease_negative, SC_INVALID,                                         \
    sc_worker_start(f->db, &f->loop, &(sc_worker_options){.lease_ms = -1},     \
                    &f->worker_out))                                           \
  X(worker_poll_negative, SC_INVALID,                                          \
    sc_worker_start(f->db, &f->loop,                                           \
                    &(sc_worker_options){.poll_interval_ms = -1},              \
                    &f->worker_out))                                           \
  X(worker_thread_db_null, SC_MISUSE,                                          \
    sc_worker_start_thread(NULL, NULL, &f->worker_out))                        \
  X(worker_thread_out_null, SC_MISUSE,                                         \
    sc_worker_start_thread(f->db, NULL, NULL))                                 \
  X(worker_stop_null, SC_MISUSE, sc_worker_stop(NULL, NULL, NULL))             \
  X(worker_stop_thread_null, SC_MISUSE, sc_worker_stop_thread(NULL))

#define BAD_FN(name, want, call) \
  static int bad_##name(fx *f) { \
    (void)f;                     \
    return call;                 \
  }
BAD_CALLS(BAD_FN)
#undef BAD_FN

typedef struct bad_call {
  const char *name;
  int want;
  int (*fn)(fx *f);
} bad_call;

static const bad_call TABLE[] = {
#define BAD_ROW(name, want, call) {#name, want, bad_##name},
    BAD_CALLS(BAD_ROW)
#undef BAD_ROW
};
#define N_BAD ((int)(sizeof TABLE / sizeof *TABLE))

/* ---- nothing changes ------------------------------------------------------
 */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

/* db_digest on PostgreSQL: every row of every sc_ table of the schema, as
 * the server's text, in order, through one connection kept for the
 * fixture (one digest per row of the table). The batch log is left out:
 * it is the backend's own record of each committed batch (a batch of
 * refusals commits too), not the shop's state. */
static PGconn *digest_conn;
static char *digest_sql;

static void pg_digest_close(void) {
  PQfinish(digest_conn);
  digest_conn = NULL;
  free(digest_sql);
  digest_sql = NULL;
}

static PGresult *digest_query(const char *sql) {
  PGresult *r = PQexec(digest_conn, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
                PQresultErrorMessage(r));
  return r;
}

/* One query over every table, built once per fixture. */
static void digest_prepare(const char *path) {
  digest_conn = tu_pg_connect(path);
  PGresult *names = digest_query(
      "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
      " AND tablename LIKE 'sc\\_%' AND tablename <> 'sc_batch_log'"
      " ORDER BY 1");
  int n = PQntuples(names);
  ck_assert_int_gt(n, 5);
  size_t cap = 64 + (size_t)n * 200, len = 0;
  digest_sql = malloc(cap);
  ck_assert_ptr_nonnull(digest_sql);
  for (int i = 0; i < n; i++) {
    const char *name = PQgetvalue(names, i, 0);
    len += (size_t)snprintf(digest_sql + len, cap - len,
                            "%sSELECT '%s', t::text FROM %s t",
                            i ? " UNION ALL " : "", name, name);
  }
  snprintf(digest_sql + len, cap - len, " ORDER BY 1, 2");
  PQclear(names);
}

static uint64_t pg_digest(const char *path) {
  if (digest_conn == NULL) digest_prepare(path);
  PGresult *r = digest_query(digest_sql);
  uint64_t digest = 0xcbf29ce484222325ULL;
  for (int row = 0; row < PQntuples(r); row++) {
    for (int col = 0; col < 2; col++) {
      digest = fnv(digest, PQgetvalue(r, row, col),
                   (size_t)PQgetlength(r, row, col) + 1);
    }
  }
  PQclear(r);
  return digest;
}

/* A hash of every row of every sc_ table, read through a separate plain
 * connection: the library's own readings could share its bugs. */
static uint64_t db_digest(const char *path) {
  if (tu_pg_mode()) return pg_digest(path);
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  sqlite3_busy_timeout(h, 10000);
  sqlite3_stmt *tables = NULL;
  ck_assert_int_eq(
      sqlite3_prepare_v2(h,
                         "SELECT name FROM sqlite_master WHERE type = 'table'"
                         " AND name LIKE 'sc\\_%' ESCAPE '\\' ORDER BY name",
                         -1, &tables, NULL),
      SQLITE_OK);
  uint64_t digest = 0xcbf29ce484222325ULL;
  int n_tables = 0;
  while (sqlite3_step(tables) == SQLITE_ROW) {
    char sql[256];
    const char *name = (const char *)sqlite3_column_text(tables, 0);
    snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY 1, 2", name);
    digest = fnv(digest, name, strlen(name));
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
      for (int c = 0; c < sqlite3_column_count(st); c++) {
        int type = sqlite3_column_type(st, c);
        const void *v = sqlite3_column_blob(st, c);
        digest = fnv(digest, &type, sizeof type);
        digest = fnv(digest, v ? v : "", (size_t)sqlite3_column_bytes(st, c));
      }
    }
    sqlite3_finalize(st);
    n_tables++;
  }
  sqlite3_finalize(tables);
  sqlite3_close(h);
  ck_assert_int_ge(n_tables, 8);
  return digest;
}

/* ---- out-parameters are left alone ----------------------------------------
 */

#define PATTERN 0xa5
static void *const SENTINEL = (void *)(uintptr_t)0xa5a5a5a5a5a5a5a5ULL;

static void fill_outs(fx *f) {
  memset(&f->id_out, PATTERN, sizeof f->id_out);
  memset(&f->stock_out, PATTERN, sizeof f->stock_out);
  memset(&f->product_out, PATTERN, sizeof f->product_out);
  memset(&f->account_out, PATTERN, sizeof f->account_out);
  memset(&f->policy_out, PATTERN, sizeof f->policy_out);
  memset(&f->order_out, PATTERN, sizeof f->order_out);
  memset(&f->n_out, PATTERN, sizeof f->n_out);
  memset(&f->stats_out, PATTERN, sizeof f->stats_out);
  memset(&f->obstats_out, PATTERN, sizeof f->obstats_out);
  memset(&f->data_out, PATTERN, sizeof f->data_out);
  memset(f->metrics_out, PATTERN, sizeof *f->metrics_out);
  memset(f->big, 0x80, sizeof f->big);
  f->events_out = SENTINEL;
  f->dead_out = SENTINEL;
  f->text_out = SENTINEL;
  f->worker_out = SENTINEL;
  f->db_probe = SENTINEL;
}

/* Untouched (the pattern) or zeroed: never half-written. */
static bool left_alone(const void *p, size_t n) {
  const unsigned char *b = p;
  bool pattern = true, zero = true;
  for (size_t i = 0; i < n; i++) {
    pattern = pattern && b[i] == PATTERN;
    zero = zero && b[i] == 0;
  }
  return pattern || zero;
}

#define ASSERT_ALONE(field)                             \
  ck_assert_msg(left_alone(&f->field, sizeof f->field), \
                "%s: " #field " was written", row->name)

static void check_outs(fx *f, const bad_call *row) {
  ASSERT_ALONE(id_out);
  ASSERT_ALONE(stock_out);
  ASSERT_ALONE(product_out);
  ASSERT_ALONE(account_out);
  ASSERT_ALONE(policy_out);
  ASSERT_ALONE(order_out);
  ASSERT_ALONE(stats_out);
  ASSERT_ALONE(obstats_out);
  ASSERT_ALONE(data_out);
  ck_assert_msg(left_alone(f->metrics_out, sizeof *f->metrics_out),
                "%s: metrics were written", row->name);
  ck_assert_msg(f->events_out == SENTINEL || f->events_out == NULL,
                "%s: events_out was written", row->name);
  ck_assert_msg(f->dead_out == SENTINEL || f->dead_out == NULL,
                "%s: dead events were written", row->name);
  ck_assert_msg(f->text_out == SENTINEL || f->text_out == NULL,
                "%s: text_out was written", row->name);
  ck_assert_msg(f->worker_out == SENTINEL || f->worker_out == NULL,
                "%s: a worker was started", row->name);
  /* sc_open documents its out as NULL on failure. */
  ck_assert_msg(f->db_probe == SENTINEL || f->db_probe == NULL,
                "%s: sc_open wrote a handle", row->name);
  if (strncmp(row->name, "open_", 5) == 0 &&
      strcmp(row->name, "open_out_null")) {
    ck_assert_msg(f->db_probe == NULL, "%s: sc_open left out unset", row->name);
  }
}

/* A row that wrongly succeeded may have started something: stop it so the
 * failure is reported cleanly. */
static void undo_success(fx *f) {
  if (f->worker_out != SENTINEL && f->worker_out != NULL) {
    sc_worker_stop(f->worker_out, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
  }
  if (f->db_probe != SENTINEL && f->db_probe != NULL) sc_close(f->db_probe);
}

/* Runs one row on the fixture f, whose digest is before; then sc_verify
 * if verify. */
static void check_row(fx *f, const bad_call *row, uint64_t before,
                      bool verify) {
  fill_outs(f);
  sc__set_errmsg("");
  int rc = row->fn(f);
  const char *msg = sc_errmsg(f->db);
  if (rc == SC_OK) undo_success(f);
  ck_assert_msg(rc == row->want, "%s: got %s, want %s (%s)", row->name,
                sc_err_name(rc), sc_err_name(row->want), msg);
  ck_assert_msg(msg[0] != '\0', "%s: %s without a message", row->name,
                sc_err_name(rc));
  check_outs(f, row);
  ck_assert_msg(db_digest(f->path) == before, "%s changed the database",
                row->name);
  if (verify) tu_assert_verify(f->db);
}

START_TEST(each_bad_call) {
  fx fixture, *f = &fixture;
  limits_setup();
  fixture_setup(f);
  check_row(f, &TABLE[_i], db_digest(f->path), true);
  fixture_teardown(f);
}
END_TEST

/* Rows about the SQLite file, which PostgreSQL has not: a path in a
 * missing directory, a file that is not a database, and sc_backup's
 * destination (sc_backup is SC_MISUSE on PostgreSQL, whatever the path). */
static const char *const SQLITE_ONLY[] = {
    "open_missing_dir", "open_not_a_database", "backup_path_null",
    "backup_path_empty", "backup_path_exists"};

static bool sqlite_only(const bad_call *row) {
  for (size_t i = 0; i < sizeof SQLITE_ONLY / sizeof *SQLITE_ONLY; i++) {
    if (strcmp(row->name, SQLITE_ONLY[i]) == 0) return true;
  }
  return false;
}

/* On PostgreSQL a fresh fixture (a schema migrated and filled) costs
 * seconds, so the rows share one: each row must leave it as it was (the
 * digest says so after every row), which is what makes the sharing sound;
 * sc_verify, a function of the same rows, runs once at the end. A failing
 * row stops the test and names itself. */
START_TEST(each_bad_call_on_one_fixture) {
  fx fixture, *f = &fixture;
  limits_setup();
  fixture_setup(f);
  uint64_t before = db_digest(f->path);
  int ran = 0;
  for (int i = 0; i < N_BAD; i++) {
    if (sqlite_only(&TABLE[i])) continue;
    check_row(f, &TABLE[i], before, false);
    ran++;
  }
  tu_assert_verify(f->db);
  ck_assert_int_eq(ran,
                   N_BAD - (int)(sizeof SQLITE_ONLY / sizeof *SQLITE_ONLY));
  fixture_teardown(f);
}
END_TEST

/* The limits are inclusive: a name and a key of exactly 255 bytes and a
 * checkout of exactly 1,000 lines go through, and the stored text is whole. */
START_TEST(limits_are_inclusive) {
  char *path = tu_db_path("limits");
  sc_options o;
  sc_options_init(&o);
  o.durability = SC_DURABILITY_NORMAL;
  sc_db *db = tu_open(path, &o);
  char name[SC_NAME_MAX + 1], key[SC_KEY_MAX + 1];
  memset(name, 'n', SC_NAME_MAX);
  name[SC_NAME_MAX] = '\0';
  memset(key, 'k', SC_KEY_MAX);
  key[SC_KEY_MAX] = '\0';
  static sc_line lines[SC_CHECKOUT_LINES_MAX];
  for (int i = 0; i < SC_CHECKOUT_LINES_MAX; i++) {
    sc_id id = 0;
    ck_assert_sc(sc_product_create(db, name, 1, 1, &id), SC_OK);
    lines[i] = (sc_line){.product = id, .qty = 1};
  }
  sc_coupon_policy_spec spec = {.name = name, .max_count = 1};
  sc_id policy = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, SC_CHECKOUT_LINES_MAX, key), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, SC_CHECKOUT_LINES_MAX, key), SC_OK);
  sc_checkout_req req = {.user = 1,
                         .lines = lines,
                         .n_lines = SC_CHECKOUT_LINES_MAX,
                         .idempotency_key = key};
  sc_id order = 0, replay = 0;
  ck_assert_sc(sc_checkout(db, &req, &order), SC_OK);
  ck_assert_sc(sc_checkout(db, &req, &replay), SC_OK);
  ck_assert_int_eq(order, replay);
  sc_order got;
  ck_assert_sc(sc_order_get(db, order, &got), SC_OK);
  ck_assert_int_eq(got.total, SC_CHECKOUT_LINES_MAX);
  /* Text is UTF-8: two-, three- and four-byte characters go through. */
  static const char MB_NAME[] = "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x8e\x9f";
  sc_id mb = 0;
  ck_assert_sc(sc_product_create(db, MB_NAME, 1, 1, &mb), SC_OK);
  sc_product pr;
  ck_assert_sc(sc_product_get(db, mb, &pr), SC_OK);
  ck_assert_str_eq(pr.name, MB_NAME);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_product"
                            " WHERE length(name) = 255"),
                   SC_CHECKOUT_LINES_MAX);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_coupon_policy"
                            " WHERE length(name) = 255"),
                   1);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_idempotency"
                            " WHERE length(key) = 255"),
                   2);
  tu_remove_db(path);
}
END_TEST

/* The digest could fail: one real change moves it. */
START_TEST(digest_sees_a_change) {
  fx fixture, *f = &fixture;
  fixture_setup(f);
  uint64_t before = db_digest(f->path);
  ck_assert_int_eq(db_digest(f->path), before);
  ck_assert_sc(sc_product_restock(f->db, f->product, 1), SC_OK);
  ck_assert_int_ne(db_digest(f->path), before);
  fixture_teardown(f);
}
END_TEST

/* ---- functions without a status -------------------------------------------
 */

START_TEST(harmless_nulls_and_unknown_codes) {
  sc_free(NULL);
  ck_assert_sc(sc_close(NULL), SC_OK);
  sc_events_free(NULL, 0);
  sc_events_free(NULL, 5);
  sc_dead_events_free(NULL, 0);
  sc_options_init(NULL);
  sc_worker_options_init(NULL);
  ck_assert_str_eq(sc_strerror(-1), "unknown status");
  ck_assert_str_eq(sc_strerror(INT32_MAX), "unknown status");
  ck_assert_str_eq(sc_err_name(SC_STATUS_COUNT_), "SC_UNKNOWN");
  ck_assert_str_eq(sc_event_type_name(0), "unknown");
  ck_assert_str_eq(sc_event_type_name(-1), "unknown");
  ck_assert_str_eq(sc_event_type_name(INT32_MAX), "unknown");
  ck_assert_int_eq(sc_status_outcome(-1), SC_OUTCOME_ERROR);
  ck_assert_int_eq(sc_status_outcome(INT32_MAX), SC_OUTCOME_ERROR);
  ck_assert_ptr_nonnull(sc_errmsg(NULL));
  /* Restoring the default allocator twice is harmless. */
  sc_set_allocator(NULL);
  sc_allocator prev = sc_set_allocator(NULL);
  ck_assert_ptr_nonnull(prev.malloc_fn);
}
END_TEST

int main(void) {
  Suite *s = suite_create("badinput");
  TCase *tc = tu_tcase("badinput");
  if (tu_pg_mode()) {
    tcase_add_test(tc, each_bad_call_on_one_fixture);
  } else {
    tcase_add_loop_test(tc, each_bad_call, 0, N_BAD);
  }
  tcase_add_test(tc, digest_sees_a_change);
  tcase_add_test(tc, limits_are_inclusive);
  tcase_add_test(tc, harmless_nulls_and_unknown_codes);
  suite_add_tcase(s, tc);
  printf("badinput: %d bad calls in the table\n", N_BAD);
  return tu_run_suite(s);
}
