/* The virtual users of `shopcore simulate`: each is a thread that plays one
 * customer after another, as a load-test script would: top up points,
 * browse a product's stock, claim a coupon, check out, then pay (or cancel,
 * or walk away), pausing between requests for the think time. */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

const char *const SIM_OP_NAMES[OP_COUNT] = {
    "deposit", "browse", "coupon_issue", "checkout", "pay", "cancel"};

typedef struct vu {
  sim *s;
  int index;
  uint64_t rng;
} vu;

int64_t sim_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t next_rand(vu *v) { /* xorshift64* */
  v->rng ^= v->rng >> 12;
  v->rng ^= v->rng << 25;
  v->rng ^= v->rng >> 27;
  return v->rng * 2685821657736338717ULL;
}

static double uniform(vu *v) {
  return (next_rand(v) >> 11) * 0x1.0p-53;
}

/* Pauses for the think time (uniform 50%..150% of the mean, as load-test
 * scripts randomise their sleep); false once the run is over. */
static bool think(vu *v) {
  sim *s = v->s;
  int64_t now = sim_now_ns();
  if (now >= s->deadline_ns) return false;
  if (s->cfg.think_ms == 0) return true;
  int64_t ns = (int64_t)((0.5 + uniform(v)) * s->cfg.think_ms * 1e6);
  if (now + ns > s->deadline_ns) ns = s->deadline_ns - now;
  struct timespec ts = {ns / 1000000000, ns % 1000000000};
  nanosleep(&ts, NULL);
  return sim_now_ns() < s->deadline_ns;
}

/* Counts one request: its status, latency, and second of the run. */
static void record(sim *s, int op, int rc, int64_t started_ns) {
  int64_t end = sim_now_ns();
  if (rc < 0 || rc >= SC_STATUS_COUNT_) rc = SC_ERROR;
  atomic_fetch_add_explicit(&s->ops[op].by_status[rc], 1, memory_order_relaxed);
  hist_add(&s->ops[op].latency, end - started_ns);
  int outcome = sc_status_outcome(rc);
  atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
  if (outcome == SC_OUTCOME_ERROR) {
    atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
  }
  int sec = (int)((end - s->start_ns) / 1000000000);
  if (sec >= s->seconds) sec = s->seconds - 1;
  atomic_fetch_add_explicit(&s->timeline[sec][outcome], 1,
                            memory_order_relaxed);
}

/* The product a customer looks at or buys: the hot one with probability
 * hot, else any other. */
static int pick_product(vu *v) {
  sim *s = v->s;
  if (s->cfg.products == 1 || uniform(v) < s->cfg.hot) return 0;
  return 1 + (int)(next_rand(v) % (uint64_t)(s->cfg.products - 1));
}

/* One customer's visit; false once the run is over. */
static bool iteration(vu *v) {
  sim *s = v->s;
  sc_id user = s->customer_base + atomic_fetch_add(&s->next_customer, 1);
  int p = pick_product(v);
  int64_t qty = 1 + (int64_t)(next_rand(v) % 2);
  /* One customer in twenty tops up too little: the balance precheck must
   * refuse the checkout up front. */
  int64_t amount = uniform(v) < 0.05
                       ? s->prices[p] / 4
                       : s->prices[p] * (2 + (int64_t)(next_rand(v) % 3));
  int64_t t = sim_now_ns();
  record(s, OP_DEPOSIT, sc_account_deposit(s->db, user, amount, NULL), t);
  if (!think(v)) return false;
  sc_stock st;
  t = sim_now_ns();
  record(s, OP_BROWSE, sc_stock_get(s->db, s->products[p], &st), t);
  if (!think(v)) return false;
  sc_id coupon = 0;
  t = sim_now_ns();
  record(s, OP_COUPON, sc_coupon_issue(s->db, s->policy, user, &coupon), t);
  if (!think(v)) return false;
  sc_line line = {.product = s->products[p], .qty = qty};
  sc_checkout_req req = {
      .user = user, .lines = &line, .n_lines = 1, .coupon = coupon};
  sc_id order = 0;
  t = sim_now_ns();
  int rc = sc_checkout(s->db, &req, &order);
  record(s, OP_CHECKOUT, rc, t);
  if (!think(v)) return false;
  if (rc == SC_OK) {
    double r = uniform(v);
    if (r < 0.85) {
      t = sim_now_ns();
      record(s, OP_PAY, sc_order_pay(s->db, order), t);
    } else if (r < 0.95) {
      t = sim_now_ns();
      record(s, OP_CANCEL, sc_order_cancel(s->db, order), t);
    } /* else the customer walks away: the order expires later */
    if (!think(v)) return false;
  }
  atomic_fetch_add_explicit(&s->iterations, 1, memory_order_relaxed);
  return true;
}

static void *vu_main(void *arg) {
  vu *v = arg;
  while (sim_now_ns() < v->s->deadline_ns && iteration(v)) {
  }
  return NULL;
}

/* Prints the live progress until the deadline: one line rewritten in place
 * on a terminal, plain lines otherwise. */
static void progress(sim *s, bool tty) {
  int64_t step_ns = tty ? 250000000 : 1000000000;
  uint64_t last = 0;
  int64_t last_ns = s->start_ns;
  while (sim_now_ns() < s->deadline_ns) {
    int64_t wake = last_ns + step_ns;
    if (wake > s->deadline_ns) wake = s->deadline_ns;
    int64_t ns = wake - sim_now_ns();
    if (ns > 0)
      nanosleep(&(struct timespec){ns / 1000000000, ns % 1000000000}, NULL);
    int64_t now = sim_now_ns();
    uint64_t req = atomic_load(&s->requests);
    double rate = (double)(req - last) / ((double)(now - last_ns) / 1e9);
    fprintf(stderr,
            "%s%6.1fs / %ds  users %d  requests %llu  %.0f req/s  "
            "errors %llu%s",
            tty ? "\r" : "", (double)(now - s->start_ns) / 1e9,
            s->cfg.duration_s, s->cfg.users, (unsigned long long)req, rate,
            (unsigned long long)atomic_load(&s->errors), tty ? "  " : "\n");
    last = req;
    last_ns = now;
  }
  if (tty) fputc('\n', stderr);
}

int sim_run_users(sim *s) {
  int n = s->cfg.users;
  pthread_t *tids = calloc((size_t)n, sizeof *tids);
  vu *vus = calloc((size_t)n, sizeof *vus);
  if (tids == NULL || vus == NULL) {
    free(tids);
    free(vus);
    return cli_fail("simulate", "out of memory for %d users", n);
  }
  s->start_ns = sim_now_ns();
  s->deadline_ns = s->start_ns + (int64_t)s->cfg.duration_s * 1000000000;
  int started = 0;
  for (; started < n; started++) {
    vus[started] = (vu){.s = s,
                        .index = started,
                        .rng = (s->cfg.seed + 1) * 0x9E3779B97F4A7C15ULL ^
                               (uint64_t)(started + 1) * 0xBF58476D1CE4E5B9ULL};
    if (vus[started].rng == 0) vus[started].rng = 1;
    if (pthread_create(&tids[started], NULL, vu_main, &vus[started]) != 0)
      break;
  }
  if (started < n) {
    s->deadline_ns = sim_now_ns(); /* stop the ones that did start */
  } else {
    progress(s, isatty(2));
  }
  for (int i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  s->elapsed_s = (double)(sim_now_ns() - s->start_ns) / 1e9;
  free(tids);
  free(vus);
  if (started < n) {
    return cli_fail("simulate", "could only start %d of %d user threads",
                    started, n);
  }
  return CLI_OK;
}
