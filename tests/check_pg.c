/* The PostgreSQL backend itself: URIs and unreachable servers, several
 * hosts (processes) sharing one database, and a connection lost under
 * load. Runs only against a server (SC_TEST_DB=pg, label "pg"). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pg/pg.h"
#include "test_util.h"

static int64_t ms_since(int64_t start_ns) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return ((int64_t)t.tv_sec * 1000000000 + t.tv_nsec - start_ns) / 1000000;
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* A connection of someone else's (an administrator, another program) on
 * the database and schema of uri. */
static PGconn *outside(const char *uri) {
  const char *base = getenv("SC_TEST_PG_URI");
  PGconn *c = PQconnectdb(base && base[0] ? base : "postgresql://");
  ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
  char sql[256];
  snprintf(sql, sizeof sql, "SET search_path TO \"%s\"",
           strstr(uri, "schema=") + 7);
  PQclear(PQexec(c, sql));
  return c;
}

static void outside_exec(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK ||
                    PQresultStatus(r) == PGRES_TUPLES_OK,
                "%s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
}

/* ---- URIs and unreachable servers -----------------------------------------
 */

static void assert_open_fails(const char *uri, int busy_ms, int want,
                              const char *says) {
  sc_options o;
  sc_options_init(&o);
  o.busy_timeout_ms = busy_ms;
  sc_db *db = (sc_db *)1;
  int64_t t0 = now_ns();
  ck_assert_sc(sc_open(uri, &o, &db), want);
  int64_t took = ms_since(t0);
  ck_assert_ptr_null(db);
  ck_assert_msg(strstr(sc_errmsg(NULL), says) != NULL, "%s: \"%s\" not in %s",
                uri, says, sc_errmsg(NULL));
  /* Within the busy timeout, with room for a loaded machine. */
  ck_assert_msg(took <= busy_ms + 1000, "%s took %lld ms", uri,
                (long long)took);
}

START_TEST(bad_uris_and_unreachable_servers_fail_clearly) {
  assert_open_fails("postgresql://localhost:notaport/x", 1000, SC_INVALID,
                    "bad PostgreSQL URI");
  assert_open_fails("postgresql://localhost/x?nosuchoption=1", 1000, SC_INVALID,
                    "bad PostgreSQL URI");
  assert_open_fails("postgresql:///x?schema=Bad-Name", 1000, SC_INVALID,
                    "schema");
  /* A Unix socket nothing listens on: refused inside libpq's first
   * connect, an unreachable server all the same, not a bad URI. */
  assert_open_fails("postgresql:///x?host=/nonexistent-sc-dir", 1000, SC_IOERR,
                    "cannot connect to PostgreSQL");
  /* Nothing listens on port 1: refused at once. */
  assert_open_fails("postgresql://127.0.0.1:1/x", 1000, SC_IOERR,
                    "cannot connect to PostgreSQL");
  /* A documentation address (TEST-NET-1) that never answers: the connect
   * gives up at the busy timeout, not libpq's. */
  assert_open_fails("postgresql://192.0.2.1/x", 1000, SC_IOERR,
                    "cannot connect to PostgreSQL");
}
END_TEST

/* A reserved word is a valid schema name: it is quoted wherever it is
 * written into SQL. */
START_TEST(a_reserved_word_is_a_schema_name) {
  char *uri = tu_db_path("reserved");
  char *q = strstr(uri, "schema=");
  ck_assert_ptr_nonnull(q);
  snprintf(q + 7, 64, "order");
  sc_db *db = tu_open(uri, NULL);
  sc_coupon_policy_spec spec = {.name = "reserved", .max_count = 1};
  sc_id policy = 0, coupon = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, &coupon), SC_OK);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, 1);
  ck_assert_sc(sc_close(db), SC_OK);
  PGconn *c = outside(uri);
  outside_exec(c, "DROP SCHEMA \"order\" CASCADE");
  PQfinish(c);
  free(uri);
}
END_TEST

START_TEST(unsupported_calls_say_so) {
  char *uri = tu_db_path("unsupported");
  sc_db *db = tu_open(uri, NULL);
  ck_assert_sc(sc_backup(db, "/tmp/x.db"), SC_MISUSE);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "use pg_dump"));
  /* Repair is supported (check_repair_pg): a clean schema needs none. */
  int changes = -1;
  ck_assert_sc(sc_repair(db, 1, &changes, NULL), SC_OK);
  ck_assert_int_eq(changes, 0);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri);
}
END_TEST

/* ---- waits on the server are bounded -------------------------------------
 */

START_TEST(a_row_lock_held_elsewhere_fails_busy_in_time) {
  char *uri = tu_db_path("rowlock");
  sc_options o;
  sc_options_init(&o);
  o.busy_timeout_ms = 500;
  sc_db *db = tu_open(uri, &o);
  sc_coupon_policy_spec spec = {.name = "locked", .max_count = 10};
  sc_id policy = 0, coupon = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  PGconn *c = outside(uri);
  char sql[128];
  snprintf(sql, sizeof sql,
           "SELECT 1 FROM sc_coupon_policy WHERE id = %lld FOR UPDATE",
           (long long)policy);
  outside_exec(c, "BEGIN");
  outside_exec(c, sql);
  int64_t t0 = now_ns();
  ck_assert_sc(sc_coupon_issue(db, policy, 1, &coupon), SC_BUSY);
  int64_t took = ms_since(t0);
  ck_assert_msg(took <= 2000, "the issue waited %lld ms", (long long)took);
  outside_exec(c, "ROLLBACK");
  PQfinish(c);
  ck_assert_int_eq(tu_count(uri, "SELECT count(*) FROM sc_coupon"), 0);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, &coupon), SC_OK);
  ck_assert_int_eq(tu_count(uri, "SELECT count(*) FROM sc_coupon"), 1);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri);
}
END_TEST

/* ---- read connections are capped -----------------------------------------
 */

#define READERS 16
#define READ_POOL 2

typedef struct readers {
  const char *uri;
  sc_db *db;
  sc_id product;
  atomic_bool stop;
  atomic_int reads, failed, most;
} readers;

/* The server connections of the handle on uri (-1: the query failed). */
static int handle_connections(PGconn *c, const char *uri) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
           " 'libshopcore/%s'",
           strstr(uri, "schema=") + 7);
  PGresult *res = PQexec(c, sql);
  int n =
      PQresultStatus(res) == PGRES_TUPLES_OK ? atoi(PQgetvalue(res, 0, 0)) : -1;
  PQclear(res);
  return n;
}

