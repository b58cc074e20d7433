/* The outbox: one event per state change in the same savepoint, claims with
 * leases, acks, nacks with backoff and dead-lettering by the injected clock,
 * requeue, per-aggregate order, and claims racing across threads and
 * processes. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "test_util.h"

#define T0 1000000

static sc_id make_policy(sc_db *db, int64_t max_count) {
  sc_coupon_policy_spec spec = {.name = "p", .max_count = max_count};
  sc_id id = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &id), SC_OK);
  return id;
}

static int64_t count(const char *path, const char *fmt, long long arg) {
  char sql[512];
  snprintf(sql, sizeof sql, fmt, arg);
  return tu_count(path, sql);
}

/* Opens with the manual clock and small retry settings. */
static sc_db *open_clocked(const char *path, tu_clock *clock, int attempts) {
  sc_options o;
  sc_options_init(&o);
  tu_use_clock(&o, clock, T0);
  o.outbox_max_attempts = attempts;
  o.outbox_retry_base_ms = 100;
  o.outbox_retry_max_ms = 1000;
  return tu_open(path, &o);
}

static void claim(sc_db *db, int max, int64_t lease, sc_event **ev, int *n) {
  *ev = (sc_event *)0x1;
  *n = -1;
  ck_assert_sc(sc_outbox_claim(db, max, lease, ev, n), SC_OK);
  ck_assert_int_ge(*n, 0);
  if (*n == 0) ck_assert_ptr_null(*ev);
}

static int claim_count(sc_db *db) {
  sc_event *ev;
  int n;
  claim(db, 100, 1000, &ev, &n);
  sc_events_free(ev, n);
  return n;
}

/* ---- one event per change, in the change's savepoint --------------------- */

START_TEST(issuance_writes_exactly_its_events) {
  char *path = tu_db_path("ob-issue");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 3);
  sc_id coupons[3];
  for (int u = 1; u <= 3; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, &coupons[u - 1]), SC_OK);
  }
  ck_assert_sc(sc_coupon_issue(db, policy, 9, NULL), SC_SOLD_OUT);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_SOLD_OUT);
  ck_assert_sc(sc_coupon_policy_pause(db, policy, 1), SC_OK);
  ck_assert_sc(sc_coupon_policy_pause(db, policy, 1), SC_OK); /* no change */
  ck_assert_sc(sc_coupon_policy_pause(db, policy, 0), SC_OK);
  sc_event *ev;
  int n;
  claim(db, 100, 1000, &ev, &n);
  /* Three coupon events and the policy's first (the resume waits for the
   * pause to be acked). */
  ck_assert_int_eq(n, 4);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(ev[i].type, SC_EVENT_COUPON_ISSUED);
    ck_assert_int_eq(ev[i].aggregate_id, coupons[i]);
    ck_assert_int_eq(ev[i].seq, 1);
    ck_assert_int_eq(ev[i].attempts, 0);
    sc_event_data d;
    ck_assert_sc(sc_event_decode(ev[i].payload, ev[i].payload_len, &d), SC_OK);
    ck_assert_int_eq(d.coupon, coupons[i]);
    ck_assert_int_eq(d.user, i + 1);
    ck_assert_int_eq(d.policy, policy);
  }
  ck_assert_int_eq(ev[3].type, SC_EVENT_POLICY_PAUSED);
  ck_assert_int_eq(ev[3].aggregate_id, policy);
  ck_assert_int_lt(ev[2].id, ev[3].id); /* id order */
  sc_events_free(ev, n);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 5);
  ck_assert_int_eq(count(path,
                         "SELECT count(*) FROM sc_outbox WHERE agg_id = %lld"
                         " AND type IN (7, 8) AND seq IN (1, 2)",
                         (long long)policy),
                   2);
  tu_remove_db(path);
}
END_TEST

/* A test operation: emits an event of the policy, then keeps it or fails. */
typedef struct emit_op {
  sc__op base;
  sc_id policy;
  int fail; /* the status to return after emitting */
} emit_op;

static int emit_run(sc_db *db, sc__conn *w, sc__op *base) {
  emit_op *op = (emit_op *)base;
  sc__event_fields f = {.type = SC_EVENT_POLICY_PAUSED,
                        .policy = op->policy,
                        .at_ms = sc__now_ms(db)};
  int rc = sc__outbox_emit(db, w, base, &f);
  if (rc != SC_OK) return rc;
  return op->fail ? sc__op_fail(base, op->fail, "failing on purpose") : SC_OK;
}

typedef struct emit_race {
  sc_db *db;
} emit_race;

/* Odd threads fail after emitting: their events must vanish with them. */
static void emit_mixed(int t, void *ud) {
  emit_race *r = ud;
  for (int i = 0; i < 50; i++) {
    emit_op op = {.base = {.run = emit_run, .kind = SC__OP_ADMIN},
                  .policy = 1000 + (i % 5),
                  .fail = t % 2 ? SC_CONFLICT : SC_OK};
    int rc = sc__op_execute(r->db, &op.base);
    ck_assert_int_eq(rc, t % 2 ? SC_CONFLICT : SC_OK);
  }
}

START_TEST(rolled_back_changes_leave_no_event_and_no_gap) {
  char *path = tu_db_path("ob-rollback");
  sc_db *db = tu_open(path, NULL);
  emit_race r = {db};
  /* Failing and succeeding operations share batches (group commit). */
  tu_race(8, emit_mixed, &r);
  sc_close(db);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 4 * 50);
  /* Per aggregate: seq 1..n with no hole left by a rolled-back event. */
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM (SELECT agg_id, count(*) n,"
                            " min(seq) lo, max(seq) hi FROM sc_outbox"
                            " GROUP BY agg_kind, agg_id)"
                            " WHERE n = 40 AND lo = 1 AND hi = 40"),
                   5);
  tu_remove_db(path);
}
END_TEST

/* Every kind of change once, and the no-op repeats that must write none. */
typedef struct shop {
  sc_id product, policy, coupon, paid, cancelled, expired;
} shop;

static sc_id checkout(sc_db *db, sc_id product, sc_id coupon, int64_t ttl) {
  sc_line line = {.product = product, .qty = 1};
  sc_checkout_req req = {
      .user = 7, .lines = &line, .n_lines = 1, .coupon = coupon, .ttl_ms = ttl};
  sc_id order = 0;
  ck_assert_sc(sc_checkout(db, &req, &order), SC_OK);
  return order;
}

static shop shop_day(sc_db *db, tu_clock *clock) {
  shop s = {0};
  ck_assert_sc(sc_product_create(db, "tea", 300, 10, &s.product), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 7, 5000, "d1"), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 7, 5000, "d1"), SC_OK); /* replay */
  ck_assert_sc(sc_account_deposit(db, 7, 100, NULL), SC_OK);
  s.policy = make_policy(db, 10);
  ck_assert_sc(sc_coupon_issue(db, s.policy, 7, &s.coupon), SC_OK);
  s.paid = checkout(db, s.product, s.coupon, 60000);
  ck_assert_sc(sc_order_pay(db, s.paid), SC_OK);
  ck_assert_sc(sc_order_pay(db, s.paid), SC_OK); /* paying twice */
  s.cancelled = checkout(db, s.product, 0, 60000);
  ck_assert_sc(sc_order_cancel(db, s.cancelled), SC_OK);
  ck_assert_sc(sc_order_cancel(db, s.cancelled), SC_OK);
  s.expired = checkout(db, s.product, 0, 1000);
  atomic_fetch_add(&clock->now_ms, 1000);
  ck_assert_sc(sc_order_pay(db, s.expired), SC_EXPIRED); /* no event */
  int n = 0;
  ck_assert_sc(sc_orders_expire_due(db, &n), SC_OK);
  ck_assert_int_eq(n, 1);
  ck_assert_sc(sc_orders_expire_due(db, &n), SC_OK);
  ck_assert_int_eq(n, 0);
  ck_assert_sc(sc_coupon_policy_pause(db, s.policy, 1), SC_OK);
  ck_assert_sc(sc_coupon_policy_pause(db, s.policy, 1), SC_OK);
  return s;
}

