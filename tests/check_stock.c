/* Products and stock: creation, restock, reading, bad input, and the force
 * increment: every reservation, release and restock bumps the version by
 * exactly one, and a stale expected version is refused with SC_CONFLICT
 * without reserving anything. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static sc_stock stock_of(sc_db *db, sc_id product) {
  sc_stock s;
  ck_assert_sc(sc_stock_get(db, product, &s), SC_OK);
  ck_assert_int_eq(s.available, s.total - s.reserved);
  return s;
}

static sc_id make_product(sc_db *db, int64_t price, int64_t stock) {
  sc_id id = 0;
  ck_assert_sc(sc_product_create(db, "widget", price, stock, &id), SC_OK);
  ck_assert_int_gt(id, 0);
  return id;
}

/* Checks out qty of product for user, optionally with an expected version. */
static int checkout1(sc_db *db, sc_id user, sc_id product, int64_t qty,
                     const int64_t *expected, sc_id *order) {
  sc_line line = {product, qty};
  sc_checkout_req req = {.user = user,
                         .lines = &line,
                         .n_lines = 1,
                         .expected_versions = expected};
  return sc_checkout(db, &req, order);
}

START_TEST(create_restock_and_read) {
  char *path = tu_db_path("stock");
  sc_db *db = tu_open(path, NULL);
  sc_id a = make_product(db, 1500, 10);
  sc_id b = make_product(db, 0, 0); /* free and empty are allowed */
  ck_assert_int_gt(b, a);
  sc_stock s = stock_of(db, a);
  ck_assert_int_eq(s.total, 10);
  ck_assert_int_eq(s.reserved, 0);
  ck_assert_int_eq(s.available, 10);
  ck_assert_int_eq(s.version, 0);
  ck_assert_sc(sc_product_restock(db, a, 5), SC_OK);
  s = stock_of(db, a);
  ck_assert_int_eq(s.total, 15);
  ck_assert_int_eq(s.version, 1);
  ck_assert_sc(sc_product_restock(db, b, 3), SC_OK);
  ck_assert_int_eq(stock_of(db, b).total, 3);
  ck_assert_int_eq(stock_of(db, a).total, 15); /* the other is untouched */
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  /* Durable: a fresh handle reads the same. */
  db = tu_open(path, NULL);
  s = stock_of(db, a);
  ck_assert_int_eq(s.total, 15);
  ck_assert_int_eq(s.version, 1);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(product_get_reads_name_price_and_stock) {
  char *path = tu_db_path("product_get");
  sc_db *db = tu_open(path, NULL);
  sc_id a = 0, b = 0;
  ck_assert_sc(sc_product_create(db, "Caf\xc3\xa9 cup", 1500, 10, &a), SC_OK);
  ck_assert_sc(sc_product_create(db, "plate", 0, 0, &b), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 100000, NULL), SC_OK);
  sc_id order;
  ck_assert_sc(checkout1(db, 1, a, 3, NULL, &order), SC_OK);
  sc_product p;
  ck_assert_sc(sc_product_get(db, a, &p), SC_OK);
  ck_assert_str_eq(p.name, "Caf\xc3\xa9 cup");
  ck_assert_int_eq(p.price, 1500);
  ck_assert_int_eq(p.stock.total, 10);
  ck_assert_int_eq(p.stock.reserved, 3);
  ck_assert_int_eq(p.stock.available, 7);
  ck_assert_int_eq(p.stock.version, stock_of(db, a).version);
  ck_assert_sc(sc_product_get(db, b, &p), SC_OK);
  ck_assert_str_eq(p.name, "plate");
  ck_assert_int_eq(p.price, 0);
  ck_assert_int_eq(p.stock.total, 0);
  /* The longest name fits whole, with its NUL. */
  char longest[SC_NAME_MAX + 1];
  memset(longest, 'n', SC_NAME_MAX);
  longest[SC_NAME_MAX] = '\0';
  sc_id c;
  ck_assert_sc(sc_product_create(db, longest, 1, 1, &c), SC_OK);
  ck_assert_sc(sc_product_get(db, c, &p), SC_OK);
  ck_assert_str_eq(p.name, longest);
  /* Unknown: SC_NOT_FOUND, out untouched. */
  memset(&p, 0x5a, sizeof p);
  ck_assert_sc(sc_product_get(db, c + 100, &p), SC_NOT_FOUND);
  ck_assert_int_eq((unsigned char)p.name[0], 0x5a);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "not found"));
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(product_get_cuts_a_hand_edited_long_name_at_a_character) {
  char *path = tu_db_path("product_long");
  sc_db *db = tu_open(path, NULL);
  sc_id a = make_product(db, 1, 1);
  sc_close(db);
  /* 254 ASCII bytes and a 3-byte character: 257 bytes, edited in by hand
   * (the library refuses names past SC_NAME_MAX). */
  char sql[512];
  snprintf(sql, sizeof sql,
           tu_pg_mode()
               ? "UPDATE sc_product SET name = repeat('x', 254) ||"
                 " chr(8364) WHERE id = %lld"
               : "UPDATE sc_product SET name = printf('%%.254c', 'x') ||"
                 " char(8364) WHERE id = %lld",
           (long long)a);
  tu_exec(path, sql);
  db = tu_open(path, NULL);
  sc_product p;
  ck_assert_sc(sc_product_get(db, a, &p), SC_OK);
  ck_assert_uint_eq(strlen(p.name), 254); /* the euro sign would not fit */
  ck_assert_int_eq(p.name[253], 'x');
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(bad_input_changes_nothing) {
  char *path = tu_db_path("stock-bad");
  sc_db *db = tu_open(path, NULL);
  sc_id p = make_product(db, 100, 10);
  sc_id out = 0;
  ck_assert_sc(sc_product_create(NULL, "x", 1, 1, &out), SC_MISUSE);
  ck_assert_sc(sc_product_create(db, "x", 1, 1, NULL), SC_MISUSE);
  ck_assert_sc(sc_product_create(db, NULL, 1, 1, &out), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "name"));
  ck_assert_sc(sc_product_create(db, "", 1, 1, &out), SC_INVALID);
  ck_assert_sc(sc_product_create(db, "x", -1, 1, &out), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "price"));
  ck_assert_sc(sc_product_create(db, "x", 1, -1, &out), SC_INVALID);
  ck_assert_int_eq(out, 0);

  ck_assert_sc(sc_product_restock(NULL, p, 1), SC_MISUSE);
  ck_assert_sc(sc_product_restock(db, p, 0), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "qty"));
  ck_assert_sc(sc_product_restock(db, p, -4), SC_INVALID);
  ck_assert_sc(sc_product_restock(db, 999, 1), SC_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "999"));
  ck_assert_sc(sc_product_restock(db, 0, 1), SC_NOT_FOUND);
  ck_assert_sc(sc_product_restock(db, p, INT64_MAX), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "overflow"));

  sc_stock s = {.total = -42};
  ck_assert_sc(sc_stock_get(db, 999, &s), SC_NOT_FOUND);
  ck_assert_int_eq(s.total, -42); /* untouched on failure */
  ck_assert_sc(sc_stock_get(db, p, NULL), SC_MISUSE);
  ck_assert_sc(sc_stock_get(NULL, p, &s), SC_MISUSE);

  s = stock_of(db, p);
  ck_assert_int_eq(s.total, 10);
  ck_assert_int_eq(s.version, 0);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_product"), 1);
  tu_remove_db(path);
}
END_TEST

