/* Repair: a clean database needs nothing; a database corrupted on purpose
 * (coupons past the cap, counters off, orphan holds) is listed by a dry run
 * that changes nothing, then repaired back to a passing sc_verify; a change
 * a constraint refuses is reported, not hidden. */
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

/* Damages the database by hand. On PostgreSQL the session skips foreign
 * keys (as SQLite does unless asked), so that rows can name orders that do
 * not exist. */
static void exec_sql(const char *path, const char *sql) {
  if (tu_pg_mode()) {
    char *all = malloc(strlen(sql) + 64);
    ck_assert_ptr_nonnull(all);
    sprintf(all, "SET session_replication_role = replica; %s", sql);
    tu_exec(path, all);
    free(all);
    return;
  }
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
  char *err = NULL;
  int rc = sqlite3_exec(h, sql, NULL, NULL, &err);
  ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, err ? err : "");
  sqlite3_close(h);
}

/* Sets a policy's counts by hand: issued_count is a column on SQLite; on
 * PostgreSQL it is the sum of the policy's slots, laid out again here as
 * the library lays them out. */
static void set_counts(const char *path, sc_id policy, int64_t issued,
                       int64_t max_count) {
  char sql[512];
  if (tu_pg_mode()) {
    snprintf(sql, sizeof sql,
             "UPDATE sc_coupon_policy SET max_count = %lld WHERE id = %lld;"
             "DELETE FROM sc_coupon_slot WHERE policy_id = %lld;"
             "SELECT sc_slots_fill(%lld, %lld, %lld)",
             (long long)max_count, (long long)policy, (long long)policy,
             (long long)policy, (long long)max_count, (long long)issued);
  } else {
    snprintf(sql, sizeof sql,
             "UPDATE sc_coupon_policy SET issued_count = %lld,"
             " max_count = %lld WHERE id = %lld",
             (long long)issued, (long long)max_count, (long long)policy);
  }
  exec_sql(path, sql);
}

/* Every row of the tables repair may touch, as one string. */
static char *snapshot(const char *path) {
  static const char *const SQL[] = {
      "SELECT * FROM sc_coupon ORDER BY 1, 2",
      "SELECT * FROM sc_coupon_policy ORDER BY 1, 2",
      "SELECT * FROM sc_product ORDER BY 1, 2",
      "SELECT * FROM sc_account ORDER BY 1, 2",
      "SELECT * FROM sc_order_line ORDER BY 1, 2",
      "SELECT * FROM sc_order ORDER BY 1, 2",
      "SELECT * FROM sc_ledger ORDER BY 1, 2"};
  return tu_rows(path, SQL, sizeof SQL / sizeof *SQL);
}

typedef struct shop {
  char *path;
  sc_id policy, product, order;
} shop;

/* A small consistent shop: 5 coupons of a 5-coupon policy, one PENDING
 * order of 2 units by user 1. */
static shop make_shop(const char *tag) {
  shop s = {.path = tu_db_path(tag)};
  sc_db *db = tu_open(s.path, NULL);
  sc_coupon_policy_spec spec = {.name = "r", .max_count = 5};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &s.policy), SC_OK);
  for (int u = 1; u <= 5; u++) {
    ck_assert_sc(sc_coupon_issue(db, s.policy, u, NULL), SC_OK);
  }
  ck_assert_sc(sc_product_create(db, "p", 1000, 10, &s.product), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 10000, NULL), SC_OK);
  sc_line line = {.product = s.product, .qty = 2};
  sc_checkout_req req = {.user = 1, .lines = &line, .n_lines = 1};
  ck_assert_sc(sc_checkout(db, &req, &s.order), SC_OK);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  return s;
}

START_TEST(a_clean_database_needs_nothing) {
  shop s = make_shop("repair-clean");
  sc_db *db = tu_open(s.path, NULL);
  char *report = NULL;
  int changes = -1;
  ck_assert_sc(sc_repair(db, 0, &changes, &report), SC_OK);
  ck_assert_int_eq(changes, 0);
  ck_assert_str_eq(report, "nothing to repair\n");
  sc_free(report);
  ck_assert_sc(sc_repair(db, 1, NULL, NULL), SC_OK);
  ck_assert_sc(sc_repair(NULL, 0, NULL, NULL), SC_MISUSE);
  sc_close(db);
  tu_remove_db(s.path);
}
END_TEST

