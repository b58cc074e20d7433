/* The engine: opening, closing, status codes, options, the schema in a
 * shared file, and group commit with its slow path (a batch replayed with
 * per-operation savepoints; on PostgreSQL, run again without the failing
 * call). Also run against PostgreSQL (check_engine_pg), without the cases
 * about the SQLite file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "test_util.h"

START_TEST(status_codes_have_names_and_texts) {
  ck_assert_int_eq(SC_OK, 0);
  for (int s = 0; s < SC_STATUS_COUNT_; s++) {
    ck_assert_str_ne(sc_err_name(s), "SC_UNKNOWN");
    ck_assert_str_ne(sc_strerror(s), "unknown status");
    for (int t = 0; t < s; t++) {
      ck_assert_str_ne(sc_err_name(s), sc_err_name(t));
    }
  }
  ck_assert_str_eq(sc_err_name(SC_SOLD_OUT), "SC_SOLD_OUT");
  ck_assert_str_eq(sc_strerror(SC_SOLD_OUT), "sold out");
  ck_assert_str_eq(sc_err_name(-1), "SC_UNKNOWN");
  ck_assert_str_eq(sc_strerror(SC_STATUS_COUNT_), "unknown status");
  ck_assert_str_eq(sc_version(), SC_VERSION_STRING);
  ck_assert_uint_eq(sc_version_hex(), SC_VERSION_HEX);
}
END_TEST

START_TEST(null_is_harmless) {
  sc_free(NULL);
  ck_assert_sc(sc_close(NULL), SC_OK);
  sc_options_init(NULL);
}
END_TEST

START_TEST(open_rejects_bad_arguments) {
  sc_db *db = (sc_db *)0x1;
  ck_assert_sc(sc_open("x.db", NULL, NULL), SC_MISUSE);
  ck_assert_sc(sc_open(NULL, NULL, &db), SC_INVALID);
  ck_assert_ptr_null(db);
  ck_assert_sc(sc_open("", NULL, &db), SC_INVALID);
  ck_assert_sc(sc_open(":memory:", NULL, &db), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), ":memory:"));
  char *path = tu_db_path("badopt");
  sc_options o;
  sc_options_init(&o);
  o.durability = 7;
  ck_assert_sc(sc_open(path, &o, &db), SC_INVALID);
  sc_options_init(&o);
  o.batch_max = -1;
  ck_assert_sc(sc_open(path, &o, &db), SC_INVALID);
  ck_assert_ptr_null(db);
  /* Nothing was created for a refused open. */
  ck_assert_int_eq(access(path, F_OK), -1);
  tu_remove_db(path);
}
END_TEST

/* Sets one option of o out of its range; returns the option's name, or
 * NULL past the last case. */
static const char *bad_option(sc_options *o, int i) {
  sc_options_init(o);
  switch (i) {
    case 0:
      o->durability = 2;
      return "durability";
    case 1:
      o->batch_max = -1;
      return "batch_max";
    case 2:
      o->busy_timeout_ms = -5;
      return "busy_timeout_ms";
    case 3:
      o->queue_max = -1;
      return "queue_max";
    case 4:
      o->queue_max = INT_MAX;
      return "queue_max";
    case 5:
      o->read_pool_max = -1;
      return "read_pool_max";
    case 6:
      o->default_order_ttl_ms = -1;
      return "default_order_ttl_ms";
    case 7:
      o->outbox_max_attempts = -3;
      return "outbox_max_attempts";
    case 8:
      o->outbox_retry_base_ms = -1;
      return "outbox_retry_base_ms";
    case 9:
      o->outbox_retry_max_ms = INT64_MIN;
      return "outbox_retry_max_ms";
    case 10:
      o->alert_error_rate = 2.0;
      return "alert_error_rate";
    case 11:
      o->alert_error_rate = 1.0000001;
      return "alert_error_rate";
    case 12:
      o->alert_error_rate = NAN;
      return "alert_error_rate";
    case 13:
      o->alert_queue_depth = 4097;
      return "alert_queue_depth";
    case 14:
      o->queue_max = 10;
      o->alert_queue_depth = 11;
      return "alert_queue_depth";
    case 15:
      o->alert_window_ms = -1;
      return "alert_window_ms";
    case 16:
      o->alert_min_samples = -1;
      return "alert_min_samples";
    default:
      return NULL;
  }
}