/* ---- force increment ---------------------------------------------------- */

START_TEST(every_reservation_and_release_bumps_the_version) {
  char *path = tu_db_path("force");
  sc_options o;
  sc_options_init(&o);
  tu_clock clock;
  tu_use_clock(&o, &clock, 1000000);
  sc_db *db = tu_open(path, &o);
  sc_id p = make_product(db, 10, 100);
  ck_assert_sc(sc_account_deposit(db, 1, 100000, NULL), SC_OK);
  sc_id o1, o2, o3, o4;
  ck_assert_sc(checkout1(db, 1, p, 5, NULL, &o1), SC_OK); /* reserve */
  ck_assert_int_eq(stock_of(db, p).version, 1);
  ck_assert_sc(checkout1(db, 1, p, 1, NULL, &o2), SC_OK); /* reserve */
  ck_assert_int_eq(stock_of(db, p).version, 2);
  ck_assert_sc(sc_order_cancel(db, o1), SC_OK); /* release */
  ck_assert_int_eq(stock_of(db, p).version, 3);
  ck_assert_sc(sc_order_cancel(db, o1), SC_OK); /* nothing released */
  ck_assert_int_eq(stock_of(db, p).version, 3);
  ck_assert_sc(sc_product_restock(db, p, 1), SC_OK); /* restock */
  ck_assert_int_eq(stock_of(db, p).version, 4);
  /* Paying leaves what is available unchanged, so the version stays. */
  ck_assert_sc(sc_order_pay(db, o2), SC_OK);
  sc_stock s = stock_of(db, p);
  ck_assert_int_eq(s.version, 4);
  ck_assert_int_eq(s.total, 100);
  ck_assert_int_eq(s.reserved, 0);
  /* Expiry is a release. */
  ck_assert_sc(checkout1(db, 1, p, 2, NULL, &o3), SC_OK);
  ck_assert_sc(checkout1(db, 1, p, 2, NULL, &o4), SC_OK);
  ck_assert_int_eq(stock_of(db, p).version, 6);
  atomic_store(&clock.now_ms, 1000000 + 24LL * 3600 * 1000);
  int expired = 0;
  ck_assert_sc(sc_orders_expire_due(db, &expired), SC_OK);
  ck_assert_int_eq(expired, 2);
  s = stock_of(db, p);
  ck_assert_int_eq(s.version, 8);
  ck_assert_int_eq(s.reserved, 0);
  /* A refused reservation changes nothing, the version included. */
  ck_assert_sc(checkout1(db, 1, p, 1000, NULL, &o3), SC_OUT_OF_STOCK);
  ck_assert_int_eq(stock_of(db, p).version, 8);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(a_stale_expected_version_is_refused) {
  char *path = tu_db_path("stale");
  sc_db *db = tu_open(path, NULL);
  sc_id p = make_product(db, 10, 100);
  sc_id q = make_product(db, 20, 100);
  ck_assert_sc(sc_account_deposit(db, 1, 100000, NULL), SC_OK);
  sc_id order = 0;
  int64_t v0 = stock_of(db, p).version;
  ck_assert_sc(checkout1(db, 1, p, 1, &v0, &order), SC_OK);
  ck_assert_int_eq(stock_of(db, p).version, v0 + 1);
  /* v0 is stale now. */
  sc_id refused = 0;
  ck_assert_sc(checkout1(db, 1, p, 1, &v0, &refused), SC_CONFLICT);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "version"));
  ck_assert_int_eq(refused, 0);
  sc_stock s = stock_of(db, p);
  ck_assert_int_eq(s.version, v0 + 1);
  ck_assert_int_eq(s.reserved, 1);
  /* All or nothing: lines are reserved in product order, so p's line is
   * reserved (and its version bumped) before q's stale version is found;
   * the refusal must undo p's reservation and bump. */
  int64_t q0 = stock_of(db, q).version;
  ck_assert_sc(sc_product_restock(db, q, 1), SC_OK); /* q0 is stale now */
  sc_line lines[2] = {{q, 3}, {p, 2}};
  int64_t versions[2] = {q0, v0 + 1};
  sc_checkout_req req = {
      .user = 1, .lines = lines, .n_lines = 2, .expected_versions = versions};
  ck_assert_sc(sc_checkout(db, &req, &refused), SC_CONFLICT);
  ck_assert_int_eq(refused, 0);
  ck_assert_int_eq(stock_of(db, q).reserved, 0);
  ck_assert_int_eq(stock_of(db, q).version, q0 + 1);
  ck_assert_int_eq(stock_of(db, p).reserved, 1);
  ck_assert_int_eq(stock_of(db, p).version, v0 + 1);
  versions[0] = q0 + 1; /* fresh */
  ck_assert_sc(sc_checkout(db, &req, &refused), SC_OK);
  ck_assert_int_eq(stock_of(db, q).version, q0 + 2);
  ck_assert_int_eq(stock_of(db, p).version, v0 + 2);
  sc_account a;
  ck_assert_sc(sc_account_get(db, 1, &a), SC_OK);
  ck_assert_int_eq(a.held, 10 + 3 * 20 + 2 * 10);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* Optimistic callers that all read the same version: exactly one wins. */