static void corrupt(const shop *s) {
  char sql[1024];
  snprintf(sql, sizeof sql,
           /* three coupons past the cap, issued last */
           "INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms)"
           " VALUES(%lld, 6, 9e15), (%lld, 7, 9e15 + 1), (%lld, 8, 9e15 + 2);"
           /* counters off by some */
           "UPDATE sc_product SET reserved = reserved + 3 WHERE id = %lld;"
           "UPDATE sc_account SET held = held + 500 WHERE user_id = 1;"
           /* holds of orders that do not exist */
           "UPDATE sc_coupon SET status = 2, order_id = 777 WHERE user_id = 1;"
           "INSERT INTO sc_order_line(order_id, product_id, qty, price)"
           " VALUES(999, %lld, 4, 1000);",
           (long long)s->policy, (long long)s->policy, (long long)s->policy,
           (long long)s->product, (long long)s->product);
  exec_sql(s->path, sql);
  set_counts(s->path, s->policy, 3, 5);
}

static void assert_has(const char *report, const char *line) {
  ck_assert_msg(strstr(report, line) != NULL, "'%s' not in:\n%s", line, report);
}

START_TEST(repair_lists_then_fixes_a_corrupted_database) {
  shop s = make_shop("repair-corrupt");
  corrupt(&s);
  sc_db *db = tu_open(s.path, NULL);
  ck_assert_sc(sc_verify(db, NULL), SC_CORRUPT);
  /* A dry run lists every change and makes none. */
  char *before = snapshot(s.path);
  char *dry = NULL;
  int dry_changes = 0;
  ck_assert_sc(sc_repair(db, 1, &dry_changes, &dry), SC_OK);
  char *after = snapshot(s.path);
  ck_assert_str_eq(before, after);
  ck_assert_sc(sc_verify(db, NULL), SC_CORRUPT);
  /* One orphan line set, one coupon released, three revoked,
   * issued_count, reserved, held: 8 changes. */
  ck_assert_int_eq(dry_changes, 8);
  char *report = NULL;
  int changes = 0;
  ck_assert_sc(sc_repair(db, 0, &changes, &report), SC_OK);
  ck_assert_str_eq(report, dry); /* the dry run said exactly this */
  ck_assert_int_eq(changes, 8);
  assert_has(report,
             "order 999: removed the lines of an order that no "
             "longer exists\n");
  assert_has(report, "released from order 777, which no longer exists\n");
  for (int u = 6; u <= 8; u++) {
    char line[64];
    snprintf(line, sizeof line, "of user %d, issued at", u);
    assert_has(report, line);
  }
  char line[128];
  snprintf(line, sizeof line, "policy %lld: issued_count 3 -> 5\n",
           (long long)s.policy);
  assert_has(report, line);
  snprintf(line, sizeof line, "product %lld: reserved 5 -> 2\n",
           (long long)s.product);
  assert_has(report, line);
  assert_has(report, "user 1: balance 10000 -> 10000, held 2500 -> 2000\n");
  tu_assert_verify(db);
  /* The oldest coupons stay: users 1..5 still hold theirs. */
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, s.policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, 5);
  ck_assert_int_eq(tu_count(s.path,
                            "SELECT count(*) FROM sc_coupon"
                            " WHERE user_id BETWEEN 1 AND 5"),
                   5);
  /* Repaired once, nothing is left to do. */
  sc_free(report);
  ck_assert_sc(sc_repair(db, 0, &changes, &report), SC_OK);
  ck_assert_str_eq(report, "nothing to repair\n");
  sc_free(report);
  sc_free(dry);
  free(before);
  free(after);
  sc_close(db);
  tu_remove_db(s.path);
}
END_TEST