static int64_t events_of(const char *path, int type, sc_id agg) {
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM sc_outbox WHERE type = %d AND agg_id = %lld",
           type, (long long)agg);
  return tu_count(path, sql);
}

START_TEST(every_change_writes_one_event_and_no_op_writes_none) {
  char *path = tu_db_path("ob-changes");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  shop s = shop_day(db, &clock);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(events_of(path, SC_EVENT_DEPOSIT, 7), 2);
  ck_assert_int_eq(events_of(path, SC_EVENT_COUPON_ISSUED, s.coupon), 1);
  ck_assert_int_eq(events_of(path, SC_EVENT_ORDER_CREATED, s.paid), 1);
  ck_assert_int_eq(events_of(path, SC_EVENT_ORDER_PAID, s.paid), 1);
  ck_assert_int_eq(events_of(path, SC_EVENT_ORDER_CREATED, s.cancelled), 1);
  ck_assert_int_eq(events_of(path, SC_EVENT_ORDER_CANCELLED, s.cancelled), 1);
  ck_assert_int_eq(events_of(path, SC_EVENT_ORDER_CREATED, s.expired), 1);
  ck_assert_int_eq(events_of(path, SC_EVENT_ORDER_EXPIRED, s.expired), 1);
  ck_assert_int_eq(events_of(path, SC_EVENT_POLICY_PAUSED, s.policy), 1);
  /* 2 deposits, 1 coupon, 3 created, 3 closing, 1 pause. */
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 10);
  /* The paid order's events, decoded, say what happened. */
  db = tu_open(path, NULL);
  sc_event *ev;
  int n;
  claim(db, 100, 1000, &ev, &n);
  bool seen_created = false;
  for (int i = 0; i < n; i++) {
    sc_event_data d;
    ck_assert_sc(sc_event_decode(ev[i].payload, ev[i].payload_len, &d), SC_OK);
    ck_assert_int_eq(d.type, ev[i].type);
    if (d.type == SC_EVENT_ORDER_CREATED && d.order == s.paid) {
      seen_created = true;
      ck_assert_int_eq(d.coupon, s.coupon);
      ck_assert_int_eq(d.user, 7);
      ck_assert_int_eq(d.amount, 300);
      ck_assert_int_eq(d.expires_at_ms, T0 + 60000);
    }
  }
  ck_assert(seen_created);
  sc_events_free(ev, n);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* Invariant 5 is checked, not assumed: each tampering is reported, and
 * undoing it makes sc_verify pass again. */
