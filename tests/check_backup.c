/* Backup: a copy taken while writers run opens and verifies; an existing
 * destination is never overwritten; a failed copy leaves nothing behind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

typedef struct load {
  sc_db *db;
  sc_id policy;
  atomic_int stop;
  atomic_int issued;
} load;

static void issue_until_stopped(int t, void *ud) {
  load *l = ud;
  for (int n = 0; !atomic_load(&l->stop); n++) {
    int rc =
        sc_coupon_issue(l->db, l->policy, (sc_id)t * 1000000 + n + 1, NULL);
    if (rc == SC_OK) atomic_fetch_add(&l->issued, 1);
    if (rc != SC_OK && rc != SC_SOLD_OUT) return;
  }
}

static void backup_midway(int t, void *ud) {
  load *l = ud;
  if (t < 4) {
    issue_until_stopped(t, ud);
    return;
  }
  while (atomic_load(&l->issued) < 200)
    usleep(1000);
  char *dest = tu_db_path("backup-copy");
  ck_assert_sc(sc_backup(l->db, dest), SC_OK);
  atomic_store(&l->stop, 1);
  sc_db *copy = tu_open(dest, NULL);
  tu_assert_verify(copy);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(copy, l->policy, &p), SC_OK);
  ck_assert_int_ge(p.issued_count, 200); /* taken after 200 were issued */
  sc_close(copy);
  tu_remove_db(dest);
}

START_TEST(a_backup_taken_under_load_verifies) {
  char *path = tu_db_path("backup");
  load l = {.db = tu_open(path, NULL)};
  sc_coupon_policy_spec spec = {.name = "b", .max_count = 1000000};
  ck_assert_sc(sc_coupon_policy_create(l.db, &spec, &l.policy), SC_OK);
  tu_race(5, backup_midway, &l);
  tu_assert_verify(l.db);
  sc_close(l.db);
  tu_remove_db(path);
}
END_TEST

START_TEST(bad_destinations_are_refused) {
  char *path = tu_db_path("backup-bad");
  sc_db *db = tu_open(path, NULL);
  ck_assert_sc(sc_backup(db, NULL), SC_INVALID);
  ck_assert_sc(sc_backup(db, ""), SC_INVALID);
  ck_assert_sc(sc_backup(NULL, "x.db"), SC_MISUSE);
  /* The database itself, or any existing file, is never overwritten. */
  ck_assert_sc(sc_backup(db, path), SC_EXISTS);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "already exists"));
  char *other = tu_db_path("backup-exists");
  FILE *f = fopen(other, "w");
  fputs("keep me", f);
  fclose(f);
  ck_assert_sc(sc_backup(db, other), SC_EXISTS);
  struct stat st;
  ck_assert_int_eq(stat(other, &st), 0);
  ck_assert_int_eq(st.st_size, 7);
  /* A directory that does not exist: an I/O error, nothing created. */
  ck_assert_sc(sc_backup(db, "/nonexistent-dir/copy.db"), SC_IOERR);
  ck_assert_int_ne(access("/nonexistent-dir/copy.db", F_OK), 0);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(other);
  tu_remove_db(path);
}
END_TEST

Suite *backup_suite(void) {
  Suite *s = suite_create("backup");
  TCase *tc = tu_tcase("backup");
  tcase_add_test(tc, a_backup_taken_under_load_verifies);
  tcase_add_test(tc, bad_destinations_are_refused);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(backup_suite());
}