START_TEST(a_refused_change_is_reported) {
  shop s = make_shop("repair-refused");
  /* The ledger says 100 while a PENDING order holds 2,000: the balance
   * cannot be recomputed without breaking held <= balance. */
  exec_sql(s.path,
           "UPDATE sc_ledger SET amount = 100 WHERE user_id = 1;"
           "UPDATE sc_product SET reserved = 0;");
  sc_db *db = tu_open(s.path, NULL);
  char *report = NULL;
  int changes = -1;
  ck_assert_sc(sc_repair(db, 0, &changes, &report), SC_CORRUPT);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "could not be repaired"));
  ck_assert_int_eq(changes, 1); /* the product was repaired all the same */
  assert_has(report, "reserved 0 -> 2\n");
  assert_has(report, "cannot repair: user 1: balance 10000 -> 100");
  sc_free(report);
  ck_assert_int_eq(tu_count(s.path, "SELECT reserved FROM sc_product"), 2);
  ck_assert_sc(sc_verify(db, NULL), SC_CORRUPT);
  sc_close(db);
  tu_remove_db(s.path);
}
END_TEST

/* Coupons issued the ordinary way (each with its event) but past a cap that
 * was lowered behind the library's back: the newest go, with their events,
 * and the events of the others stay. */
START_TEST(revoked_coupons_take_their_events_along) {
  shop s = make_shop("repair-events");
  set_counts(s.path, s.policy, 3, 3);
  sc_db *db = tu_open(s.path, NULL);
  int changes = 0;
  char *report = NULL;
  ck_assert_sc(sc_repair(db, 0, &changes, &report), SC_OK);
  ck_assert_int_eq(changes, 2); /* issued_count already says 3 */
  assert_has(report, "of user 5, issued at");
  assert_has(report, "of user 4, issued at");
  sc_free(report);
  tu_assert_verify(db);
  ck_assert_int_eq(tu_count(s.path,
                            "SELECT count(*) FROM sc_outbox"
                            " WHERE agg_kind = 1"),
                   3);
  sc_close(db);
  tu_remove_db(s.path);
}
END_TEST

/* Ids are never reused: after repair revokes the newest coupon (and its
 * event), the next coupon and its event get new ids, so a consumer that
 * deduplicates by event id does not drop the new event. */
START_TEST(ids_of_revoked_coupons_are_not_reused) {
  char *path = tu_db_path("repair-ids");
  sc_db *db = tu_open(path, NULL);
  sc_coupon_policy_spec spec = {.name = "r", .max_count = 3};
  sc_id policy = 0, coupon = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  for (int u = 1; u <= 3; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, &coupon), SC_OK);
  }
  ck_assert_int_eq(coupon, 3);
  /* The newest coupon and the newest event: coupon 3's. */
  ck_assert_int_eq(tu_count(path, "SELECT max(id) FROM sc_outbox"),
                   tu_count(path,
                            "SELECT id FROM sc_outbox"
                            " WHERE agg_kind = 1 AND agg_id = 3"));
  int64_t newest_event = tu_count(path, "SELECT max(id) FROM sc_outbox");
  ck_assert_sc(sc_close(db), SC_OK);
  set_counts(path, policy, 2, 2);
  db = tu_open(path, NULL);
  char *report = NULL;
  ck_assert_sc(sc_repair(db, 0, NULL, &report), SC_OK);
  assert_has(report, "revoked coupon 3 of user 3");
  sc_free(report);
  ck_assert_int_eq(tu_count(path, "SELECT max(id) FROM sc_outbox"),
                   newest_event - 1);
  ck_assert_sc(sc_close(db), SC_OK);
  set_counts(path, policy, 2, 3);
  db = tu_open(path, NULL);
  ck_assert_sc(sc_coupon_issue(db, policy, 9, &coupon), SC_OK);
  ck_assert_int_eq(coupon, 4);
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT id FROM sc_outbox WHERE agg_kind = 1 AND agg_id = %lld",
           (long long)coupon);
  ck_assert_int_eq(tu_count(path, sql), newest_event + 1);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* A coupon used by an order that was deleted by hand stays used: repair
 * releases only coupons held for orders that are gone or closed, so it can
 * never hand out a second discount. */
