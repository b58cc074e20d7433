/* A growable text buffer for the reports the library returns (metrics,
 * repair). An allocation failure is remembered and reported once, at the
 * end, so the builders need no error path per line. */
#include <stdio.h>

#include "internal.h"

void sc__strbuf_printf(sc__strbuf *b, const char *fmt, ...) {
  if (b->nomem) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->text ? b->text + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) return; /* an encoding error: drop the line */
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n + 64;
    char *text = sc__realloc(b->text, cap);
    if (text == NULL) {
      b->nomem = true;
      return;
    }
    b->text = text;
    b->cap = cap;
  }
}

char *sc__strbuf_take(sc__strbuf *b) {
  char *text = NULL;
  if (!b->nomem) text = b->text ? b->text : sc__strdup("");
  if (b->nomem) sc__free(b->text);
  b->text = NULL;
  b->len = b->cap = 0;
  return text;
}

void sc__strbuf_free(sc__strbuf *b) {
  sc__free(b->text);
  b->text = NULL;
  b->len = b->cap = 0;
}
