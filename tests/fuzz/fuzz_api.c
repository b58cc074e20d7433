/* libFuzzer target for sequences of API calls: the input is read as a
 * program, one operation per opcode byte with its arguments from the bytes
 * after it (ids, quantities, amounts, times and flags, often picked from a
 * table of edge values: 0, -1, INT64_MAX, INT64_MIN ...). Each input runs
 * on a fresh database (a copy of one made at start-up, on tmpfs) with an
 * injected clock the program can move. Nothing may crash, leak or hit
 * undefined behaviour (ASan, UBSan); every call returns a known status,
 * never SC_ERROR or SC_CORRUPT, and a message with every failure; a
 * policy's count never passes its cap; and after the program, sc_verify
 * must find every invariant holding. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_IDS 16
#define MAX_OPS 64 /* per input: keeps each run short */

typedef struct prog {
  const uint8_t *p, *end;
  sc_db *db;
  _Atomic int64_t now;
  sc_id products[MAX_IDS], policies[MAX_IDS], coupons[MAX_IDS], orders[MAX_IDS],
      events[MAX_IDS];
  int n_products, n_policies, n_coupons, n_orders, n_events;
} prog;

static char template_path[256], run_path[256];

static int64_t clock_read(void *ud) {
  return atomic_load((_Atomic int64_t *)ud);
}

/* ---- reading the program ------------------------------------------------- */

static uint8_t byte(prog *g) {
  return g->p < g->end ? *g->p++ : 0;
}

static int64_t edge(uint8_t k) {
  static const int64_t EDGES[] = {
      0,         1,         -1,  2,    INT64_MAX, INT64_MIN,
      INT32_MAX, INT32_MIN, 100, 1000, -100,      INT64_MAX / 2};
  return EDGES[k % (sizeof EDGES / sizeof *EDGES)];
}

/* A number: usually small, sometimes an edge value, sometimes 8 raw bytes. */
static int64_t num(prog *g) {
  uint8_t k = byte(g);
  if (k < 160) return k % 50;
  if (k < 230) return edge(k);
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | byte(g);
  return (int64_t)v;
}

/* An id: one the program made, or a number (unknown, zero, negative ...). */
static sc_id pick(prog *g, const sc_id *ids, int n) {
  uint8_t k = byte(g);
  if (n > 0 && k < 200) return ids[k % n];
  return num(g);
}

static void keep(sc_id *ids, int *n, sc_id id) {
  if (*n < MAX_IDS)
    ids[(*n)++] = id;
  else
    ids[id % MAX_IDS] = id;
}

/* ---- checking each result -------------------------------------------------
 */

static void check_rc(int rc) {
  if (rc < 0 || rc >= SC_STATUS_COUNT_) abort();
  /* No input may make the library fail inside or find its books wrong. */
  if (rc == SC_ERROR || rc == SC_CORRUPT) {
    fprintf(stderr, "status %s: %s\n", sc_err_name(rc), sc_errmsg(NULL));
    abort();
  }
  if (rc != SC_OK && sc_errmsg(NULL)[0] == '\0') abort();
}

/* ---- the operations --------------------------------------------------------
 */

static void op_product(prog *g) {
  char name[8] = "p";
  if (byte(g) < 16) name[0] = '\0';
  int64_t price = num(g), stock = num(g);
  sc_id id = 0;
  int rc = sc_product_create(g->db, name, price, stock, &id);
  check_rc(rc);
  if (rc == SC_OK) keep(g->products, &g->n_products, id);
}

static void op_restock(prog *g) {
  sc_id p = pick(g, g->products, g->n_products);
  check_rc(sc_product_restock(g->db, p, num(g)));
}

static void op_deposit(prog *g) {
  char key[16];
  int64_t user = num(g), amount = num(g);
  uint8_t k = byte(g);
  snprintf(key, sizeof key, "k%d", k % 8);
  check_rc(sc_account_deposit(g->db, user, amount,
                              k < 128 ? NULL : (k < 136 ? "" : key)));
}

static void op_policy(prog *g) {
  sc_coupon_policy_spec s = {.name = byte(g) < 16 ? "" : "pol",
                             .max_count = num(g),
                             .per_user_limit = (int32_t)num(g),
                             .discount_amount = num(g),
                             .discount_percent = (int32_t)num(g),
                             .max_discount = num(g),
                             .starts_at_ms = num(g),
                             .ends_at_ms = num(g)};
  sc_id id = 0;
  int rc = sc_coupon_policy_create(g->db, &s, &id);
  check_rc(rc);
  if (rc == SC_OK) keep(g->policies, &g->n_policies, id);
}

static void op_pause(prog *g) {
  sc_id p = pick(g, g->policies, g->n_policies);
  check_rc(sc_coupon_policy_pause(g->db, p, byte(g) & 1));
}

static void op_issue(prog *g) {
  sc_id p = pick(g, g->policies, g->n_policies), c = 0;
  int rc = sc_coupon_issue(g->db, p, num(g), &c);
  check_rc(rc);
  if (rc == SC_OK) keep(g->coupons, &g->n_coupons, c);
  sc_coupon_policy pol;
  if (sc_coupon_policy_get(g->db, p, &pol) == SC_OK &&
      (pol.issued_count > pol.max_count || pol.issued_count < 0)) {
    abort(); /* the cap is the library's first promise */
  }
}

