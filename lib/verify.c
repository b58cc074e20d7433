/* sc_verify: every invariant of the design, checked on one read snapshot.
 * Each check is a query returning one text row per violation, so a new
 * invariant is one more entry in the table below. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef struct check {
  const char *invariant;
  const char *sql; /* one text column per violation */
} check;

static const check CHECKS[] = {
    {"1 coupons: issued_count equals the coupons and is within max_count",
     "SELECT printf('policy %d: issued_count %d, coupons %d, max_count %d',"
     " p.id, p.issued_count, (SELECT count(*) FROM sc_coupon c"
     "  WHERE c.policy_id = p.id), p.max_count)"
     " FROM sc_coupon_policy p"
     " WHERE p.issued_count <> (SELECT count(*) FROM sc_coupon c"
     "  WHERE c.policy_id = p.id) OR p.issued_count > p.max_count"},
    {"1 coupons: no user holds more than per_user_limit",
     "SELECT printf('policy %d: user %d holds %d, limit %d', c.policy_id,"
     " c.user_id, count(*), p.per_user_limit)"
     " FROM sc_coupon c JOIN sc_coupon_policy p ON p.id = c.policy_id"
     " GROUP BY c.policy_id, c.user_id HAVING count(*) > p.per_user_limit"},
    {"6 integrity_check",
     "SELECT integrity_check FROM pragma_integrity_check"
     " WHERE integrity_check <> 'ok'"},
};

typedef struct report {
  char *text;
  size_t len, cap;
  int findings;
  bool nomem;
} report;

static void report_add(report *r, const char *invariant, const char *finding) {
  r->findings++;
  size_t need = strlen(invariant) + strlen(finding) + 8;
  if (r->len + need >= r->cap) {
    size_t cap = (r->cap ? r->cap * 2 : 256) + need;
    char *text = sc__realloc(r->text, cap);
    if (text == NULL) {
      r->nomem = true;
      return;
    }
    r->text = text;
    r->cap = cap;
  }
  r->len += (size_t)snprintf(r->text + r->len, r->cap - r->len, "[%s] %s\n",
                             invariant, finding);
}

/* Runs every check; returns an SQLite code for a failure to read. */
static int run_checks(sc__conn *c, report *r) {
  int rc = sqlite3_exec(c->h, "BEGIN", NULL, NULL, NULL);
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof CHECKS / sizeof *CHECKS;
       i++) {
    sqlite3_stmt *st = sc__stmt(c, CHECKS[i].sql);
    if (st == NULL) return sqlite3_errcode(c->h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *finding = (const char *)sqlite3_column_text(st, 0);
      report_add(r, CHECKS[i].invariant, finding ? finding : "(null)");
    }
    sqlite3_reset(st);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_exec(c->h, "COMMIT", NULL, NULL, NULL);
  return rc;
}

int sc_verify(sc_db *db, char **report_out) {
  SC__CHECK_DB(db);
  if (report_out != NULL) *report_out = NULL;
  sc__conn *c;
  int rc = sc__read_acquire(db, &c);
  if (rc != SC_OK) return rc;
  report r = {0};
  int src = run_checks(c, &r);
  if (src != SQLITE_OK) {
    rc = sc__fail(sc__status_from_sqlite(src), "sc_verify: %s",
                  sqlite3_errmsg(c->h));
  }
  sc__read_release(db, c);
  if (rc == SC_OK && r.nomem) rc = sc__fail(SC_NOMEM, "sc_verify: no memory");
  if (rc == SC_OK && r.findings > 0) {
    rc = sc__fail(SC_CORRUPT, "sc_verify: %d invariant violation(s)",
                  r.findings);
  }
  if (rc == SC_OK || rc == SC_CORRUPT) {
    if (report_out != NULL && r.findings == 0) {
      sc__free(r.text);
      r.text = sc__strdup("ok\n");
      if (r.text == NULL) return sc__fail(SC_NOMEM, "sc_verify: no memory");
    }
    if (report_out != NULL) {
      *report_out = r.text;
      r.text = NULL;
    }
  }
  sc__free(r.text);
  return rc;
}
