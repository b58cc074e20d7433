/* Structs that grow: a caller compiled against an older (smaller) or a newer
 * (larger) shopcore.h hands the library a struct of another size. Each test
 * builds such a struct in a heap block of exactly the caller's size, so that
 * AddressSanitizer catches a read or write past it, and fills the bytes the
 * caller does not own with a pattern, so that the plain build sees a write
 * past it too and a read of them shows as a wrong result. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define JUNK 0xA5

/* An exact-size block, so that ASan reports any access past size. */
static void *exact(size_t size) {
  void *p = malloc(size);
  ck_assert_ptr_nonnull(p);
  memset(p, JUNK, size);
  return p;
}

/* Asserts that bytes [from, to) of p still hold the pattern. */
static void assert_junk(const void *p, size_t from, size_t to) {
  const unsigned char *b = p;
  for (size_t i = from; i < to; i++) {
    ck_assert_msg(b[i] == JUNK, "byte %zu was written", i);
  }
}

/* A getter of a struct that may grow, called with the caller's size. */
typedef int (*sized_get)(void *ud, void *out, size_t size);

/* Gets a struct of the old size twice: into a block of the full size
 * filled with junk, which must stay junk past old; then into a block of
 * exactly old bytes (ASan), which is returned for the caller to check and
 * free. */
static void *get_old(sized_get get, void *ud, size_t old, size_t full) {
  unsigned char *p = exact(full);
  ck_assert_sc(get(ud, p, old), SC_OK);
  assert_junk(p, old, full);
  free(p);
  p = exact(old);
  ck_assert_sc(get(ud, p, old), SC_OK);
  return p;
}

/* ---- sc_options ----------------------------------------------------- */

/* The "old" sc_options: every field up to and including queue_max. */
#define OLD_OPTIONS offsetof(sc_options, read_pool_max)

START_TEST(options_init_writes_only_the_callers_size) {
  sc_options *o = exact(sizeof *o);
  sc_options_init_sized(o, OLD_OPTIONS);
  ck_assert_uint_eq(o->size, OLD_OPTIONS);
  ck_assert_int_eq(o->durability, SC_DURABILITY_FULL);
  ck_assert_int_eq(o->batch_max, 0);
  ck_assert_ptr_null(o->clock_ms);
  ck_assert_int_eq(o->queue_max, 0);
  assert_junk(o, OLD_OPTIONS, sizeof *o);
  free(o);
  /* The macro passes the size of the struct in this header. */
  sc_options full;
  memset(&full, JUNK, sizeof full);
  sc_options_init(&full);
  ck_assert_uint_eq(full.size, sizeof full);
  ck_assert_int_eq(full.read_pool_max, 0);
  ck_assert(full.alert_error_rate == 0.0);
  sc_options_init(NULL); /* a no-op */
}
END_TEST

/* Opens with an old-layout struct in a block of exactly its size: its
 * fields are honoured, the rest are the defaults. */
START_TEST(open_reads_an_old_options_struct) {
  char *path = tu_db_path("abi_old_options");
  tu_clock clock;
  sc_options *o = exact(OLD_OPTIONS);
  sc_options_init_sized(o, OLD_OPTIONS);
  o->batch_max = 1;
  o->queue_max = 8;
  atomic_store(&clock.now_ms, 1000000);
  o->clock_ms = tu_clock_read;
  o->clock_ud = &clock;
  sc_db *db = NULL;
  ck_assert_sc(sc_open(path, o, &db), SC_OK);
  free(o); /* the library keeps no pointer into it */
  sc_metrics *m = malloc(sizeof *m);
  ck_assert_sc(sc_metrics_get(db, m), SC_OK);
  ck_assert_int_eq(m->queue_max, 8);  /* the caller's field */
  ck_assert(m->slow_commit_ms == 20); /* past the caller's size: default */
  free(m);
  /* The injected clock, and the default order time-to-live (15 minutes),
   * which lies past the caller's struct. */
  sc_id product, order;
  ck_assert_sc(sc_product_create(db, "p", 100, 5, &product), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 7, 1000, NULL), SC_OK);
  sc_checkout_req req = {
      .user = 7, .lines = (sc_line[]){{product, 1}}, .n_lines = 1};
  ck_assert_sc(sc_checkout(db, &req, &order), SC_OK);
  sc_order got;
  ck_assert_sc(sc_order_get(db, order, &got), SC_OK);
  ck_assert_int_eq(got.expires_at_ms, 1000000 + 15 * 60 * 1000);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* The bytes past an old caller's struct belong to someone else: junk there
 * (an out-of-range read_pool_max, a NaN error rate...) is never read. */