static void exec_sql(const char *path, const char *sql) {
  sqlite3 *h;
  ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
  sqlite3_busy_timeout(h, 10000);
  char *err = NULL;
  ck_assert_msg(sqlite3_exec(h, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s",
                sql, err ? err : "");
  sqlite3_close(h);
}

static void assert_verify_finds(sc_db *db, const char *needle) {
  char *report = NULL;
  ck_assert_sc(sc_verify(db, &report), SC_CORRUPT);
  ck_assert_ptr_nonnull(report);
  ck_assert_msg(strstr(report, needle) != NULL, "want \"%s\" in:\n%s", needle,
                report);
  ck_assert_ptr_nonnull(strstr(report, "[5 events"));
  sc_free(report);
}

START_TEST(verify_reports_event_tampering) {
  char *path = tu_db_path("ob-tamper");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  shop s = shop_day(db, &clock);
  tu_assert_verify(db);
  char sql[400];
  struct {
    const char *tamper, *undo, *needle;
  } cases[] = {
      /* a second paid event for the paid order */
      {"INSERT INTO sc_outbox(id, type, agg_kind, agg_id, seq,"
       " created_at_ms, payload, state) VALUES(900, 3, 2, %1$lld, 3, 0,"
       " x'80', 1)",
       "DELETE FROM sc_outbox WHERE id = 900", "paid 2"},
      /* a gap in the paid order's sequence */
      {"UPDATE sc_outbox SET seq = 5 WHERE agg_kind = 2 AND agg_id = %1$lld"
       " AND seq = 2",
       "UPDATE sc_outbox SET seq = 2 WHERE agg_kind = 2 AND agg_id = %1$lld"
       " AND seq = 5",
       "numbered 1..5"},
      /* a paid event on the wrong kind of aggregate */
      {"UPDATE sc_outbox SET agg_kind = 3 WHERE agg_kind = 2"
       " AND agg_id = %1$lld AND seq = 2",
       "UPDATE sc_outbox SET agg_kind = 2 WHERE agg_kind = 3"
       " AND agg_id = %1$lld AND seq = 2",
       "type 3 on aggregate 3/"},
      /* a paid order whose payment left no event */
      {"UPDATE sc_outbox SET type = 4 WHERE agg_kind = 2"
       " AND agg_id = %1$lld AND seq = 2",
       "UPDATE sc_outbox SET type = 3 WHERE agg_kind = 2"
       " AND agg_id = %1$lld AND seq = 2",
       "paid 0, cancelled 1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(sql, sizeof sql, cases[i].tamper, (long long)s.paid);
    exec_sql(path, sql);
    assert_verify_finds(db, cases[i].needle);
    snprintf(sql, sizeof sql, cases[i].undo, (long long)s.paid);
    exec_sql(path, sql);
    tu_assert_verify(db);
  }
  snprintf(sql, sizeof sql, "DELETE FROM sc_outbox WHERE type = 1");
  exec_sql(path, sql);
  assert_verify_finds(db, "0 issued events");
  exec_sql(path, "DELETE FROM sc_outbox WHERE type = 6 AND seq = 2");
  assert_verify_finds(db, "2 deposits, 1 deposit events");
  exec_sql(path, "UPDATE sc_coupon_policy SET paused = 0");
  assert_verify_finds(db, "paused is 0, its last event is of type 7");
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- claims and leases ----------------------------------------------------
 */

START_TEST(claims_lease_and_ack_delivers) {
  char *path = tu_db_path("ob-lease");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  sc_id policy = make_policy(db, 10);
  for (int u = 1; u <= 5; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  }
  sc_event *ev;
  int n;
  claim(db, 2, 500, &ev, &n);
  ck_assert_int_eq(n, 2);
  sc_id first = ev[0].id;
  int64_t first_claim = ev[0].claim;
  ck_assert_int_gt(first_claim, 0);
  sc_events_free(ev, n);
  claim(db, 100, 500, &ev, &n); /* the other three */
  ck_assert_int_eq(n, 3);
  ck_assert_int_gt(ev[0].id, first);
  sc_events_free(ev, n);
  ck_assert_int_eq(claim_count(db), 0); /* all leased */
  ck_assert_sc(sc_outbox_ack(db, first, first_claim), SC_OK);
  /* again: no change */
  ck_assert_sc(sc_outbox_ack(db, first, first_claim), SC_OK);
  atomic_store(&clock.now_ms, T0 + 499);
  ck_assert_int_eq(claim_count(db), 0);
  /* The lease ends: the four unacked come back, the acked one never. */
  atomic_store(&clock.now_ms, T0 + 500);
  claim(db, 100, 500, &ev, &n);
  ck_assert_int_eq(n, 4);
  for (int i = 0; i < n; i++) {
    ck_assert_int_ne(ev[i].id, first);
    /* The expired lease was a delivery: "deliveries before this one". */
    ck_assert_int_eq(ev[i].attempts, 1);
    ck_assert_sc(sc_outbox_ack(db, ev[i].id, ev[i].claim), SC_OK);
  }
  sc_events_free(ev, n);
  atomic_store(&clock.now_ms, T0 + 5000);
  ck_assert_int_eq(claim_count(db), 0);
  sc_outbox_stats st;
  ck_assert_sc(sc_outbox_stats_get(db, &st), SC_OK);
  ck_assert_int_eq(st.pending, 0);
  ck_assert_int_eq(st.dead, 0);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_outbox WHERE state = 1"), 5);
  tu_remove_db(path);
}
END_TEST

/* ---- nack: backoff, dead letters, requeue ---------------------------------
 */

static int64_t available_at(const char *path, sc_id id) {
  return count(path, "SELECT available_at_ms FROM sc_outbox WHERE id = %lld",
               (long long)id);
}

START_TEST(nack_backs_off_then_dead_letters_then_requeues) {
  char *path = tu_db_path("ob-nack");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  sc_id policy = make_policy(db, 10);
  sc_id coupon;
  ck_assert_sc(sc_coupon_issue(db, policy, 1, &coupon), SC_OK);
  sc_event *ev;
  int n;
  int64_t now = T0;
  /* Delays 100, 200, 400, 800 (each +-20%), then dead at the 5th failure. */
  for (int attempt = 1; attempt <= 4; attempt++) {
    claim(db, 10, 60000, &ev, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ev[0].attempts, attempt - 1);
    sc_id id = ev[0].id;
    int64_t token = ev[0].claim;
    sc_events_free(ev, n);
    ck_assert_sc(sc_outbox_nack(db, id, token, "handler said no"), SC_OK);
    /* One settlement per delivery: the same claim cannot nack again. */
    ck_assert_sc(sc_outbox_nack(db, id, token, "twice"), SC_INVALID_STATE);
    int64_t d = 100LL << (attempt - 1);
    int64_t at = available_at(path, id);
    ck_assert_int_ge(at, now + d - d / 5);
    ck_assert_int_le(at, now + d + d / 5);
    /* Not before its time, even though its lease was dropped. */
    atomic_store(&clock.now_ms, at - 1);
    ck_assert_int_eq(claim_count(db), 0);
    now = at;
    atomic_store(&clock.now_ms, now);
  }
  claim(db, 10, 60000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].attempts, 4);
  sc_id id = ev[0].id;
  int64_t token = ev[0].claim;
  sc_events_free(ev, n);
  ck_assert_sc(sc_outbox_nack(db, id, token, "the last straw"), SC_OK);
  atomic_store(&clock.now_ms, now + 1000000);
  ck_assert_int_eq(claim_count(db), 0); /* dead: never handed out */
  ck_assert_sc(sc_outbox_nack(db, id, token, NULL), SC_INVALID_STATE);
  sc_dead_event *dead;
  ck_assert_sc(sc_outbox_dead_list(db, 0, 10, &dead, &n), SC_OK);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(dead[0].event.id, id);
  ck_assert_int_eq(dead[0].event.attempts, 5);
  ck_assert_str_eq(dead[0].last_error, "the last straw");
  sc_event_data d;
  ck_assert_sc(
      sc_event_decode(dead[0].event.payload, dead[0].event.payload_len, &d),
      SC_OK);
  ck_assert_int_eq(d.coupon, coupon);
  sc_dead_events_free(dead, n);
  sc_outbox_stats st;
  ck_assert_sc(sc_outbox_stats_get(db, &st), SC_OK);
  ck_assert_int_eq(st.dead, 1);
  ck_assert_int_eq(st.pending, 0);
  /* Requeued: delivered again from attempt 0. */
  ck_assert_sc(sc_outbox_requeue(db, id), SC_OK);
  ck_assert_sc(sc_outbox_requeue(db, id), SC_INVALID_STATE);
  claim(db, 10, 60000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].id, id);
  ck_assert_int_eq(ev[0].attempts, 0);
  ck_assert_int_gt(ev[0].claim, token); /* a new token for a new claim */
  token = ev[0].claim;
  sc_events_free(ev, n);
  ck_assert_sc(sc_outbox_ack(db, id, token), SC_OK);
  ck_assert_sc(sc_outbox_dead_list(db, 0, 10, &dead, &n), SC_OK);
  ck_assert_int_eq(n, 0);
  ck_assert_ptr_null(dead);
  sc_close(db);
  ck_assert_int_eq(count(path,
                         "SELECT count(*) FROM sc_outbox WHERE id = %lld"
                         " AND state = 1 AND last_error IS NULL",
                         (long long)id),
                   1);
  tu_remove_db(path);
}
END_TEST

START_TEST(backoff_is_capped) {
  char *path = tu_db_path("ob-cap");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 100);
  sc_id policy = make_policy(db, 10);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_OK);
  int64_t now = T0;
  for (int attempt = 1; attempt <= 70; attempt++) {
    sc_event *ev;
    int n;
    claim(db, 10, 60000, &ev, &n);
    ck_assert_int_eq(n, 1);
    sc_id id = ev[0].id;
    int64_t token = ev[0].claim;
    sc_events_free(ev, n);
    ck_assert_sc(sc_outbox_nack(db, id, token, "no"), SC_OK);
    int64_t at = available_at(path, id);
    ck_assert_int_le(at, now + 1200); /* the 1000 ms cap, +20% */
    ck_assert_int_ge(at, now + 80);
    now = at;
    atomic_store(&clock.now_ms, now);
  }
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

static void deposits(sc_db *db, int users); /* below */

/* The retry options accept any int64 (sc_open's ranges): the longest
 * backoff, +20% jitter included, saturates rather than wrapping round to
 * a retry in the past. */
