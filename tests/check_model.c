/* Model-based random testing: seeded random sequences of the public
 * operations run against the library and against a plain in-memory model of
 * the shop kept by this test; every status and every reading must agree.
 *
 * Threads and exactness: the run is a sequence of rounds. In each round
 * every thread makes OPS_PER_ROUND calls at once, on the users, products,
 * policies, coupons and orders it owns (disjoint sets, so each thread's
 * model is exact without locking); between rounds, with every other thread
 * parked at a barrier, thread 0 alone does what touches everyone: creates
 * products and policies (so their ids do not depend on the interleaving),
 * moves the injected clock, expires due orders, and compares sc_stats_get
 * and sc_verify with the whole model. The clock never moves while calls
 * are in flight, so deadlines and validity windows are decided exactly.
 * Ids of orders and coupons still depend on the interleaving, but only as
 * names: nothing decides on their values, so a seed replays the same calls
 * with the same outcomes.
 *
 *   SC_MODEL_SEED=S     the seed (default: from the clock; always printed)
 *   SC_MODEL_ROUNDS=N   rounds (default 150)
 *   SC_MODEL_THREADS=T  threads (default 4) */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

#define MAX_THREADS 16
#define OPS_PER_ROUND 30
#define USERS 6
#define MAX_PRODUCTS 64
#define MAX_POLICIES 32
#define MAX_COUPONS 4096
#define MAX_ORDERS 16384
#define MAX_KEYS 4096
#define MAX_LINES 3
#define UNKNOWN_ID 1000000000000LL
#define T0 1700000000000LL

/* ---- the model ------------------------------------------------------------
 */

typedef struct m_product {
  sc_id id;
  int64_t price, total, reserved, version;
} m_product;

typedef struct m_account {
  bool exists;
  int64_t balance, held;
} m_account;

typedef struct m_policy {
  sc_id id;
  int64_t max_count, issued, discount_amount, max_discount, starts, ends;
  int32_t limit, percent;
  bool paused;
} m_policy;

enum { C_AVAILABLE = 1, C_HELD, C_USED };
typedef struct m_coupon {
  sc_id id;
  int policy; /* index */
  int user;   /* index */
  int status;
} m_coupon;

typedef struct m_order {
  sc_id id;
  int user, coupon; /* indexes; coupon -1 = none */
  int status;
  int64_t total, discount, expires;
  int n;
  int product[MAX_LINES]; /* indexes, in the library's order (by id) */
  int64_t qty[MAX_LINES];
} m_order;

typedef struct m_key {
  char key[32];
  unsigned char req[8 * (5 + 3 * MAX_LINES)];
  size_t len;
  sc_id result; /* the order, for a checkout */
} m_key;

/* What one thread owns. */
typedef struct model {
  int t;
  m_product products[MAX_PRODUCTS];
  int n_products;
  m_account accounts[USERS];
  m_policy policies[MAX_POLICIES];
  int n_policies;
  m_coupon coupons[MAX_COUPONS];
  int n_coupons;
  m_order orders[MAX_ORDERS];
  int n_orders;
  m_key deposit_keys[MAX_KEYS], checkout_keys[MAX_KEYS];
  int n_deposit_keys, n_checkout_keys;
  uint64_t rng;
  int64_t calls;
} model;

typedef struct world {
  sc_db *db;
  char *path;
  tu_clock clock;
  uint64_t seed;
  int threads, rounds;
  model *models[MAX_THREADS];
  pthread_barrier_t barrier;
  atomic_bool failed;
  pthread_mutex_t fail_lock;
  char failure[1024];
  int round;
  uint64_t xrng; /* thread 0's between rounds */
  int64_t by_status[SC_STATUS_COUNT_];
  pthread_mutex_t count_lock;
} world;

