/* Accounts: deposits and their ledger and events, idempotent deposits (also
 * when replays race), reading, and bad input. Holds and payments are
 * exercised through orders in check_order. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

static sc_account account_of(sc_db *db, sc_id user) {
  sc_account a;
  ck_assert_sc(sc_account_get(db, user, &a), SC_OK);
  ck_assert_int_eq(a.available, a.balance - a.held);
  return a;
}

START_TEST(deposits_credit_the_ledger_and_emit_events) {
  char *path = tu_db_path("deposit");
  sc_db *db = tu_open(path, NULL);
  sc_account a = {.balance = -1};
  ck_assert_sc(sc_account_get(db, 7, &a), SC_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "7"));
  ck_assert_int_eq(a.balance, -1); /* untouched on failure */
  ck_assert_sc(sc_account_deposit(db, 7, 1000, NULL), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 7, 250, NULL), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 8, 5, NULL), SC_OK);
  a = account_of(db, 7);
  ck_assert_int_eq(a.balance, 1250);
  ck_assert_int_eq(a.held, 0);
  ck_assert_int_eq(a.available, 1250);
  ck_assert_int_eq(account_of(db, 8).balance, 5);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_ledger WHERE"
                            " user_id = 7 AND kind = 1"),
                   2);
  ck_assert_int_eq(
      tu_count(path, "SELECT sum(amount) FROM sc_ledger WHERE user_id = 7"),
      1250);
  /* One DEPOSIT event per deposit, aggregated on the account (user). */
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_outbox WHERE"
                            " type = 6 AND agg_id = 7"),
                   2);
  ck_assert_int_eq(tu_count(path,
                            "SELECT max(seq) FROM sc_outbox WHERE"
                            " type = 6 AND agg_id = 7"),
                   2);
  tu_remove_db(path);
}
END_TEST

START_TEST(a_replayed_deposit_changes_nothing) {
  char *path = tu_db_path("deposit-key");
  sc_db *db = tu_open(path, NULL);
  ck_assert_sc(sc_account_deposit(db, 1, 500, "pay-1"), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 500, "pay-1"), SC_OK);
  ck_assert_int_eq(account_of(db, 1).balance, 500);
  /* The same key with another amount or user is a different request. */
  ck_assert_sc(sc_account_deposit(db, 1, 501, "pay-1"),
               SC_IDEMPOTENCY_MISMATCH);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "pay-1"));
  ck_assert_sc(sc_account_deposit(db, 2, 500, "pay-1"),
               SC_IDEMPOTENCY_MISMATCH);
  ck_assert_sc(sc_account_get(db, 2, &(sc_account){0}), SC_NOT_FOUND);
  /* Another key is another deposit; no key is never deduplicated. */
  ck_assert_sc(sc_account_deposit(db, 1, 500, "pay-2"), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 500, NULL), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 500, NULL), SC_OK);
  ck_assert_int_eq(account_of(db, 1).balance, 2000);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_ledger"), 4);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 4);
  tu_remove_db(path);
}
END_TEST

typedef struct deposit_race {
  sc_db *db;
  atomic_int ok, other;
} deposit_race;

static void deposit_same_key(int i, void *ud) {
  (void)i;
  deposit_race *r = ud;
  int rc = sc_account_deposit(r->db, 3, 700, "topup-3");
  atomic_fetch_add(rc == SC_OK ? &r->ok : &r->other, 1);
}

START_TEST(racing_replays_deposit_once) {
  char *path = tu_db_path("deposit-race");
  sc_db *db = tu_open(path, NULL);
  deposit_race r = {.db = db};
  tu_race(32, deposit_same_key, &r);
  ck_assert_int_eq(atomic_load(&r.ok), 32);
  ck_assert_int_eq(atomic_load(&r.other), 0);
  ck_assert_int_eq(account_of(db, 3).balance, 700);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_ledger"), 1);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 1);
  tu_remove_db(path);
}
END_TEST

START_TEST(bad_input_changes_nothing) {
  char *path = tu_db_path("deposit-bad");
  sc_db *db = tu_open(path, NULL);
  ck_assert_sc(sc_account_deposit(db, 1, INT64_MAX - 10, NULL), SC_OK);
  struct {
    sc_id user;
    int64_t amount;
    const char *key;
    int want;
    const char *in_msg;
  } cases[] = {
      {0, 10, NULL, SC_INVALID, "user"},
      {-1, 10, NULL, SC_INVALID, "user"},
      {1, 0, NULL, SC_INVALID, "amount"},
      {1, -10, NULL, SC_INVALID, "amount"},
      {1, 10, "", SC_INVALID, "key"},
      {1, 11, NULL, SC_INVALID, "overflow"},
      {1, INT64_MAX, "k", SC_INVALID, "overflow"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ck_assert_sc(
        sc_account_deposit(db, cases[i].user, cases[i].amount, cases[i].key),
        cases[i].want);
    ck_assert_msg(strstr(sc_errmsg(db), cases[i].in_msg) != NULL,
                  "case %zu: \"%s\" lacks \"%s\"", i, sc_errmsg(db),
                  cases[i].in_msg);
    ck_assert_int_eq(account_of(db, 1).balance, INT64_MAX - 10);
  }
  ck_assert_sc(sc_account_deposit(NULL, 1, 10, NULL), SC_MISUSE);
  ck_assert_sc(sc_account_get(db, 1, NULL), SC_MISUSE);
  ck_assert_sc(sc_account_get(NULL, 1, &(sc_account){0}), SC_MISUSE);
  /* The refused keyed deposit recorded nothing: the key is still free. */
  ck_assert_sc(sc_account_deposit(db, 2, 10, "k"), SC_OK);
  ck_assert_int_eq(account_of(db, 1).balance, INT64_MAX - 10);
  ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK); /* exactly max */
  ck_assert_int_eq(account_of(db, 1).balance, INT64_MAX);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_ledger"), 3);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 3);
  tu_remove_db(path);
}
END_TEST

Suite *account_suite(void) {
  Suite *s = suite_create("account");
  TCase *tc = tu_tcase("account");
  tcase_add_test(tc, deposits_credit_the_ledger_and_emit_events);
  tcase_add_test(tc, a_replayed_deposit_changes_nothing);
  tcase_add_test(tc, racing_replays_deposit_once);
  tcase_add_test(tc, bad_input_changes_nothing);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(account_suite());
}