START_TEST(the_longest_backoff_does_not_overflow) {
  char *path = tu_db_path("ob-huge");
  tu_clock clock;
  sc_options o;
  sc_options_init(&o);
  tu_use_clock(&o, &clock, T0);
  o.outbox_max_attempts = 100;
  o.outbox_retry_base_ms = INT64_MAX;
  o.outbox_retry_max_ms = INT64_MAX;
  sc_db *db = tu_open(path, &o);
  deposits(db, 32);
  sc_event *ev;
  int n;
  claim(db, 100, 60000, &ev, &n);
  ck_assert_int_eq(n, 32);
  for (int i = 0; i < n; i++) {
    ck_assert_sc(sc_outbox_nack(db, ev[i].id, ev[i].claim, "no"), SC_OK);
    /* INT64_MAX less 20% at the least; never in the past */
    ck_assert_int_ge(available_at(path, ev[i].id),
                     T0 + (INT64_MAX - T0) / 5 * 4);
  }
  sc_events_free(ev, n);
  ck_assert_int_eq(claim_count(db), 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- order within an aggregate --------------------------------------------
 */

/* Policy pause/resume events make one aggregate with many events; coupon
 * events are aggregates of their own. */
START_TEST(a_failing_event_holds_back_its_aggregate_only) {
  char *path = tu_db_path("ob-order");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 2);
  sc_id policy = make_policy(db, 100);
  for (int i = 0; i < 3; i++) {
    ck_assert_sc(sc_coupon_policy_pause(db, policy, 1), SC_OK);
    ck_assert_sc(sc_coupon_policy_pause(db, policy, 0), SC_OK);
  }
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_OK);
  sc_event *ev;
  int n;
  claim(db, 100, 60000, &ev, &n);
  ck_assert_int_eq(n, 2); /* the policy's seq 1 and the coupon's */
  ck_assert_int_eq(ev[0].seq, 1);
  ck_assert_int_eq(ev[0].aggregate_id, policy);
  sc_id p1 = ev[0].id;
  int64_t p1_claim = ev[0].claim;
  ck_assert_sc(sc_outbox_ack(db, ev[1].id, ev[1].claim), SC_OK);
  sc_events_free(ev, n);
  ck_assert_sc(sc_outbox_nack(db, p1, p1_claim, "retry me"), SC_OK);
  /* seq 2 is due, but waits for seq 1's retry. */
  ck_assert_int_eq(claim_count(db), 0);
  ck_assert_sc(sc_coupon_issue(db, policy, 2, NULL), SC_OK);
  claim(db, 100, 60000, &ev, &n);
  ck_assert_int_eq(n, 1); /* another aggregate goes through meanwhile */
  ck_assert_int_eq(ev[0].type, SC_EVENT_COUPON_ISSUED);
  ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
  sc_events_free(ev, n);
  /* Delivered in sequence: 1 (again), then 2 ... 6, one claim at a time. */
  atomic_store(&clock.now_ms, T0 + 10000);
  for (int64_t seq = 1; seq <= 6; seq++) {
    claim(db, 100, 60000, &ev, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ev[0].seq, seq);
    ck_assert_int_eq(
        ev[0].type, seq % 2 ? SC_EVENT_POLICY_PAUSED : SC_EVENT_POLICY_RESUMED);
    ck_assert_int_eq(ev[0].attempts, seq == 1 ? 1 : 0);
    if (seq == 3) {
      /* seq 3 dies (2 attempts): seq 4 is held back until it is requeued. */
      sc_id id = ev[0].id;
      ck_assert_sc(sc_outbox_nack(db, id, ev[0].claim, "a"), SC_OK);
      atomic_store(&clock.now_ms, T0 + 20000);
      sc_events_free(ev, n);
      claim(db, 100, 60000, &ev, &n);
      ck_assert_int_eq(n, 1);
      ck_assert_int_eq(ev[0].seq, 3);
      ck_assert_sc(sc_outbox_nack(db, id, ev[0].claim, "b"), SC_OK);
      sc_events_free(ev, n);
      atomic_store(&clock.now_ms, T0 + 30000);
      ck_assert_int_eq(claim_count(db), 0);
      int requeued = -1;
      ck_assert_sc(sc_outbox_requeue_all(db, &requeued), SC_OK);
      ck_assert_int_eq(requeued, 1);
      claim(db, 100, 60000, &ev, &n);
      ck_assert_int_eq(n, 1);
      ck_assert_int_eq(ev[0].seq, 3);
    }
    ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
    sc_events_free(ev, n);
  }
  ck_assert_int_eq(claim_count(db), 0);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- at least once, deduplicated by id ------------------------------------
 */

START_TEST(failed_then_succeeded_is_redelivered_with_the_same_id) {
  char *path = tu_db_path("ob-dedup");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  sc_id policy = make_policy(db, 100);
  for (int u = 1; u <= 20; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  }
  /* A consumer that fails every third event once; it records what it
   * applied, keyed by event id. */
  sc_id applied[64] = {0};
  int n_applied = 0, deliveries = 0;
  for (int round = 0; round < 10; round++) {
    sc_event *ev;
    int n;
    claim(db, 7, 60000, &ev, &n);
    for (int i = 0; i < n; i++) {
      deliveries++;
      bool seen = false;
      for (int k = 0; k < n_applied; k++)
        seen |= applied[k] == ev[i].id;
      if (ev[i].id % 3 == 0 && ev[i].attempts == 0) {
        ck_assert_sc(sc_outbox_nack(db, ev[i].id, ev[i].claim, "flaky"), SC_OK);
        continue;
      }
      if (!seen) applied[n_applied++] = ev[i].id;
      ck_assert_sc(sc_outbox_ack(db, ev[i].id, ev[i].claim), SC_OK);
    }
    sc_events_free(ev, n);
    atomic_fetch_add(&clock.now_ms, 1000);
  }
  ck_assert_int_eq(n_applied, 20);
  ck_assert_int_gt(deliveries, 20); /* some came twice */
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- racing consumers -----------------------------------------------------
 */

typedef struct consume_race {
  sc_db *db;
  const char *path;  /* for processes: each opens its own handle */
  _Atomic int *seen; /* per event id: deliveries acked */
  int total;
  atomic_int acked;
} consume_race;

static void consume_until_empty(sc_db *db, consume_race *r) {
  int idle = 0;
  while (idle < 20) {
    sc_event *ev;
    int n;
    if (sc_outbox_claim(db, 16, 600000, &ev, &n) != SC_OK) abort();
    idle = n == 0 ? idle + 1 : 0;
    for (int i = 0; i < n; i++) {
      if (ev[i].id <= 0 || ev[i].id > r->total) abort();
      atomic_fetch_add(&r->seen[ev[i].id], 1);
      if (sc_outbox_ack(db, ev[i].id, ev[i].claim) != SC_OK) abort();
      atomic_fetch_add(&r->acked, 1);
    }
    sc_events_free(ev, n);
    if (n == 0) usleep(1000);
  }
}

static void consume_thread(int t, void *ud) {
  (void)t;
  consume_race *r = ud;
  consume_until_empty(r->db, r);
}

START_TEST(leases_that_keep_running_out_end_dead) {
  /* A payload that crashes its consumer is never acked nor nacked: each
   * expired lease counts as an attempt, and at outbox_max_attempts the event
   * is dead instead of being handed out again. */
  char *path = tu_db_path("ob-lease-dead");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 3);
  ck_assert_sc(sc_account_deposit(db, 7, 100, NULL), SC_OK);
  sc_event *ev;
  int n;
  for (int attempt = 0; attempt < 3; attempt++) {
    claim(db, 10, 100, &ev, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ev[0].attempts, attempt);
    sc_events_free(ev, n);
    atomic_fetch_add(&clock.now_ms, 100); /* the lease runs out */
  }
  claim(db, 10, 100, &ev, &n);
  ck_assert_int_eq(n, 0);
  sc_dead_event *dead;
  ck_assert_sc(sc_outbox_dead_list(db, 0, 10, &dead, &n), SC_OK);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(dead[0].event.attempts, 3);
  ck_assert_ptr_nonnull(strstr(dead[0].last_error, "lease"));
  sc_id id = dead[0].event.id;
  sc_dead_events_free(dead, n);
  /* Requeued, it is deliverable again from a clean count. */
  ck_assert_sc(sc_outbox_requeue(db, id), SC_OK);
  claim(db, 10, 100, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].attempts, 0);
  ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
  sc_events_free(ev, n);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(racing_threads_never_share_a_leased_event) {
  char *path = tu_db_path("ob-threads");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 2000);
  for (int u = 1; u <= 2000; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  }
  consume_race r = {.db = db, .total = 2000};
  r.seen = calloc(2001, sizeof *r.seen);
  tu_race(8, consume_thread, &r);
  ck_assert_int_eq(atomic_load(&r.acked), 2000);
  for (int id = 1; id <= 2000; id++) {
    ck_assert_msg(atomic_load(&r.seen[id]) == 1, "event %d delivered %d times",
                  id, atomic_load(&r.seen[id]));
  }
  free(r.seen);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* Each process writes the ids it consumed to a file of its own. */
static int consume_process(int i, void *ud) {
  consume_race *r = ud;
  sc_db *db = NULL;
  if (sc_open(r->path, NULL, &db) != SC_OK) return 10;
  consume_race mine = {.total = r->total};
  mine.seen = calloc((size_t)r->total + 1, sizeof *mine.seen);
  consume_until_empty(db, &mine);
  char name[600];
  tu_side_path(r->path, i, name, sizeof name);
  FILE *f = fopen(name, "w");
  for (int id = 1; f != NULL && id <= r->total; id++) {
    fprintf(f, "%d\n", atomic_load(&mine.seen[id]));
  }
  int bad = f == NULL || sc_close(db) != SC_OK;
  if (f != NULL) fclose(f);
  free(mine.seen);
  return bad ? 11 : 0;
}

START_TEST(racing_processes_never_share_a_leased_event) {
  char *path = tu_db_path("ob-procs");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 1000);
  for (int u = 1; u <= 1000; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  }
  sc_close(db);
  consume_race r = {.path = path, .total = 1000};
  tu_fork_race(3, consume_process, &r);
  int *total = calloc(1001, sizeof *total);
  for (int i = 0; i < 3; i++) {
    char name[600];
    tu_side_path(path, i, name, sizeof name);
    FILE *f = fopen(name, "r");
    ck_assert_ptr_nonnull(f);
    for (int id = 1; id <= 1000; id++) {
      int k = 0;
      ck_assert_int_eq(fscanf(f, "%d", &k), 1);
      total[id] += k;
    }
    fclose(f);
    unlink(name);
  }
  for (int id = 1; id <= 1000; id++)
    ck_assert_int_eq(total[id], 1);
  free(total);
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_outbox WHERE state = 1"), 1000);
  tu_remove_db(path);
}
END_TEST