static sc_id user_id(const model *m, int u) {
  return (sc_id)(m->t + 1) * 1000 + u + 1;
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int64_t rnd(uint64_t *s, int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* Records the first disagreement; every thread stops at the next round. */
static void mismatch(world *w, const model *m, const char *fmt, ...) {
  pthread_mutex_lock(&w->fail_lock);
  if (!atomic_load(&w->failed)) {
    int n = snprintf(w->failure, sizeof w->failure,
                     "seed %" PRIu64 " (SC_MODEL_SEED=%" PRIu64
                     " SC_MODEL_THREADS=%d), round %d, thread %d, call %lld: ",
                     w->seed, w->seed, w->threads, w->round, m ? m->t : -1,
                     m ? (long long)m->calls : -1LL);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->failure + n, sizeof w->failure - (size_t)n, fmt, ap);
    va_end(ap);
    atomic_store(&w->failed, true);
  }
  pthread_mutex_unlock(&w->fail_lock);
}

/* Compares a status; false (and a recorded mismatch) if they differ. */
static bool same_rc(world *w, model *m, const char *what, int got, int want) {
  pthread_mutex_lock(&w->count_lock);
  w->by_status[got >= 0 && got < SC_STATUS_COUNT_ ? got : SC_ERROR]++;
  pthread_mutex_unlock(&w->count_lock);
  if (got == want) return true;
  mismatch(w, m, "%s: library %s, model %s (%s)", what, sc_err_name(got),
           sc_err_name(want), sc_errmsg(NULL));
  return false;
}

static void same_i64(world *w, model *m, const char *what, int64_t got,
                     int64_t want) {
  if (got != want) {
    mismatch(w, m, "%s: library %lld, model %lld", what, (long long)got,
             (long long)want);
  }
}

/* ---- products, stock, accounts --------------------------------------------
 */

static void op_restock(world *w, model *m) {
  if (m->n_products == 0 || rnd(&m->rng, 0, 9) == 0) {
    same_rc(w, m, "restock unknown", sc_product_restock(w->db, UNKNOWN_ID, 1),
            SC_NOT_FOUND);
    return;
  }
  m_product *p = &m->products[rnd(&m->rng, 0, m->n_products - 1)];
  int64_t qty = rnd(&m->rng, -1, 10);
  int want = qty <= 0 ? SC_INVALID : SC_OK;
  if (same_rc(w, m, "restock", sc_product_restock(w->db, p->id, qty), want) &&
      want == SC_OK) {
    p->total += qty;
    p->version++;
  }
}

static void op_stock_get(world *w, model *m) {
  if (m->n_products == 0) return;
  m_product *p = &m->products[rnd(&m->rng, 0, m->n_products - 1)];
  sc_stock s;
  if (!same_rc(w, m, "stock_get", sc_stock_get(w->db, p->id, &s), SC_OK)) {
    return;
  }
  same_i64(w, m, "stock total", s.total, p->total);
  same_i64(w, m, "stock reserved", s.reserved, p->reserved);
  same_i64(w, m, "stock available", s.available, p->total - p->reserved);
  same_i64(w, m, "stock version", s.version, p->version);
}

static m_key *find_key(m_key *keys, int n, const char *key) {
  for (int i = 0; i < n; i++) {
    if (strcmp(keys[i].key, key) == 0) return &keys[i];
  }
  return NULL;
}

static void put_i64(unsigned char *p, int64_t v) {
  uint64_t u = (uint64_t)v;
  for (int i = 7; i >= 0; i--, u >>= 8)
    p[i] = (unsigned char)(u & 0xff);
}

static void op_deposit(world *w, model *m) {
  int u = (int)rnd(&m->rng, 0, USERS - 1);
  int64_t amount = rnd(&m->rng, 0, 20) == 0 ? 0 : rnd(&m->rng, 1, 400);
  char key[32] = "";
  bool keyed = rnd(&m->rng, 0, 2) != 0;
  /* Sometimes a key used before: a replay, or a mismatch. */
  if (keyed && m->n_deposit_keys > 0 && rnd(&m->rng, 0, 3) == 0) {
    snprintf(key, sizeof key, "%s",
             m->deposit_keys[rnd(&m->rng, 0, m->n_deposit_keys - 1)].key);
  } else if (keyed && m->n_deposit_keys < MAX_KEYS) {
    snprintf(key, sizeof key, "t%d-d%d", m->t, m->n_deposit_keys);
  } else {
    keyed = false; /* the model keeps no more keys */
  }
  unsigned char req[16];
  put_i64(req, user_id(m, u));
  put_i64(req + 8, amount);
  m_key *k = keyed ? find_key(m->deposit_keys, m->n_deposit_keys, key) : NULL;
  int want = SC_OK;
  if (amount <= 0) {
    want = SC_INVALID;
  } else if (k != NULL && memcmp(k->req, req, sizeof req) != 0) {
    want = SC_IDEMPOTENCY_MISMATCH;
  }
  int rc = sc_account_deposit(w->db, user_id(m, u), amount, keyed ? key : NULL);
  if (!same_rc(w, m, "deposit", rc, want) || want != SC_OK) return;
  if (k != NULL) return; /* a replay changes nothing */
  m->accounts[u].exists = true;
  m->accounts[u].balance += amount;
  if (keyed) {
    m_key *nk = &m->deposit_keys[m->n_deposit_keys++];
    snprintf(nk->key, sizeof nk->key, "%s", key);
    memcpy(nk->req, req, sizeof req);
    nk->len = sizeof req;
  }
}

static void op_account_get(world *w, model *m) {
  int u = (int)rnd(&m->rng, 0, USERS - 1);
  const m_account *a = &m->accounts[u];
  sc_account got;
  int rc = sc_account_get(w->db, user_id(m, u), &got);
  if (!same_rc(w, m, "account_get", rc, a->exists ? SC_OK : SC_NOT_FOUND) ||
      !a->exists) {
    return;
  }
  same_i64(w, m, "balance", got.balance, a->balance);
  same_i64(w, m, "held", got.held, a->held);
  same_i64(w, m, "available", got.available, a->balance - a->held);
}

/* ---- coupons ----------------------------------------------------------------
 */

static bool active(const m_policy *p, int64_t now) {
  return (p->starts == 0 || now >= p->starts) &&
         (p->ends == 0 || now < p->ends);
}

static int issue_refusal(const model *m, const m_policy *p, int u,
                         int64_t now) {
  if (p->paused) return SC_PAUSED;
  if (!active(p, now)) return SC_NOT_ACTIVE;
  if (p->issued >= p->max_count) return SC_SOLD_OUT;
  int held = 0;
  for (int i = 0; i < m->n_coupons; i++) {
    held += m->coupons[i].user == u && &m->policies[m->coupons[i].policy] == p;
  }
  return held >= p->limit ? SC_LIMIT_REACHED : SC_OK;
}

static void op_issue(world *w, model *m) {
  int u = (int)rnd(&m->rng, 0, USERS - 1);
  if (m->n_policies == 0 || rnd(&m->rng, 0, 15) == 0) {
    same_rc(w, m, "issue unknown",
            sc_coupon_issue(w->db, UNKNOWN_ID, user_id(m, u), NULL),
            SC_NOT_FOUND);
    return;
  }
  int pi = (int)rnd(&m->rng, 0, m->n_policies - 1);
  m_policy *p = &m->policies[pi];
  int want = issue_refusal(m, p, u, atomic_load(&w->clock.now_ms));
  sc_id coupon = 0;
  int rc = sc_coupon_issue(w->db, p->id, user_id(m, u), &coupon);
  if (!same_rc(w, m, "issue", rc, want) || want != SC_OK) return;
  p->issued++;
  if (m->n_coupons < MAX_COUPONS) {
    m->coupons[m->n_coupons++] = (m_coupon){
        .id = coupon, .policy = pi, .user = u, .status = C_AVAILABLE};
  } else {
    mismatch(w, m, "the model holds no more coupons: fewer rounds, please");
  }
}

static void op_pause(world *w, model *m) {
  if (m->n_policies == 0) return;
  m_policy *p = &m->policies[rnd(&m->rng, 0, m->n_policies - 1)];
  bool paused = rnd(&m->rng, 0, 2) == 0; /* mostly resume */
  if (same_rc(w, m, "pause", sc_coupon_policy_pause(w->db, p->id, paused),
              SC_OK)) {
    p->paused = paused;
  }
}

static void op_policy_get(world *w, model *m) {
  if (m->n_policies == 0) return;
  const m_policy *p = &m->policies[rnd(&m->rng, 0, m->n_policies - 1)];
  sc_coupon_policy got;
  if (!same_rc(w, m, "policy_get", sc_coupon_policy_get(w->db, p->id, &got),
               SC_OK)) {
    return;
  }
  same_i64(w, m, "max_count", got.max_count, p->max_count);
  same_i64(w, m, "issued_count", got.issued_count, p->issued);
  same_i64(w, m, "per_user_limit", got.per_user_limit, p->limit);
  same_i64(w, m, "paused", got.paused, p->paused);
}

/* ---- checkout
 * ---------------------------------------------------------------- */

typedef struct m_req {
  int u, coupon; /* coupon index, -1 none */
  sc_id coupon_id;
  int n;
  int product[MAX_LINES]; /* -1: an unknown product */
  sc_line lines[MAX_LINES];
  int64_t versions[MAX_LINES];
  bool with_versions;
  int64_t ttl;
  char key[32];
  bool keyed;
} m_req;

static int64_t discount_on(int64_t subtotal, const m_policy *p) {
  int64_t d = p->discount_amount;
  if (p->percent > 0) {
    d = subtotal / 100 * p->percent + subtotal % 100 * p->percent / 100;
    if (p->max_discount > 0 && d > p->max_discount) d = p->max_discount;
  }
  return d < subtotal ? d : subtotal;
}

static void random_request(world *w, model *m, m_req *r) {
  memset(r, 0, sizeof *r);
  r->u = (int)rnd(&m->rng, 0, USERS - 1);
  r->n = (int)rnd(&m->rng, 1, MAX_LINES);
  r->with_versions = rnd(&m->rng, 0, 4) == 0;
  for (int i = 0; i < r->n; i++) {
    int pi = m->n_products ? (int)rnd(&m->rng, 0, m->n_products - 1) : -1;
    if (rnd(&m->rng, 0, 30) == 0) pi = -1;
    r->product[i] = pi;
    r->lines[i] = (sc_line){pi >= 0 ? m->products[pi].id : UNKNOWN_ID + i,
                            rnd(&m->rng, 1, 4)};
    r->versions[i] = pi >= 0 ? m->products[pi].version : 0;
    if (rnd(&m->rng, 0, 3) == 0) r->versions[i]++; /* stale */
  }
  if (rnd(&m->rng, 0, 40) == 0) r->lines[0].qty = 0;
  r->coupon = -1;
  if (m->n_coupons > 0 && rnd(&m->rng, 0, 2) == 0) {
    r->coupon = (int)rnd(&m->rng, 0, m->n_coupons - 1);
    r->coupon_id = m->coupons[r->coupon].id;
  }
  r->ttl = rnd(&m->rng, 0, 3) == 0 ? 0 : rnd(&m->rng, 1, 4000);
  r->keyed = rnd(&m->rng, 0, 2) == 0;
  if (r->keyed && m->n_checkout_keys > 0 && rnd(&m->rng, 0, 3) == 0) {
    snprintf(r->key, sizeof r->key, "%s",
             m->checkout_keys[rnd(&m->rng, 0, m->n_checkout_keys - 1)].key);
  } else if (r->keyed && m->n_checkout_keys < MAX_KEYS) {
    snprintf(r->key, sizeof r->key, "t%d-c%d", m->t, m->n_checkout_keys);
  } else {
    r->keyed = false; /* the model keeps no more keys */
  }
  (void)w;
}

/* The line order the library works in: by product id. */
static void sort_lines(m_req *r, int *order) {
  for (int i = 0; i < r->n; i++)
    order[i] = i;
  for (int i = 1; i < r->n; i++) {
    for (int j = i;
         j > 0 && r->lines[order[j]].product < r->lines[order[j - 1]].product;
         j--) {
      int x = order[j];
      order[j] = order[j - 1];
      order[j - 1] = x;
    }
  }
}

/* The request's canonical bytes, as the library compares them. */
static size_t encode_req(const m_req *r, const int *order, unsigned char *p) {
  put_i64(p, 0); /* user, filled by the caller */
  put_i64(p + 8, r->coupon >= 0 ? r->coupon_id : 0);
  put_i64(p + 16, r->ttl);
  put_i64(p + 24, r->with_versions);
  put_i64(p + 32, r->n);
  for (int i = 0; i < r->n; i++) {
    const int k = order[i];
    put_i64(p + 40 + 24 * i, r->lines[k].product);
    put_i64(p + 48 + 24 * i, r->lines[k].qty);
    put_i64(p + 56 + 24 * i, r->with_versions ? r->versions[k] : -1);
  }
  return 40 + 24 * (size_t)r->n;
}

/* Checks in the library's order: arguments, the key, each line's stock (by
 * product id), the coupon, the balance. */
static int checkout_outcome(const model *m, const m_req *r, const int *order,
                            int64_t now, int64_t *total, int64_t *discount) {
  for (int i = 0; i < r->n; i++) {
    if (r->lines[i].qty <= 0) return SC_INVALID;
  }
  for (int i = 1; i < r->n; i++) {
    if (r->lines[order[i]].product == r->lines[order[i - 1]].product) {
      return SC_INVALID;
    }
  }
  int64_t subtotal = 0;
  for (int i = 0; i < r->n; i++) {
    int k = order[i];
    if (r->product[k] < 0) return SC_NOT_FOUND;
    const m_product *p = &m->products[r->product[k]];
    if (r->with_versions && r->versions[k] != p->version) return SC_CONFLICT;
    if (p->total - p->reserved < r->lines[k].qty) return SC_OUT_OF_STOCK;
    subtotal += p->price * r->lines[k].qty;
  }
  *discount = 0;
  if (r->coupon >= 0) {
    const m_coupon *c = &m->coupons[r->coupon];
    const m_policy *p = &m->policies[c->policy];
    if (c->user != r->u || c->status != C_AVAILABLE || !active(p, now)) {
      return SC_COUPON_UNAVAILABLE;
    }
    *discount = discount_on(subtotal, p);
  }
  *total = subtotal - *discount;
  const m_account *a = &m->accounts[r->u];
  if (!a->exists) return SC_NOT_FOUND;
  if (a->balance - a->held < *total) return SC_INSUFFICIENT_BALANCE;
  return SC_OK;
}

static void apply_checkout(model *m, const m_req *r, const int *order, sc_id id,
                           int64_t now, int64_t total, int64_t discount,
                           int64_t default_ttl) {
  m_order *o = &m->orders[m->n_orders++];
  *o = (m_order){.id = id,
                 .user = r->u,
                 .coupon = r->coupon,
                 .status = SC_ORDER_PENDING,
                 .total = total,
                 .discount = discount,
                 .expires = now + (r->ttl ? r->ttl : default_ttl),
                 .n = r->n};
  for (int i = 0; i < r->n; i++) {
    int k = order[i];
    o->product[i] = r->product[k];
    o->qty[i] = r->lines[k].qty;
    m->products[r->product[k]].reserved += r->lines[k].qty;
    m->products[r->product[k]].version++;
  }
  m->accounts[r->u].held += total;
  if (r->coupon >= 0) m->coupons[r->coupon].status = C_HELD;
}

#define DEFAULT_TTL (15 * 60 * 1000LL)

static void op_checkout(world *w, model *m) {
  if (m->n_orders >= MAX_ORDERS) return;
  m_req r;
  random_request(w, m, &r);
  int order[MAX_LINES];
  sort_lines(&r, order);
  int64_t now = atomic_load(&w->clock.now_ms), total = 0, discount = 0;
  unsigned char bytes[sizeof m->checkout_keys[0].req];
  size_t len = encode_req(&r, order, bytes);
  put_i64(bytes, user_id(m, r.u));
  m_key *k =
      r.keyed ? find_key(m->checkout_keys, m->n_checkout_keys, r.key) : NULL;
  int want = checkout_outcome(m, &r, order, now, &total, &discount);
  bool caller_side = want == SC_INVALID; /* refused before the key is read */
  if (k != NULL && !caller_side) {
    want = k->len == len && memcmp(k->req, bytes, len) == 0
               ? SC_OK
               : SC_IDEMPOTENCY_MISMATCH;
  }
  sc_checkout_req req = {
      .user = user_id(m, r.u),
      .lines = r.lines,
      .n_lines = (size_t)r.n,
      .coupon = r.coupon >= 0 ? r.coupon_id : 0,
      .ttl_ms = r.ttl,
      .idempotency_key = r.keyed ? r.key : NULL,
      .expected_versions = r.with_versions ? r.versions : NULL};
  sc_id id = 0;
  int rc = sc_checkout(w->db, &req, &id);
  if (!same_rc(w, m, "checkout", rc, want) || want != SC_OK) return;
  if (k != NULL) { /* a replay: the first order, nothing new */
    same_i64(w, m, "replayed order id", id, k->result);
    return;
  }
  apply_checkout(m, &r, order, id, now, total, discount, DEFAULT_TTL);
  if (r.keyed) {
    m_key *nk = &m->checkout_keys[m->n_checkout_keys++];
    snprintf(nk->key, sizeof nk->key, "%s", r.key);
    memcpy(nk->req, bytes, len);
    nk->len = len;
    nk->result = id;
  }
}

/* ---- pay, cancel, expire, read an order -------------------------------------
 */

static void release(model *m, m_order *o, int status) {
  o->status = status;
  for (int i = 0; i < o->n; i++) {
    m->products[o->product[i]].reserved -= o->qty[i];
    m->products[o->product[i]].version++;
  }
  m->accounts[o->user].held -= o->total;
  if (o->coupon >= 0) m->coupons[o->coupon].status = C_AVAILABLE;
}

static m_order *pick_order(model *m) {
  if (m->n_orders == 0) return NULL;
  /* Mostly recent orders: they are the pending ones. */
  int64_t lo = m->n_orders > 20 && rnd(&m->rng, 0, 3) ? m->n_orders - 20 : 0;
  return &m->orders[rnd(&m->rng, lo, m->n_orders - 1)];
}

static void op_pay(world *w, model *m) {
  m_order *o = pick_order(m);
  if (o == NULL || rnd(&m->rng, 0, 20) == 0) {
    same_rc(w, m, "pay unknown", sc_order_pay(w->db, UNKNOWN_ID), SC_NOT_FOUND);
    return;
  }
  int64_t now = atomic_load(&w->clock.now_ms);
  int want = SC_OK;
  if (o->status == SC_ORDER_CANCELLED) {
    want = SC_INVALID_STATE;
  } else if (o->status == SC_ORDER_EXPIRED ||
             (o->status == SC_ORDER_PENDING && now >= o->expires)) {
    want = SC_EXPIRED;
  }
  if (!same_rc(w, m, "pay", sc_order_pay(w->db, o->id), want) ||
      want != SC_OK || o->status != SC_ORDER_PENDING) {
    return;
  }
  o->status = SC_ORDER_CONFIRMED;
  for (int i = 0; i < o->n; i++) {
    m->products[o->product[i]].total -= o->qty[i];
    m->products[o->product[i]].reserved -= o->qty[i];
  }
  m->accounts[o->user].balance -= o->total;
  m->accounts[o->user].held -= o->total;
  if (o->coupon >= 0) m->coupons[o->coupon].status = C_USED;
}

static void op_cancel(world *w, model *m) {
  m_order *o = pick_order(m);
  if (o == NULL) return;
  int want = o->status == SC_ORDER_PENDING || o->status == SC_ORDER_CANCELLED
                 ? SC_OK
                 : SC_INVALID_STATE;
  if (same_rc(w, m, "cancel", sc_order_cancel(w->db, o->id), want) &&
      o->status == SC_ORDER_PENDING) {
    release(m, o, SC_ORDER_CANCELLED);
  }
}

static void op_order_get(world *w, model *m) {
  m_order *o = pick_order(m);
  if (o == NULL) return;
  sc_order got;
  if (!same_rc(w, m, "order_get", sc_order_get(w->db, o->id, &got), SC_OK)) {
    return;
  }
  same_i64(w, m, "order user", got.user, user_id(m, o->user));
  same_i64(w, m, "order status", got.status, o->status);
  same_i64(w, m, "order total", got.total, o->total);
  same_i64(w, m, "order discount", got.discount, o->discount);
  same_i64(w, m, "order deadline", got.expires_at_ms, o->expires);
}

/* ---- one thread's calls -----------------------------------------------------
 */

typedef void (*op_fn)(world *w, model *m);
static const struct {
  op_fn fn;
  int weight;
} OPS[] = {
    {op_deposit, 10},   {op_account_get, 6}, {op_restock, 5},
    {op_stock_get, 6},  {op_issue, 12},      {op_pause, 3},
    {op_policy_get, 4}, {op_checkout, 24},   {op_pay, 12},
    {op_cancel, 5},     {op_order_get, 6},
};

static void one_call(world *w, model *m) {
  int total = 0;
  for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++)
    total += OPS[i].weight;
  int pick = (int)rnd(&m->rng, 0, total - 1);
  for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++) {
    pick -= OPS[i].weight;
    if (pick < 0) {
      m->calls++;
      OPS[i].fn(w, m);
      return;
    }
  }
}

