/* Clocks, sleeping, checked arithmetic and the input limits of text. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"

int64_t sc__monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t sc__wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sc__sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

bool sc__add_i64(int64_t a, int64_t b, int64_t *out) {
  return !__builtin_add_overflow(a, b, out);
}

bool sc__mul_i64(int64_t a, int64_t b, int64_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}

int sc__check_text(const char *fn, const char *what, const char *s, size_t max,
                   bool optional) {
  if (s == NULL && optional) return SC_OK;
  if (s == NULL || s[0] == '\0') {
    return sc__fail(SC_INVALID, "%s: %s is %s", fn, what,
                    optional ? "empty" : "NULL or empty");
  }
  if (strnlen(s, max + 1) > max) {
    return sc__fail(SC_INVALID, "%s: %s is longer than %zu bytes", fn, what,
                    max);
  }
  return SC_OK;
}