/* ---- settlement fenced by the claim token ----------------------------------
 */

static int64_t row_value(const char *path, const char *column, sc_id id) {
  char sql[200];
  snprintf(sql, sizeof sql, "SELECT %s FROM sc_outbox WHERE id = %lld", column,
           (long long)id);
  return tu_count(path, sql);
}

/* One deposit, so one event of its own aggregate, for each of users
 * 1..users. */
static void deposits(sc_db *db, int users) {
  for (sc_id u = 1; u <= users; u++) {
    ck_assert_sc(sc_account_deposit(db, u, 100, NULL), SC_OK);
  }
}

/* Consumer A claims the only event; its lease runs out, and B claims it
 * again. Returns A's token; *b_claim is B's. */
static int64_t lease_taken_over(sc_db *db, tu_clock *clock, sc_id *id,
                                int64_t *b_claim) {
  sc_event *ev;
  int n;
  claim(db, 10, 100, &ev, &n);
  ck_assert_int_eq(n, 1);
  *id = ev[0].id;
  int64_t a = ev[0].claim;
  ck_assert_int_gt(a, 0);
  sc_events_free(ev, n);
  atomic_fetch_add(&clock->now_ms, 100);
  claim(db, 10, 60000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].id, *id);
  *b_claim = ev[0].claim;
  ck_assert_int_ne(*b_claim, a);
  sc_events_free(ev, n);
  return a;
}

START_TEST(a_late_nack_cannot_clear_the_new_holders_lease) {
  char *path = tu_db_path("ob-fence-nack");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  ck_assert_sc(sc_account_deposit(db, 7, 100, NULL), SC_OK);
  sc_id id;
  int64_t b;
  int64_t a = lease_taken_over(db, &clock, &id, &b);
  int64_t lease = row_value(path, "lease_until_ms", id);
  ck_assert_sc(sc_outbox_nack(db, id, a, "A gave up"), SC_CONFLICT);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "claimed again"));
  /* Nothing changed: B's lease stands, no third consumer gets it, and A's
   * nack counted no attempt. */
  ck_assert_int_eq(row_value(path, "lease_until_ms", id), lease);
  ck_assert_int_eq(row_value(path, "attempts", id), 1);
  ck_assert_int_eq(row_value(path, "last_error IS NULL", id), 1);
  ck_assert_int_eq(claim_count(db), 0);
  /* B, the holder, settles it. */
  ck_assert_sc(sc_outbox_ack(db, id, b), SC_OK);
  ck_assert_int_eq(row_value(path, "state", id), 1);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(a_late_ack_cannot_release_the_aggregates_next_event) {
  char *path = tu_db_path("ob-fence-ack");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  sc_id policy = make_policy(db, 10);
  /* Two events of one aggregate: the policy's pause (seq 1), resume (2). */
  ck_assert_sc(sc_coupon_policy_pause(db, policy, 1), SC_OK);
  ck_assert_sc(sc_coupon_policy_pause(db, policy, 0), SC_OK);
  sc_id id;
  int64_t b;
  int64_t a = lease_taken_over(db, &clock, &id, &b);
  ck_assert_sc(sc_outbox_ack(db, id, a), SC_CONFLICT);
  /* Still pending under B: seq 2 is not handed out while B works. */
  ck_assert_int_eq(row_value(path, "state", id), 0);
  ck_assert_int_eq(claim_count(db), 0);
  ck_assert_sc(sc_outbox_ack(db, id, b), SC_OK);
  sc_event *ev;
  int n;
  claim(db, 10, 60000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].seq, 2);
  ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
  sc_events_free(ev, n);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(an_event_never_claimed_cannot_be_settled) {
  char *path = tu_db_path("ob-fence-never");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 2);
  ck_assert_sc(sc_account_deposit(db, 7, 100, NULL), SC_OK);
  sc_id id = tu_count(path, "SELECT max(id) FROM sc_outbox");
  ck_assert_int_gt(id, 0);
  for (int64_t token = 0; token <= 2; token++) {
    ck_assert_sc(sc_outbox_ack(db, id, token), SC_CONFLICT);
    ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "never claimed"));
    ck_assert_sc(sc_outbox_nack(db, id, token, "x"), SC_CONFLICT);
  }
  /* Neither delivered nor pushed toward dead: delivered first time. */
  ck_assert_int_eq(row_value(path, "state", id), 0);
  sc_event *ev;
  int n;
  claim(db, 10, 60000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].attempts, 0);
  ck_assert_int_eq(ev[0].claim, 1);
  ck_assert_sc(sc_outbox_ack(db, id, ev[0].claim), SC_OK);
  sc_events_free(ev, n);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* The latest claim's token still settles after its lease: a late ack
 * delivers (also once the event went dead), a nack after it is refused. */
START_TEST(the_latest_claim_settles_late) {
  char *path = tu_db_path("ob-fence-late");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 1);
  deposits(db, 2);
  sc_event *ev;
  int n;
  claim(db, 10, 100, &ev, &n);
  ck_assert_int_eq(n, 2);
  sc_id late = ev[0].id, dead = ev[1].id;
  int64_t late_claim = ev[0].claim, dead_claim = ev[1].claim;
  sc_events_free(ev, n);
  ck_assert_sc(sc_outbox_nack(db, dead, dead_claim, "no"), SC_OK); /* dead */
  atomic_fetch_add(&clock.now_ms, 1000); /* the leases ran out */
  ck_assert_sc(sc_outbox_ack(db, late, late_claim), SC_OK);
  ck_assert_sc(sc_outbox_ack(db, late, late_claim), SC_OK); /* no change */
  ck_assert_sc(sc_outbox_nack(db, late, late_claim, "x"), SC_INVALID_STATE);
  ck_assert_sc(sc_outbox_ack(db, dead, dead_claim), SC_OK);
  ck_assert_int_eq(row_value(path, "state", late), 1);
  ck_assert_int_eq(row_value(path, "state", dead), 1);
  ck_assert_int_eq(claim_count(db), 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* A nack's reason is kept up to 500 bytes, never cutting a character. */
START_TEST(a_long_reason_is_truncated_to_500_bytes) {
  char *path = tu_db_path("ob-reason");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 1);
  deposits(db, 2);
  size_t big = 10 * 1024 * 1024;
  char *reason = malloc(big + 1);
  memset(reason, 'r', big);
  reason[big] = '\0';
  char accented[600];
  memset(accented, 'a', 499);
  memcpy(accented + 499, "\xc3\xa9tail", 7); /* "é" spans bytes 499-500 */
  sc_event *ev;
  int n;
  claim(db, 10, 1000, &ev, &n);
  ck_assert_int_eq(n, 2);
  ck_assert_sc(sc_outbox_nack(db, ev[0].id, ev[0].claim, reason), SC_OK);
  ck_assert_sc(sc_outbox_nack(db, ev[1].id, ev[1].claim, accented), SC_OK);
  sc_events_free(ev, n);
  free(reason);
  sc_dead_event *dead;
  ck_assert_sc(sc_outbox_dead_list(db, 0, 10, &dead, &n), SC_OK);
  ck_assert_int_eq(n, 2);
  ck_assert_uint_eq(strlen(dead[0].last_error), 500);
  ck_assert_uint_eq(strlen(dead[1].last_error), 499);
  sc_dead_events_free(dead, n);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- retention: purging delivered events ----------------------------------
 */

/* Claims and acks until nothing is deliverable; returns how many. */
static int deliver_all(sc_db *db) {
  int total = 0;
  for (;;) {
    sc_event *ev;
    int n;
    claim(db, 100, 60000, &ev, &n);
    for (int i = 0; i < n; i++) {
      ck_assert_sc(sc_outbox_ack(db, ev[i].id, ev[i].claim), SC_OK);
    }
    sc_events_free(ev, n);
    if (n == 0) return total;
    total += n;
  }
}

static int64_t purge(sc_db *db, int64_t before) {
  int64_t purged = -1;
  ck_assert_sc(sc_outbox_purge(db, before, &purged), SC_OK);
  ck_assert_int_ge(purged, 0);
  return purged;
}

static int64_t max_seq(const char *path, int kind, sc_id agg) {
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT max(seq) FROM sc_outbox WHERE agg_kind = %d"
           " AND agg_id = %lld",
           kind, (long long)agg);
  return tu_count(path, sql);
}