typedef struct stale_race {
  sc_db *db;
  sc_id product;
  int64_t version;
  atomic_int ok, conflict, other;
} stale_race;

static void checkout_at_version(int i, void *ud) {
  stale_race *r = ud;
  sc_id order;
  int rc = checkout1(r->db, i + 1, r->product, 1, &r->version, &order);
  atomic_fetch_add(rc == SC_OK         ? &r->ok
                   : rc == SC_CONFLICT ? &r->conflict
                                       : &r->other,
                   1);
}

START_TEST(one_of_32_optimistic_callers_wins) {
  char *path = tu_db_path("optimistic");
  sc_db *db = tu_open(path, NULL);
  stale_race r = {.db = db, .product = make_product(db, 10, 1000)};
  for (int u = 1; u <= 32; u++) {
    ck_assert_sc(sc_account_deposit(db, u, 1000, NULL), SC_OK);
  }
  r.version = stock_of(db, r.product).version;
  tu_race(32, checkout_at_version, &r);
  ck_assert_int_eq(atomic_load(&r.ok), 1);
  ck_assert_int_eq(atomic_load(&r.conflict), 31);
  ck_assert_int_eq(atomic_load(&r.other), 0);
  sc_stock s = stock_of(db, r.product);
  ck_assert_int_eq(s.reserved, 1);
  ck_assert_int_eq(s.version, r.version + 1);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

Suite *stock_suite(void) {
  Suite *s = suite_create("stock");
  TCase *tc = tu_tcase("stock");
  tcase_add_test(tc, create_restock_and_read);
  tcase_add_test(tc, product_get_reads_name_price_and_stock);
  tcase_add_test(tc, product_get_cuts_a_hand_edited_long_name_at_a_character);
  tcase_add_test(tc, bad_input_changes_nothing);
  tcase_add_test(tc, every_reservation_and_release_bumps_the_version);
  tcase_add_test(tc, a_stale_expected_version_is_refused);
  tcase_add_test(tc, one_of_32_optimistic_callers_wins);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(stock_suite());
}