START_TEST(open_refuses_each_option_out_of_range) {
  char *path = tu_db_path("optrange");
  sc_options o;
  const char *name;
  for (int i = 0; (name = bad_option(&o, i)) != NULL; i++) {
    sc_db *db = (sc_db *)0x1;
    ck_assert_sc(sc_open(path, &o, &db), SC_INVALID);
    ck_assert_ptr_null(db);
    /* The message names the option. */
    ck_assert_msg(strstr(sc_errmsg(NULL), name) != NULL, "case %d: %s", i,
                  sc_errmsg(NULL));
    ck_assert_int_eq(access(path, F_OK), -1);
  }
  /* The edges of each range are accepted: a share of 1, an alert turned off
   * (negative), a queue-depth alert at queue_max. */
  sc_options_init(&o);
  o.alert_error_rate = 1.0;
  o.alert_queue_depth = 10;
  o.queue_max = 10;
  sc_db *db = tu_open(path, &o);
  ck_assert_sc(sc_close(db), SC_OK);
  sc_options_init(&o);
  o.alert_error_rate = -0.5;
  o.alert_queue_depth = -1;
  o.alert_p95_ms = -1;
  db = tu_open(path, &o);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

START_TEST(open_rejects_unusable_paths) {
  sc_db *db = (sc_db *)0x1;
  ck_assert_sc(sc_open("/nonexistent-dir/x/shop.db", NULL, &db), SC_IOERR);
  ck_assert_ptr_null(db);
  /* A directory is not a database file. */
  const char *dir =
      getenv("SC_TEST_TMPDIR") ? getenv("SC_TEST_TMPDIR") : "/tmp";
  ck_assert_int_ne(sc_open(dir, NULL, &db), SC_OK);
  ck_assert_ptr_null(db);
  /* A file that is not SQLite is refused and left as it was. */
  char *path = tu_db_path("notadb");
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  for (int i = 0; i < 200; i++)
    fputs("this is not an SQLite database\n", f);
  fclose(f);
  struct stat before, after;
  ck_assert_int_eq(stat(path, &before), 0);
  ck_assert_sc(sc_open(path, NULL, &db), SC_CORRUPT);
  ck_assert_ptr_null(db);
  ck_assert_int_eq(stat(path, &after), 0);
  ck_assert_int_eq(before.st_size, after.st_size);
  tu_remove_db(path);
}
END_TEST

static void host_exec(const char *path, const char *sql) {
  sqlite3 *h;
  ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
  char *err = NULL;
  ck_assert_msg(sqlite3_exec(h, sql, NULL, NULL, &err) == SQLITE_OK, "%s",
                err ? err : "");
  sqlite3_close(h);
}

START_TEST(shares_a_host_file) {
  char *path = tu_db_path("host");
  host_exec(path,
            "PRAGMA user_version = 77; CREATE TABLE users(id, name);"
            "INSERT INTO users VALUES(1, 'host row');");
  sc_db *db = tu_open(path, NULL);
  ck_assert_sc(sc_close(db), SC_OK);
  db = tu_open(path, NULL); /* a second open migrates nothing */
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM users"), 1);
  ck_assert_int_eq(tu_count(path, "PRAGMA user_version"), 77);
  /* sqlite_sequence is SQLite's own (AUTOINCREMENT), shared with the
   * host's tables. */
  ck_assert_int_eq(
      tu_count(path,
               "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
               " AND name NOT LIKE 'sc\\_%' ESCAPE '\\' AND name <> 'users'"
               " AND name <> 'sqlite_sequence'"),
      0);
  ck_assert_int_eq(
      tu_count(path, "SELECT value FROM sc_meta WHERE key = 'schema_version'"),
      sc__schema_version());
  tu_remove_db(path);
}
END_TEST

/* Every row of the tables with generated ids and their indexes, as text
 * (but sc_outbox_open, which migration 4 drops). */
static char *rows_and_indexes(const char *path) {
  static const char *const SQL[] = {
      "SELECT * FROM sc_coupon_policy",
      "SELECT * FROM sc_coupon",
      "SELECT * FROM sc_product",
      "SELECT * FROM sc_ledger",
      "SELECT * FROM sc_order",
      "SELECT * FROM sc_order_line",
      "SELECT * FROM sc_outbox",
      "SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'index'"
      " AND name <> 'sc_outbox_open' ORDER BY name"};
  return tu_rows(path, SQL, sizeof SQL / sizeof *SQL);
}

static int64_t sequence_of(const char *path, const char *table) {
  char sql[128];
  snprintf(sql, sizeof sql,
           "SELECT coalesce(max(seq), -1) FROM sqlite_sequence"
           " WHERE name = '%s'",
           table);
  return tu_count(path, sql);
}

/* A file of the schema before AUTOINCREMENT (what earlier libraries made),
 * with rows, a host table of its own with AUTOINCREMENT, a host view and a
 * host trigger on a library table, and the lines of an order deleted by hand:
 * opening it rebuilds every table with generated ids with AUTOINCREMENT,
 * keeping rows, indexes and the highest ids (the deleted order's included), and
 * the host's objects. */
START_TEST(migrates_generated_ids_to_never_reused) {
  char *path = tu_db_path("migrate-ids");
  host_exec(path,
            "CREATE TABLE sc_meta(key TEXT PRIMARY KEY, value);"
            "INSERT INTO sc_meta VALUES('schema_version', 2);"
            "CREATE TABLE host(id INTEGER PRIMARY KEY AUTOINCREMENT, x);"
            "INSERT INTO host(x) VALUES('a'), ('b');");
  host_exec(path, sc__schema_sql(1));
  host_exec(path, sc__schema_sql(2));
  host_exec(path,
            "CREATE VIEW host_coupons AS SELECT count(*) AS n FROM sc_coupon;"

            "INSERT INTO sc_coupon_policy(id, name, max_count, issued_count,"
            " per_user_limit, created_at_ms) VALUES(1, 'p', 10, 2, 1, 0);"
            "INSERT INTO sc_coupon(id, policy_id, user_id, issued_at_ms)"
            " VALUES(1, 1, 1, 0), (2, 1, 2, 0);"
            "INSERT INTO sc_outbox(id, type, agg_kind, agg_id, seq,"
            " created_at_ms, payload) VALUES(1, 1, 1, 1, 1, 0, x'80'),"
            " (2, 1, 1, 2, 1, 0, x'80'), (3, 6, 3, 1, 1, 0, x'80');"
            "INSERT INTO sc_product(id, name, price, total)"
            " VALUES(1, 'p', 100, 10);"
            "INSERT INTO sc_account(user_id, balance) VALUES(1, 1000);"
            "INSERT INTO sc_ledger(id, user_id, amount, kind, at_ms)"
            " VALUES(1, 1, 1000, 1, 0);"
            /* order 7 was deleted by hand; its line is left */
            "INSERT INTO sc_order_line(order_id, product_id, qty, price)"
            " VALUES(7, 1, 1, 100);"
            "CREATE TRIGGER host_sees_coupons AFTER INSERT ON sc_coupon"
            " BEGIN UPDATE host SET x = 'seen' WHERE id = 1; END;");
  char *before = rows_and_indexes(path);
  sc_db *db = tu_open(path, NULL);
  ck_assert_int_eq(
      tu_count(path, "SELECT value FROM sc_meta WHERE key = 'schema_version'"),
      sc__schema_version());
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sqlite_schema"
                            " WHERE type = 'table' AND name IN"
                            " ('sc_coupon_policy', 'sc_coupon', 'sc_product',"
                            " 'sc_ledger', 'sc_order', 'sc_outbox')"
                            " AND sql LIKE '%id INTEGER PRIMARY KEY"
                            " AUTOINCREMENT,%'"),
                   6);
  char *after = rows_and_indexes(path);
  ck_assert_str_eq(after, before);
  free(before);
  free(after);
  ck_assert_int_eq(sequence_of(path, "sc_coupon"), 2);
  ck_assert_int_eq(sequence_of(path, "sc_outbox"), 3);
  ck_assert_int_eq(sequence_of(path, "sc_order"), 7);
  ck_assert_int_eq(sequence_of(path, "host"), 2);
  ck_assert_int_eq(tu_count(path, "SELECT n FROM host_coupons"), 2);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM host WHERE x = 'seen'"),
                   0);
  ck_assert_int_eq(tu_count(path, "PRAGMA foreign_key_check"), 0);
  /* The writer has its foreign keys back. */
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(
      sqlite3_prepare_v2(db->wconn->h, "PRAGMA foreign_keys", -1, &st, NULL),
      SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_int_eq(sqlite3_column_int(st, 0), 1);
  sqlite3_finalize(st);
  /* New ids follow the highest ever, also after the newest rows go. */
  sc_id coupon = 0, order = 0;
  ck_assert_sc(sc_coupon_issue(db, 1, 3, &coupon), SC_OK);
  ck_assert_int_eq(coupon, 3);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM host WHERE x = 'seen'"),
                   1);
  host_exec(path,
            "DELETE FROM sc_coupon WHERE id = 3;"
            "DELETE FROM sc_outbox WHERE id = 4;"
            "UPDATE sc_coupon_policy SET issued_count = 2");
  ck_assert_sc(sc_coupon_issue(db, 1, 4, &coupon), SC_OK);
  ck_assert_int_eq(coupon, 4);
  ck_assert_int_eq(tu_count(path, "SELECT max(id) FROM sc_outbox"), 5);
  sc_line line = {1, 1};
  sc_checkout_req req = {.user = 1, .lines = &line, .n_lines = 1};
  ck_assert_sc(sc_checkout(db, &req, &order), SC_OK);
  ck_assert_int_eq(order, 8);
  ck_assert_sc(sc_close(db), SC_OK);
  db = tu_open(path, NULL); /* migrated once */
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(sequence_of(path, "sc_coupon"), 4);
  tu_remove_db(path);
}
END_TEST