/* Thread 0 counts the handle's server connections while the others read. */
static void read_or_count(int t, void *ud) {
  readers *r = ud;
  if (t > 0) {
    while (!atomic_load(&r->stop)) {
      sc_product p;
      if (sc_product_get(r->db, r->product, &p) == SC_OK) {
        atomic_fetch_add(&r->reads, 1);
      } else {
        atomic_fetch_add(&r->failed, 1);
      }
    }
    return;
  }
  PGconn *c = outside(r->uri);
  for (int64_t t0 = now_ns(); ms_since(t0) < 1500;) {
    int n = handle_connections(c, r->uri);
    if (n > atomic_load(&r->most)) atomic_store(&r->most, n);
    usleep(2000);
  }
  PQfinish(c);
  atomic_store(&r->stop, true);
}

START_TEST(read_connections_stay_within_read_pool_max) {
  char *uri = tu_db_path("readcap");
  sc_options o;
  sc_options_init(&o);
  o.read_pool_max = READ_POOL;
  readers r = {.uri = uri, .db = tu_open(uri, &o)};
  ck_assert_sc(sc_product_create(r.db, "read", 5, 5, &r.product), SC_OK);
  /* The connection sc_open migrated on is closed, but its server process
   * may still be listed for a moment: the count starts from the writer. */
  PGconn *c = outside(uri);
  for (int64_t t0 = now_ns(); handle_connections(c, uri) != 1;) {
    ck_assert_msg(ms_since(t0) < 5000, "the handle holds %d connections",
                  handle_connections(c, uri));
    usleep(2000);
  }
  PQfinish(c);
  tu_race(READERS + 1, read_or_count, &r);
  ck_assert_int_eq(atomic_load(&r.failed), 0);
  ck_assert_int_gt(atomic_load(&r.reads), READERS);
  /* The writer and at most READ_POOL readers. */
  int most = atomic_load(&r.most);
  ck_assert_int_le(most, 1 + READ_POOL);
  ck_assert_int_gt(most, 1);
  ck_assert_sc(sc_close(r.db), SC_OK);
  tu_remove_db(uri);
}
END_TEST

/* ---- several hosts: the cap and per-user limits ---------------------------
 */

#define PROCS 4
#define THREADS 16
#define CAP 700
#define LIMIT 2
#define USERS 500

typedef struct hosts {
  const char *uri;
  sc_id policy, product;
  int users; /* issuers pick users 1..users */
} hosts;

typedef struct issuer {
  sc_db *db;
  sc_id policy;
  int proc, users;
  atomic_int issued, other;
} issuer;

static void issue_until_sold_out(int t, void *ud) {
  issuer *r = ud;
  uint64_t rng = (uint64_t)(r->proc * 100 + t + 1);
  for (;;) {
    sc_id user = tu_rng_range(&rng, 1, r->users);
    int rc = sc_coupon_issue(r->db, r->policy, user, NULL);
    if (rc == SC_OK) atomic_fetch_add(&r->issued, 1);
    if (rc == SC_SOLD_OUT) return;
    if (rc != SC_OK && rc != SC_LIMIT_REACHED) {
      fprintf(stderr, "issue: %s: %s\n", sc_err_name(rc), sc_errmsg(r->db));
      atomic_fetch_add(&r->other, 1);
      return;
    }
  }
}

static int issue_host(int i, void *ud) {
  hosts *h = ud;
  sc_db *db = NULL;
  if (sc_open(h->uri, NULL, &db) != SC_OK) return 10;
  issuer r = {.db = db, .policy = h->policy, .proc = i, .users = h->users};
  tu_race(THREADS, issue_until_sold_out, &r);
  int bad = atomic_load(&r.other) != 0;
  if (sc_close(db) != SC_OK) bad = 1;
  return bad ? 11 : 0;
}

/* Deadlocks the server detected in this database so far. */
static int64_t deadlocks(const char *uri) {
  PGconn *c = outside(uri);
  PGresult *r = PQexec(c,
                       "SELECT deadlocks FROM pg_stat_database"
                       " WHERE datname = current_database()");
  int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                  ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                  : -1;
  PQclear(r);
  PQfinish(c);
  return n;
}

/* PROCS hosts of THREADS threads issue users 1..users until cap is sold
 * out: exactly cap coupons (and events), none of a user above limit, and
 * no call refused otherwise (SC_BUSY included). The users that hold most
 * hold exactly most (0: any number up to limit). */
static void race_to_the_cap(const char *name, int cap, int users, int limit,
                            int most) {
  char *uri = tu_db_path(name);
  sc_db *db = tu_open(uri, NULL);
  sc_coupon_policy_spec spec = {
      .name = "flash", .max_count = cap, .per_user_limit = limit};
  hosts h = {.uri = uri, .users = users};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &h.policy), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_fork_race(PROCS, issue_host, &h);
  db = tu_open(uri, NULL);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, h.policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, cap);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(uri, "SELECT count(*) FROM sc_coupon"), cap);
  int64_t held = tu_count(uri,
                          "SELECT coalesce(max(n), 0) FROM (SELECT"
                          " count(*) n FROM sc_coupon GROUP BY"
                          " user_id) AS held");
  ck_assert_int_le(held, limit);
  if (most > 0) ck_assert_int_eq(held, most);
  ck_assert_int_eq(tu_count(uri,
                            "SELECT count(*) FROM sc_outbox"
                            " WHERE type = 1"),
                   cap);
  /* No event of a coupon that is not there. */
  ck_assert_int_eq(tu_count(uri,
                            "SELECT count(*) FROM sc_outbox e WHERE"
                            " e.agg_kind = 1 AND NOT EXISTS (SELECT 1"
                            " FROM sc_coupon c WHERE c.id = e.agg_id)"),
                   0);
  tu_remove_db(uri);
}

START_TEST(four_hosts_issue_exactly_the_cap) {
  race_to_the_cap("cap", CAP, USERS, LIMIT, LIMIT);
}
END_TEST

/* Few users shared by all hosts on a small cap: most issues race another
 * host's for the same user's last coupon or for the cap's last ones. */
START_TEST(four_hosts_sharing_few_users_keep_limits_and_cap) {
  race_to_the_cap("fewusers", 50, 40, LIMIT, LIMIT);
}
END_TEST

/* Every host issues to the same 40 users, with room for many coupons
 * each: nearly every batch meets another host's on a user, and waits for
 * it; none is refused (a design that ran such a batch again starved
 * under heavier load of this kind: SC_BUSY). 3,000 coupons over 40 users: a
 * user holds 75 on average, none past the limit of 1,000. */
START_TEST(four_hosts_on_the_same_few_users_are_never_busy) {
  race_to_the_cap("sameusers", 3000, 40, 1000, 0);
}
END_TEST

/* ---- a policy's slots -----------------------------------------------------
 * A policy's cap is split into slots (schema version 3), so that hosts
 * issuing on one policy do not wait for each other's commits. Another
 * host's batch is played here by an outside connection that calls
 * sc_issue_many in a transaction it keeps open. */

/* The outside host's batch, left open: it holds one slot, and a coupon of
 * users[] not yet committed. */
