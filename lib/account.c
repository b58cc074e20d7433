/* Accounts: a balance, the part of it held by PENDING orders, and a ledger
 * recording every movement of the balance. A hold is one conditional UPDATE
 * against balance - held, so an accepted order can always be paid (the
 * balance precheck the seed lacked). */
#include <string.h>

#include "ops.h"

enum { LEDGER_DEPOSIT = 1, LEDGER_PAYMENT = 2 };

/* Creates the account on first deposit; the guard refuses an overflowing
 * balance (SQLite would turn the sum into a REAL). */
static const char SQL_CREDIT[] =
    "INSERT INTO sc_account(user_id, balance) VALUES(?1, ?2)"
    " ON CONFLICT(user_id) DO UPDATE SET balance = balance + excluded.balance"
    " WHERE balance <= 9223372036854775807 - excluded.balance";
static const char SQL_LEDGER_INSERT[] =
    "INSERT INTO sc_ledger(user_id, amount, kind, order_id, at_ms)"
    " VALUES(?1, ?2, ?3, ?4, ?5)";
static const char SQL_ACCOUNT_GET[] =
    "SELECT balance, held FROM sc_account WHERE user_id = ?1";
static const char SQL_HOLD[] =
    "UPDATE sc_account SET held = held + ?2"
    " WHERE user_id = ?1 AND balance - held >= ?2";
static const char SQL_RELEASE[] =
    "UPDATE sc_account SET held = held - ?2 WHERE user_id = ?1 AND held >= ?2";
static const char SQL_DEBIT[] =
    "UPDATE sc_account SET balance = balance - ?2, held = held - ?2"
    " WHERE user_id = ?1 AND held >= ?2";

/* Appends a ledger row; order 0 = none. */
static int ledger_append(sc__conn *w, sc__op *op, sc_id user, int64_t amount,
                         int kind, sc_id order, int64_t now) {
  sqlite3_stmt *st = sc__stmt(w, SQL_LEDGER_INSERT);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "ledger");
  sqlite3_bind_int64(st, 1, user);
  sqlite3_bind_int64(st, 2, amount);
  sqlite3_bind_int(st, 3, kind);
  if (order > 0) sqlite3_bind_int64(st, 4, order);
  sqlite3_bind_int64(st, 5, now);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SC_OK : sc__op_fail_sqlite(op, w, rc, "ledger");
}

/* ---- deposits ----------------------------------------------------------- */

static int credit(sc__conn *w, deposit_op *op) {
  sqlite3_stmt *st = sc__stmt(w, SQL_CREDIT);
  if (st == NULL)
    return sc__op_fail_sqlite(&op->base, w, SQLITE_ERROR, "deposit");
  sqlite3_bind_int64(st, 1, op->user);
  sqlite3_bind_int64(st, 2, op->amount);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(&op->base, w, rc, "deposit");
  if (sqlite3_changes(w->h) == 1) return SC_OK;
  return sc__op_fail(&op->base, SC_INVALID,
                     "sc_account_deposit: user %lld: the balance would "
                     "overflow with %lld more",
                     (long long)op->user, (long long)op->amount);
}

static int deposit_run(sc_db *db, sc__conn *w, sc__op *base) {
  deposit_op *op = (deposit_op *)base;
  sc_id first = 0;
  int rc;
  if (op->key != NULL) {
    rc = sc__idem_find(w, base, SC__IDEM_DEPOSIT, op->key, op->request,
                       sizeof op->request, &first);
    if (rc == SC_OK) return SC_OK; /* a replay: changes nothing */
    if (rc != SC_NOT_FOUND) return rc;
  }
  int64_t now = sc__now_ms(db);
  rc = credit(w, op);
  if (rc == SC_OK) {
    rc = ledger_append(w, base, op->user, op->amount, LEDGER_DEPOSIT, 0, now);
  }
  if (rc == SC_OK && op->key != NULL) {
    rc = sc__idem_record(w, base, SC__IDEM_DEPOSIT, op->key, op->request,
                         sizeof op->request, sqlite3_last_insert_rowid(w->h),
                         now);
  }
  if (rc != SC_OK) return rc;
  sc__event_fields ev = {.type = SC_EVENT_DEPOSIT,
                         .user = op->user,
                         .amount = op->amount,
                         .at_ms = now};
  return sc__outbox_emit(db, w, base, &ev);
}

