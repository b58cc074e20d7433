/* The worker on a real libuv loop: dispatch woken by commits, retries in
 * sequence, dead letters for undecodable payloads, expiry on time and
 * re-armed by earlier deadlines, the pay-versus-expiry race with the worker
 * running, the fallback poll, start/stop cycles and stops with work in
 * flight: no callback after close, no handle left open. */
#include <dirent.h>
#include <dlfcn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "internal.h"
#include "test_util.h"

#define MAX_IDS 20000

/* ---- a loop, a worker and what its handler saw ----------------------------
 */

typedef struct harness harness;
typedef bool (*pred_fn)(harness *h);

struct harness {
  uv_loop_t loop;
  sc_db *db;
  sc_worker *w;
  uv_timer_t check;
  pred_fn until;
  int64_t deadline_ns;
  bool timed_out;
  int64_t until_met_ns; /* when run_until's predicate held */
  pthread_t loop_thread;
  /* what the handler saw */
  atomic_int handled, failed, wrong_thread, after_close;
  atomic_int closes;
  atomic_bool closed;
  _Atomic unsigned char seen[MAX_IDS]; /* deliveries per event id, capped */
  int (*verdict)(harness *h, const sc_event *ev); /* NULL: SC_OK */
  int stop_after;                                 /* > 0: stop in handler */
  /* order of delivery within the policy aggregate */
  int64_t policy_seqs[64];
  int n_policy_seqs;
};

static int on_event(const sc_event *ev, void *ud) {
  harness *h = ud;
  if (atomic_load(&h->closed)) atomic_fetch_add(&h->after_close, 1);
  if (!pthread_equal(pthread_self(), h->loop_thread)) {
    atomic_fetch_add(&h->wrong_thread, 1);
  }
  sc_event_data d;
  ck_assert_sc(sc_event_decode(ev->payload, ev->payload_len, &d), SC_OK);
  ck_assert_int_eq(d.type, ev->type);
  int rc = h->verdict ? h->verdict(h, ev) : SC_OK;
  if (rc != SC_OK) {
    atomic_fetch_add(&h->failed, 1);
    return rc;
  }
  if (ev->id > 0 && ev->id < MAX_IDS && h->seen[ev->id] < 255)
    h->seen[ev->id]++;
  if ((ev->type == SC_EVENT_POLICY_PAUSED ||
       ev->type == SC_EVENT_POLICY_RESUMED) &&
      h->n_policy_seqs < 64) {
    h->policy_seqs[h->n_policy_seqs++] = ev->seq;
  }
  int n = atomic_fetch_add(&h->handled, 1) + 1;
  if (h->stop_after > 0 && n == h->stop_after) {
    ck_assert_sc(sc_worker_stop(h->w, NULL, NULL), SC_OK);
    atomic_store(&h->closed, true); /* no handler call from here on */
  }
  return SC_OK;
}

static void on_closed(sc_worker *w, void *ud) {
  harness *h = ud;
  ck_assert_ptr_eq(w, h->w);
  atomic_fetch_add(&h->closes, 1);
  atomic_store(&h->closed, true);
}

static void harness_init(harness *h, sc_db *db) {
  memset(h, 0, sizeof *h);
  ck_assert_int_eq(uv_loop_init(&h->loop), 0);
  h->db = db;
  h->loop_thread = pthread_self();
}

static void start(harness *h, const sc_worker_options *o) {
  sc_worker_options opts;
  if (o != NULL) {
    opts = *o;
  } else {
    sc_worker_options_init(&opts);
    opts.on_event = on_event;
  }
  opts.ud = h;
  ck_assert_sc(sc_worker_start(h->db, &h->loop, &opts, &h->w), SC_OK);
  ck_assert_ptr_nonnull(h->w);
  atomic_store(&h->closed, false);
}

static void check_fired(uv_timer_t *t) {
  harness *h = t->data;
  bool done = h->until != NULL && h->until(h);
  if (!done && sc__monotonic_ns() < h->deadline_ns) return;
  h->timed_out = !done;
  if (done) h->until_met_ns = sc__monotonic_ns();
  uv_close((uv_handle_t *)&h->check, NULL);
  if (h->w != NULL && !atomic_load(&h->closed)) {
    ck_assert_sc(sc_worker_stop(h->w, on_closed, h), SC_OK);
  }
}

/* Runs the loop until pred holds (or timeout_ms passes), then stops the
 * worker and runs until every handle is closed. True if pred held. */
static bool run_until(harness *h, pred_fn pred, int timeout_ms) {
  h->until = pred;
  h->deadline_ns = sc__monotonic_ns() + (int64_t)timeout_ms * 1000000;
  uv_timer_init(&h->loop, &h->check);
  h->check.data = h;
  uv_timer_start(&h->check, check_fired, 2, 2);
  uv_run(&h->loop, UV_RUN_DEFAULT);
  ck_assert(atomic_load(&h->closed));
  return !h->timed_out;
}

static void harness_close(harness *h) {
  /* Every handle of the worker is closed: the loop closes cleanly. */
  ck_assert_int_eq(uv_loop_close(&h->loop), 0);
  ck_assert_int_eq(atomic_load(&h->after_close), 0);
  ck_assert_int_eq(atomic_load(&h->wrong_thread), 0);
}

static sc_id make_policy(sc_db *db, int64_t max_count) {
  sc_coupon_policy_spec spec = {.name = "w", .max_count = max_count};
  sc_id id = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &id), SC_OK);
  return id;
}

static int target;
static bool handled_target(harness *h) {
  return atomic_load(&h->handled) >= target;
}

/* ---- dispatch ----------------------------------------------------------- */

typedef struct producer {
  sc_db *db;
  sc_id policy;
  int n;
} producer;

static void *issue_coupons(void *arg) {
  producer *p = arg;
  for (int u = 1; u <= p->n; u++) {
    ck_assert_sc(sc_coupon_issue(p->db, p->policy, u, NULL), SC_OK);
  }
  return NULL;
}