static PGconn *open_batch(const char *uri, sc_id policy, const char *users) {
  PGconn *c = outside(uri);
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT * FROM sc_issue_many(%lld, '{%s}', 1)",
           (long long)policy, users);
  outside_exec(c, "BEGIN");
  PGresult *r = PQexec(c, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
                PQresultErrorMessage(r));
  ck_assert_str_eq(PQgetvalue(r, 0, 0), "0"); /* issued */
  PQclear(r);
  return c;
}

/* Calls of the library's in a thread of their own, to see them wait: a
 * pause, or issues to users user, user + 1, ... (n of them, at least 1),
 * one after the other. rc is the first call's status. */
typedef struct waiting {
  sc_db *db;
  sc_id policy, user;
  int pause;   /* 1: pause the policy instead of issuing */
  int deposit; /* 1: deposit 100 to user instead of issuing */
  int n;
  int rc, rcs[32];
  atomic_bool done;
  pthread_t thread;
} waiting;

static void *waiting_call(void *arg) {
  waiting *w = arg;
  for (int i = 0; i < (w->n > 0 ? w->n : 1); i++) {
    w->rcs[i] = w->pause ? sc_coupon_policy_pause(w->db, w->policy, 1)
                : w->deposit
                    ? sc_account_deposit(w->db, w->user, 100, NULL)
                    : sc_coupon_issue(w->db, w->policy, w->user + i, NULL);
  }
  w->rc = w->rcs[0];
  atomic_store(&w->done, true);
  return NULL;
}

static void waiting_start(waiting *w) {
  atomic_store(&w->done, false);
  ck_assert_int_eq(pthread_create(&w->thread, NULL, waiting_call, w), 0);
}

/* The call waits, for the outside transaction: the handle's writer waits
 * on a lock, and the call has not returned. */
static void assert_still_waiting(const char *uri, waiting *w) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
           " 'libshopcore/%s' AND wait_event_type = 'Lock'",
           strstr(uri, "schema=") + 7);
  for (int i = 0; i < 1000 && tu_count(uri, sql) == 0; i++)
    usleep(10 * 1000);
  ck_assert_int_eq(tu_count(uri, sql), 1);
  ck_assert_msg(!atomic_load(&w->done), "the call did not wait (%s)",
                sc_err_name(w->rc));
}

static sc_db *open_slots_db(const char *uri, int64_t cap, int limit,
                            sc_id *policy) {
  sc_options o;
  sc_options_init(&o);
  o.busy_timeout_ms = 5000;
  sc_db *db = tu_open(uri, &o);
  sc_coupon_policy_spec spec = {
      .name = "slots", .max_count = cap, .per_user_limit = limit};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, policy), SC_OK);
  return db;
}

/* The end of a slot test: the policy counts issued coupons, every
 * invariant holds, and the handle and the schema go. */
static void close_slots_db(sc_db *db, char *uri, sc_id policy, int64_t issued) {
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  ck_assert_int_eq(p.issued_count, issued);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri);
}

/* Another host's batch under way holds one slot: this host issues from the
 * others meanwhile (version 2 waited for that batch's commit, here until
 * SC_BUSY). Only the same user's next coupon waits, for the other batch's
 * end: taken if it rolls back, the limit if it commits. */
START_TEST(another_host_s_open_batch_holds_up_only_its_users) {
  char *uri = tu_db_path("slots-open");
  sc_id policy = 0;
  sc_db *db = open_slots_db(uri, 1000, 1, &policy);
  PGconn *other = open_batch(uri, policy, "1");
  for (sc_id u = 2; u <= 21; u++)
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  waiting w = {.db = db, .policy = policy, .user = 1};
  waiting_start(&w);
  assert_still_waiting(uri, &w);
  outside_exec(other, "COMMIT");
  ck_assert_int_eq(pthread_join(w.thread, NULL), 0);
  ck_assert_sc(w.rc, SC_LIMIT_REACHED);
  PQfinish(other);

  other = open_batch(uri, policy, "50");
  w.user = 50;
  waiting_start(&w);
  assert_still_waiting(uri, &w);
  outside_exec(other, "ROLLBACK");
  ck_assert_int_eq(pthread_join(w.thread, NULL), 0);
  ck_assert_sc(w.rc, SC_OK);
  PQfinish(other);

  ck_assert_int_eq(tu_count(uri,
                            "SELECT count(*) FROM sc_coupon"
                            " WHERE user_id IN (1, 50)"),
                   2);
  close_slots_db(db, uri, policy, 22); /* 1, 2..21, 50 */
}
END_TEST

/* A pause waits for the batches under way on the policy; once it has
 * returned, no issue succeeds. */
START_TEST(a_pause_waits_for_batches_under_way_then_holds) {
  char *uri = tu_db_path("slots-pause");
  sc_id policy = 0;
  sc_db *db = open_slots_db(uri, 1000, 1, &policy);
  PGconn *other = open_batch(uri, policy, "5");
  waiting w = {.db = db, .policy = policy, .pause = 1};
  waiting_start(&w);
  assert_still_waiting(uri, &w);
  outside_exec(other, "COMMIT");
  ck_assert_int_eq(pthread_join(w.thread, NULL), 0);
  ck_assert_sc(w.rc, SC_OK);
  ck_assert_sc(sc_coupon_issue(db, policy, 6, NULL), SC_PAUSED);
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT st FROM sc_issue_many(%lld, '{7}', 1)",
           (long long)policy);
  PGresult *r = PQexec(other, sql);
  ck_assert_str_eq(PQgetvalue(r, 0, 0), "14");
  PQclear(r);
  PQfinish(other);
  sc_coupon_policy p;
  ck_assert_sc(sc_coupon_policy_get(db, policy, &p), SC_OK);
  ck_assert_int_eq(p.paused, 1);
  close_slots_db(db, uri, policy, 1); /* the batch the pause waited for */
}
END_TEST

/* A cap of 20 in 8 slots (3, 3, 3, 3, 2, 2, 2, 2), one of them held by
 * another host's batch under way. Issues one at a time take a slot with
 * more than one coupon left; then the last ones come from every slot's
 * leftovers at once, so the sale waits for that batch, and says "sold out"
 * only at the cap. */