START_TEST(open_ignores_what_lies_past_an_old_struct) {
  char *path = tu_db_path("abi_junk_options");
  sc_options *o = exact(sizeof *o);
  sc_options_init_sized(o, OLD_OPTIONS);
  sc_db *db = NULL;
  ck_assert_sc(sc_open(path, o, &db), SC_OK);
  assert_junk(o, OLD_OPTIONS, sizeof *o);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert(m.slow_commit_ms == 20);
  ck_assert_sc(sc_close(db), SC_OK);
  free(o);
  tu_remove_db(path);
}
END_TEST

/* A struct from a newer header (larger): accepted when the fields this
 * library does not know are zero (their defaults), refused with a message
 * and nothing created when one is set. */
START_TEST(open_takes_a_newer_struct_only_at_defaults) {
  char *path = tu_db_path("abi_new_options");
  size_t newer = sizeof(sc_options) + 16;
  sc_options *o = exact(newer);
  sc_options_init_sized(o, newer);
  o->batch_max = 2;
  sc_db *db = NULL;
  ck_assert_sc(sc_open(path, o, &db), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
  path = tu_db_path("abi_new_options");
  ((unsigned char *)o)[sizeof(sc_options) + 3] = 1;
  db = (sc_db *)0x1;
  ck_assert_sc(sc_open(path, o, &db), SC_INVALID);
  ck_assert_ptr_null(db);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "newer header"));
  ck_assert_int_eq(access(path, F_OK), -1);
  free(o);
  tu_remove_db(path);
}
END_TEST

/* A zeroed struct that never met sc_options_init (size 0) is read as the
 * first layout with a size field; a size too small to hold the size field
 * is refused. */
START_TEST(open_reads_size_zero_as_the_first_layout) {
  char *path = tu_db_path("abi_zero_options");
  sc_options o;
  memset(&o, 0, sizeof o);
  o.queue_max = 16;
  sc_db *db = NULL;
  ck_assert_sc(sc_open(path, &o, &db), SC_OK);
  sc_metrics m;
  ck_assert_sc(sc_metrics_get(db, &m), SC_OK);
  ck_assert_int_eq(m.queue_max, 16);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
  path = tu_db_path("abi_zero_options");
  o.size = 3;
  ck_assert_sc(sc_open(path, &o, &db), SC_INVALID);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "size"));
  ck_assert_int_eq(access(path, F_OK), -1);
  tu_remove_db(path);
}
END_TEST

/* ---- sc_worker_options ------------------------------------------------- */

/* The "old" sc_worker_options: the handler and its user data only. */
#define OLD_WORKER_OPTIONS offsetof(sc_worker_options, batch_max)

static int count_event(const sc_event *ev, void *ud) {
  (void)ev;
  atomic_fetch_add((atomic_int *)ud, 1);
  return SC_OK;
}