START_TEST(refuses_a_newer_schema) {
  char *path = tu_db_path("newer");
  sc_db *db = tu_open(path, NULL);
  sc_close(db);
  tu_exec(path, "UPDATE sc_meta SET value = 999 WHERE key = 'schema_version'");
  ck_assert_sc(sc_open(path, NULL, &db), SC_CORRUPT);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "999"));
  tu_remove_db(path);
}
END_TEST

START_TEST(wal_and_full_durability_by_default) {
  char *path = tu_db_path("pragmas");
  sc_db *db = tu_open(path, NULL);
  ck_assert_int_eq(db->wconn != NULL, 1);
  sqlite3_stmt *st;
  ck_assert_int_eq(
      sqlite3_prepare_v2(db->wconn->h, "PRAGMA synchronous", -1, &st, NULL),
      SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_int_eq(sqlite3_column_int(st, 0), 2); /* FULL */
  sqlite3_finalize(st);
  sc_close(db);
  sqlite3 *h;
  sqlite3_open(path, &h);
  sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  sqlite3_close(h);
  tu_remove_db(path);
}
END_TEST

/* ---- group commit ------------------------------------------------------- */

/* An operation that writes a row, then fails: its savepoint is rolled back. */
typedef struct row_op {
  sc__op base;
  int value;
  bool fail;
  sem_t done;
} row_op;

static const char SQL_TEST_INSERT[] = "INSERT INTO t(v) VALUES(?1)";

static int row_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  row_op *op = (row_op *)base;
  sqlite3_stmt *st = sc__stmt(w, SQL_TEST_INSERT);
  ck_assert_ptr_nonnull(st);
  sqlite3_bind_int(st, 1, op->value);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
  sqlite3_reset(st);
  if (op->fail) return sc__op_fail(base, SC_CONFLICT, "fails on purpose");
  return SC_OK;
}