START_TEST(sold_out_is_said_only_at_the_cap) {
  char *uri = tu_db_path("slots-soldout");
  sc_id policy = 0;
  sc_db *db = open_slots_db(uri, 20, 1, &policy);
  ck_assert_int_eq(tu_count(uri, "SELECT count(*) FROM sc_coupon_slot"), 8);
  PGconn *other = open_batch(uri, policy, "100");
  waiting w = {.db = db, .policy = policy, .user = 1, .n = 25};
  waiting_start(&w);
  assert_still_waiting(uri, &w);
  /* Taken from the free slots before the wait: 10 or 11, by the slot the
   * other batch holds (3 or 2 coupons). */
  int64_t before = tu_count(uri, "SELECT count(*) FROM sc_coupon");
  ck_assert_msg(before >= 10 && before <= 11, "%lld issued before the wait",
                (long long)before);
  outside_exec(other, "COMMIT");
  PQfinish(other);
  ck_assert_int_eq(pthread_join(w.thread, NULL), 0);
  for (int i = 0; i < 25; i++)
    ck_assert_sc(w.rcs[i], i < 19 ? SC_OK : SC_SOLD_OUT);
  ck_assert_int_eq(tu_count(uri,
                            "SELECT count(*) FROM sc_coupon_slot"
                            " WHERE issued <> quota"),
                   0);
  close_slots_db(db, uri, policy, 20);
}
END_TEST

/* Until the backend of c waits on a lock held by holder's backend. */
static void until_waiting_for(const char *uri, PGconn *c, PGconn *holder) {
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT count(*) WHERE %d = ANY(pg_blocking_pids(%d))",
           PQbackendPID(holder), PQbackendPID(c));
  for (int i = 0; i < 1000 && tu_count(uri, sql) == 0; i++)
    usleep(10 * 1000);
  ck_assert_int_eq(tu_count(uri, sql), 1);
}

/* The SQLSTATE of c's pending call: "" when it answered rows. */
static const char *call_outcome(PGconn *c, char *buf, size_t cap) {
  PGresult *r = PQgetResult(c);
  const char *st = PQresultStatus(r) == PGRES_TUPLES_OK
                       ? ""
                       : PQresultErrorField(r, PG_DIAG_SQLSTATE);
  snprintf(buf, cap, "%s", st ? st : "?");
  PQclear(r);
  while ((r = PQgetResult(c)) != NULL)
    PQclear(r);
  return buf;
}

/* Batches issuing to the same users on several hosts take turns on each
 * user, taking the users' locks in one order (their keys'), so none waits
 * in a cycle and none has to run again. With a, b, c the users in that
 * order: T waits for a's other batch, then holds b and waits for c's; C
 * waits for T on a. (Deciding a lost user again in T's transaction made a
 * cycle with C: a deadlock; running T's batch again instead starved
 * batches under load.) */
START_TEST(issues_to_one_user_on_several_hosts_wait_in_user_order) {
  char *uri = tu_db_path("slots-users");
  sc_id policy = 0;
  sc_db *db = open_slots_db(uri, 1000000, 100, &policy);
  ck_assert_sc(sc_close(db), SC_OK);
  char sql[256], x[8], y[8];
  PGconn *t = outside(uri), *c = outside(uri);
  snprintf(sql, sizeof sql,
           "SELECT u FROM unnest('{1,2,3}'::bigint[]) AS u"
           " ORDER BY hashtext(%lld || ' ' || u)",
           (long long)policy);
  PGresult *r = PQexec(t, sql);
  ck_assert_int_eq(PQntuples(r), 3);
  char a[24], b[24], users[80], pair[56];
  snprintf(a, sizeof a, "%s", PQgetvalue(r, 0, 0));
  snprintf(b, sizeof b, "%s", PQgetvalue(r, 1, 0));
  PGconn *first = open_batch(uri, policy, a),
         *last = open_batch(uri, policy, PQgetvalue(r, 2, 0));
  snprintf(users, sizeof users, "1,2,3");
  snprintf(pair, sizeof pair, "%s,%s", a, b);
  PQclear(r);
  outside_exec(t, "BEGIN");
  snprintf(sql, sizeof sql, "SELECT * FROM sc_issue_many(%lld, '{%s}', 1)",
           (long long)policy, users);
  ck_assert_int_eq(PQsendQuery(t, sql), 1);
  until_waiting_for(uri, t, first); /* on a */
  outside_exec(first, "COMMIT");
  until_waiting_for(uri, t, last); /* on c, holding b */
  outside_exec(c, "BEGIN");
  snprintf(sql, sizeof sql, "SELECT * FROM sc_issue_many(%lld, '{%s}', 1)",
           (long long)policy, pair);
  ck_assert_int_eq(PQsendQuery(c, sql), 1);
  until_waiting_for(uri, c, t); /* on T's a */
  outside_exec(last, "COMMIT");
  ck_assert_str_eq(call_outcome(t, x, sizeof x), "");
  outside_exec(t, "COMMIT");
  ck_assert_str_eq(call_outcome(c, y, sizeof y), "");
  outside_exec(c, "COMMIT");
  ck_assert_int_eq(tu_count(uri, "SELECT count(*) FROM sc_coupon"), 7);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM sc_coupon WHERE user_id = %s",
           a);
  ck_assert_int_eq(tu_count(uri, sql), 3);
  PQfinish(first);
  PQfinish(last);
  PQfinish(t);
  PQfinish(c);
  db = tu_open(uri, NULL);
  close_slots_db(db, uri, policy, 7);
}
END_TEST

/* The operations of one batch, queued in this order behind a held writer;
 * returns once they have all completed. */
static void run_as_one_batch(sc_db *db, waiting *w, int n) {
  tu_gate *gate = tu_gate_close(db);
  for (int i = 0; i < n; i++) {
    w[i].db = db;
    waiting_start(&w[i]);
    tu_wait_queued(db, i + 1);
  }
  tu_gate_open(gate);
  for (int i = 0; i < n; i++)
    ck_assert_int_eq(pthread_join(w[i].thread, NULL), 0);
}

/* A policy's issues in a batch go as one call, also with other operations
 * between them (two calls could each take a slot and wait on other hosts'
 * batches, in a cycle), and a pause of the policy between them still holds.
 * A statement trigger counts the calls that insert coupons. */
START_TEST(a_policy_s_issues_in_a_batch_go_as_one_call) {
  char *uri = tu_db_path("slots-gather");
  sc_id p = 0, q = 0;
  sc_db *db = open_slots_db(uri, 1000, 1, &p);
  sc_coupon_policy_spec spec = {.name = "other", .max_count = 1000};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &q), SC_OK);
  tu_exec(uri,
          "CREATE TABLE test_calls(n int);"
          "CREATE FUNCTION test_count() RETURNS trigger LANGUAGE plpgsql AS"
          " $$ BEGIN INSERT INTO test_calls VALUES(1); RETURN NULL; END $$;"
          "CREATE TRIGGER test_count AFTER INSERT ON sc_coupon"
          " FOR EACH STATEMENT EXECUTE FUNCTION test_count()");
  waiting mixed[] = {{.policy = p, .user = 1},
                     {.deposit = 1, .user = 9},
                     {.policy = p, .user = 2},
                     {.policy = q, .user = 1},
                     {.policy = p, .user = 3}};
  run_as_one_batch(db, mixed, 5);
  for (int i = 0; i < 5; i++)
    ck_assert_sc(mixed[i].rc, SC_OK);
  ck_assert_int_eq(tu_count(uri, "SELECT count(*) FROM test_calls"), 2);
  waiting paused[] = {{.policy = p, .user = 4},
                      {.policy = p, .pause = 1},
                      {.policy = p, .user = 5}};
  run_as_one_batch(db, paused, 3);
  ck_assert_sc(paused[0].rc, SC_OK);
  ck_assert_sc(paused[1].rc, SC_OK);
  ck_assert_sc(paused[2].rc, SC_PAUSED);
  close_slots_db(db, uri, p, 4);
}
END_TEST

