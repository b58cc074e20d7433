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

int sc__struct_in(const char *fn, void *dst, size_t known, const void *src,
                  size_t size, size_t v1_size) {
  if (size == 0) size = v1_size;
  if (size < sizeof(size_t)) {
    return sc__fail(SC_INVALID,
                    "%s: the struct's size field is %zu; start from its "
                    "init function",
                    fn, size);
  }
  /* A newer header's struct: its fields past ours are at their defaults
   * (zero) or this library cannot honour them. */
  const unsigned char *extra = (const unsigned char *)src;
  for (size_t i = known; i < size; i++) {
    if (extra[i] != 0) {
      return sc__fail(SC_INVALID,
                      "%s: the struct is %zu bytes (a newer header) and sets "
                      "byte %zu, a field this library (%s, %zu bytes) does "
                      "not know",
                      fn, size, i, sc_version(), known);
    }
  }
  memcpy(dst, src, size < known ? size : known);
  return SC_OK;
}

void sc__struct_out(void *dst, size_t size, const void *src, size_t known) {
  memcpy(dst, src, size < known ? size : known);
  if (size > known) memset((unsigned char *)dst + known, 0, size - known);
}