/* ---- between rounds: thread 0 alone
 * ------------------------------------------ */

static void create_product(world *w) {
  model *m = w->models[rnd(&w->xrng, 0, w->threads - 1)];
  if (m->n_products >= MAX_PRODUCTS) return;
  m_product *p = &m->products[m->n_products];
  *p = (m_product){.price = rnd(&w->xrng, 0, 500),
                   .total = rnd(&w->xrng, 0, 30)};
  if (same_rc(w, NULL, "product_create",
              sc_product_create(w->db, "m", p->price, p->total, &p->id),
              SC_OK)) {
    m->n_products++;
  }
}

static void create_policy(world *w) {
  model *m = w->models[rnd(&w->xrng, 0, w->threads - 1)];
  if (m->n_policies >= MAX_POLICIES) return;
  int64_t now = atomic_load(&w->clock.now_ms);
  m_policy *p = &m->policies[m->n_policies];
  *p = (m_policy){.max_count = rnd(&w->xrng, 1, 15),
                  .limit = (int32_t)rnd(&w->xrng, 0, 3)};
  if (rnd(&w->xrng, 0, 1)) {
    p->discount_amount = rnd(&w->xrng, 0, 300);
  } else {
    p->percent = (int32_t)rnd(&w->xrng, 1, 100);
    p->max_discount = rnd(&w->xrng, 0, 1) ? rnd(&w->xrng, 1, 200) : 0;
  }
  if (rnd(&w->xrng, 0, 2) == 0) p->starts = now + rnd(&w->xrng, 0, 3000);
  if (rnd(&w->xrng, 0, 2) == 0) {
    p->ends = (p->starts ? p->starts : now) + rnd(&w->xrng, 1, 6000);
  }
  sc_coupon_policy_spec spec = {.name = "m",
                                .max_count = p->max_count,
                                .per_user_limit = p->limit,
                                .discount_amount = p->discount_amount,
                                .discount_percent = p->percent,
                                .max_discount = p->max_discount,
                                .starts_at_ms = p->starts,
                                .ends_at_ms = p->ends};
  if (p->limit == 0) p->limit = 1;
  if (same_rc(w, NULL, "policy_create",
              sc_coupon_policy_create(w->db, &spec, &p->id), SC_OK)) {
    m->n_policies++;
  }
}