/* A call of more than 256 users takes the policy's advisory lock alone,
 * exclusively, instead of one lock per user: it waits for the batches of
 * fewer users under way on the policy, which take that lock shared. */
START_TEST(a_call_of_many_users_takes_the_policy_s_lock_alone) {
  char *uri = tu_db_path("slots-many");
  sc_id policy = 0;
  sc_db *db = open_slots_db(uri, 1000000, 1, &policy);
  PGconn *small = open_batch(uri, policy, "1"), *large = outside(uri);
  char sql[256], a[8];
  snprintf(sql, sizeof sql,
           "SELECT * FROM sc_issue_many(%lld, ARRAY(SELECT"
           " generate_series(1, 301)::bigint), 1)",
           (long long)policy);
  outside_exec(large, "BEGIN");
  ck_assert_int_eq(PQsendQuery(large, sql), 1);
  until_waiting_for(uri, large, small); /* on the policy's lock */
  ck_assert_int_eq(tu_count(uri,
                            "SELECT count(*) FROM pg_locks WHERE"
                            " locktype = 'advisory' AND NOT granted"
                            " AND mode = 'ExclusiveLock'"),
                   1);
  outside_exec(small, "COMMIT");
  ck_assert_str_eq(call_outcome(large, a, sizeof a), "");
  outside_exec(large, "COMMIT");
  PQfinish(small);
  PQfinish(large);
  /* user 1 had the small batch's coupon: 300 more */
  close_slots_db(db, uri, policy, 301);
}
END_TEST

/* Slots whose quotas no longer add up to the cap (written by hand) are
 * found by sc_verify and laid out again by sc_repair. */
START_TEST(slot_quotas_off_the_cap_are_found_and_repaired) {
  char *uri = tu_db_path("slots-repair");
  sc_id policy = 0;
  sc_db *db = open_slots_db(uri, 20, 1, &policy);
  for (sc_id u = 1; u <= 5; u++)
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  tu_exec(uri, "UPDATE sc_coupon_slot SET quota = quota + 4 WHERE slot = 7");
  char *report = NULL;
  ck_assert_sc(sc_verify(db, &report), SC_CORRUPT);
  ck_assert_msg(strstr(report, "max_count 20, slot quotas 24") != NULL, "%s",
                report);
  sc_free(report);
  ck_assert_sc(sc_repair(db, 0, NULL, &report), SC_OK);
  ck_assert_msg(strstr(report, "slot quotas 24 -> 20\n") != NULL, "%s", report);
  sc_free(report);
  tu_assert_verify(db);
  sc_id u = 6;
  while (sc_coupon_issue(db, policy, u, NULL) == SC_OK)
    u++;
  ck_assert_int_eq(u, 21);
  ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_SOLD_OUT);
  tu_assert_verify(db);
  /* No slots at all: an error that says so, not "sold out". */
  tu_exec(uri, "DELETE FROM sc_coupon_slot");
  ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_ERROR);
  ck_assert_msg(strstr(sc_errmsg(db), "has no slots") != NULL, "%s",
                sc_errmsg(db));
  ck_assert_sc(sc_repair(db, 0, NULL, NULL), SC_OK);
  ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_SOLD_OUT);
  close_slots_db(db, uri, policy, 20);
}
END_TEST

/* ---- several hosts: a hot product and balance holds -----------------------
 */

#define STOCK 600
#define BUYERS 300
#define PRICE 10
#define BALANCE 30 /* three units each: holds run out before the stock */

typedef struct buyer {
  sc_db *db;
  sc_id product;
  int proc;
  atomic_int ordered, paid, other;
} buyer;

static void buy_until_gone(int t, void *ud) {
  buyer *b = ud;
  uint64_t rng = (uint64_t)(b->proc * 1000 + t + 7);
  int refused_in_a_row = 0;
  while (refused_in_a_row < 200) {
    sc_line line = {b->product, 1};
    sc_checkout_req req = {
        .user = tu_rng_range(&rng, 1, BUYERS), .lines = &line, .n_lines = 1};
    sc_id order = 0;
    int rc = sc_checkout(b->db, &req, &order);
    if (rc == SC_OUT_OF_STOCK) return;
    if (rc == SC_INSUFFICIENT_BALANCE) {
      refused_in_a_row++;
      continue;
    }
    if (rc != SC_OK) {
      fprintf(stderr, "checkout: %s: %s\n", sc_err_name(rc), sc_errmsg(b->db));
      atomic_fetch_add(&b->other, 1);
      return;
    }
    refused_in_a_row = 0;
    atomic_fetch_add(&b->ordered, 1);
    /* Every other order is paid: an accepted order can always be. */
    if (order % 2 == 0) {
      rc = sc_order_pay(b->db, order);
      if (rc == SC_OK) {
        atomic_fetch_add(&b->paid, 1);
      } else {
        fprintf(stderr, "pay: %s: %s\n", sc_err_name(rc), sc_errmsg(b->db));
        atomic_fetch_add(&b->other, 1);
      }
    }
  }
}

static int buy_host(int i, void *ud) {
  hosts *h = ud;
  sc_db *db = NULL;
  if (sc_open(h->uri, NULL, &db) != SC_OK) return 10;
  buyer b = {.db = db, .product = h->product, .proc = i};
  tu_race(THREADS, buy_until_gone, &b);
  int bad = atomic_load(&b.other) != 0;
  if (sc_close(db) != SC_OK) bad = 1;
  return bad ? 11 : 0;
}