START_TEST(worker_reads_an_old_options_struct) {
  char *path = tu_db_path("abi_old_worker");
  sc_db *db = tu_open(path, NULL);
  atomic_int seen = 0;
  /* Junk past the caller's size: a negative batch_max and lease_ms, which
   * would be refused if they were read. */
  sc_worker_options *wo = exact(sizeof *wo);
  sc_worker_options_init_sized(wo, OLD_WORKER_OPTIONS);
  assert_junk(wo, OLD_WORKER_OPTIONS, sizeof *wo);
  wo->on_event = count_event;
  wo->ud = &seen;
  sc_worker *w = NULL;
  ck_assert_sc(sc_worker_start_thread(db, wo, &w), SC_OK);
  assert_junk(wo, OLD_WORKER_OPTIONS, sizeof *wo);
  free(wo);
  ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK);
  for (int i = 0; i < 5000 && atomic_load(&seen) == 0; i++)
    usleep(1000);
  ck_assert_int_eq(atomic_load(&seen), 1);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  /* The same in a block of exactly the old size (ASan). */
  wo = exact(OLD_WORKER_OPTIONS);
  sc_worker_options_init_sized(wo, OLD_WORKER_OPTIONS);
  wo->on_event = count_event;
  wo->ud = &seen;
  ck_assert_sc(sc_worker_start_thread(db, wo, &w), SC_OK);
  free(wo);
  ck_assert_sc(sc_worker_stop_thread(w), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* ---- results: sc_stats, sc_event_data, sc_metrics ------------------------ */

/* The "old" sc_stats: the product counts only. */
#define OLD_STATS offsetof(sc_stats, accounts)

static int stats_get(void *db, void *out, size_t size) {
  return sc_stats_get_sized(db, out, size);
}

START_TEST(stats_fill_only_the_callers_size) {
  char *path = tu_db_path("abi_stats");
  sc_db *db = tu_open(path, NULL);
  sc_id product;
  ck_assert_sc(sc_product_create(db, "p", 1, 5, &product), SC_OK);
  ck_assert_sc(sc_product_create(db, "q", 1, 7, &product), SC_OK);
  ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK);
  sc_stats *s = get_old(stats_get, db, OLD_STATS, sizeof *s);
  ck_assert_int_eq(s->products, 2);
  ck_assert_int_eq(s->units_total, 12);
  ck_assert_int_eq(s->units_reserved, 0);
  free(s);
  /* A newer caller's struct: what this library does not know reads 0. */
  size_t newer = sizeof(sc_stats) + 24;
  unsigned char *big = exact(newer);
  ck_assert_sc(sc_stats_get_sized(db, (sc_stats *)big, newer), SC_OK);
  ck_assert_int_eq(((sc_stats *)big)->accounts, 1);
  for (size_t i = sizeof(sc_stats); i < newer; i++)
    ck_assert_int_eq(big[i], 0);
  free(big);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* The "old" sc_event_data: up to and including order. */
#define OLD_EVENT_DATA offsetof(sc_event_data, policy)

static int event_decode(void *ev, void *out, size_t size) {
  const sc_event *e = ev;
  return sc_event_decode_sized(e->payload, e->payload_len, out, size);
}

START_TEST(event_data_fills_only_the_callers_size) {
  char *path = tu_db_path("abi_event");
  sc_db *db = tu_open(path, NULL);
  ck_assert_sc(sc_account_deposit(db, 42, 10, NULL), SC_OK);
  sc_event *ev = NULL;
  int n = 0;
  ck_assert_sc(sc_outbox_claim(db, 1, 10000, &ev, &n), SC_OK);
  ck_assert_int_eq(n, 1);
  sc_event_data *d = get_old(event_decode, ev, OLD_EVENT_DATA, sizeof *d);
  ck_assert_int_eq(d->type, SC_EVENT_DEPOSIT);
  ck_assert_int_eq(d->version, SC_EVENT_SCHEMA_VERSION);
  ck_assert_int_eq(d->user, 42);
  ck_assert_int_eq(d->order, 0);
  free(d);
  /* The full struct, through the macro: amount lies past the old size. */
  d = malloc(sizeof *d);
  ck_assert_sc(sc_event_decode(ev->payload, ev->payload_len, d), SC_OK);
  ck_assert_int_eq(d->amount, 10);
  free(d);
  sc_events_free(ev, n);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* The "old" sc_metrics: the operations only. */
#define OLD_METRICS offsetof(sc_metrics, batch_size)

static int metrics_get(void *db, void *out, size_t size) {
  return sc_metrics_get_sized(db, out, size);
}

START_TEST(metrics_fill_only_the_callers_size) {
  char *path = tu_db_path("abi_metrics");
  sc_db *db = tu_open(path, NULL);
  ck_assert_sc(sc_account_deposit(db, 1, 10, NULL), SC_OK);
  sc_metrics *m = get_old(metrics_get, db, OLD_METRICS, sizeof *m);
  ck_assert_int_gt(m->n_ops, 0);
  uint64_t deposits = 0;
  for (int k = 0; k < m->n_ops; k++) {
    if (strcmp(m->ops[k].name, "account_deposit") == 0) {
      deposits = m->ops[k].count;
    }
  }
  ck_assert_uint_eq(deposits, 1);
  free(m);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* ---- sc_async_req ------------------------------------------------------ */

START_TEST(async_req_keeps_room_to_grow) {
  /* The caller's fields come first and stay where they are; the private
   * room follows them. */
  ck_assert_uint_eq(offsetof(sc_async_req, data), 0);
  ck_assert_uint_ge(sizeof(sc_async_req),
                    offsetof(sc_async_req, op_) + 5 * sizeof(void *));
}
END_TEST

static Suite *abi_suite(void) {
  Suite *s = suite_create("abi");
  TCase *tc = tu_tcase("abi");
  tcase_add_test(tc, options_init_writes_only_the_callers_size);
  tcase_add_test(tc, open_reads_an_old_options_struct);
  tcase_add_test(tc, open_ignores_what_lies_past_an_old_struct);
  tcase_add_test(tc, open_takes_a_newer_struct_only_at_defaults);
  tcase_add_test(tc, open_reads_size_zero_as_the_first_layout);
  tcase_add_test(tc, worker_reads_an_old_options_struct);
  tcase_add_test(tc, stats_fill_only_the_callers_size);
  tcase_add_test(tc, event_data_fills_only_the_callers_size);
  tcase_add_test(tc, metrics_fill_only_the_callers_size);
  tcase_add_test(tc, async_req_keeps_room_to_grow);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(abi_suite());
}