static void row_done(sc__op *base) {
  sem_post(&((row_op *)base)->done);
}

START_TEST(a_failing_operation_does_not_disturb_its_batch) {
  char *path = tu_db_path("batch");
  host_exec(path, "CREATE TABLE t(v INTEGER)");
  sc_db *db = tu_open(path, NULL);
  tu_gate *gate = tu_gate_close(db);
  enum { N = 20 };
  row_op ops[N];
  for (int i = 0; i < N; i++) {
    ops[i] = (row_op){.base = {.run = row_run, .done = row_done},
                      .value = i,
                      .fail = i % 3 == 1};
    sem_init(&ops[i].done, 0, 0);
    ck_assert_sc(sc__op_submit(db, &ops[i].base), SC_OK);
  }
  tu_gate_open(gate);
  int ok = 0;
  for (int i = 0; i < N; i++) {
    sem_wait(&ops[i].done);
    ck_assert_int_eq(ops[i].base.status, ops[i].fail ? SC_CONFLICT : SC_OK);
    if (!ops[i].fail) ok++;
    sem_destroy(&ops[i].done);
  }
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM t"), ok);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM t WHERE v % 3 = 1"), 0);
  tu_remove_db(path);
}
END_TEST

/* An operation that fails in the middle of its own writes: it inserts a
 * row, then meets an error (how), as a bug, a damaged row or an I/O error
 * would make it. */
enum { BREAK_ERROR = 1, BREAK_CONSTRAINT, BREAK_LOST };

typedef struct break_op {
  sc__op base;
  int how, value;
  sem_t done;
} break_op;

/* t has CHECK(v >= 0): this is a constraint violation, as from a bug. */
static const char SQL_TEST_BAD_INSERT[] = "INSERT INTO t(v) VALUES(-1)";