START_TEST(four_hosts_keep_stock_and_balances_exact) {
  char *uri = tu_db_path("hot");
  sc_db *db = tu_open(uri, NULL);
  hosts h = {.uri = uri};
  ck_assert_sc(sc_product_create(db, "hot", PRICE, STOCK, &h.product), SC_OK);
  for (sc_id u = 1; u <= BUYERS; u++)
    ck_assert_sc(sc_account_deposit(db, u, BALANCE, NULL), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_fork_race(PROCS, buy_host, &h);
  db = tu_open(uri, NULL);
  tu_assert_verify(db);
  sc_stock s;
  ck_assert_sc(sc_stock_get(db, h.product, &s), SC_OK);
  int64_t orders = tu_count(uri, "SELECT count(*) FROM sc_order");
  int64_t paid = tu_count(uri,
                          "SELECT count(*) FROM sc_order"
                          " WHERE status = 2");
  /* Stock exact: every unit is either sold, reserved or still there. */
  ck_assert_int_eq(s.total + paid, STOCK);
  ck_assert_int_eq(s.reserved, orders - paid);
  /* Balances exact: no one spent or holds more than they had. */
  ck_assert_int_eq(tu_count(uri,
                            "SELECT count(*) FROM sc_account"
                            " WHERE balance - held < 0"),
                   0);
  ck_assert_int_eq(tu_count(uri, "SELECT sum(balance) FROM sc_account"),
                   BUYERS * BALANCE - paid * PRICE);
  ck_assert_int_le(orders, BUYERS * BALANCE / PRICE);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri);
}
END_TEST

/* ---- several hosts: checkouts, payments and cancellations crossing -------
 */

#define MIX_USERS 20

typedef struct mixer {
  const char *uri;
  sc_db *db;
  sc_id a, b;
  int proc;
  atomic_int done, other;
} mixer;

/* Checkouts of both products (their lines in either order), each then
 * paid or cancelled, on few users: every call locks the same rows. */
static void mix_for_a_while(int t, void *ud) {
  mixer *m = ud;
  uint64_t rng = (uint64_t)(m->proc * 1000 + t + 3);
  for (int64_t t0 = now_ns(); ms_since(t0) < 3000;) {
    bool flip = tu_rng_range(&rng, 0, 1) == 1;
    sc_line lines[2] = {{flip ? m->b : m->a, 1}, {flip ? m->a : m->b, 1}};
    sc_checkout_req req = {
        .user = tu_rng_range(&rng, 1, MIX_USERS), .lines = lines, .n_lines = 2};
    sc_id order = 0;
    int rc = sc_checkout(m->db, &req, &order);
    if (rc == SC_OK) {
      rc = tu_rng_range(&rng, 0, 1) ? sc_order_pay(m->db, order)
                                    : sc_order_cancel(m->db, order);
    }
    if (rc != SC_OK) {
      fprintf(stderr, "mix: %s: %s\n", sc_err_name(rc), sc_errmsg(m->db));
      atomic_fetch_add(&m->other, 1);
      return;
    }
    atomic_fetch_add(&m->done, 1);
  }
}

static int mix_host(int i, void *ud) {
  mixer *shared = ud;
  mixer m = {.a = shared->a, .b = shared->b, .proc = i};
  if (sc_open(shared->uri, NULL, &m.db) != SC_OK) return 10;
  tu_race(8, mix_for_a_while, &m);
  int bad = atomic_load(&m.other) != 0 || atomic_load(&m.done) == 0;
  if (sc_close(m.db) != SC_OK) bad = 1;
  return bad ? 11 : 0;
}

START_TEST(four_hosts_crossing_orders_never_busy) {
  char *uri = tu_db_path("cross");
  sc_db *db = tu_open(uri, NULL);
  mixer m = {.uri = uri};
  ck_assert_sc(sc_product_create(db, "a", 1, 1000000, &m.a), SC_OK);
  ck_assert_sc(sc_product_create(db, "b", 1, 1000000, &m.b), SC_OK);
  for (sc_id u = 1; u <= MIX_USERS; u++)
    ck_assert_sc(sc_account_deposit(db, u, 1000000, NULL), SC_OK);
  int64_t before = deadlocks(uri);
  tu_fork_race(PROCS, mix_host, &m);
  sleep(1); /* the server publishes its counters within a second */
  fprintf(stderr, "crossing orders: %lld deadlocks\n",
          (long long)(deadlocks(uri) - before));
  tu_assert_verify(db);
  sc_stock s;
  ck_assert_sc(sc_stock_get(db, m.a, &s), SC_OK);
  ck_assert_int_eq(s.reserved, 0);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri);
}
END_TEST

/* ---- a connection lost mid-batch ------------------------------------------
 */

typedef struct loss {
  sc_db *db;
  sc_id policy;
  atomic_bool stop;
  atomic_int ok, ambiguous, failed, deposits_ok;
} loss;

static void issue_under_kills(int t, void *ud) {
  loss *l = ud;
  for (int n = 0; !atomic_load(&l->stop); n++) {
    if (t % 4 == 0) {
      /* Deposits with a key: retried until they answer, exactly once. */
      char key[64];
      snprintf(key, sizeof key, "dep-%d-%d", t, n);
      int rc;
      while ((rc = sc_account_deposit(l->db, 1000 + t, 10, key)) != SC_OK) {
        if (rc != SC_AMBIGUOUS && rc != SC_IOERR && rc != SC_BUSY) {
          fprintf(stderr, "deposit: %s: %s\n", sc_err_name(rc),
                  sc_errmsg(l->db));
          atomic_fetch_add(&l->failed, 1000);
          return;
        }
      }
      atomic_fetch_add(&l->deposits_ok, 1);
      continue;
    }
    int rc = sc_coupon_issue(l->db, l->policy, (sc_id)t * 100000 + n + 1, NULL);
    if (rc == SC_OK) {
      atomic_fetch_add(&l->ok, 1);
    } else if (rc == SC_AMBIGUOUS) {
      atomic_fetch_add(&l->ambiguous, 1);
    } else if (rc == SC_IOERR || rc == SC_BUSY) {
      atomic_fetch_add(&l->failed, 1);
    } else {
      fprintf(stderr, "issue: %s: %s\n", sc_err_name(rc), sc_errmsg(l->db));
      atomic_fetch_add(&l->failed, 1000);
    }
  }
}

/* Terminates every backend of the library on schema, as an administrator
 * (or a failover) would. */
static int kill_backends(const char *base, const char *schema) {
  PGconn *c = PQconnectdb(base);
  ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
           " WHERE application_name = 'libshopcore/%s'",
           schema);
  PGresult *r = PQexec(c, sql);
  int n = PQntuples(r);
  PQclear(r);
  PQfinish(c);
  return n;
}

/* Thread 16 waits for the killer, then stops the 16 callers. */
#define CALLERS 16
static pid_t killer_pid;
static int killer_status;

static void caller_or_stopper(int t, void *ud) {
  loss *l = ud;
  if (t < CALLERS) {
    issue_under_kills(t, ud);
    return;
  }
  waitpid(killer_pid, &killer_status, 0);
  atomic_store(&l->stop, true);
}

/* What a test of losses checks at the end: every acknowledged issue is
 * there once, an ambiguous one at most once, a failed one never (extra:
 * coupons the test issued afterwards); keyed deposits, retried through the
 * losses, each counted once; and sc_verify holds. */