START_TEST(commits_wake_dispatch_on_the_loop_thread) {
  char *path = tu_db_path("wk-dispatch");
  sc_db *db = tu_open(path, NULL);
  producer p = {db, make_policy(db, 501), 500};
  ck_assert_sc(sc_coupon_issue(db, p.policy, 10000, NULL), SC_OK); /* before */
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  start(h, NULL);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, issue_coupons, &p), 0);
  target = 501;
  ck_assert(run_until(h, handled_target, 60000));
  pthread_join(t, NULL);
  ck_assert_int_eq(atomic_load(&h->closes), 1);
  harness_close(h);
  for (int id = 1; id <= 501; id++)
    ck_assert_int_eq(h->seen[id], 1);
  free(h);
  sc_outbox_stats st;
  ck_assert_sc(sc_outbox_stats_get(db, &st), SC_OK);
  ck_assert_int_eq(st.pending, 0);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* Fails each event's first delivery. */
static int fail_first(harness *h, const sc_event *ev) {
  (void)h;
  return ev->attempts == 0 ? SC_CONFLICT : SC_OK;
}

START_TEST(failures_are_retried_in_sequence_then_acked) {
  char *path = tu_db_path("wk-retry");
  sc_options o;
  sc_options_init(&o);
  o.outbox_retry_base_ms = 5;
  o.outbox_retry_max_ms = 20;
  sc_db *db = tu_open(path, &o);
  sc_id policy = make_policy(db, 100);
  for (int i = 0; i < 3; i++) {
    ck_assert_sc(sc_coupon_policy_pause(db, policy, 1), SC_OK);
    ck_assert_sc(sc_coupon_policy_pause(db, policy, 0), SC_OK);
  }
  for (int u = 1; u <= 20; u++) {
    ck_assert_sc(sc_coupon_issue(db, policy, u, NULL), SC_OK);
  }
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  h->verdict = fail_first;
  start(h, NULL);
  target = 26;
  ck_assert(run_until(h, handled_target, 60000));
  harness_close(h);
  /* Every event failed once, then was delivered once more and acked. */
  ck_assert_int_eq(atomic_load(&h->failed), 26);
  for (int id = 1; id <= 26; id++)
    ck_assert_int_eq(h->seen[id], 1);
  /* The policy's six events, each retried, still in sequence. */
  ck_assert_int_eq(h->n_policy_seqs, 6);
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(h->policy_seqs[i], i + 1);
  free(h);
  sc_close(db);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_outbox"
                            " WHERE state = 1 AND attempts = 1"),
                   26);
  tu_remove_db(path);
}
END_TEST

static void exec_sql(const char *path, const char *sql) {
  sqlite3 *hd;
  ck_assert_int_eq(sqlite3_open(path, &hd), SQLITE_OK);
  sqlite3_busy_timeout(hd, 10000);
  ck_assert_int_eq(sqlite3_exec(hd, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(hd);
}

static bool one_dead(harness *h) {
  sc_outbox_stats st;
  return atomic_load(&h->handled) >= 1 &&
         sc_outbox_stats_get(h->db, &st) == SC_OK && st.dead == 1;
}

START_TEST(undecodable_payloads_die_without_reaching_the_handler) {
  char *path = tu_db_path("wk-poison");
  sc_db *db = tu_open(path, NULL);
  sc_close(db);
  /* Written by something else than the library: a float where an id
   * belongs, in an otherwise good coupon event. */
  exec_sql(path,
           "INSERT INTO sc_outbox(id, type, agg_kind, agg_id, seq,"
           " created_at_ms, payload) VALUES(1, 1, 1, 77, 1, 0,"
           " x'86a47479706501a17601a2617400a475736572cb401c000000000000"
           "a6706f6c69637901a6636f75706f6e4d')");
  db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 10);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_OK);
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  start(h, NULL);
  ck_assert(run_until(h, one_dead, 60000));
  harness_close(h);
  ck_assert_int_eq(h->seen[1], 0); /* never handed over */
  ck_assert_int_eq(h->seen[2], 1);
  free(h);
  sc_dead_event *dead;
  int n;
  ck_assert_sc(sc_outbox_dead_list(db, 0, 10, &dead, &n), SC_OK);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(dead[0].event.id, 1);
  ck_assert_ptr_nonnull(strstr(dead[0].last_error, "undecodable payload"));
  sc_dead_events_free(dead, n);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- the fallback poll -------------------------------------------------- */

START_TEST(the_poll_picks_up_events_of_another_handle) {
  char *path = tu_db_path("wk-poll");
  sc_db *db = tu_open(path, NULL);
  /* A second handle has its own writer and no worker: like another
   * process, its commits wake nobody here. */
  sc_db *other = tu_open(path, NULL);
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = on_event;
  o.poll_interval_ms = 20;
  start(h, &o);
  producer p = {other, make_policy(other, 50), 50};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, issue_coupons, &p), 0);
  target = 50;
  ck_assert(run_until(h, handled_target, 60000));
  pthread_join(t, NULL);
  harness_close(h);
  free(h);
  sc_close(other);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- expiry ------------------------------------------------------------- */

typedef struct shop {
  sc_db *db;
  sc_id product;
} shop;

static shop shop_open(sc_db *db, int64_t stock) {
  shop s = {db, 0};
  ck_assert_sc(sc_product_create(db, "p", 10, stock, &s.product), SC_OK);
  for (sc_id u = 1; u <= 8; u++) {
    ck_assert_sc(sc_account_deposit(db, u, 100000000, NULL), SC_OK);
  }
  return s;
}

static sc_id checkout(shop *s, sc_id user, int64_t ttl_ms) {
  sc_line line = {.product = s->product, .qty = 1};
  sc_checkout_req req = {
      .user = user, .lines = &line, .n_lines = 1, .ttl_ms = ttl_ms};
  sc_id order = 0;
  ck_assert_sc(sc_checkout(s->db, &req, &order), SC_OK);
  return order;
}

static int status_of(sc_db *db, sc_id order) {
  sc_order o;
  ck_assert_sc(sc_order_get(db, order, &o), SC_OK);
  return o.status;
}

static bool wait_status(sc_db *db, sc_id order, int status, int timeout_ms) {
  for (int waited = 0; waited < timeout_ms; waited += 5) {
    if (status_of(db, order) == status) return true;
    usleep(5000);
  }
  return status_of(db, order) == status;
}