static int break_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  break_op *op = (break_op *)base;
  sqlite3_stmt *st = sc__stmt(w, SQL_TEST_INSERT);
  ck_assert_ptr_nonnull(st);
  sqlite3_bind_int(st, 1, op->value);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
  sqlite3_reset(st);
  switch (op->how) {
    case BREAK_ERROR:
      return sc__op_fail(base, SC_NOMEM, "out of memory halfway, on purpose");
    case BREAK_CONSTRAINT: {
      st = sc__stmt(w, SQL_TEST_BAD_INSERT);
      ck_assert_ptr_nonnull(st);
      int rc = sqlite3_step(st);
      sqlite3_reset(st);
      ck_assert_int_eq(rc & 0xff, SQLITE_CONSTRAINT);
      return sc__op_fail_sqlite(base, w, rc, "bad row");
    }
    default:
      /* What SQLite does on some I/O and out-of-memory errors: the whole
       * transaction is gone, the batch's earlier operations with it. */
      sqlite3_exec(w->h, "ROLLBACK", NULL, NULL, NULL);
      return sc__op_fail(base, SC_IOERR,
                         "transaction lost halfway, on purpose");
  }
}

static void break_done(sc__op *base) {
  sem_post(&((break_op *)base)->done);
}

START_TEST(an_operation_failing_halfway_leaves_no_trace) {
  static const int want[] = {[BREAK_ERROR] = SC_NOMEM,
                             [BREAK_CONSTRAINT] = SC_INVALID,
                             [BREAK_LOST] = SC_IOERR};
  for (int how = BREAK_ERROR; how <= BREAK_LOST; how++) {
    char *path = tu_db_path("halfway");
    host_exec(path, "CREATE TABLE t(v INTEGER CHECK(v >= 0))");
    sc_db *db = tu_open(path, NULL);
    long replays = atomic_load(&db->replays);
    tu_gate *gate = tu_gate_close(db);
    /* One batch: ten good rows around the broken operation, and a refusal
     * after it (it wrote, so the slow path must roll it back alone). */
    enum { N = 10 };
    row_op ops[N + 1];
    break_op broken = {.base = {.run = break_run, .done = break_done},
                       .how = how,
                       .value = 1000};
    sem_init(&broken.done, 0, 0);
    for (int i = 0; i <= N; i++) {
      ops[i] = (row_op){.base = {.run = row_run, .done = row_done},
                        .value = i,
                        .fail = i == N};
      sem_init(&ops[i].done, 0, 0);
      ck_assert_sc(sc__op_submit(db, &ops[i].base), SC_OK);
      if (i == N / 2) {
        ck_assert_sc(sc__op_submit(db, &broken.base), SC_OK);
      }
    }
    tu_gate_open(gate);
    sem_wait(&broken.done);
    ck_assert_msg(broken.base.status == want[how], "how %d: got %s", how,
                  sc_err_name(broken.base.status));
    for (int i = 0; i <= N; i++) {
      sem_wait(&ops[i].done);
      ck_assert_msg(ops[i].base.status == (i == N ? SC_CONFLICT : SC_OK),
                    "how %d, op %d: %s (%s)", how, i,
                    sc_err_name(ops[i].base.status), ops[i].base.errmsg);
      sem_destroy(&ops[i].done);
    }
    sem_destroy(&broken.done);
    long after = atomic_load(&db->replays);
    ck_assert_int_gt(after, replays);
    ck_assert_sc(sc_close(db), SC_OK);
    ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM t"), N);
    ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM t WHERE v >= 10"), 0);
    tu_remove_db(path);
  }
}
END_TEST

/* Validate, then apply: every refusal of the real operations comes before
 * their first write, so none of them sends its batch to the slow path. */