static void assert_nothing_acknowledged_lost(const char *uri, loss *l,
                                             int64_t extra, const char *what) {
  int64_t coupons = tu_count(uri, "SELECT count(*) FROM sc_coupon") - extra;
  ck_assert_int_ge(coupons, atomic_load(&l->ok));
  ck_assert_int_le(coupons, atomic_load(&l->ok) + atomic_load(&l->ambiguous));
  ck_assert_int_eq(tu_count(uri,
                            "SELECT coalesce(sum(balance), 0) FROM"
                            " sc_account"),
                   10 * (int64_t)atomic_load(&l->deposits_ok));
  fprintf(stderr, "%s: %d issued, %d ambiguous, %d failed, %d keyed deposits\n",
          what, atomic_load(&l->ok), atomic_load(&l->ambiguous),
          atomic_load(&l->failed), atomic_load(&l->deposits_ok));
  tu_assert_verify(l->db);
}

START_TEST(connection_loss_mid_batch_never_doubles) {
  char *uri = tu_db_path("loss");
  sc_db *db = tu_open(uri, NULL);
  sc_coupon_policy_spec spec = {
      .name = "loss", .max_count = 10000000, .per_user_limit = 1};
  loss l = {.db = db};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &l.policy), SC_OK);
  /* 16 callers for 3 s, every library connection killed each 150 ms. */
  killer_pid = fork();
  ck_assert_int_ge(killer_pid, 0);
  if (killer_pid == 0) {
    const char *base = getenv("SC_TEST_PG_URI");
    int killed = 0;
    for (int i = 0; i < 20; i++) {
      usleep(150000);
      killed += kill_backends(base && base[0] ? base : "postgresql://",
                              strstr(uri, "schema=") + 7);
    }
    _exit(killed > 0 ? 0 : 1);
  }
  tu_race(CALLERS + 1, caller_or_stopper, &l);
  ck_assert_msg(WIFEXITED(killer_status) && WEXITSTATUS(killer_status) == 0,
                "the killer found no backend to kill");
  ck_assert_int_lt(atomic_load(&l.failed), 1000);
  ck_assert_int_gt(atomic_load(&l.ok), 0);
  assert_nothing_acknowledged_lost(uri, &l, 0, "connection loss");
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri);
}
END_TEST

/* ---- a server crash --------------------------------------------------------
 * SC_TEST_PG_CTL, a pg_ctl command line for a throwaway cluster (set by
 * scripts/pg-cluster.sh), stops the server with -m immediate (no
 * checkpoint, as a crash) during the load, and starts it again. */

static void cluster_ctl(const char *action) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", getenv("SC_TEST_PG_CTL"),
           action);
  ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

static void caller_or_crasher(int t, void *ud) {
  loss *l = ud;
  if (t < CALLERS) {
    issue_under_kills(t, ud);
    return;
  }
  usleep(700000);
  cluster_ctl("stop -m immediate");
  usleep(300000);
  cluster_ctl("start");
  usleep(1000000); /* the callers go on against the restarted server */
  atomic_store(&l->stop, true);
}

START_TEST(a_server_crash_loses_no_acknowledged_operation) {
  char *uri = tu_db_path("crash");
  sc_db *db = tu_open(uri, NULL);
  sc_coupon_policy_spec spec = {
      .name = "crash", .max_count = 10000000, .per_user_limit = 1};
  loss l = {.db = db};
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &l.policy), SC_OK);
  tu_race(CALLERS + 1, caller_or_crasher, &l);
  ck_assert_int_lt(atomic_load(&l.failed), 1000);
  ck_assert_int_gt(atomic_load(&l.ok), 0);
  /* The handle reconnected by itself: it still works. */
  ck_assert_sc(sc_coupon_issue(db, l.policy, 999999999, NULL), SC_OK);
  assert_nothing_acknowledged_lost(uri, &l, 1, "server crash");
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri);
}
END_TEST

/* ---- schema versions ------------------------------------------------------
 */

/* A schema as a version-1 library left it: migration 1 and its sc_meta row,
 * nothing of a later version. */
static PGconn *schema_at_version_1(const char *uri) {
  PGconn *c = outside(uri);
  char sql[256];
  snprintf(sql, sizeof sql, "CREATE SCHEMA \"%s\"; SET search_path TO \"%s\"",
           strstr(uri, "schema=") + 7, strstr(uri, "schema=") + 7);
  outside_exec(c, sql);
  outside_exec(c,
               "CREATE TABLE sc_meta(key text PRIMARY KEY,"
               " value bigint NOT NULL)");
  for (const char *const *s = sc__pg_migration(1); *s != NULL; s++)
    outside_exec(c, *s);
  outside_exec(c, "INSERT INTO sc_meta VALUES('schema_version', 1)");
  return c;
}

/* sql's rows (each field, NULL as \N) as one string, for comparing. */
static char *rows_text(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
                PQresultErrorMessage(r));
  size_t cap = 1, o = 0;
  for (int i = 0; i < PQntuples(r); i++)
    for (int k = 0; k < PQnfields(r); k++)
      cap += (size_t)PQgetlength(r, i, k) + 4;
  char *s = malloc(cap);
  ck_assert_ptr_nonnull(s);
  s[0] = '\0';
  for (int i = 0; i < PQntuples(r); i++) {
    for (int k = 0; k < PQnfields(r); k++) {
      o += (size_t)sprintf(s + o, "%s%s", k ? "|" : "",
                           PQgetisnull(r, i, k) ? "\\N" : PQgetvalue(r, i, k));
    }
    s[o++] = '\n';
    s[o] = '\0';
  }
  PQclear(r);
  return s;
}

/* Version 1's schema asked with sql_a and today's with sql_b answer the
 * same rows. */
static void alike_as(PGconn *a, const char *sql_a, PGconn *b,
                     const char *sql_b) {
  char *x = rows_text(a, sql_a), *y = rows_text(b, sql_b);
  ck_assert_msg(strcmp(x, y) == 0, "%s:\nversion 1:\n%s\nnow:\n%s", sql_b, x,
                y);
  free(x);
  free(y);
}

/* The same call on both schemas answers the same rows. */
static void both_alike(PGconn *a, PGconn *b, const char *sql) {
  alike_as(a, sql, b, sql);
}

static void issue_alike(PGconn *a, PGconn *b, int policy, const char *users,
                        int64_t now) {
  char sql[2048];
  snprintf(sql, sizeof sql, "SELECT * FROM sc_issue_many(%d, '{%s}', %lld)",
           policy, users, (long long)now);
  both_alike(a, b, sql);
}

/* A database that version 1 wrote (coupons, events, a sold-out policy)
 * keeps working after the upgrade, and the new issuance answers exactly
 * as version 1's loop did, row by row: one schema stays at version 1, the
 * other is upgraded by sc_open, and both get the same calls. Their
 * coupons, events (payload bytes, seq) and counts must match too. */
