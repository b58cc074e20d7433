/* The base every module of lib/ stands on: memory, errors, clocks, checked
 * arithmetic, input limits, sized structs and text buffers. Nothing here is
 * API, and nothing here knows of the writer or of SQLite but the mapping of
 * its result codes. */
#ifndef SC_BASE_H
#define SC_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "shopcore.h"

#define SC__ERRMSG_MAX 256

#if defined(__GNUC__)
#define SC__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SC__PRINTF(f, a)
#endif

/* ---- allocation (alloc.c) ---------------------------------------------- */

void *sc__malloc(size_t size);
void *sc__calloc(size_t n, size_t size); /* overflow-checked */
void *sc__realloc(void *p, size_t size);
void sc__free(void *p);
char *sc__strdup(const char *s);

/* ---- errors (error.c) --------------------------------------------------- */

/* Records a failure for the calling thread (sc_errmsg) and returns status. */
int sc__fail(int status, const char *fmt, ...) SC__PRINTF(2, 3);
/* Copies a message prepared elsewhere (by the writer) into this thread's
 * errmsg. */
void sc__set_errmsg(const char *msg);
/* Maps an SQLite result code to a status. */
int sc__status_from_sqlite(int rc);

/* ---- time (util.c) ----------------------------------------------------- */

int64_t sc__monotonic_ns(void);
int64_t sc__wall_ms(void);
void sc__sleep_ms(int64_t ms);
/* The CLOCK_MONOTONIC moment ms from now, for pthread_cond_timedwait on a
 * condition variable made with that clock. */
void sc__deadline_in_ms(struct timespec *ts, int64_t ms);
/* Checks a name or an idempotency key against its limit (SC_NAME_MAX,
 * SC_KEY_MAX): NULL passes only when optional; NULL, empty, longer than
 * max bytes or not valid UTF-8 fails with SC_INVALID and "<fn>: <what> ..."
 * in errmsg. It reads at most max + 1 bytes of s. */
int sc__check_text(const char *fn, const char *what, const char *s, size_t max,
                   bool optional);
/* Copies a stored name of len bytes into out (SC_NAME_MAX + 1 bytes), cut
 * before the UTF-8 character that would not fit (stock.c). */
void sc__name_copy(char *out, const unsigned char *name, size_t len);
/* Checked int64 arithmetic: false on overflow. */
/* Structs that grow (see "Structs that grow" in shopcore.h). sc__struct_in
 * reads a caller's struct of size bytes (0 = v1_size, the first layout) into
 * dst, which holds the library's defaults in known bytes: the caller's
 * fields overwrite them, the rest stay defaults. A larger struct (a newer
 * header) is accepted only when its bytes past known are all zero. On
 * failure returns SC_INVALID naming fn. sc__struct_out writes the first size
 * bytes of the library's src (known bytes) to the caller's dst, zeroing what
 * the library does not know; never a byte past size. */
int sc__struct_in(const char *fn, void *dst, size_t known, const void *src,
                  size_t size, size_t v1_size);
void sc__struct_out(void *dst, size_t size, const void *src, size_t known);
bool sc__add_i64(int64_t a, int64_t b, int64_t *out);
bool sc__mul_i64(int64_t a, int64_t b, int64_t *out);

/* ---- text buffers (strbuf.c), for metrics and repair reports ---- */

typedef struct sc__strbuf {
  char *text;
  size_t len, cap;
  bool nomem; /* an allocation failed: the text is incomplete */
} sc__strbuf;
/* Appends formatted text; after a failed allocation it does nothing. */
void sc__strbuf_printf(sc__strbuf *b, const char *fmt, ...) SC__PRINTF(2, 3);
/* Hands over the text ("" if none was added), or NULL if an allocation
 * failed; the buffer is empty afterwards. */
char *sc__strbuf_take(sc__strbuf *b);
void sc__strbuf_free(sc__strbuf *b);

/* Convenience: check a handle and an out pointer at the top of a call. */
#define SC__CHECK_DB(db)                                                      \
  do {                                                                        \
    if ((db) == NULL) return sc__fail(SC_MISUSE, "%s: db is NULL", __func__); \
  } while (0)

#endif /* SC_BASE_H */