START_TEST(refusals_write_nothing) {
  char *path = tu_db_path("refusals");
  tu_clock clock;
  sc_options o;
  sc_options_init(&o);
  tu_use_clock(&o, &clock, 1000000);
  sc_db *db = tu_open(path, &o);
  sc_coupon_policy_spec spec = {
      .name = "r", .max_count = 2, .per_user_limit = 1, .discount_amount = 5};
  sc_id policy, other, product, coupon, order;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &other), SC_OK);
  ck_assert_sc(sc_product_create(db, "p", 100, 3, &product), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 250, NULL), SC_OK);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, &coupon), SC_OK);
  long replays = atomic_load(&db->replays);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_LIMIT_REACHED);
  ck_assert_sc(sc_coupon_issue(db, policy, 2, NULL), SC_OK);
  ck_assert_sc(sc_coupon_issue(db, policy, 3, NULL), SC_SOLD_OUT);
  ck_assert_sc(sc_coupon_policy_pause(db, other, 1), SC_OK);
  ck_assert_sc(sc_coupon_issue(db, other, 1, NULL), SC_PAUSED);
  ck_assert_sc(sc_coupon_policy_pause(db, 999, 1), SC_NOT_FOUND);
  ck_assert_sc(sc_product_restock(db, product, INT64_MAX), SC_INVALID);
  ck_assert_sc(sc_account_deposit(db, 1, INT64_MAX, NULL), SC_INVALID);
  /* Two lines, the second refused: the first must not be reserved. */
  sc_id second;
  ck_assert_sc(sc_product_create(db, "q", 10, 1, &second), SC_OK);
  sc_line lines[2] = {{product, 1}, {second, 2}};
  sc_checkout_req req = {.user = 1, .lines = lines, .n_lines = 2};
  ck_assert_sc(sc_checkout(db, &req, &order), SC_OUT_OF_STOCK);
  lines[1].qty = 1;
  req.coupon = 999;
  ck_assert_sc(sc_checkout(db, &req, &order), SC_NOT_FOUND);
  req.coupon = coupon;
  req.user = 2; /* not the coupon's holder */
  ck_assert_sc(sc_account_deposit(db, 2, 1000, NULL), SC_OK);
  ck_assert_sc(sc_checkout(db, &req, &order), SC_COUPON_UNAVAILABLE);
  req.user = 1;
  lines[0].qty = 3; /* 300 + 10 - 5 > 250 */
  ck_assert_sc(sc_checkout(db, &req, &order), SC_INSUFFICIENT_BALANCE);
  lines[0].qty = 1;
  ck_assert_sc(sc_checkout(db, &req, &order), SC_OK);
  atomic_store(&clock.now_ms, 1000000 + 24 * 3600 * 1000);
  ck_assert_sc(sc_order_pay(db, order), SC_EXPIRED);
  ck_assert_sc(sc_order_pay(db, 999), SC_NOT_FOUND);
  int expired = 0;
  ck_assert_sc(sc_orders_expire_due(db, &expired), SC_OK);
  ck_assert_int_eq(expired, 1);
  ck_assert_sc(sc_order_cancel(db, order), SC_INVALID_STATE);
  ck_assert_sc(sc_order_pay(db, order), SC_EXPIRED);
  long after = atomic_load(&db->replays);
  ck_assert_int_eq(after, replays);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* A blocking public call on a thread of its own: it waits in the queue
 * while the writer is held. */
typedef struct queued_call {
  sc_db *db;
  pthread_t t;
  int64_t price;
  int status;
} queued_call;

static void *create_product(void *arg) {
  queued_call *c = arg;
  sc_id id;
  c->status = sc_product_create(c->db, "queued", c->price, 1, &id);
  return NULL;
}

typedef struct close_race {
  sc_db *db;
  int close_status;
} close_race;

static void *closer(void *arg) {
  close_race *r = arg;
  r->close_status = sc_close(r->db);
  return NULL;
}

START_TEST(close_waits_for_calls_and_refuses_new_ones) {
  char *path = tu_db_path("closing");
  close_race r = {.db = tu_open(path, NULL)};
  tu_gate *gate = tu_gate_close(r.db);
  /* A blocking call queued behind the gate is a call in progress. */
  queued_call queued = {.db = r.db, .price = 42};
  pthread_t closing;
  ck_assert_int_eq(pthread_create(&queued.t, NULL, create_product, &queued), 0);
  while (atomic_load(&r.db->calls) == 0)
    usleep(1000);
  ck_assert_int_eq(pthread_create(&closing, NULL, closer, &r), 0);
  while (!atomic_load(&r.db->closing))
    usleep(1000);
  /* sc_close is waiting for the call in progress: the handle is still
   * valid, and a new call is refused. */
  ck_assert_sc(sc_coupon_issue(r.db, 1, 1, NULL), SC_CLOSED);
  ck_assert_sc(sc_coupon_policy_get(r.db, 1, &(sc_coupon_policy){0}),
               SC_CLOSED);
  tu_gate_open(gate);
  pthread_join(queued.t, NULL);
  pthread_join(closing, NULL);
  ck_assert_sc(queued.status, SC_OK);
  ck_assert_sc(r.close_status, SC_OK);
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_product WHERE price = 42"), 1);
  tu_remove_db(path);
}
END_TEST

