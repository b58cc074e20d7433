/* Coupons: the cap under thread and process races, per-user limits, the
 * pause switch, the validity window, bad input. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

static sc_id make_policy(sc_db *db, int64_t max_count, int32_t limit) {
  sc_coupon_policy_spec spec = {
      .name = "flash", .max_count = max_count, .per_user_limit = limit};
  sc_id id = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &id), SC_OK);
  ck_assert_int_gt(id, 0);
  return id;
}

/* ---- the cap under a thread race ---------------------------------------- */

typedef struct issue_race {
  sc_db *db;
  sc_id policy;
  int users_per_thread; /* distinct users per thread */
  atomic_int issued, sold_out, limit, paused, other;
} issue_race;

static void count_result(issue_race *r, int rc) {
  switch (rc) {
    case SC_OK:
      atomic_fetch_add(&r->issued, 1);
      break;
    case SC_SOLD_OUT:
      atomic_fetch_add(&r->sold_out, 1);
      break;
    case SC_LIMIT_REACHED:
      atomic_fetch_add(&r->limit, 1);
      break;
    case SC_PAUSED:
      atomic_fetch_add(&r->paused, 1);
      break;
    default:
      atomic_fetch_add(&r->other, 1);
  }
}

/* Each thread issues to its own users until the policy says sold out. */
static void issue_until_sold_out(int t, void *ud) {
  issue_race *r = ud;
  for (int64_t n = 0;; n++) {
    sc_id user = (sc_id)t * 1000000 + n + 1;
    int rc = sc_coupon_issue(r->db, r->policy, user, NULL);
    count_result(r, rc);
    if (rc == SC_SOLD_OUT || rc == SC_BUSY || rc == SC_CLOSED) return;
    if (rc == SC_PAUSED) usleep(200);
  }
}

START_TEST(cap_holds_under_64_threads) {
  char *path = tu_db_path("cap");
  sc_db *db = tu_open(path, NULL);
  issue_race r = {.db = db, .policy = make_policy(db, 1000, 1)};
  tu_race(64, issue_until_sold_out, &r);
  ck_assert_int_eq(atomic_load(&r.issued), 1000);
  ck_assert_int_eq(atomic_load(&r.sold_out), 64);
  ck_assert_int_eq(atomic_load(&r.other), 0);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, r.policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, 1000);
  ck_assert_int_eq(p.max_count, 1000);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 1000);
  tu_remove_db(path);
}
END_TEST

/* ---- the cap under a process race --------------------------------------- */

typedef struct process_race {
  const char *path;
  sc_id policy;
} process_race;

static int issue_in_child(int i, void *ud) {
  process_race *pr = ud;
  sc_db *db = NULL;
  if (sc_open(pr->path, NULL, &db) != SC_OK) return 10;
  issue_race r = {.db = db, .policy = pr->policy};
  /* Users repeat across processes; the policy's limit (1000) allows it. */
  tu_race(16, issue_until_sold_out, &r);
  (void)i;
  int bad = atomic_load(&r.other) != 0 || atomic_load(&r.sold_out) != 16;
  if (sc_close(db) != SC_OK) bad = 1;
  return bad ? 11 : 0;
}

START_TEST(cap_holds_under_4_processes) {
  char *path = tu_db_path("cap-proc");
  sc_db *db = tu_open(path, NULL);
  process_race pr = {.path = path, .policy = make_policy(db, 1000, 1000)};
  ck_assert_sc(sc_close(db), SC_OK);
  tu_fork_race(4, issue_in_child, &pr);
  db = tu_open(path, NULL);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, pr.policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, 1000);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 1000);
  tu_remove_db(path);
}
END_TEST

/* ---- per-user limit ----------------------------------------------------- */

static void issue_same_user(int t, void *ud) {
  (void)t;
  issue_race *r = ud;
  count_result(r, sc_coupon_issue(r->db, r->policy, 7, NULL));
}