START_TEST(version_1_upgrades_and_issues_as_before) {
  char *uri_old = tu_db_path("v1"), *uri_new = tu_db_path("v2");
  PGconn *a = schema_at_version_1(uri_old), *b = schema_at_version_1(uri_new);
  const char *policies[] = {
      "sc_policy_create('cap', 6, 2, 0, 0, 0, 0, 0, 1)",
      "sc_policy_create('wide', 100, 3, 0, 0, 0, 0, 0, 1)",
      "sc_policy_create('window', 5, 1, 0, 0, 0, 1000, 2000, 1)",
      "sc_policy_create('paused', 5, 1, 0, 0, 0, 0, 0, 1)",
      "sc_policy_pause(4, 1, 1)"};
  char sql[256];
  for (size_t i = 0; i < sizeof policies / sizeof *policies; i++) {
    snprintf(sql, sizeof sql, "SELECT * FROM %s", policies[i]);
    both_alike(a, b, sql);
  }
  issue_alike(a, b, 1, "1,2,1", 1500);
  issue_alike(a, b, 2, "7,300,70000,5000000000", 1500);

  sc_db *db = tu_open(uri_new, NULL); /* migrates b */
  ck_assert_sc(sc_close(db), SC_OK);
  int latest = 1;
  while (sc__pg_migration(latest + 1) != NULL)
    latest++;
  ck_assert_int_eq(tu_count(uri_new,
                            "SELECT value FROM sc_meta"
                            " WHERE key = 'schema_version'"),
                   latest);
  ck_assert_int_eq(tu_count(uri_old,
                            "SELECT value FROM sc_meta"
                            " WHERE key = 'schema_version'"),
                   1);

  /* Held coupons, limits within a batch, the cap reached mid-batch. */
  issue_alike(a, b, 1, "1,1,2,3,3,4,5,6", 1500);
  issue_alike(a, b, 1, "9", 1500);
  /* Every msgpack integer form in the payloads. */
  issue_alike(a, b, 2,
              "7,7,7,7,8,-5,127,128,255,256,65535,65536,4294967295,"
              "4294967296,-32,-33,-128,-129,-32768,-32769,-2147483648,"
              "-2147483649,9223372036854775807,-9223372036854775808",
              1500);
  issue_alike(a, b, 3, "1", 999);
  issue_alike(a, b, 3, "1,2", 2000);
  issue_alike(a, b, 3, "1,1,2", 1000);
  issue_alike(a, b, 4, "1,2", 1500);
  issue_alike(a, b, 99, "1,2", 1500);
  issue_alike(a, b, 2, "", 1500);
  /* Batches of up to 64 with repeated users, across the cap. */
  uint64_t rng = 12;
  for (int k = 0; k < 40; k++) {
    char users[64 * 4] = "";
    size_t o = 0;
    int n = (int)tu_rng_range(&rng, 1, 64);
    for (int i = 0; i < n; i++)
      o += (size_t)sprintf(users + o, "%s%lld", i ? "," : "",
                           (long long)tu_rng_range(&rng, 100, 140));
    issue_alike(a, b, 2, users, 1500 + k);
  }
  both_alike(a, b,
             "SELECT id, policy_id, user_id, status, issued_at_ms"
             " FROM sc_coupon ORDER BY id");
  both_alike(a, b,
             "SELECT id, type, agg_kind, agg_id, seq, created_at_ms, payload,"
             " state, available_at_ms FROM sc_outbox ORDER BY id");
  /* Today a policy's count is the sum of its slots. */
  alike_as(a,
           "SELECT id, issued_count, paused FROM sc_coupon_policy"
           " ORDER BY id",
           b,
           "SELECT p.id, sum(s.issued), p.paused FROM sc_coupon_policy p"
           " JOIN sc_coupon_slot s ON s.policy_id = p.id GROUP BY p.id"
           " ORDER BY p.id");
  ck_assert_int_eq(tu_count(uri_new,
                            "SELECT sum(issued) FROM sc_coupon_slot"
                            " WHERE policy_id = 2"),
                   100);
  PQfinish(a);
  PQfinish(b);

  /* The library goes on with what version 1 wrote. */
  db = tu_open(uri_new, NULL);
  sc_id coupon = 0;
  ck_assert_sc(sc_coupon_issue(db, 1, 50, &coupon), SC_SOLD_OUT);
  ck_assert_sc(sc_coupon_issue(db, 3, 1, &coupon), SC_NOT_ACTIVE);
  sc_coupon_policy_spec spec = {.name = "after", .max_count = 2};
  sc_id policy = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, &coupon), SC_OK);
  ck_assert_int_eq(coupon, tu_count(uri_new, "SELECT max(id) FROM sc_coupon"));
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_LIMIT_REACHED);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(uri_old);
  tu_remove_db(uri_new);
}
END_TEST

int main(void) {
  if (!tu_pg_mode()) {
    fprintf(stderr, "check_pg runs with SC_TEST_DB=pg only\n");
    return 77;
  }
  Suite *s = suite_create("pg");
  TCase *tc = tu_tcase("pg");
  tcase_add_test(tc, bad_uris_and_unreachable_servers_fail_clearly);
  tcase_add_test(tc, unsupported_calls_say_so);
  tcase_add_test(tc, a_row_lock_held_elsewhere_fails_busy_in_time);
  tcase_add_test(tc, a_reserved_word_is_a_schema_name);
  tcase_add_test(tc, read_connections_stay_within_read_pool_max);
  tcase_add_test(tc, four_hosts_issue_exactly_the_cap);
  tcase_add_test(tc, four_hosts_sharing_few_users_keep_limits_and_cap);
  tcase_add_test(tc, four_hosts_on_the_same_few_users_are_never_busy);
  tcase_add_test(tc, another_host_s_open_batch_holds_up_only_its_users);
  tcase_add_test(tc, a_pause_waits_for_batches_under_way_then_holds);
  tcase_add_test(tc, sold_out_is_said_only_at_the_cap);
  tcase_add_test(tc, a_policy_s_issues_in_a_batch_go_as_one_call);
  tcase_add_test(tc, issues_to_one_user_on_several_hosts_wait_in_user_order);
  tcase_add_test(tc, a_call_of_many_users_takes_the_policy_s_lock_alone);
  tcase_add_test(tc, slot_quotas_off_the_cap_are_found_and_repaired);
  tcase_add_test(tc, four_hosts_keep_stock_and_balances_exact);
  tcase_add_test(tc, four_hosts_crossing_orders_never_busy);
  tcase_add_test(tc, connection_loss_mid_batch_never_doubles);
  tcase_add_test(tc, version_1_upgrades_and_issues_as_before);
  /* Only where the cluster may be crashed (a throwaway one). */
  if (getenv("SC_TEST_PG_CTL") != NULL) {
    tcase_add_test(tc, a_server_crash_loses_no_acknowledged_operation);
  }
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