START_TEST(expiry_fires_at_the_deadline_and_rearms_for_earlier_ones) {
  char *path = tu_db_path("wk-expiry");
  sc_db *db = tu_open(path, NULL);
  shop s = shop_open(db, 100);
  sc_id overdue = checkout(&s, 1, 1);
  usleep(5000);
  sc_id late = checkout(&s, 1, 60000);
  /* A poll far longer than the test: only the deadline timer can expire
   * the orders below in time. */
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.poll_interval_ms = 600000;
  sc_worker *w = NULL;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_OK);
  /* Overdue before the worker started: expired as it starts. */
  ck_assert(wait_status(db, overdue, SC_ORDER_EXPIRED, 30000));
  /* The timer waits for the 60 s order; an earlier deadline re-arms it. */
  sc_id soon = checkout(&s, 2, 300);
  ck_assert(wait_status(db, soon, SC_ORDER_EXPIRED, 30000));
  ck_assert_int_eq(status_of(db, late), SC_ORDER_PENDING);
  /* And again, after the timer was last armed for the 60 s order. */
  sc_id again = checkout(&s, 3, 200);
  ck_assert(wait_status(db, again, SC_ORDER_EXPIRED, 30000));
  ck_assert_int_eq(status_of(db, late), SC_ORDER_PENDING);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  tu_assert_verify(db);
  sc_close(db);
  /* Never before the deadline (by the db clock). */
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_order WHERE"
                            " status = 4 AND closed_at_ms >= expires_at_ms"),
                   3);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_order"), 4);
  tu_remove_db(path);
}
END_TEST

/* Expiry rounds the writer completed so far. */
static uint64_t expiry_rounds(sc_db *db) {
  sc_metrics *m = malloc(sizeof *m);
  ck_assert_ptr_nonnull(m);
  ck_assert_sc(sc_metrics_get(db, m), SC_OK);
  uint64_t n = 0;
  for (int k = 0; k < m->n_ops; k++) {
    if (strcmp(m->ops[k].name, "orders_expire_due") == 0) n = m->ops[k].count;
  }
  free(m);
  return n;
}

/* A due order that cannot be expired (its user's hold edited by hand) is
 * skipped: the worker expires the others on time and does not spin on the
 * damaged one, whose deadline is behind it. */
START_TEST(a_damaged_order_neither_stops_nor_spins_expiry) {
  char *path = tu_db_path("wk-damaged");
  sc_db *db = tu_open(path, NULL);
  shop s = shop_open(db, 100);
  sc_id damaged = checkout(&s, 1, 1);
  sc_id others[3] = {checkout(&s, 2, 1), checkout(&s, 3, 1), 0};
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
  sqlite3_busy_timeout(h, 10000);
  ck_assert_int_eq(sqlite3_exec(h,
                                "UPDATE sc_account SET held = 0"
                                " WHERE user_id = 1",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(h);
  usleep(5000);
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.poll_interval_ms = 600000; /* only deadlines wake it */
  sc_worker *w = NULL;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_OK);
  ck_assert(wait_status(db, others[0], SC_ORDER_EXPIRED, 30000));
  ck_assert(wait_status(db, others[1], SC_ORDER_EXPIRED, 30000));
  /* A deadline after the damaged one still wakes it. */
  others[2] = checkout(&s, 4, 100);
  ck_assert(wait_status(db, others[2], SC_ORDER_EXPIRED, 30000));
  uint64_t rounds = expiry_rounds(db);
  usleep(300000);
  ck_assert_uint_le(expiry_rounds(db) - rounds, 2);
  ck_assert_int_eq(status_of(db, damaged), SC_ORDER_PENDING);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  ck_assert_sc(sc_verify(db, NULL), SC_CORRUPT); /* it names the order */
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* An injected clock: nothing expires while it stands still, and a jump past
 * the deadline is seen within poll_interval_ms. */
START_TEST(expiry_follows_the_injected_clock) {
  char *path = tu_db_path("wk-clock");
  sc_options so;
  sc_options_init(&so);
  tu_clock clock;
  tu_use_clock(&so, &clock, 1000000);
  sc_db *db = tu_open(path, &so);
  shop s = shop_open(db, 100);
  sc_id order = checkout(&s, 1, 50);
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.poll_interval_ms = 10;
  sc_worker *w = NULL;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_OK);
  usleep(300000); /* 300 ms of real time, 0 ms of db time */
  ck_assert_int_eq(status_of(db, order), SC_ORDER_PENDING);
  atomic_store(&clock.now_ms, 1000050);
  ck_assert(wait_status(db, order, SC_ORDER_EXPIRED, 30000));
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- pay against expiry, the worker running ------------------------------ */

#define RACE_ORDERS 600

typedef struct pay_race {
  shop s;
  sc_id orders[RACE_ORDERS];
  atomic_int next, paid, expired_refusals, other;
} pay_race;

static void *create_orders(void *arg) {
  pay_race *r = arg;
  for (int i = 0; i < RACE_ORDERS; i++) {
    /* Deadlines spread over ~300 ms, payers chasing them. */
    r->orders[i] = checkout(&r->s, 1 + i % 8, 100 + (i % 60) * 5);
  }
  return NULL;
}

static void pay_all(int t, void *ud) {
  pay_race *r = ud;
  (void)t;
  for (int i; (i = atomic_fetch_add(&r->next, 1)) < RACE_ORDERS;) {
    if (i % 3 == 0) usleep(1000); /* some payments come late */
    int rc = sc_order_pay(r->s.db, r->orders[i]);
    if (rc == SC_OK) {
      atomic_fetch_add(&r->paid, 1);
    } else if (rc == SC_EXPIRED) {
      atomic_fetch_add(&r->expired_refusals, 1);
    } else {
      atomic_fetch_add(&r->other, 1);
    }
  }
}

static bool all_closed(harness *h) {
  sc_outbox_stats st;
  return sc_outbox_stats_get(h->db, &st) == SC_OK && st.pending == 0 &&
         atomic_load(&h->handled) >= target;
}

typedef struct race_thread {
  pay_race *r;
} race_thread;

static void *race_main(void *arg) {
  pay_race *r = arg;
  create_orders(r);
  tu_race(8, pay_all, r);
  return NULL;
}

START_TEST(pay_against_expiry_with_the_worker_running) {
  char *path = tu_db_path("wk-race");
  sc_db *db = tu_open(path, NULL);
  pay_race *r = calloc(1, sizeof *r);
  r->s = shop_open(db, RACE_ORDERS);
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  start(h, NULL); /* expiry and dispatch on this loop */
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, race_main, r), 0);
  /* 8 deposits, then per order a created and a paid or expired event. */
  target = 8 + 2 * RACE_ORDERS;
  ck_assert(run_until(h, all_closed, 120000));
  pthread_join(t, NULL);
  harness_close(h);
  ck_assert_int_eq(atomic_load(&r->other), 0);
  int paid = atomic_load(&r->paid);
  ck_assert_int_eq(paid + atomic_load(&r->expired_refusals), RACE_ORDERS);
  fprintf(stderr, "pay vs expiry: %d paid, %d expired\n", paid,
          RACE_ORDERS - paid);
  /* Each event was handed to the handler exactly once. */
  for (int id = 1; id <= target; id++)
    ck_assert_int_eq(h->seen[id], 1);
  free(h);
  tu_assert_verify(db); /* invariants 1..6, 5 included */
  sc_close(db);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_order"
                            " WHERE status = 2"),
                   paid);
  ck_assert_int_eq(tu_count(path,
                            "SELECT count(*) FROM sc_order"
                            " WHERE status = 4"),
                   RACE_ORDERS - paid);
  /* A confirmed order has its paid event and no expired one; an expired
   * order the reverse; none has both. */
  ck_assert_int_eq(
      tu_count(path,
               "SELECT count(*) FROM sc_order o WHERE (SELECT count(*) FROM"
               " sc_outbox e WHERE e.agg_kind = 2 AND e.agg_id = o.id AND"
               " e.type = CASE o.status WHEN 2 THEN 3 ELSE 5 END) = 1 AND"
               " (SELECT count(*) FROM sc_outbox e WHERE e.agg_kind = 2 AND"
               " e.agg_id = o.id AND e.type IN (3, 5)) = 1"),
      RACE_ORDERS);
  free(r);
  tu_remove_db(path);
}
END_TEST