START_TEST(a_used_coupon_of_a_deleted_order_stays_used) {
  shop s = make_shop("repair-used");
  sc_db *db = tu_open(s.path, NULL);
  sc_id coupon = 1; /* user 1's, issued first */
  sc_line line = {.product = s.product, .qty = 1};
  sc_checkout_req req = {
      .user = 1, .lines = &line, .n_lines = 1, .coupon = coupon};
  sc_id order = 0;
  ck_assert_sc(sc_checkout(db, &req, &order), SC_OK);
  ck_assert_sc(sc_order_pay(db, order), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  char sql[256];
  snprintf(sql, sizeof sql, "DELETE FROM sc_order WHERE id = %lld",
           (long long)order);
  exec_sql(s.path, sql);
  db = tu_open(s.path, NULL);
  ck_assert_sc(sc_repair(db, 0, NULL, NULL), SC_OK);
  ck_assert_int_eq(tu_count(s.path,
                            "SELECT count(*) FROM sc_coupon"
                            " WHERE id = 1 AND status = 3"),
                   1);
  sc_id again = 0;
  ck_assert_sc(sc_checkout(db, &req, &again), SC_COUPON_UNAVAILABLE);
  ck_assert_int_eq(again, 0);
  ck_assert_int_eq(tu_count(s.path,
                            "SELECT count(*) FROM sc_coupon"
                            " WHERE id = 1 AND status = 3"),
                   1);
  sc_close(db);
  tu_remove_db(s.path);
}
END_TEST

/* PostgreSQL: another host's issue is between its coupon INSERT and the
 * UPDATE of its slot when the repair starts. The repair takes the slots'
 * table, then waits for the coupons'; the issue's UPDATE then waits for
 * the repair: a cycle. The repair must give way (short lock wait, roll
 * back, try again) so that the host's batch goes on at once, not after
 * PostgreSQL's deadlock_timeout, and the repair then succeeds. */
typedef struct crossing {
  const char *path;
  sc_db *db;
  int rc;
} crossing;

static void *repair_thread(void *arg) {
  crossing *c = arg;
  c->rc = sc_repair(c->db, 0, NULL, NULL);
  return NULL;
}

static double seconds_since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void pg_ok(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK ||
                    PQresultStatus(r) == PGRES_TUPLES_OK,
                "%s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
}

/* Another host's issue under way on host's connection: its policy's first
 * slot held, its coupon inserted, the slot's UPDATE not yet sent. */
static void issue_under_way(PGconn *host, sc_id policy) {
  char sql[256];
  pg_ok(host, "BEGIN");
  snprintf(sql, sizeof sql,
           "SELECT * FROM sc_coupon_slot WHERE policy_id = %lld AND slot = 0"
           " FOR NO KEY UPDATE",
           (long long)policy);
  pg_ok(host, sql);
  snprintf(sql, sizeof sql,
           "INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms)"
           " VALUES(%lld, 99, 1)",
           (long long)policy);
  pg_ok(host, sql);
}

/* Polls (up to 5 s) until the handle of path has a backend waiting on a
 * LOCK TABLE (its repair, mid-way), evaluating what over those backends;
 * returns how many there were (0: none came). */
static int64_t on_waiting_repair(const char *path, const char *what) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM (SELECT %s FROM pg_stat_activity"
           " WHERE wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%%'"
           " AND application_name = 'libshopcore/%s') AS waiting",
           what, strstr(path, "schema=") + 7);
  int64_t n = 0;
  for (int i = 0; i < 500 && (n = tu_count(path, sql)) == 0; i++) {
    struct timespec pause = {0, 10 * 1000000};
    nanosleep(&pause, NULL);
  }
  return n;
}