START_TEST(a_full_queue_is_busy_after_the_timeout) {
  char *path = tu_db_path("full");
  sc_options o;
  sc_options_init(&o);
  o.queue_max = 2;
  o.busy_timeout_ms = 100;
  if (tu_pg_mode()) {
    /* Connecting and migrating a new schema is bounded by the same
     * timeout: migrate first, and leave the connection more room (under
     * a sanitizer on a loaded machine it took over 100 ms). */
    ck_assert_sc(sc_close(tu_open(path, NULL)), SC_OK);
    o.busy_timeout_ms = 1000;
  }
  sc_db *db = tu_open(path, &o);
  tu_gate *gate = tu_gate_close(db);
  queued_call calls[2];
  for (int i = 0; i < 2; i++) {
    calls[i] = (queued_call){.db = db, .price = 1};
    ck_assert_int_eq(
        pthread_create(&calls[i].t, NULL, create_product, &calls[i]), 0);
  }
  tu_wait_queued(db, 2);
  /* The writer is held and the queue is full: the next caller waits its
   * bounded time, then is told the database is busy. */
  ck_assert_sc(sc_coupon_issue(db, 1, 1, NULL), SC_BUSY);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "queue"));
  tu_gate_open(gate);
  for (int i = 0; i < 2; i++) {
    pthread_join(calls[i].t, NULL);
    ck_assert_sc(calls[i].status, SC_OK);
  }
  /* Room again: calls go through. */
  sc_coupon_policy_spec spec = {.name = "after", .max_count = 1};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_product"), 2);
  tu_remove_db(path);
}
END_TEST

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

START_TEST(checkpoints_keep_the_wal_bounded) {
  /* One commit per issue: without checkpoints the WAL would grow by a few
   * pages per commit, past 60 MB here. The writer's automatic checkpoint is
   * off; the checkpoint thread and the writer's finishing step must keep it
   * to a few thousand pages. */
  char *path = tu_db_path("wal");
  sc_options o;
  sc_options_init(&o);
  o.batch_max = 1;
  sc_db *db = tu_open(path, &o);
  sc_coupon_policy_spec spec = {.name = "wal", .max_count = 100000};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  char wal[600];
  snprintf(wal, sizeof wal, "%s-wal", path);
  long largest = 0;
  for (int u = 1; u <= 3000; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
    long size = file_size(wal);
    if (size > largest) largest = size;
  }
  ck_assert_int_gt(largest, 0);
  ck_assert_msg(largest < 20L * 1024 * 1024, "WAL grew to %ld bytes", largest);
  /* One checkpoint of the thread per WAL cycle: run back to back, each
   * fsyncing the database file, they held up the writer's own fsyncs. */
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_ge(m.wal_rewinds, 2);
  ck_assert_msg(m.checkpoints <= m.wal_rewinds + 1,
                "%llu checkpoints for %llu WAL cycles",
                (unsigned long long)m.checkpoints,
                (unsigned long long)m.wal_rewinds);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* ---- PostgreSQL: one failing call of a batch ----------------------------
 * The server-side function of one operation raises an SQL error (here a
 * trigger stands for a bug or a damaged row): that operation fails alone,
 * the rest of its batch (grouped issues, deposits) commits once. */

typedef struct batch_call {
  sc_db *db;
  pthread_t t;
  sc_id policy, user; /* policy 0: a deposit */
  int status;
  char errmsg[256];
} batch_call;

static void *batch_call_main(void *arg) {
  batch_call *c = arg;
  c->status = c->policy != 0 ? sc_coupon_issue(c->db, c->policy, c->user, NULL)
                             : sc_account_deposit(c->db, c->user, 100, NULL);
  snprintf(c->errmsg, sizeof c->errmsg, "%s", sc_errmsg(c->db));
  return NULL;
}

START_TEST(a_failing_call_fails_alone_and_its_batch_commits) {
  char *path = tu_db_path("culprit");
  sc_db *db = tu_open(path, NULL);
  tu_exec(path,
          "CREATE FUNCTION sc_test_refuse() RETURNS trigger LANGUAGE plpgsql"
          " AS $$ BEGIN IF NEW.user_id = 666 THEN"
          " RAISE EXCEPTION 'a damaged row, on purpose'; END IF;"
          " RETURN NEW; END $$;"
          "CREATE TRIGGER sc_test_refuse BEFORE INSERT ON sc_coupon"
          " FOR EACH ROW EXECUTE FUNCTION sc_test_refuse()");
  sc_coupon_policy_spec spec = {.name = "c", .max_count = 100};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  tu_gate *gate = tu_gate_close(db);
  enum { N = 15 };
  batch_call calls[N];
  for (int i = 0; i < N; i++) {
    /* Ten issues side by side (one grouped call), user 666 fifth; then
     * five deposits. */
    calls[i] = (batch_call){
        .db = db, .policy = i < 10 ? policy : 0, .user = i == 4 ? 666 : i + 1};
    ck_assert_int_eq(
        pthread_create(&calls[i].t, NULL, batch_call_main, &calls[i]), 0);
    tu_wait_queued(db, i + 1); /* in this order */
  }
  tu_gate_open(gate);
  for (int i = 0; i < N; i++) {
    pthread_join(calls[i].t, NULL);
    if (i == 4) {
      ck_assert_sc(calls[i].status, SC_ERROR);
      ck_assert_msg(strstr(calls[i].errmsg, "on purpose") != NULL, "%s",
                    calls[i].errmsg);
    } else {
      ck_assert_msg(calls[i].status == SC_OK, "call %d: %s (%s)", i,
                    sc_err_name(calls[i].status), calls[i].errmsg);
    }
  }
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, 9);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 9);
  ck_assert_int_eq(tu_count(path,
                            "SELECT coalesce(sum(balance), 0)"
                            " FROM sc_account"),
                   500);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 9 + 5);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* PostgreSQL: the notification a batch sends for other hosts' workers
 * fails (here a function of the schema shadows pg_notify; in production a
 * NOTIFY queue filled by a listener that stopped reading fails the COMMIT):
 * it costs the listeners their speed, never the batch. */