/* ---- start, stop, stop with work in flight ------------------------------- */

START_TEST(start_stop_cycles_leave_nothing_behind) {
  char *path = tu_db_path("wk-cycles");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 1000);
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  for (int cycle = 0; cycle < 25; cycle++) {
    ck_assert_sc(sc_coupon_issue(db, policy, cycle + 1, NULL), SC_OK);
    start(h, NULL);
    target = cycle + 1;
    ck_assert(run_until(h, handled_target, 60000));
    ck_assert_int_eq(atomic_load(&h->closes), cycle + 1);
    /* Stopped at once, in the middle of whatever it was doing. */
    start(h, NULL);
    ck_assert_sc(sc_worker_stop(h->w, on_closed, h), SC_OK);
    ck_assert_sc(sc_worker_stop(h->w, on_closed, h), SC_MISUSE);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(atomic_load(&h->closes), cycle + 2);
    atomic_store(&h->closes, cycle + 1);
  }
  harness_close(h);
  for (int id = 1; id <= 25; id++)
    ck_assert_int_ge(h->seen[id], 1);
  free(h);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* A stopped worker still has its first round trip and expiry round with
 * the writer until the loop runs: the handle must stay open until close_cb,
 * or the completions (and, on PostgreSQL, the listener) read freed memory. */