START_TEST(a_repair_gives_way_to_another_host_s_batch) {
  shop s = make_shop("repair-crossing");
  sc_db *db = tu_open(s.path, NULL);
  PGconn *host = tu_pg_connect(s.path);
  char sql[256];
  issue_under_way(host, s.policy);
  crossing c = {.path = s.path, .db = db, .rc = -1};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, repair_thread, &c), 0);
  /* Until the repair waits on a lock (it holds the slots' table by then:
   * LOCK takes the tables in order). */
  on_waiting_repair(s.path, "pid");
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  snprintf(sql, sizeof sql,
           "UPDATE sc_coupon_slot SET quota = quota + 1, issued = issued + 1"
           " WHERE policy_id = %lld AND slot = 0",
           (long long)s.policy);
  pg_ok(host, sql); /* a deadlock error here fails the test */
  double waited = seconds_since(&t0);
  /* The host's hand-made issue has no event: it is taken back, and the
   * repair then finds the shop as it was. */
  pg_ok(host, "ROLLBACK");
  PQfinish(host);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  ck_assert_sc(c.rc, SC_OK);
  /* PostgreSQL breaks a deadlock after deadlock_timeout (1 s); giving way
   * lets the batch go after the repair's lock wait (100 ms). */
  ck_assert_msg(waited < 0.8, "the host's batch waited %.3f s", waited);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(s.path);
}
END_TEST

/* PostgreSQL: the repair's connection is cut while it waits for another
 * host's transaction. The call says so (SC_AMBIGUOUS: whether a COMMIT sent
 * took effect cannot be known from the host), nothing was changed, and the
 * handle connects again: the next repair does the work. */
typedef struct cut_repair {
  sc_db *db;
  int rc;
  char msg[512];
} cut_repair;

static void *cut_repair_thread(void *arg) {
  cut_repair *c = arg;
  c->rc = sc_repair(c->db, 0, NULL, NULL);
  snprintf(c->msg, sizeof c->msg, "%s", sc_errmsg(c->db));
  return NULL;
}

START_TEST(a_repair_that_loses_its_connection_says_so_and_changes_nothing) {
  shop s = make_shop("repair-cut");
  corrupt(&s);
  char *before = snapshot(s.path);
  sc_db *db = tu_open(s.path, NULL);
  PGconn *host = tu_pg_connect(s.path);
  issue_under_way(host, s.policy);
  cut_repair c = {.db = db, .rc = -1};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, cut_repair_thread, &c), 0);
  ck_assert_int_eq(on_waiting_repair(s.path, "pg_terminate_backend(pid)"), 1);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  ck_assert_sc(c.rc, SC_AMBIGUOUS);
  ck_assert_msg(strstr(c.msg, "connection lost") != NULL, "%s", c.msg);
  pg_ok(host, "ROLLBACK");
  PQfinish(host);
  char *after = snapshot(s.path);
  ck_assert_str_eq(before, after);
  ck_assert_sc(sc_verify(db, NULL), SC_CORRUPT);
  int changes = 0;
  ck_assert_sc(sc_repair(db, 0, &changes, NULL), SC_OK);
  ck_assert_int_eq(changes, 8);
  tu_assert_verify(db);
  free(before);
  free(after);
  sc_close(db);
  tu_remove_db(s.path);
}
END_TEST

Suite *repair_suite(void) {
  Suite *s = suite_create("repair");
  TCase *tc = tu_tcase("repair");
  tcase_add_test(tc, a_clean_database_needs_nothing);
  tcase_add_test(tc, repair_lists_then_fixes_a_corrupted_database);
  tcase_add_test(tc, a_refused_change_is_reported);
  tcase_add_test(tc, revoked_coupons_take_their_events_along);
  tcase_add_test(tc, a_used_coupon_of_a_deleted_order_stays_used);
  tcase_add_test(tc, ids_of_revoked_coupons_are_not_reused);
  if (tu_pg_mode()) {
    /* Hosts sharing one database: PostgreSQL only. */
    tcase_add_test(tc, a_repair_gives_way_to_another_host_s_batch);
    tcase_add_test(
        tc, a_repair_that_loses_its_connection_says_so_and_changes_nothing);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(repair_suite());
}