START_TEST(per_user_limit_holds_under_32_threads) {
  char *path = tu_db_path("limit");
  sc_db *db = tu_open(path, NULL);
  issue_race r = {.db = db, .policy = make_policy(db, 1000, 2)};
  tu_race(32, issue_same_user, &r);
  ck_assert_int_eq(atomic_load(&r.issued), 2);
  ck_assert_int_eq(atomic_load(&r.limit), 30);
  ck_assert_int_eq(atomic_load(&r.other), 0);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_coupon WHERE user_id = 7"), 2);
  tu_remove_db(path);
}
END_TEST

START_TEST(per_user_limit_zero_means_one) {
  char *path = tu_db_path("limit1");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 10, 0);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  ck_assert_int_eq(p.per_user_limit, 1);
  sc_id c1 = 0, c2 = 0;
  ck_assert_sc(sc_coupon_issue(db, policy, 5, &c1), SC_OK);
  ck_assert_int_gt(c1, 0);
  ck_assert_sc(sc_coupon_issue(db, policy, 5, &c2), SC_LIMIT_REACHED);
  ck_assert_int_eq(c2, 0); /* untouched on failure */
  ck_assert_sc(sc_coupon_issue(db, policy, 6, &c2), SC_OK);
  ck_assert_int_gt(c2, c1);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- the kill switch ---------------------------------------------------- */

static void *race_in_background(void *arg) {
  tu_race(8, issue_until_sold_out, arg);
  return NULL;
}

static int64_t issued_count(sc_db *db, sc_id policy) {
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  return p.issued_count;
}

START_TEST(pause_stops_a_race_and_resume_continues) {
  char *path = tu_db_path("pause");
  sc_db *db = tu_open(path, NULL);
  issue_race r = {.db = db, .policy = make_policy(db, 2000, 1)};
  pthread_t racers;
  ck_assert_int_eq(pthread_create(&racers, NULL, race_in_background, &r), 0);
  while (atomic_load(&r.issued) < 200)
    usleep(500);
  ck_assert_sc(sc_coupon_policy_pause(db, r.policy, 1), SC_OK);
  /* From the pause's commit on, nothing is issued, though the racers keep
   * asking. */
  int64_t at_pause = issued_count(db, r.policy);
  /* (Sold out before the pause, the racers would stop asking: the loop
   * below would never end.) */
  ck_assert_int_lt(at_pause, 2000);
  int paused_before = atomic_load(&r.paused);
  while (atomic_load(&r.paused) < paused_before + 50)
    usleep(500);
  ck_assert_int_eq(issued_count(db, r.policy), at_pause);
  ck_assert_sc(sc_coupon_policy_pause(db, r.policy, 1), SC_OK); /* no-op */
  ck_assert_sc(sc_coupon_policy_resume(db, r.policy), SC_OK);
  ck_assert_sc(sc_coupon_policy_resume(db, r.policy), SC_OK); /* no-op */
  pthread_join(racers, NULL);
  ck_assert_int_eq(atomic_load(&r.issued), 2000);
  ck_assert_int_eq(issued_count(db, r.policy), 2000);
  ck_assert_int_eq(atomic_load(&r.other), 0);
  tu_assert_verify(db);
  sc_close(db);
  /* Exactly one pause and one resume event: the repeated pause and resume
   * wrote none. */
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_outbox WHERE"
                            " type IN (7, 8)"),
                   2);
  tu_remove_db(path);
}
END_TEST

/* ---- validity window ---------------------------------------------------- */

START_TEST(validity_window_follows_the_injected_clock) {
  char *path = tu_db_path("window");
  sc_options o;
  sc_options_init(&o);
  tu_clock clock;
  tu_use_clock(&o, &clock, 1000);
  sc_db *db = tu_open(path, &o);
  sc_coupon_policy_spec spec = {.name = "window",
                                .max_count = 10,
                                .starts_at_ms = 2000,
                                .ends_at_ms = 3000};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_NOT_ACTIVE);
  atomic_store(&clock.now_ms, 1999);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_NOT_ACTIVE);
  atomic_store(&clock.now_ms, 2000);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_OK);
  atomic_store(&clock.now_ms, 2999);
  ck_assert_sc(sc_coupon_issue(db, policy, 2, NULL), SC_OK);
  atomic_store(&clock.now_ms, 3000);
  ck_assert_sc(sc_coupon_issue(db, policy, 3, NULL), SC_NOT_ACTIVE);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, 2);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- bad input ---------------------------------------------------------- */