START_TEST(close_is_refused_until_the_stopped_worker_closes) {
  char *path = tu_db_path("wk-close-order");
  sc_db *db = tu_open(path, NULL);
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  start(h, NULL);
  ck_assert_sc(sc_worker_stop(h->w, on_closed, h), SC_OK);
  ck_assert_sc(sc_close(db), SC_MISUSE);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "worker"));
  uv_run(&h->loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(atomic_load(&h->closes), 1);
  harness_close(h);
  free(h);
  /* Still usable after the refusal, then closes. */
  ck_assert_int_eq(make_policy(db, 1) > 0, 1);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

START_TEST(stop_with_events_in_flight_releases_the_rest) {
  char *path = tu_db_path("wk-inflight");
  sc_db *db = tu_open(path, NULL);
  sc_id policy = make_policy(db, 3000);
  producer p = {db, policy, 3000};
  issue_coupons(&p);
  /* The handler stops its own worker in the middle of a batch. */
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  h->stop_after = 100;
  start(h, NULL);
  uv_run(&h->loop, UV_RUN_DEFAULT); /* returns once the worker closed */
  ck_assert_int_eq(atomic_load(&h->handled), 100);
  ck_assert_int_eq(uv_loop_close(&h->loop), 0);
  ck_assert_int_eq(atomic_load(&h->after_close), 0);
  /* The hundred were acked; the rest of their batch was released, not left
   * leased: a new worker delivers exactly the others, at once. */
  sc_outbox_stats st;
  ck_assert_sc(sc_outbox_stats_get(db, &st), SC_OK);
  ck_assert_int_eq(st.pending, 2900);
  harness_init(h, db);
  start(h, NULL);
  target = 2900;
  ck_assert(run_until(h, handled_target, 60000));
  harness_close(h);
  for (int id = 1; id <= 3000; id++)
    ck_assert_int_eq(h->seen[id], id > 100);
  free(h);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* A slow handler: each call takes 400 ms of the db clock, and a batch of
 * ten is claimed with a 1,000 ms lease. Every call must come while the
 * delivery's lease still holds (by the row, read beside the writer); the
 * rest of the batch is released and claimed again, each event handled
 * once. */
static tu_clock *slow_clock;
static const char *slow_path;
static atomic_int slow_late, slow_wrong_claim;

static int slow_handler(harness *h, const sc_event *ev) {
  (void)h;
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT lease_until_ms FROM sc_outbox WHERE id = %lld",
           (long long)ev->id);
  int64_t until = tu_count(slow_path, sql);
  snprintf(sql, sizeof sql, "SELECT claim FROM sc_outbox WHERE id = %lld",
           (long long)ev->id);
  if (tu_count(slow_path, sql) != ev->claim) {
    atomic_fetch_add(&slow_wrong_claim, 1);
  }
  if (atomic_load(&slow_clock->now_ms) >= until) {
    atomic_fetch_add(&slow_late, 1);
  }
  atomic_fetch_add(&slow_clock->now_ms, 400);
  return SC_OK;
}

START_TEST(a_slow_handler_is_never_called_past_the_lease) {
  char *path = tu_db_path("wk-slow");
  tu_clock clock;
  sc_options o;
  sc_options_init(&o);
  tu_use_clock(&o, &clock, 1000000);
  sc_db *db = tu_open(path, &o);
  producer p = {db, make_policy(db, 10), 10};
  issue_coupons(&p);
  slow_clock = &clock;
  slow_path = path;
  atomic_store(&slow_late, 0);
  atomic_store(&slow_wrong_claim, 0);
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  h->verdict = slow_handler;
  sc_worker_options wo;
  sc_worker_options_init(&wo);
  wo.on_event = on_event;
  wo.batch_max = 10;
  wo.lease_ms = 1000;
  wo.poll_interval_ms = 5;
  wo.no_expiry = true;
  start(h, &wo);
  target = 10;
  ck_assert(run_until(h, handled_target, 60000));
  harness_close(h);
  ck_assert_int_eq(atomic_load(&slow_late), 0);
  ck_assert_int_eq(atomic_load(&slow_wrong_claim), 0);
  for (int id = 1; id <= 10; id++)
    ck_assert_int_eq(h->seen[id], 1);
  free(h);
  /* Those skipped were released, not left to count an attempt. */
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_outbox WHERE attempts > 0"), 0);
  tu_assert_verify(db);
  sc_close(db);
  ck_assert_int_eq(
      tu_count(path, "SELECT count(*) FROM sc_outbox WHERE state = 1"), 10);
  tu_remove_db(path);
}
END_TEST

/* Retention: once the injected clock passes outbox_retention_ms after the
 * acks, the worker purges the delivered events on its own (all but the
 * newest, whose id must not come back), counted in the metrics. */
static tu_clock *ret_clock;
static const char *ret_path;
static bool ret_advanced;

static bool purged_on_its_own(harness *h) {
  if (atomic_load(&h->handled) < target) return false;
  /* The acks of the last batch commit with the worker's next round: the
   * clock moves once they have, so they are older than the retention. */
  sc_outbox_stats st;
  if (!ret_advanced &&
      (sc_outbox_stats_get(h->db, &st) != SC_OK || st.pending > 0)) {
    return false;
  }
  if (!ret_advanced) {
    ret_advanced = true;
    atomic_fetch_add(&ret_clock->now_ms, 2000);
  }
  return tu_count(ret_path, "SELECT count(*) FROM sc_outbox") == 1;
}

START_TEST(the_worker_purges_delivered_events_past_retention) {
  char *path = tu_db_path("wk-retention");
  tu_clock clock;
  sc_options o;
  sc_options_init(&o);
  tu_use_clock(&o, &clock, 1000000);
  o.outbox_retention_ms = 1000;
  sc_db *db = tu_open(path, &o);
  producer p = {db, make_policy(db, 51), 50};
  issue_coupons(&p);
  ret_clock = &clock;
  ret_path = path;
  ret_advanced = false;
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  sc_worker_options wo;
  sc_worker_options_init(&wo);
  wo.on_event = on_event;
  wo.poll_interval_ms = 5;
  start(h, &wo);
  target = 50;
  ck_assert(run_until(h, purged_on_its_own, 60000));
  harness_close(h);
  free(h);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_uint_eq(m.events_purged, 49);
  tu_assert_verify(db);
  /* The next coupon's event gets a new id. */
  ck_assert_sc(sc_coupon_issue(db, p.policy, 999, NULL), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT max(id) FROM sc_outbox"), 51);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* A soak of retention: producers toggle their policies as fast as they can
 * (an event per change, and nothing else grows), the worker delivers and,
 * with a 200 ms retention, purges. The database file must stop growing:
 * its size over the last half of the run stays within twice its size at
 * the half-way mark (floored at 2 MB). The WAL is reported beside it (its
 * size is the checkpointer's business: the file keeps its high-water mark).
 * SC_RETENTION_SECONDS sets the length (default 3; scripts/soak.sh runs
 * minutes). */
typedef struct toggler {
  sc_db *db;
  atomic_bool stop;
  atomic_llong changes;
} toggler;

/* Each thread cycles through policies of its own, so that the worker
 * delivers many aggregates per round. */
static void toggle_policy(int t, void *ud) {
  toggler *g = ud;
  enum { POLICIES = 64 };
  sc_id policy[POLICIES];
  for (int i = 0; i < POLICIES; i++)
    policy[i] = make_policy(g->db, 10);
  for (long k = 0; !atomic_load(&g->stop); k++) {
    int paused = (int)(k / POLICIES % 2 == 0);
    ck_assert_sc(sc_coupon_policy_pause(g->db, policy[k % POLICIES], paused),
                 SC_OK);
    atomic_fetch_add(&g->changes, 1);
  }
  (void)t;
}

static void *togglers_main(void *arg) {
  tu_race(4, toggle_policy, arg);
  return NULL;
}

static int64_t file_bytes(const char *path, const char *suffix) {
  char name[1100];
  snprintf(name, sizeof name, "%s%s", path, suffix);
  struct stat st;
  return stat(name, &st) == 0 ? (int64_t)st.st_size : 0;
}

static int count_handled(const sc_event *ev, void *ud) {
  (void)ev;
  atomic_fetch_add((atomic_llong *)ud, 1);
  return SC_OK;
}

START_TEST(retention_keeps_the_file_bounded) {
  const char *env = getenv("SC_RETENTION_SECONDS");
  int seconds = env != NULL ? atoi(env) : 3;
  if (seconds < 2) seconds = 2;
  char *path = tu_db_path("wk-soak");
  sc_options o;
  sc_options_init(&o);
  o.durability = SC_DURABILITY_NORMAL;
  o.outbox_retention_ms = 200;
  sc_db *db = tu_open(path, &o);
  atomic_llong handled = 0;
  sc_worker_options wo;
  sc_worker_options_init(&wo);
  wo.on_event = count_handled;
  wo.ud = &handled;
  wo.poll_interval_ms = 50;
  sc_worker *w = NULL;
  ck_assert_sc(sc_worker_start_thread(db, &wo, &w), SC_OK);
  toggler g = {.db = db};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, togglers_main, &g), 0);
  int64_t half = 0, peak = 0, wal_peak = 0;
  int steps = seconds * 10;
  for (int i = 1; i <= steps; i++) {
    usleep(100000);
    int64_t size = file_bytes(path, "");
    int64_t wal = file_bytes(path, "-wal");
    if (i == steps / 2) half = size;
    if (i > steps / 2 && size > peak) peak = size;
    if (wal > wal_peak) wal_peak = wal;
  }
  atomic_store(&g.stop, true);
  pthread_join(t, NULL);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  int64_t kept = tu_count(path, "SELECT count(*) FROM sc_outbox");
  printf(
      "retention soak %d s: %lld changes, %lld handled, %llu purged, %lld "
      "kept; database file %lld bytes at half-time, peak %lld after; WAL "
      "peak %lld\n",
      seconds, (long long)atomic_load(&g.changes),
      (long long)atomic_load(&handled), (unsigned long long)m.events_purged,
      (long long)kept, (long long)half, (long long)peak, (long long)wal_peak);
  ck_assert_uint_gt(m.events_purged, 0);
  ck_assert_int_eq(kept + (int64_t)m.events_purged, atomic_load(&g.changes));
  int64_t floor = 2 << 20;
  ck_assert_int_le(peak, 2 * (half > floor ? half : floor));
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- the thread convenience and bad input ---------------------------------
 */

typedef struct thread_probe {
  pthread_t test_thread;
  sc_worker *w;
  atomic_int handled, on_test_thread, stop_refused;
} thread_probe;

static int probe_event(const sc_event *ev, void *ud) {
  thread_probe *p = ud;
  (void)ev;
  if (pthread_equal(pthread_self(), p->test_thread)) {
    atomic_fetch_add(&p->on_test_thread, 1);
  }
  if (sc_worker_stop_thread(p->w) == SC_MISUSE) {
    atomic_fetch_add(&p->stop_refused, 1);
  }
  atomic_fetch_add(&p->handled, 1);
  return SC_OK;
}

START_TEST(thread_worker_runs_apart_and_refuses_misuse) {
  char *path = tu_db_path("wk-thread");
  sc_db *db = tu_open(path, NULL);
  thread_probe p = {.test_thread = pthread_self()};
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = probe_event;
  o.ud = &p;
  for (int cycle = 0; cycle < 5; cycle++) {
    ck_assert_sc(sc_worker_start_thread(db, &o, &p.w), SC_OK);
    sc_worker *second = (sc_worker *)0x1;
    ck_assert_sc(sc_worker_start_thread(db, &o, &second), SC_MISUSE);
    ck_assert_ptr_null(second);
    ck_assert_sc(sc_worker_stop(p.w, NULL, NULL), SC_MISUSE);
    /* Closing under a running worker is refused, and the db stays open. */
    ck_assert_sc(sc_close(db), SC_MISUSE);
    ck_assert_ptr_nonnull(strstr(sc_errmsg(db), "worker"));
    sc_id policy = make_policy(db, 10);
    ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_OK);
    while (atomic_load(&p.handled) < cycle + 1)
      usleep(1000);
    ck_assert_sc(sc_worker_stop_thread(p.w), SC_OK);
  }
  ck_assert_int_eq(atomic_load(&p.on_test_thread), 0);
  ck_assert_int_eq(atomic_load(&p.stop_refused), 5);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

START_TEST(bad_input_is_refused) {
  char *path = tu_db_path("wk-bad");
  sc_db *db = tu_open(path, NULL);
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  sc_worker *w = (sc_worker *)0x1;
  sc_worker_options o;
  sc_worker_options_init(&o);
  ck_assert_sc(sc_worker_start(NULL, &loop, &o, &w), SC_MISUSE);
  ck_assert_ptr_null(w);
  ck_assert_sc(sc_worker_start(db, NULL, &o, &w), SC_MISUSE);
  ck_assert_sc(sc_worker_start(db, &loop, &o, NULL), SC_MISUSE);
  /* A refused option is named, with its value. */
  o.batch_max = -1;
  ck_assert_sc(sc_worker_start(db, &loop, &o, &w), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "option batch_max is -1"));
  o.batch_max = SC_OUTBOX_CLAIM_MAX + 1;
  ck_assert_sc(sc_worker_start(db, &loop, &o, &w), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "option batch_max is 4097"));
  sc_worker_options_init(&o);
  o.lease_ms = -1;
  ck_assert_sc(sc_worker_start(db, &loop, &o, &w), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "option lease_ms is -1"));
  sc_worker_options_init(&o);
  o.poll_interval_ms = -1;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_INVALID);
  ck_assert_ptr_nonnull(
      strstr(sc_errmsg(NULL), "option poll_interval_ms is -1"));
  ck_assert_ptr_null(w);
  ck_assert_sc(sc_worker_start_thread(NULL, NULL, &w), SC_MISUSE);
  ck_assert_sc(sc_worker_start_thread(db, NULL, NULL), SC_MISUSE);
  ck_assert_sc(sc_worker_stop(NULL, NULL, NULL), SC_MISUSE);
  ck_assert_sc(sc_worker_stop_thread(NULL), SC_MISUSE);
  /* A loop worker is not stopped as a thread worker, and NULL options are
   * the defaults (expiry only). */
  ck_assert_sc(sc_worker_start(db, &loop, NULL, &w), SC_OK);
  ck_assert_sc(sc_worker_stop_thread(w), SC_MISUSE);
  ck_assert_sc(sc_worker_stop(w, NULL, NULL), SC_OK);
  uv_run(&loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  sc_worker_options_init(NULL);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- regressions --------------------------------------------------------- */

/* Threads of the library: all are named "sc-..." (libuv's pool threads
 * inherit the name of the thread that starts them). Counting by name keeps
 * sanitizers' own threads out of it. */
static int library_threads(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  ck_assert_ptr_nonnull(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    char path[300], name[32] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
      if (fgets(name, sizeof name, f) == NULL) name[0] = '\0';
      fclose(f);
    }
    if (strncmp(name, "sc-", 3) == 0) n++;
  }
  closedir(d);
  return n;
}

