/* A flash sale: many threads race for a 1,000-coupon policy on an embedded
 * shop.db in the working directory. Run it twice: the second run reuses the
 * file and its sold-out policy, then opens a new one.
 *
 *   flash_sale [threads] [path]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "shopcore.h"

typedef struct sale {
  sc_db *db;
  sc_id policy;
  atomic_long next_user;
  atomic_long issued, sold_out, failed;
} sale;

static void *customer(void *arg) {
  sale *s = arg;
  for (;;) {
    sc_id user = atomic_fetch_add(&s->next_user, 1);
    sc_id coupon;
    int rc = sc_coupon_issue(s->db, s->policy, user, &coupon);
    if (rc == SC_OK) {
      atomic_fetch_add(&s->issued, 1);
    } else if (rc == SC_SOLD_OUT) {
      atomic_fetch_add(&s->sold_out, 1);
      return NULL;
    } else {
      fprintf(stderr, "issue: %s: %s\n", sc_err_name(rc), sc_errmsg(s->db));
      atomic_fetch_add(&s->failed, 1);
      return NULL;
    }
  }
}

static double seconds_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 64;
  const char *path = argc > 2 ? argv[2] : "shop.db";
  if (threads <= 0 || threads > 4096) {
    fprintf(stderr, "usage: flash_sale [threads 1..4096] [path]\n");
    return 2;
  }
  sale s = {.next_user = 1};
  int rc = sc_open(path, NULL, &s.db);
  if (rc != SC_OK) {
    fprintf(stderr, "open %s: %s\n", path, sc_errmsg(NULL));
    return 1;
  }
  sc_coupon_policy_spec spec = {
      .name = "flash sale", .max_count = 1000, .discount_amount = 5000};
  rc = sc_coupon_policy_create(s.db, &spec, &s.policy);
  if (rc != SC_OK) {
    fprintf(stderr, "policy: %s\n", sc_errmsg(s.db));
    sc_close(s.db);
    return 1;
  }
  printf(
      "libshopcore %s: %d customers race for %lld coupons (policy %lld) "
      "in %s\n",
      sc_version(), threads, (long long)spec.max_count, (long long)s.policy,
      path);
  pthread_t *tids = calloc((size_t)threads, sizeof *tids);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < threads; i++)
    pthread_create(&tids[i], NULL, customer, &s);
  for (int i = 0; i < threads; i++)
    pthread_join(tids[i], NULL);
  double secs = seconds_since(&t0);
  free(tids);

  sc_coupon_policy p;
  sc_coupon_policy_get(s.db, s.policy, &p);
  char *report = NULL;
  int vrc = sc_verify(s.db, &report);
  printf(
      "issued %ld coupons in %.3f s (%.0f/s), %ld callers told sold out, "
      "%ld failures\n",
      atomic_load(&s.issued), secs, atomic_load(&s.issued) / secs,
      atomic_load(&s.sold_out), atomic_load(&s.failed));
  printf("policy: issued_count %lld of max_count %lld\n",
         (long long)p.issued_count, (long long)p.max_count);
  printf("verify: %s%s", vrc == SC_OK ? "" : "FAILED\n",
         report ? report : "\n");
  sc_free(report);
  sc_close(s.db);
  int ok = vrc == SC_OK && p.issued_count == p.max_count &&
           atomic_load(&s.issued) == p.max_count && atomic_load(&s.failed) == 0;
  return ok ? 0 : 1;
}