static void expire_all(world *w) {
  int64_t now = atomic_load(&w->clock.now_ms);
  int want = 0;
  for (int t = 0; t < w->threads; t++) {
    model *m = w->models[t];
    for (int i = 0; i < m->n_orders; i++) {
      if (m->orders[i].status == SC_ORDER_PENDING &&
          m->orders[i].expires <= now) {
        release(m, &m->orders[i], SC_ORDER_EXPIRED);
        want++;
      }
    }
  }
  int got = -1;
  if (same_rc(w, NULL, "expire_due", sc_orders_expire_due(w->db, &got),
              SC_OK)) {
    same_i64(w, NULL, "orders expired", got, want);
  }
}

/* sc_stats_get against the sum of every thread's model. */
static void compare_stats(world *w) {
  sc_stats want = {0}, got;
  for (int t = 0; t < w->threads; t++) {
    const model *m = w->models[t];
    want.products += m->n_products;
    for (int i = 0; i < m->n_products; i++) {
      want.units_total += m->products[i].total;
      want.units_reserved += m->products[i].reserved;
    }
    for (int u = 0; u < USERS; u++) {
      want.accounts += m->accounts[u].exists;
      want.balance_total += m->accounts[u].balance;
      want.held_total += m->accounts[u].held;
    }
    for (int i = 0; i < m->n_orders; i++) {
      int s = m->orders[i].status;
      want.orders_pending += s == SC_ORDER_PENDING;
      want.orders_confirmed += s == SC_ORDER_CONFIRMED;
      want.orders_cancelled += s == SC_ORDER_CANCELLED;
      want.orders_expired += s == SC_ORDER_EXPIRED;
    }
    want.policies += m->n_policies;
    want.coupons += m->n_coupons;
  }
  if (!same_rc(w, NULL, "stats_get", sc_stats_get(w->db, &got), SC_OK)) return;
#define SAME_STAT(f) same_i64(w, NULL, "stats " #f, got.f, want.f)
  SAME_STAT(products);
  SAME_STAT(units_total);
  SAME_STAT(units_reserved);
  SAME_STAT(accounts);
  SAME_STAT(balance_total);
  SAME_STAT(held_total);
  SAME_STAT(orders_pending);
  SAME_STAT(orders_confirmed);
  SAME_STAT(orders_cancelled);
  SAME_STAT(orders_expired);
  SAME_STAT(policies);
  SAME_STAT(coupons);
#undef SAME_STAT
}