START_TEST(a_failing_notification_never_fails_the_batch) {
  char *path = tu_db_path("notify-fails");
  sc_db *first = tu_open(path, NULL); /* makes the schema */
  tu_exec(path,
          "CREATE FUNCTION pg_notify(ch text, payload text) RETURNS void"
          " LANGUAGE plpgsql AS $$ BEGIN"
          " RAISE EXCEPTION 'too many notifications, on purpose'; END $$");
  sc_db *db = tu_open(path, NULL); /* its statements see the shadow */
  sc_coupon_policy_spec spec = {.name = "n", .max_count = 100};
  sc_id policy;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  for (int u = 1; u <= 20; u++) {
    int rc = sc_coupon_issue(db, policy, u, NULL);
    ck_assert_msg(rc == SC_OK, "issue %d: %s (%s)", u, sc_err_name(rc),
                  sc_errmsg(db));
  }
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 20);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 20);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_sc(sc_close(first), SC_OK);
  tu_remove_db(path);
}
END_TEST

Suite *engine_suite(void) {
  Suite *s = suite_create("engine");
  TCase *tc = tu_tcase("engine");
  tcase_add_test(tc, status_codes_have_names_and_texts);
  tcase_add_test(tc, null_is_harmless);
  tcase_add_test(tc, open_rejects_bad_arguments);
  tcase_add_test(tc, open_refuses_each_option_out_of_range);
  tcase_add_test(tc, refuses_a_newer_schema);
  tcase_add_test(tc, refusals_write_nothing);
  tcase_add_test(tc, close_waits_for_calls_and_refuses_new_ones);
  tcase_add_test(tc, a_full_queue_is_busy_after_the_timeout);
  if (!tu_pg_mode()) {
    /* About the SQLite file and engine, so not registered against
     * PostgreSQL: paths and files, a host's own SQLite file and its
     * migrations, WAL and its checkpoints, and the SQLite writer's
     * savepoint replay (operations written against its connection). */
    tcase_add_test(tc, open_rejects_unusable_paths);
    tcase_add_test(tc, shares_a_host_file);
    tcase_add_test(tc, migrates_generated_ids_to_never_reused);
    tcase_add_test(tc, wal_and_full_durability_by_default);
    tcase_add_test(tc, a_failing_operation_does_not_disturb_its_batch);
    tcase_add_test(tc, an_operation_failing_halfway_leaves_no_trace);
    tcase_add_test(tc, checkpoints_keep_the_wal_bounded);
  } else {
    /* The PostgreSQL batch's own slow path (the failing call excluded,
     * the batch run again without it). */
    tcase_add_test(tc, a_failing_call_fails_alone_and_its_batch_commits);
    tcase_add_test(tc, a_failing_notification_never_fails_the_batch);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(engine_suite());
}
