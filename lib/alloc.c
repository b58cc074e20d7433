/* The allocator hook: every allocation of the library goes through here, so
 * tests can fail the Nth one (SQLite's own memory is configured apart, with
 * SQLITE_CONFIG_MALLOC, by the host or the fault tests). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static sc_allocator current = {malloc, realloc, free};

sc_allocator sc_set_allocator(const sc_allocator *a) {
  sc_allocator previous = current;
  if (a == NULL) {
    current = (sc_allocator){malloc, realloc, free};
  } else {
    current = *a;
  }
  return previous;
}

void *sc__malloc(size_t size) {
  return current.malloc_fn(size ? size : 1);
}

void *sc__calloc(size_t n, size_t size) {
  if (size != 0 && n > SIZE_MAX / size) return NULL;
  void *p = sc__malloc(n * size);
  if (p != NULL) memset(p, 0, n * size);
  return p;
}

void *sc__realloc(void *p, size_t size) {
  return current.realloc_fn(p, size ? size : 1);
}

void sc__free(void *p) {
  if (p != NULL) current.free_fn(p);
}

void sc_free(void *p) {
  sc__free(p);
}

char *sc__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *copy = sc__malloc(n);
  if (copy != NULL) memcpy(copy, s, n);
  return copy;
}