START_TEST(purge_then_write_again_continues_sequences_and_ids) {
  char *path = tu_db_path("ob-purge");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  shop s = shop_day(db, &clock);
  ck_assert_int_eq(deliver_all(db), 10);
  int64_t acked_at = atomic_load(&clock.now_ms);
  sc_id last_id = tu_count(path, "SELECT max(id) FROM sc_outbox");
  ck_assert_int_eq(last_id, 10);
  /* Acked at acked_at: not before it. */
  ck_assert_int_eq(purge(db, acked_at), 0);
  sc_metrics m;
  ck_assert_sc(sc_metrics_reset(db), SC_OK);
  atomic_fetch_add(&clock.now_ms, 5000);
  /* All but the newest event of all (its id would be handed out again). */
  ck_assert_int_eq(purge(db, acked_at + 1), 9);
  ck_assert_int_eq(purge(db, acked_at + 1), 0);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 1);
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_eq(m.events_purged, 9);
  char *text = NULL;
  ck_assert_sc(sc_metrics_prometheus(db, &text), SC_OK);
  ck_assert_ptr_nonnull(strstr(text, "shopcore_outbox_events_purged_total 9"));
  sc_free(text);
  tu_assert_verify(db);
  /* Writing again: each aggregate goes on from its last number, with new
   * ids. The policy resumes (its 2nd), user 7 deposits (3rd), the paid
   * order cannot change, a new order starts at 1. */
  ck_assert_sc(sc_coupon_policy_pause(db, s.policy, 0), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 7, 10, NULL), SC_OK);
  ck_assert_sc(sc_order_cancel(db, s.paid), SC_INVALID_STATE);
  sc_id order = checkout(db, s.product, 0, 60000);
  ck_assert_int_eq(max_seq(path, 4, s.policy), 2);
  ck_assert_int_eq(max_seq(path, 3, 7), 3);
  ck_assert_int_eq(max_seq(path, 2, order), 1);
  ck_assert_int_eq(
      tu_count(path, "SELECT min(id) FROM sc_outbox WHERE id <> 10"),
      last_id + 1);
  tu_assert_verify(db);
  /* Delivered and purged again (all but the newest), then more: still no
   * gap, no reuse, and verify holds for what is kept. */
  ck_assert_int_eq(deliver_all(db), 3);
  atomic_fetch_add(&clock.now_ms, 1);
  ck_assert_int_eq(purge(db, INT64_MAX), 3);
  ck_assert_sc(sc_coupon_policy_pause(db, s.policy, 1), SC_OK);
  ck_assert_sc(sc_order_pay(db, order), SC_OK);
  ck_assert_int_eq(max_seq(path, 4, s.policy), 3);
  ck_assert_int_eq(max_seq(path, 2, order), 2);
  ck_assert_int_eq(tu_count(path, "SELECT min(id) FROM sc_outbox"), 13);
  ck_assert_int_eq(tu_count(path, "SELECT max(id) FROM sc_outbox"), 15);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* The wall clock can step back (NTP) between two acks of one aggregate:
 * its 2nd event is then "acked" before its 1st. A purge must still remove
 * a prefix of the aggregate, or the next event would take the number of
 * the purged one again (consumers order and deduplicate by it). */
START_TEST(purge_after_the_clock_stepped_back_never_reuses_a_seq) {
  char *path = tu_db_path("ob-purge-back");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  ck_assert_sc(sc_account_deposit(db, 7, 100, NULL), SC_OK);
  atomic_store(&clock.now_ms, T0 + 10000);
  ck_assert_int_eq(deliver_all(db), 1); /* seq 1, acked at T0 + 10000 */
  ck_assert_sc(sc_account_deposit(db, 7, 100, NULL), SC_OK);
  sc_event *ev;
  int n;
  claim(db, 10, 60000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].seq, 2);
  atomic_store(&clock.now_ms, T0 + 1000); /* the clock steps back */
  ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
  sc_events_free(ev, n);
  ck_assert_sc(sc_account_deposit(db, 8, 100, NULL), SC_OK); /* newest */
  atomic_store(&clock.now_ms, T0 + 20000);
  purge(db, T0 + 5000);
  tu_assert_verify(db);
  ck_assert_sc(sc_account_deposit(db, 7, 100, NULL), SC_OK);
  ck_assert_int_eq(max_seq(path, 3, 7), 3);
  ck_assert_int_eq(
      tu_count(path,
               "SELECT count(*) FROM sc_outbox WHERE agg_kind = 3"
               " AND agg_id = 7 AND seq = 2"),
      tu_count(path,
               "SELECT count(*) FROM sc_outbox WHERE agg_kind = 3"
               " AND agg_id = 7 AND seq = 2 AND type = 6 AND state = 1"));
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(purge_keeps_pending_leased_and_dead_events) {
  char *path = tu_db_path("ob-purge-keep");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 1);
  deposits(db, 4);
  sc_event *ev;
  int n;
  claim(db, 100, 60000, &ev, &n);
  ck_assert_int_eq(n, 4);
  ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
  ck_assert_sc(sc_outbox_nack(db, ev[2].id, ev[2].claim, "no"), SC_OK);
  ck_assert_sc(sc_outbox_ack(db, ev[3].id, ev[3].claim), SC_OK);
  /* ev[1] stays leased; a new one was never claimed. */
  sc_events_free(ev, n);
  ck_assert_sc(sc_account_deposit(db, 5, 100, NULL), SC_OK);
  atomic_fetch_add(&clock.now_ms, 1000000);
  ck_assert_int_eq(purge(db, INT64_MAX), 2);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 3);
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_outbox WHERE state = 1"), 0);
  sc_outbox_stats st;
  ck_assert_sc(sc_outbox_stats_get(db, &st), SC_OK);
  ck_assert_int_eq(st.pending, 2);
  ck_assert_int_eq(st.dead, 1);
  ck_assert_sc(sc_outbox_purge(NULL, 0, NULL), SC_MISUSE);
  ck_assert_sc(sc_outbox_purge(db, INT64_MAX, NULL), SC_OK);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

START_TEST(a_negative_retention_is_refused) {
  char *path = tu_db_path("ob-retention");
  sc_options o;
  sc_options_init(&o);
  o.outbox_retention_ms = -1;
  sc_db *db = (sc_db *)0x1;
  ck_assert_sc(sc_open(path, &o, &db), SC_INVALID);
  ck_assert_ptr_null(db);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "outbox_retention_ms"));
  tu_remove_db(path);
}
END_TEST

/* Purges racing producers and consumers: every event is still delivered
 * exactly once, in sequence, and what is kept verifies. */
typedef struct purge_race {
  sc_db *db;
  consume_race consumers;
  atomic_bool done;
  atomic_llong purged;
} purge_race;

