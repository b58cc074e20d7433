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

/* The offset of the first byte of s (NUL-terminated) that does not start
 * a well-formed UTF-8 character (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or of its NUL if there is none.
 * PostgreSQL refuses such text at the protocol level; SQLite would store
 * it, so both refuse it here, the same way. */
static size_t utf8_invalid_at(const unsigned char *s) {
  size_t i = 0;
  while (s[i] != 0) {
    unsigned c = s[i];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the 2nd byte */
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0; /* overlong */
      if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90; /* overlong */
      if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
    } else {
      return i;
    }
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k <= n; k++) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    }
    i += n + 1;
  }
  return i;
}

void sc__deadline_in_ms(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
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
  size_t bad = utf8_invalid_at((const unsigned char *)s);
  if (s[bad] != '\0') {
    return sc__fail(SC_INVALID,
                    "%s: %s is not valid UTF-8 (byte %zu, 0x%02x): names and "
                    "keys are text, stored and compared alike by every backend",
                    fn, what, bad, (unsigned)(unsigned char)s[bad]);
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
