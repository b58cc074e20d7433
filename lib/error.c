/* Status codes, their names and texts, and the per-thread error message. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* The last failure's detail, per thread: a call's message must not be
 * overwritten by another thread's failure on the same handle. */
static _Thread_local char tls_errmsg[SC__ERRMSG_MAX] = "not an error";

const char *sc_strerror(int status) {
  switch (status) {
#define SC__STATUS_TEXT(name, text) \
  case SC_##name:                   \
    return text;
    SC_STATUS_MAP(SC__STATUS_TEXT)
#undef SC__STATUS_TEXT
  }
  return "unknown status";
}

const char *sc_err_name(int status) {
  switch (status) {
#define SC__STATUS_NAME(name, text) \
  case SC_##name:                   \
    return "SC_" #name;
    SC_STATUS_MAP(SC__STATUS_NAME)
#undef SC__STATUS_NAME
  }
  return "SC_UNKNOWN";
}

const char *sc_errmsg(sc_db *db) {
  (void)db; /* the message is per thread, whatever the handle */
  return tls_errmsg;
}

const char *sc_version(void) {
  return SC_VERSION_STRING;
}

unsigned sc_version_hex(void) {
  return SC_VERSION_HEX;
}

int sc__fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tls_errmsg, sizeof tls_errmsg, fmt, ap);
  va_end(ap);
  return status;
}

void sc__set_errmsg(const char *msg) {
  snprintf(tls_errmsg, sizeof tls_errmsg, "%s", msg);
}

int sc__status_from_sqlite(int rc) {
  /* An I/O layer that ran out of memory is out of memory, not an I/O
   * error: the caller may retry. */
  if (rc == SQLITE_IOERR_NOMEM) return SC_NOMEM;
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
      return SC_OK;
    case SQLITE_NOMEM:
      return SC_NOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return SC_BUSY;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return SC_IOERR;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return SC_CORRUPT;
    case SQLITE_MISUSE:
      return SC_MISUSE;
    case SQLITE_CONSTRAINT:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
      return SC_INVALID;
    default:
      return SC_ERROR;
  }
}