static int count_event(const sc_event *ev, void *ud) {
  (void)ev;
  atomic_fetch_add((atomic_int *)ud, 1);
  return SC_OK;
}

START_TEST(close_leaves_no_thread_of_the_library) {
  /* The design: once sc_close returns, the process holds no libshopcore
   * thread (a host may fork). Expiry once ran in libuv's thread pool, whose
   * threads outlived everything. */
  ck_assert_int_eq(library_threads(), 0);
  char *path = tu_db_path("wk-threads");
  sc_db *db = tu_open(path, NULL);
  atomic_int seen = 0;
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = count_event;
  o.ud = &seen;
  sc_worker *w;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK);
  while (atomic_load(&seen) < 1)
    usleep(1000);
  /* writer, completion, checkpoint (SQLite only), worker: the count sees
   * them */
  ck_assert_int_ge(library_threads(), tu_pg_mode() ? 3 : 4);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(library_threads(), 0);
  tu_remove_db(path);
}
END_TEST

typedef struct filler {
  sc_db *db;
  sc_id product;
  atomic_bool run;
} filler;

static void *fill_queue(void *arg) {
  filler *f = arg;
  while (atomic_load(&f->run))
    sc_product_restock(f->db, f->product, 1);
  return NULL;
}

START_TEST(a_full_queue_only_delays_delivery) {
  /* Another process holds the write lock while callers keep the 2-slot
   * queue full: the worker's rounds meet a full queue. They must be tried
   * again, not taken for a closing database (which stopped delivery for
   * good). */
  char *path = tu_db_path("wk-full");
  sc_options so;
  sc_options_init(&so);
  so.durability = SC_DURABILITY_NORMAL;
  so.queue_max = 2;
  so.busy_timeout_ms = 100;
  sc_db *db = tu_open(path, &so);
  filler f = {.db = db};
  ck_assert_sc(sc_product_create(db, "p", 1, 1, &f.product), SC_OK);
  atomic_int seen = 0;
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = count_event;
  o.ud = &seen;
  o.poll_interval_ms = 20;
  o.no_expiry = 1;
  sc_worker *w;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 100, 1, NULL), SC_OK);
  while (atomic_load(&seen) < 1)
    usleep(1000);
  sqlite3 *other;
  ck_assert_int_eq(sqlite3_open(path, &other), SQLITE_OK);
  /* The worker's polls take the write lock briefly: wait for a turn. */
  sqlite3_busy_timeout(other, 30000);
  ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", 0, 0, 0), SQLITE_OK);
  atomic_store(&f.run, true);
  pthread_t fillers[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&fillers[i], NULL, fill_queue, &f);
  usleep(600000); /* many polls meet the full queue */
  atomic_store(&f.run, false);
  for (int i = 0; i < 4; i++)
    pthread_join(fillers[i], NULL);
  sqlite3_exec(other, "COMMIT", 0, 0, 0);
  sqlite3_close(other);
  for (sc_id u = 10; u < 15; u++) {
    ck_assert_sc(sc_account_deposit(db, u, 1, NULL), SC_OK);
  }
  /* Generous bound: it returns once all six are in (sanitizers, valgrind). */
  for (int i = 0; i < 20000 && atomic_load(&seen) < 6; i++)
    usleep(1000);
  ck_assert_int_eq(atomic_load(&seen), 6);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  tu_assert_verify(db);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* Widens the gap between a worker's start and its handles being ready:
 * while slow_async_init is set, uv_async_init sleeps before the real one. */