/* Thread 0 produces, thread 1 purges. */
static void purge_race_thread(int t, void *ud) {
  purge_race *r = ud;
  if (t == 0) { /* the producer: deposits on a few accounts */
    for (int i = 0; i < 1500; i++) {
      if (sc_account_deposit(r->db, 1 + i % 7, 1, NULL) != SC_OK) abort();
    }
    atomic_store(&r->done, true);
  } else if (t == 1) { /* the purger */
    while (!atomic_load(&r->done)) {
      int64_t n = 0;
      if (sc_outbox_purge(r->db, INT64_MAX, &n) != SC_OK) abort();
      atomic_fetch_add(&r->purged, n);
      usleep(500);
    }
  }
}

static void consume_while_producing(int t, void *ud) {
  purge_race *r = ud;
  if (t < 2) {
    purge_race_thread(t, ud);
    return;
  }
  /* Consumers start at once, and drain what is left at the end. */
  while (!atomic_load(&r->done)) {
    sc_event *ev;
    int n;
    if (sc_outbox_claim(r->db, 16, 600000, &ev, &n) != SC_OK) abort();
    for (int i = 0; i < n; i++) {
      atomic_fetch_add(&r->consumers.seen[ev[i].id], 1);
      if (sc_outbox_ack(r->db, ev[i].id, ev[i].claim) != SC_OK) abort();
      atomic_fetch_add(&r->consumers.acked, 1);
    }
    sc_events_free(ev, n);
    if (n == 0) usleep(200);
  }
  consume_until_empty(r->db, &r->consumers);
}

START_TEST(purge_races_claims_and_acks) {
  char *path = tu_db_path("ob-purge-race");
  sc_db *db = tu_open(path, NULL);
  purge_race *r = calloc(1, sizeof *r);
  r->db = db;
  r->consumers.total = 1500;
  r->consumers.seen = calloc(1501, sizeof *r->consumers.seen);
  tu_race(5, consume_while_producing, r);
  ck_assert_int_eq(atomic_load(&r->consumers.acked), 1500);
  for (int id = 1; id <= 1500; id++) {
    ck_assert_msg(atomic_load(&r->consumers.seen[id]) == 1,
                  "event %d delivered %d times", id,
                  atomic_load(&r->consumers.seen[id]));
  }
  ck_assert_int_gt(atomic_load(&r->purged), 0);
  tu_assert_verify(db);
  int64_t n = 0;
  ck_assert_sc(sc_outbox_purge(db, INT64_MAX, &n), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_outbox"), 1);
  ck_assert_int_eq(tu_count(path, "SELECT sum(seq) FROM sc_outbox_seq"),
                   1500 - 1);
  tu_assert_verify(db);
  free(r->consumers.seen);
  free(r);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* Claims one event and checks it is the aggregate's event number seq. */
static sc_event claim_seq(sc_db *db, int64_t seq) {
  sc_event *ev;
  int n;
  claim(db, 10, 1000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].seq, seq);
  sc_event one = ev[0];
  one.payload = NULL;
  sc_events_free(ev, n);
  return one;
}

static const char SQL_VERSION_3[] =
    "UPDATE sc_meta SET value = 3 WHERE key = 'schema_version'";

/* A version 3 file (with the index sc_outbox_open) is migrated on open: the
 * index goes, setting the version back runs the migration again
 * harmlessly, and one aggregate's events are still handed out strictly in
 * order: held back by a leased or a dead previous event, and not by one
 * that was delivered and purged. */
START_TEST(a_version_3_file_drops_the_open_index_and_keeps_the_order) {
  char *path = tu_db_path("ob-migrate-4");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 1); /* one nack: dead */
  for (int i = 0; i < 4; i++) {
    ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK);
  }
  sc_close(db);
  exec_sql(path,
           "CREATE INDEX sc_outbox_open ON sc_outbox(agg_kind, agg_id, seq)"
           " WHERE state <> 1");
  exec_sql(path, SQL_VERSION_3);
  for (int round = 0; round < 2; round++) {
    db = open_clocked(path, &clock, 1);
    ck_assert_int_eq(tu_count(path,
                              "SELECT value FROM sc_meta"
                              " WHERE key = 'schema_version'"),
                     sc__schema_version());
    ck_assert_int_eq(tu_count(path,
                              "SELECT count(*) FROM sqlite_schema"
                              " WHERE name = 'sc_outbox_open'"),
                     0);
    tu_assert_verify(db);
    if (round == 0) {
      sc_close(db);
      exec_sql(path, SQL_VERSION_3); /* the index is gone already */
    }
  }
  sc_event e1 = claim_seq(db, 1);
  ck_assert_int_eq(claim_count(db), 0); /* 2 waits for the leased 1 */
  ck_assert_sc(sc_outbox_ack(db, e1.id, e1.claim), SC_OK);
  sc_event e2 = claim_seq(db, 2);
  ck_assert_sc(sc_outbox_nack(db, e2.id, e2.claim, "no"), SC_OK);
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_outbox WHERE state = 2"), 1);
  atomic_fetch_add(&clock.now_ms, 10000);
  ck_assert_int_eq(claim_count(db), 0); /* 3 and 4 wait for the dead 2 */
  ck_assert_sc(sc_outbox_requeue(db, e2.id), SC_OK);
  for (int64_t seq = 2; seq <= 4; seq++) {
    sc_event e = claim_seq(db, seq);
    ck_assert_int_eq(claim_count(db), 0); /* the next waits for this one */
    ck_assert_sc(sc_outbox_ack(db, e.id, e.claim), SC_OK);
  }
  /* Events 1 to 4 purged: 5 has no previous event left, and goes. */
  ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK);
  atomic_fetch_add(&clock.now_ms, 1);
  int64_t purged = 0;
  ck_assert_sc(sc_outbox_purge(db, atomic_load(&clock.now_ms), &purged), SC_OK);
  ck_assert_int_eq(purged, 4);
  sc_event e5 = claim_seq(db, 5);
  ck_assert_int_eq(claim_count(db), 0); /* 6 waits for the leased 5 */
  ck_assert_sc(sc_outbox_ack(db, e5.id, e5.claim), SC_OK);
  sc_event e6 = claim_seq(db, 6);
  ck_assert_sc(sc_outbox_ack(db, e6.id, e6.claim), SC_OK);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* A file of schema version 1 (before claim tokens and retention) is
 * migrated on open: its delivered events count as acked when created, its
 * leased ones can be claimed again once their leases end, and fencing,
 * purging and verify work on it. */
START_TEST(a_version_1_file_is_migrated) {
  char *path = tu_db_path("ob-migrate");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 5);
  deposits(db, 3);
  sc_event *ev;
  int n;
  claim(db, 2, 1000, &ev, &n);
  ck_assert_int_eq(n, 2);
  ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
  sc_events_free(ev, n); /* ev[1] stays leased */
  sc_close(db);
  /* Back to version 1: what migration 2 added goes. */
  exec_sql(path,
           "DROP INDEX sc_outbox_delivered;"
           "ALTER TABLE sc_outbox DROP COLUMN delivered_at_ms;"
           "ALTER TABLE sc_outbox DROP COLUMN claim;"
           "DROP TABLE sc_outbox_seq;"
           "UPDATE sc_meta SET value = 1 WHERE key = 'schema_version'");
  db = open_clocked(path, &clock, 5);
  ck_assert_int_eq(
      tu_count(path, "SELECT value FROM sc_meta WHERE key = 'schema_version'"),
      sc__schema_version());
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_outbox"
                            " WHERE state = 1 AND delivered_at_ms = "
                            "created_at_ms AND claim = 0"),
                   1);
  tu_assert_verify(db);
  /* The leased event (token 0 now) cannot be settled; claimed again after
   * its lease, it gets a token that does. */
  ck_assert_sc(sc_outbox_ack(db, 2, 0), SC_CONFLICT);
  atomic_fetch_add(&clock.now_ms, 1000);
  claim(db, 10, 1000, &ev, &n);
  ck_assert_int_eq(n, 2);
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(ev[i].claim, 1);
    ck_assert_sc(sc_outbox_ack(db, ev[i].id, ev[i].claim), SC_OK);
  }
  sc_events_free(ev, n);
  ck_assert_int_eq(purge(db, INT64_MAX), 2);
  ck_assert_sc(sc_account_deposit(db, 1, 5, NULL), SC_OK);
  ck_assert_int_eq(max_seq(path, 3, 1), 2);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- listing ----------------------------------------------------------------
 */