static void op_checkout(prog *g) {
  sc_line lines[5];
  int64_t versions[5];
  size_t n = byte(g) % 6;
  for (size_t i = 0; i < n; i++) {
    lines[i].product = pick(g, g->products, g->n_products);
    lines[i].qty = num(g);
    versions[i] = num(g);
  }
  uint8_t flags = byte(g);
  char key[16];
  snprintf(key, sizeof key, "c%d", byte(g) % 8);
  sc_checkout_req req = {
      .user = num(g),
      .lines = (flags & 1) ? NULL : lines,
      .n_lines = n,
      .coupon = (flags & 2) ? pick(g, g->coupons, g->n_coupons) : 0,
      .ttl_ms = (flags & 4) ? num(g) : 0,
      .idempotency_key = (flags & 8) ? key : NULL,
      .expected_versions = (flags & 16) ? versions : NULL};
  sc_id order = 0;
  int rc = sc_checkout(g->db, &req, &order);
  check_rc(rc);
  if (rc == SC_OK) keep(g->orders, &g->n_orders, order);
}

static void op_order(prog *g) {
  sc_id o = pick(g, g->orders, g->n_orders);
  uint8_t k = byte(g) % 3;
  if (k == 0) check_rc(sc_order_pay(g->db, o));
  if (k == 1) check_rc(sc_order_cancel(g->db, o));
  if (k == 2) {
    sc_order out;
    check_rc(sc_order_get(g->db, o, &out));
  }
}

static void op_time(prog *g) {
  /* Forward only, as a clock goes; by up to a few hours. */
  int64_t amount = byte(g), unit = byte(g) < 128 ? 1 : 60000;
  int64_t step = amount * unit;
  atomic_fetch_add(&g->now, step);
  int n = 0;
  if (byte(g) & 1) check_rc(sc_orders_expire_due(g->db, &n));
}

static void op_read(prog *g) {
  sc_stock s;
  sc_account a;
  sc_coupon_policy p;
  check_rc(sc_stock_get(g->db, pick(g, g->products, g->n_products), &s));
  check_rc(sc_account_get(g->db, num(g), &a));
  check_rc(
      sc_coupon_policy_get(g->db, pick(g, g->policies, g->n_policies), &p));
}

static void op_outbox(prog *g) {
  sc_event *ev = NULL;
  int n = 0;
  int rc = sc_outbox_claim(g->db, (int)num(g), num(g), &ev, &n);
  check_rc(rc);
  for (int i = 0; i < n; i++) {
    sc_event_data d;
    if (sc_event_decode(ev[i].payload, ev[i].payload_len, &d) != SC_OK) {
      abort(); /* the library must write what it can read */
    }
    keep(g->events, &g->n_events, ev[i].id);
  }
  sc_events_free(ev, n);
  sc_id e = pick(g, g->events, g->n_events);
  uint8_t k = byte(g) % 3;
  /* A token from the input: the latest claim's now and then, stale or
   * never issued otherwise (SC_CONFLICT). */
  int64_t token = byte(g) % 4;
  if (k == 0) check_rc(sc_outbox_ack(g->db, e, token));
  if (k == 1) {
    check_rc(sc_outbox_nack(g->db, e, token, byte(g) & 1 ? "no" : NULL));
  }
  if (k == 2) check_rc(sc_outbox_requeue(g->db, e));
}

typedef void (*op_fn)(prog *g);
static const op_fn OPS[] = {op_product, op_restock, op_deposit,  op_policy,
                            op_pause,   op_issue,   op_checkout, op_order,
                            op_time,    op_read,    op_outbox};

/* ---- the run
 * ------------------------------------------------------------------ */

static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  if (in == NULL || out == NULL) abort();
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
    if (fwrite(buf, 1, n, out) != n) abort();
  }
  fclose(in);
  if (fclose(out) != 0) abort();
}

static void remove_db(const char *path) {
  char side[300];
  unlink(path);
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-turn", path);
  unlink(side);
}

static void remove_files(void) {
  remove_db(template_path);
  remove_db(run_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(template_path, sizeof template_path, "%s/fuzz-api-%d.db", dir,
           (int)getpid());
  snprintf(run_path, sizeof run_path, "%s/fuzz-api-run-%d.db", dir,
           (int)getpid());
  remove_db(template_path);
  sc_db *db = NULL;
  if (sc_open(template_path, NULL, &db) != SC_OK || sc_close(db) != SC_OK) {
    abort();
  }
  atexit(remove_files);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  prog g = {.p = data, .end = data + size, .now = 1700000000000LL};
  remove_db(run_path);
  copy_file(template_path, run_path);
  sc_options o;
  sc_options_init(&o);
  o.durability = SC_DURABILITY_NORMAL;
  o.clock_ms = clock_read;
  o.clock_ud = &g.now;
  if (sc_open(run_path, &o, &g.db) != SC_OK) abort();
  for (int i = 0; i < MAX_OPS && g.p < g.end; i++) {
    OPS[byte(&g) % (sizeof OPS / sizeof *OPS)](&g);
  }
  char *report = NULL;
  if (sc_verify(g.db, &report) != SC_OK) {
    fprintf(stderr, "sc_verify after the program:\n%s\n", report);
    abort();
  }
  sc_free(report);
  if (sc_close(g.db) != SC_OK) abort();
  remove_db(run_path);
  return 0;
}