int sc_account_deposit(sc_db *db, sc_id user, int64_t amount,
                       const char *idempotency_key) {
  const char *fn = "sc_account_deposit";
  SC__CHECK_DB(db);
  if (user <= 0) {
    return sc__fail(SC_INVALID, "%s: user %lld must be > 0", fn,
                    (long long)user);
  }
  if (amount <= 0) {
    return sc__fail(SC_INVALID, "%s: amount %lld must be > 0", fn,
                    (long long)amount);
  }
  int rc = sc__check_text(fn, "the idempotency key", idempotency_key,
                          SC_KEY_MAX, true);
  if (rc != SC_OK) return rc;
  deposit_op op = {.base = {.run = deposit_run,
                            .pg = &sc__pg_deposit,
                            .kind = SC__OP_DEPOSIT},
                   .user = user,
                   .amount = amount,
                   .key = idempotency_key};
  sc__idem_put_i64(op.request, user);
  sc__idem_put_i64(op.request + 8, amount);
  return sc__op_execute(db, &op.base);
}

int sc_account_get(sc_db *db, sc_id user, sc_account *out) {
  SC__CHECK_DB(db);
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_account_get: out is NULL");
  int64_t cols[2];
  int rc = sc__read_row(db, SQL_ACCOUNT_GET, user, cols, 2, "account of user");
  if (rc != SC_OK) return rc;
  out->balance = cols[0];
  out->held = cols[1];
  out->available = cols[0] - cols[1];
  return SC_OK;
}

/* ---- holds, for orders -------------------------------------------------- */

/* Runs a two-parameter UPDATE of one account; *changed = rows changed. */
static int account_update(sc__conn *w, sc__op *op, const char *sql, sc_id user,
                          int64_t amount, const char *what, int *changed) {
  sqlite3_stmt *st = sc__stmt(w, sql);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, what);
  sqlite3_bind_int64(st, 1, user);
  sqlite3_bind_int64(st, 2, amount);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sc__op_fail_sqlite(op, w, rc, what);
  *changed = sqlite3_changes(w->h);
  return SC_OK;
}

int sc__account_check_hold(sc__conn *w, sc__op *op, sc_id user,
                           int64_t amount) {
  sqlite3_stmt *st = sc__stmt(w, SQL_ACCOUNT_GET);
  if (st == NULL) return sc__op_fail_sqlite(op, w, SQLITE_ERROR, "hold");
  sqlite3_bind_int64(st, 1, user);
  int rc = sqlite3_step(st);
  int64_t balance = 0, held = 0;
  if (rc == SQLITE_ROW) {
    balance = sqlite3_column_int64(st, 0);
    held = sqlite3_column_int64(st, 1);
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) {
    return sc__op_fail(op, SC_NOT_FOUND, "account of user %lld not found",
                       (long long)user);
  }
  if (rc != SQLITE_ROW) return sc__op_fail_sqlite(op, w, rc, "hold");
  if (balance - held >= amount) return SC_OK;
  return sc__op_fail(op, SC_INSUFFICIENT_BALANCE,
                     "user %lld: %lld available (balance %lld, held %lld), "
                     "%lld needed",
                     (long long)user, (long long)(balance - held),
                     (long long)balance, (long long)held, (long long)amount);
}

int sc__account_hold(sc__conn *w, sc__op *op, sc_id user, int64_t amount) {
  int changed = 0;
  int rc = account_update(w, op, SQL_HOLD, user, amount, "hold", &changed);
  if (rc != SC_OK || changed == 1) return rc;
  return sc__op_fail(op, SC_ERROR,
                     "user %lld: the hold was refused after its check passed",
                     (long long)user);
}

/* A release or debit that finds less held than its order's total means the
 * books are already wrong: refuse rather than make them worse. */
static int held_missing(sc__op *op, sc_id user, int64_t amount) {
  return sc__op_fail(op, SC_CORRUPT,
                     "account of user %lld holds less than %lld or is missing",
                     (long long)user, (long long)amount);
}

int sc__account_release(sc__conn *w, sc__op *op, sc_id user, int64_t amount) {
  int changed = 0;
  int rc =
      account_update(w, op, SQL_RELEASE, user, amount, "release", &changed);
  if (rc != SC_OK) return rc;
  return changed == 1 ? SC_OK : held_missing(op, user, amount);
}

int sc__account_debit(sc_db *db, sc__conn *w, sc__op *op, sc_id user,
                      int64_t amount, sc_id order) {
  int changed = 0;
  int rc = account_update(w, op, SQL_DEBIT, user, amount, "debit", &changed);
  if (rc != SC_OK) return rc;
  if (changed != 1) return held_missing(op, user, amount);
  return ledger_append(w, op, user, -amount, LEDGER_PAYMENT, order,
                       sc__now_ms(db));
}