static void between_rounds(world *w) {
  int64_t n = rnd(&w->xrng, 0, w->round == 0 ? 6 : 1);
  for (int64_t i = 0; i < n; i++)
    create_product(w);
  if (w->round == 0 || rnd(&w->xrng, 0, 3) == 0) create_policy(w);
  atomic_fetch_add(&w->clock.now_ms, rnd(&w->xrng, 0, 1500));
  if (rnd(&w->xrng, 0, 1) == 0) expire_all(w);
  compare_stats(w);
  if (w->round % 10 == 9) {
    char *report = NULL;
    int rc = sc_verify(w->db, &report);
    if (rc != SC_OK) mismatch(w, NULL, "sc_verify: %s", report);
    sc_free(report);
  }
}

static void run_thread(int t, void *ud) {
  world *w = ud;
  model *m = w->models[t];
  for (int round = 0; round < w->rounds; round++) {
    if (t == 0) {
      w->round = round;
      if (!atomic_load(&w->failed)) between_rounds(w);
    }
    pthread_barrier_wait(&w->barrier);
    for (int i = 0; i < OPS_PER_ROUND && !atomic_load(&w->failed); i++) {
      one_call(w, m);
    }
    pthread_barrier_wait(&w->barrier);
  }
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  return v && *v ? strtoull(v, NULL, 0) : dflt;
}