START_TEST(bad_input_changes_nothing) {
  char *path = tu_db_path("bad");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 5, 1);
  sc_id out = 0;
  sc_coupon_policy_spec spec = {.name = "x", .max_count = 1};
  ck_assert_sc(sc_coupon_policy_create(NULL, &spec, &out), SC_MISUSE);
  ck_assert_sc(sc_coupon_policy_create(db, NULL, &out), SC_MISUSE);
  ck_assert_sc(sc_coupon_policy_create(db, &spec, NULL), SC_MISUSE);
  spec.max_count = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "max_count"));
  spec.max_count = -5;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  spec.max_count = 1;
  spec.per_user_limit = -1;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "per_user_limit"));
  spec.per_user_limit = 0;
  spec.name = NULL;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  spec.name = "";
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  spec.name = "x";
  spec.discount_percent = 101;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  spec.discount_percent = 10;
  spec.discount_amount = 100;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  spec.discount_amount = 0;
  spec.starts_at_ms = 5000;
  spec.ends_at_ms = 5000;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &out), SC_INVALID);
  ck_assert_int_eq(out, 0);

  ck_assert_sc(sc_coupon_issue(NULL, policy, 1, &out), SC_MISUSE);
  ck_assert_sc(sc_coupon_issue(db, policy, 0, &out), SC_INVALID);
  ck_assert_sc(sc_coupon_issue(db, policy, -3, &out), SC_INVALID);
  ck_assert_sc(sc_coupon_issue(db, 999, 1, &out), SC_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "999"));
  ck_assert_sc(sc_coupon_issue(db, -1, 1, &out), SC_NOT_FOUND);
  ck_assert_sc(sc_coupon_policy_pause(db, 999, 1), SC_NOT_FOUND);
  ck_assert_sc(sc_coupon_policy_pause(NULL, policy, 1), SC_MISUSE);
  ck_assert_sc(sc_coupon_policy_resume(db, 999), SC_NOT_FOUND);
  ck_assert_sc(sc_coupon_policy_resume(db, 0), SC_NOT_FOUND);
  ck_assert_sc(sc_coupon_policy_resume(NULL, policy), SC_MISUSE);
  sc_coupon_policy p = {.max_count = -42};
  ck_assert_sc(sc_coupon_policy_get(db, 999, &p), SC_NOT_FOUND);
  ck_assert_int_eq(p.max_count, -42);
  ck_assert_sc(sc_coupon_policy_get(db, policy, NULL), SC_MISUSE);
  ck_assert_sc(sc_coupon_policy_get(NULL, policy, &p), SC_MISUSE);
  ck_assert_int_eq(out, 0);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon_policy"), 1);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 0);
  tu_remove_db(path);
}
END_TEST

START_TEST(reopen_keeps_committed_data) {
  char *path = tu_db_path("reopen");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 100, 1);
  for (int u = 1; u <= 40; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  }
  ck_assert_sc(sc_coupon_policy_pause(db, policy, 1), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  db = tu_open(path, NULL);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, 40);
  ck_assert_int_eq(p.paused, 1);
  ck_assert_sc(sc_coupon_issue(db, policy, 41, NULL), SC_PAUSED);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

Suite *coupon_suite(void) {
  Suite *s = suite_create("coupon");
  TCase *tc = tu_tcase("coupon");
  tcase_add_test(tc, cap_holds_under_64_threads);
  tcase_add_test(tc, cap_holds_under_4_processes);
  tcase_add_test(tc, per_user_limit_holds_under_32_threads);
  tcase_add_test(tc, per_user_limit_zero_means_one);
  tcase_add_test(tc, pause_stops_a_race_and_resume_continues);
  tcase_add_test(tc, validity_window_follows_the_injected_clock);
  tcase_add_test(tc, bad_input_changes_nothing);
  tcase_add_test(tc, reopen_keeps_committed_data);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(coupon_suite());
}