START_TEST(dead_list_pages_by_id) {
  char *path = tu_db_path("ob-page");
  tu_clock clock;
  sc_db *db = open_clocked(path, &clock, 1);
  sc_id policy = make_policy(db, 100);
  for (int u = 1; u <= 7; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  }
  sc_event *ev;
  int n;
  claim(db, 100, 1000, &ev, &n);
  ck_assert_int_eq(n, 7);
  for (int i = 0; i < n; i++) {
    ck_assert_sc(
        sc_outbox_nack(db, ev[i].id, ev[i].claim, i % 2 ? "odd" : NULL), SC_OK);
  }
  sc_events_free(ev, n);
  sc_id after = 0;
  int pages = 0, listed = 0;
  for (;;) {
    sc_dead_event *dead;
    ck_assert_sc(sc_outbox_dead_list(db, after, 3, &dead, &n), SC_OK);
    if (n == 0) break;
    pages++;
    for (int i = 0; i < n; i++) {
      ck_assert_int_gt(dead[i].event.id, after);
      after = dead[i].event.id;
      ck_assert_ptr_nonnull(dead[i].last_error);
      listed++;
    }
    sc_dead_events_free(dead, n);
  }
  ck_assert_int_eq(pages, 3);
  ck_assert_int_eq(listed, 7);
  sc_outbox_stats st;
  ck_assert_sc(sc_outbox_stats_get(db, &st), SC_OK);
  ck_assert_int_eq(st.dead, 7);
  ck_assert_int_eq(st.oldest_pending_ms, 0);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- bad input --------------------------------------------------------------
 */

START_TEST(bad_input_changes_nothing) {
  char *path = tu_db_path("ob-bad");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 10);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_OK);
  sc_event *ev = (sc_event *)0x1;
  int n = -7;
  ck_assert_sc(sc_outbox_claim(NULL, 1, 1, &ev, &n), SC_MISUSE);
  ck_assert_sc(sc_outbox_claim(db, 1, 1, NULL, &n), SC_MISUSE);
  ck_assert_sc(sc_outbox_claim(db, 1, 1, &ev, NULL), SC_MISUSE);
  ck_assert_sc(sc_outbox_claim(db, 0, 1, &ev, &n), SC_INVALID);
  ck_assert_sc(sc_outbox_claim(db, SC_OUTBOX_CLAIM_MAX + 1, 1, &ev, &n),
               SC_INVALID);
  ck_assert_sc(sc_outbox_claim(db, 1, 0, &ev, &n), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "lease_ms"));
  ck_assert_sc(sc_outbox_claim(db, 1, -5, &ev, &n), SC_INVALID);
  ck_assert_ptr_eq(ev, (sc_event *)0x1);
  ck_assert_int_eq(n, -7);
  ck_assert_sc(sc_outbox_ack(db, 999, 1), SC_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "999"));
  ck_assert_sc(sc_outbox_ack(db, 0, 1), SC_NOT_FOUND);
  ck_assert_sc(sc_outbox_ack(NULL, 1, 1), SC_MISUSE);
  ck_assert_sc(sc_outbox_nack(db, 999, 1, "x"), SC_NOT_FOUND);
  ck_assert_sc(sc_outbox_nack(db, -1, 1, "x"), SC_NOT_FOUND);
  ck_assert_sc(sc_outbox_requeue(db, 999), SC_NOT_FOUND);
  ck_assert_sc(sc_outbox_requeue(db, 1), SC_INVALID_STATE); /* pending */
  ck_assert_sc(sc_outbox_requeue_all(NULL, NULL), SC_MISUSE);
  sc_dead_event *dead = (sc_dead_event *)0x1;
  ck_assert_sc(sc_outbox_dead_list(db, 0, 0, &dead, &n), SC_INVALID);
  ck_assert_sc(sc_outbox_dead_list(db, 0, 1, NULL, &n), SC_MISUSE);
  ck_assert_sc(sc_outbox_dead_list(NULL, 0, 1, &dead, &n), SC_MISUSE);
  ck_assert_ptr_eq(dead, (sc_dead_event *)0x1);
  ck_assert_sc(sc_outbox_stats_get(db, NULL), SC_MISUSE);
  sc_events_free(NULL, 0);
  sc_dead_events_free(NULL, 0);
  /* The event is untouched: still pending, deliverable, never attempted. */
  claim(db, 10, 1000, &ev, &n);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ev[0].attempts, 0);
  ck_assert_sc(sc_outbox_ack(db, ev[0].id, ev[0].claim), SC_OK);
  ck_assert_sc(sc_outbox_nack(db, ev[0].id, ev[0].claim, "late"),
               SC_INVALID_STATE);
  sc_events_free(ev, n);
  sc_close(db);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_outbox WHERE attempts = 0"
                            " AND state = 1 AND last_error IS NULL"),
                   1);
  tu_remove_db(path);
}
END_TEST

Suite *outbox_suite(void) {
  Suite *s = suite_create("outbox");
  TCase *tc = tu_tcase("outbox");
  tcase_add_test(tc, issuance_writes_exactly_its_events);
  tcase_add_test(tc, a_late_nack_cannot_clear_the_new_holders_lease);
  tcase_add_test(tc, a_late_ack_cannot_release_the_aggregates_next_event);
  tcase_add_test(tc, an_event_never_claimed_cannot_be_settled);
  tcase_add_test(tc, the_latest_claim_settles_late);
  tcase_add_test(tc, a_long_reason_is_truncated_to_500_bytes);
  tcase_add_test(tc, purge_then_write_again_continues_sequences_and_ids);
  tcase_add_test(tc, purge_keeps_pending_leased_and_dead_events);
  tcase_add_test(tc, purge_after_the_clock_stepped_back_never_reuses_a_seq);
  tcase_add_test(tc, a_negative_retention_is_refused);
  tcase_add_test(tc, purge_races_claims_and_acks);
  tcase_add_test(tc, every_change_writes_one_event_and_no_op_writes_none);
  tcase_add_test(tc, claims_lease_and_ack_delivers);
  tcase_add_test(tc, nack_backs_off_then_dead_letters_then_requeues);
  tcase_add_test(tc, backoff_is_capped);
  tcase_add_test(tc, the_longest_backoff_does_not_overflow);
  tcase_add_test(tc, a_failing_event_holds_back_its_aggregate_only);
  tcase_add_test(tc, failed_then_succeeded_is_redelivered_with_the_same_id);
  tcase_add_test(tc, leases_that_keep_running_out_end_dead);
  tcase_add_test(tc, racing_threads_never_share_a_leased_event);
  tcase_add_test(tc, racing_processes_never_share_a_leased_event);
  tcase_add_test(tc, dead_list_pages_by_id);
  tcase_add_test(tc, bad_input_changes_nothing);
  /* The SQLite file itself (an old file's migration, edits by hand through
   * SQLite, the engine's rollback): not run against PostgreSQL. */
  if (!tu_pg_mode()) {
    tcase_add_test(tc, a_version_1_file_is_migrated);
    tcase_add_test(tc,
                   a_version_3_file_drops_the_open_index_and_keeps_the_order);
    tcase_add_test(tc, rolled_back_changes_leave_no_event_and_no_gap);
    tcase_add_test(tc, verify_reports_event_tampering);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(outbox_suite());
}