static atomic_bool slow_async_init;

int uv_async_init(uv_loop_t *loop, uv_async_t *h, uv_async_cb cb) {
  typedef int (*init_fn)(uv_loop_t *, uv_async_t *, uv_async_cb);
  static init_fn real;
  if (real == NULL) real = (init_fn)dlsym(RTLD_NEXT, "uv_async_init");
  if (atomic_load(&slow_async_init)) usleep(50000);
  return real(loop, h, cb);
}

typedef struct depositor {
  sc_db *db;
  atomic_bool run;
} depositor;

static void *deposit_loop(void *arg) {
  depositor *d = arg;
  while (atomic_load(&d->run))
    sc_account_deposit(d->db, 1, 1, NULL);
  return NULL;
}

START_TEST(commits_while_a_worker_starts_are_safe) {
  /* The commit hook was installed before the worker's uv_async handle was
   * initialised: a commit in that gap called uv_async_send on garbage. */
  char *path = tu_db_path("wk-start");
  sc_options so;
  sc_options_init(&so);
  so.durability = SC_DURABILITY_NORMAL;
  sc_db *db = tu_open(path, &so);
  depositor d = {.db = db};
  atomic_store(&d.run, true);
  pthread_t t;
  pthread_create(&t, NULL, deposit_loop, &d);
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  atomic_int seen = 0;
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = count_event;
  o.ud = &seen;
  sc_worker *w;
  atomic_store(&slow_async_init, true);
  ck_assert_sc(sc_worker_start(db, &loop, &o, &w), SC_OK);
  atomic_store(&slow_async_init, false);
  while (atomic_load(&seen) < 1)
    uv_run(&loop, UV_RUN_ONCE);
  ck_assert_sc(sc_worker_stop(w, NULL, NULL), SC_OK);
  uv_run(&loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  atomic_store(&d.run, false);
  pthread_join(t, NULL);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

START_TEST(orders_of_another_handle_are_expired_too) {
  /* Another process (here: another handle on the file) checks out: this
   * worker's handle sees no commit of it, so only the worker's poll can
   * learn the deadline. The order must be expired within about a poll. */
  char *path = tu_db_path("wk-other");
  sc_db *db = tu_open(path, NULL);
  sc_db *other = tu_open(path, NULL);
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.poll_interval_ms = 50;
  sc_worker *w;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_OK);
  usleep(100000); /* the worker has looked once and found nothing */
  sc_id product, order;
  ck_assert_sc(sc_product_create(other, "p", 10, 5, &product), SC_OK);
  ck_assert_sc(sc_account_deposit(other, 1, 100, NULL), SC_OK);
  sc_line line = {product, 1};
  sc_checkout_req req = {
      .user = 1, .lines = &line, .n_lines = 1, .ttl_ms = 100};
  ck_assert_sc(sc_checkout(other, &req, &order), SC_OK);
  sc_order ord = {0};
  for (int i = 0; i < 20000; i++) {
    ck_assert_sc(sc_order_get(other, order, &ord), SC_OK);
    if (ord.status == SC_ORDER_EXPIRED) break;
    usleep(1000);
  }
  ck_assert_int_eq(ord.status, SC_ORDER_EXPIRED);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  tu_assert_verify(db);
  sc_close(other);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* ---- PostgreSQL: other hosts' commits wake the worker -------------------
 * On PostgreSQL, another host's batch notifies the worker's listening
 * connection. With a 10 s poll, delivery within 2 s can only be the
 * wake-up. */

#define LONG_POLL_MS 10000
#define WAKE_WITHIN_MS 2000

/* SQL over the worker's listening backends for path's schema. */
static void listeners_sql(const char *path, const char *what, char *sql,
                          size_t cap) {
  const char *schema = strstr(path, "schema=");
  ck_assert_ptr_nonnull(schema);
  snprintf(sql, cap,
           "SELECT %s FROM pg_stat_activity WHERE query ="
           " 'LISTEN \"sc_events_%s\"'",
           what, schema + 7);
}

static int64_t listeners(const char *path) {
  char sql[256];
  listeners_sql(path, "count(*)", sql, sizeof sql);
  return tu_count(path, sql);
}

/* Waits (up to 5 s) until exactly one backend listens for path. */
static void await_listener(const char *path) {
  for (int i = 0; i < 500 && listeners(path) != 1; i++)
    usleep(10000);
  ck_assert_int_eq(listeners(path), 1);
}

/* Waits (up to 2 s) until no backend listens for path: a stopped
 * worker's listening connection is closed. */
static void await_no_listener(const char *path) {
  for (int i = 0; i < 200 && listeners(path) != 0; i++)
    usleep(10000);
  ck_assert_int_eq(listeners(path), 0);
}

typedef struct host_b {
  producer p;
  const char *path;
  int64_t last_ns; /* when its last coupon was committed */
} host_b;

static void *host_b_main(void *arg) {
  host_b *b = arg;
  await_listener(b->path);
  issue_coupons(&b->p);
  b->last_ns = sc__monotonic_ns();
  return NULL;
}

START_TEST(another_host_s_commits_wake_the_worker_at_once) {
  char *path = tu_db_path("wk-notify");
  sc_db *db = tu_open(path, NULL);
  sc_db *other = tu_open(path, NULL); /* host B: its own writer */
  harness *h = calloc(1, sizeof *h);
  harness_init(h, db);
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = on_event;
  o.poll_interval_ms = LONG_POLL_MS;
  start(h, &o);
  /* One coupon at a time, each its own batch: B notifies at most once per
   * few ms, so the last ones rest on the listener's trailing round. */
  host_b b = {{other, make_policy(other, 40), 40}, path, 0};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, host_b_main, &b), 0);
  target = 40;
  ck_assert(run_until(h, handled_target, 5000 + WAKE_WITHIN_MS));
  int64_t heard_ns = h->until_met_ns; /* not after stopping the worker */
  pthread_join(t, NULL);
  ck_assert_int_eq(atomic_load(&h->handled), 40);
  ck_assert_int_lt((heard_ns - b.last_ns) / 1000000, WAKE_WITHIN_MS);
  harness_close(h);
  /* Stopped: its listening backend is gone too. */
  await_no_listener(path);
  free(h);
  sc_close(other);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

/* Waits up to WAKE_WITHIN_MS for *n to reach want; true if it did. */
static bool await_count(atomic_int *n, int want) {
  for (int i = 0; i < WAKE_WITHIN_MS && atomic_load(n) < want; i++)
    usleep(1000);
  return atomic_load(n) >= want;
}

START_TEST(a_killed_listening_connection_is_made_again) {
  char *path = tu_db_path("wk-relisten");
  sc_db *db = tu_open(path, NULL);
  sc_db *other = tu_open(path, NULL);
  sc_worker_options o;
  sc_worker_options_init(&o);
  atomic_int heard = 0;
  o.on_event = count_event;
  o.ud = &heard;
  o.poll_interval_ms = LONG_POLL_MS;
  sc_worker *w;
  ck_assert_sc(sc_worker_start_thread(db, &o, &w), SC_OK);
  sc_id policy = make_policy(other, 100);
  char kill[256];
  listeners_sql(path, "pg_terminate_backend(pid)", kill, sizeof kill);
  /* Twice: the pause before a reconnect starts short again once the
   * listener is back. */
  for (int round = 0; round < 2; round++) {
    await_listener(path);
    ck_assert_int_eq(tu_count(path, kill), 1);
    await_listener(path); /* made again, and only one */
    int before = atomic_load(&heard);
    ck_assert_sc(sc_coupon_issue(other, policy, round + 1, NULL), SC_OK);
    ck_assert_msg(await_count(&heard, before + 1),
                  "round %d: not delivered within %d ms", round,
                  WAKE_WITHIN_MS);
  }
  /* A checkout on B: the worker learns its deadline from the wake-up, not
   * from a poll 10 s away. */
  shop b = shop_open(other, 5);
  sc_id order = checkout(&b, 1, 200);
  ck_assert(wait_status(other, order, SC_ORDER_EXPIRED, 200 + WAKE_WITHIN_MS));
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  await_no_listener(path);
  tu_assert_verify(db);
  sc_close(other);
  sc_close(db);
  tu_remove_db(path);
}
END_TEST

Suite *worker_suite(void) {
  Suite *s = suite_create("worker");
  TCase *tc = tu_tcase("worker");
  tcase_add_test(tc, commits_wake_dispatch_on_the_loop_thread);
  tcase_add_test(tc, failures_are_retried_in_sequence_then_acked);
  tcase_add_test(tc, the_poll_picks_up_events_of_another_handle);
  tcase_add_test(tc, expiry_fires_at_the_deadline_and_rearms_for_earlier_ones);
  tcase_add_test(tc, expiry_follows_the_injected_clock);
  tcase_add_test(tc, pay_against_expiry_with_the_worker_running);
  tcase_add_test(tc, start_stop_cycles_leave_nothing_behind);
  tcase_add_test(tc, close_is_refused_until_the_stopped_worker_closes);
  tcase_add_test(tc, stop_with_events_in_flight_releases_the_rest);
  tcase_add_test(tc, thread_worker_runs_apart_and_refuses_misuse);
  tcase_add_test(tc, bad_input_is_refused);
  tcase_add_test(tc, close_leaves_no_thread_of_the_library);
  tcase_add_test(tc, commits_while_a_worker_starts_are_safe);
  tcase_add_test(tc, orders_of_another_handle_are_expired_too);
  tcase_add_test(tc, a_slow_handler_is_never_called_past_the_lease);
  tcase_add_test(tc, the_worker_purges_delivered_events_past_retention);
  tcase_add_test(tc, retention_keeps_the_file_bounded);
  /* Edits of the SQLite file by hand, through SQLite: not run against
   * PostgreSQL. */
  if (!tu_pg_mode()) {
    tcase_add_test(tc, undecodable_payloads_die_without_reaching_the_handler);
    tcase_add_test(tc, a_full_queue_only_delays_delivery);
    tcase_add_test(tc, a_damaged_order_neither_stops_nor_spins_expiry);
  } else {
    /* Hosts wake each other through LISTEN/NOTIFY on PostgreSQL only; on
     * SQLite other processes are found by the poll (tested above). */
    tcase_add_test(tc, another_host_s_commits_wake_the_worker_at_once);
    tcase_add_test(tc, a_killed_listening_connection_is_made_again);
  }
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(worker_suite());
}
