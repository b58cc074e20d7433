/* Client-side latency histograms of the simulation: lock-free, shared by
 * every virtual user (a relaxed add on a counter per request). */
#include <math.h>

#include "sim.h"

#define SUB (1 << HIST_SUB_BITS)

int hist_bucket_of(int64_t v) {
  if (v < SUB) return (int)(v < 0 ? 0 : v);
  int msb = 63 - __builtin_clzll((unsigned long long)v);
  int sub = (int)((v >> (msb - HIST_SUB_BITS)) & (SUB - 1));
  return (msb - HIST_SUB_BITS + 1) * SUB + sub;
}

double hist_bucket_low_ns(int b) {
  if (b < SUB) return b;
  /* Doubles, not shifts: the last buckets' bounds pass 2^63. */
  int msb = b / SUB + HIST_SUB_BITS - 1;
  double width = ldexp(1, msb - HIST_SUB_BITS);
  return ldexp(1, msb) + (b % SUB) * width;
}

void hist_add(hist *h, int64_t ns) {
  atomic_fetch_add_explicit(&h->counts[hist_bucket_of(ns)], 1,
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
  int64_t cur = atomic_load_explicit(&h->max_ns, memory_order_relaxed);
  while (ns > cur && !atomic_compare_exchange_weak(&h->max_ns, &cur, ns)) {
  }
}

double hist_max_ms(hist *h) {
  return (double)atomic_load(&h->max_ns) / 1e6;
}

double hist_quantile_ms(hist *h, double q) {
  uint64_t total = atomic_load(&h->total);
  if (total == 0) return 0;
  uint64_t rank = (uint64_t)(q * (double)total + 0.999999), seen = 0;
  if (rank == 0) rank = 1;
  for (int b = 0; b < HIST_BUCKETS; b++) {
    seen += atomic_load_explicit(&h->counts[b], memory_order_relaxed);
    if (seen >= rank) {
      /* The bucket's midpoint, never above the exact maximum. */
      double mid = (hist_bucket_low_ns(b) + hist_bucket_low_ns(b + 1)) / 2;
      double ms = mid / 1e6;
      return ms < hist_max_ms(h) ? ms : hist_max_ms(h);
    }
  }
  return hist_max_ms(h);
}