START_TEST(library_agrees_with_the_model) {
  world *w = calloc(1, sizeof *w);
  ck_assert_ptr_nonnull(w);
  w->seed = env_u64("SC_MODEL_SEED", (uint64_t)time(NULL));
  w->rounds = (int)env_u64("SC_MODEL_ROUNDS", 150);
  w->threads = (int)env_u64("SC_MODEL_THREADS", 4);
  ck_assert_int_ge(w->threads, 1);
  ck_assert_int_le(w->threads, MAX_THREADS);
  printf("model: seed %" PRIu64 ", %d threads, %d rounds of %d calls each\n",
         w->seed, w->threads, w->rounds, OPS_PER_ROUND);
  fflush(stdout);
  w->xrng = w->seed;
  pthread_mutex_init(&w->fail_lock, NULL);
  pthread_mutex_init(&w->count_lock, NULL);
  pthread_barrier_init(&w->barrier, NULL, (unsigned)w->threads);
  for (int t = 0; t < w->threads; t++) {
    w->models[t] = calloc(1, sizeof(model));
    ck_assert_ptr_nonnull(w->models[t]);
    w->models[t]->t = t;
    w->models[t]->rng = w->seed * 7919 + (uint64_t)t + 1;
  }
  w->path = tu_db_path("model");
  sc_options o;
  sc_options_init(&o);
  o.durability = SC_DURABILITY_NORMAL; /* not what this suite tests */
  tu_use_clock(&o, &w->clock, T0);
  w->db = tu_open(w->path, &o);
  tu_race(w->threads, run_thread, w);
  if (!atomic_load(&w->failed)) {
    w->round = w->rounds;
    expire_all(w);
    compare_stats(w);
  }
  ck_assert_msg(!atomic_load(&w->failed), "%s", w->failure);
  tu_assert_verify(w->db);
  ck_assert_sc(sc_close(w->db), SC_OK);
  int64_t calls = 0;
  for (int t = 0; t < w->threads; t++)
    calls += w->models[t]->calls;
  printf("model: %lld calls agreed; outcomes:", (long long)calls);
  for (int s = 0; s < SC_STATUS_COUNT_; s++) {
    if (w->by_status[s])
      printf(" %s %lld", sc_err_name(s), (long long)w->by_status[s]);
  }
  printf("\n");
  /* The run must have reached the interesting outcomes, or it proves
   * little. */
  ck_assert_int_gt(w->by_status[SC_OK], 0);
  ck_assert_int_gt(w->by_status[SC_OUT_OF_STOCK] + w->by_status[SC_SOLD_OUT] +
                       w->by_status[SC_EXPIRED],
                   0);
  for (int t = 0; t < w->threads; t++)
    free(w->models[t]);
  pthread_barrier_destroy(&w->barrier);
  tu_remove_db(w->path);
  free(w);
}
END_TEST

int main(void) {
  Suite *s = suite_create("model");
  TCase *tc = tu_tcase("model");
  tcase_add_test(tc, library_agrees_with_the_model);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
