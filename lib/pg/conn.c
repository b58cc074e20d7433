/* PostgreSQL connections: the URI (with the library's own ?schema=), a
 * connect that never outlasts busy_timeout_ms, the writer's connection and
 * the pool of read connections. */
#include <ctype.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg.h"

#define DEFAULT_SCHEMA "shopcore"

bool sc__pg_is_uri(const char *path) {
  return path != NULL && (strncmp(path, "postgresql://", 13) == 0 ||
                          strncmp(path, "postgres://", 11) == 0);
}

/* Copies msg without its trailing newlines (libpq ends them with one). */
static void copy_msg(char *why, size_t cap, const char *msg) {
  snprintf(why, cap, "%s", msg ? msg : "unknown error");
  size_t n = strlen(why);
  while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == '\r'))
    why[--n] = '\0';
}

/* A schema name is a plain lower-case identifier: it is written into SQL,
 * double-quoted (a reserved word such as "order" is a valid name). */
static bool schema_ok(const char *s, size_t n) {
  if (n == 0 || n > 63 || !(islower((unsigned char)s[0]) || s[0] == '_')) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(islower(c) || isdigit(c) || c == '_')) return false;
  }
  return true;
}

/* Whether the value of an integer option (a port: a comma-separated list)
 * is well formed: libpq checks it only once it tries to connect, and its
 * refusal there looks like any other failed connect. */
static bool int_option_ok(const char *key, const char *val) {
  static const char *const INTS[] = {"port",
                                     "connect_timeout",
                                     "keepalives",
                                     "keepalives_idle",
                                     "keepalives_interval",
                                     "keepalives_count",
                                     "tcp_user_timeout",
                                     NULL};
  bool is_port = strcmp(key, "port") == 0;
  for (const char *const *k = INTS; *k != NULL; k++) {
    if (strcmp(key, *k) != 0) continue;
    for (const char *v = val; *v != '\0'; v++) {
      if (!isdigit((unsigned char)*v) && !(is_port && *v == ',')) return false;
    }
  }
  return true;
}

/* Splits ?schema=NAME off the URI: libpq refuses query parameters it does
 * not know. The rest of the query stays as it was. */
static int split_uri(const char *uri, char **conninfo, char *schema) {
  size_t len = strlen(uri);
  char *out = sc__malloc(len + 1);
  if (out == NULL) return sc__fail(SC_NOMEM, "sc_open: out of memory");
  snprintf(schema, 64, "%s", DEFAULT_SCHEMA);
  const char *q = strchr(uri, '?');
  size_t head = q ? (size_t)(q - uri) : len;
  memcpy(out, uri, head);
  size_t o = head;
  char sep = '?';
  for (const char *p = q ? q + 1 : NULL; p != NULL && *p != '\0';) {
    const char *end = strchr(p, '&');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n >= 7 && strncmp(p, "schema=", 7) == 0) {
      if (!schema_ok(p + 7, n - 7)) {
        sc__free(out);
        return sc__fail(SC_INVALID,
                        "sc_open: schema \"%.*s\" must be a lower-case name "
                        "(a-z, 0-9, _; at most 63 bytes)",
                        (int)(n - 7), p + 7);
      }
      memcpy(schema, p + 7, n - 7);
      schema[n - 7] = '\0';
    } else if (n > 0) {
      out[o++] = sep;
      sep = '&';
      memcpy(out + o, p, n);
      o += n;
    }
    p = end ? end + 1 : NULL;
  }
  out[o] = '\0';
  /* libpq's own parse: a malformed URI fails here, clearly, before any
   * connection is tried. */
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(out, &err);
  if (opts == NULL) {
    char why[SC__ERRMSG_MAX];
    copy_msg(why, sizeof why, err ? err : "out of memory");
    PQfreemem(err);
    sc__free(out);
    return sc__fail(SC_INVALID, "sc_open: bad PostgreSQL URI: %s", why);
  }
  for (PQconninfoOption *opt = opts; opt->keyword != NULL; opt++) {
    if (opt->val != NULL && !int_option_ok(opt->keyword, opt->val)) {
      int rc = sc__fail(SC_INVALID,
                        "sc_open: bad PostgreSQL URI: invalid value \"%s\" "
                        "for \"%s\"",
                        opt->val, opt->keyword);
      PQconninfoFree(opts);
      sc__free(out);
      return rc;
    }
  }
  PQconninfoFree(opts);
  *conninfo = out;
  return SC_OK;
}

/* The server's notices ("schema already exists, skipping") are not the
 * host's business: libpq would print them on stderr. */
static void quiet(void *ud, const char *msg) {
  (void)ud;
  (void)msg;
}

/* Connects without blocking past deadline_ns: libpq's connect_timeout
 * counts whole seconds, at least two. The URI was checked when it was
 * split, so every failure here is the server's or the network's (a
 * refused Unix socket fails inside PQconnectStartParams already).
 * Keepalives and tcp_user_timeout find a dead peer within seconds: a
 * network cut then breaks the connection rather than hanging a call. */
static PGconn *connect_start(const char *conninfo, const char *app) {
  const char *keys[] = {"dbname",
                        "application_name",
                        "keepalives",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "tcp_user_timeout",
                        NULL};
  const char *vals[] = {conninfo, app, "1", "10", "2", "3", "10000", NULL};
  return PQconnectStartParams(keys, vals, 1);
}

/* Named after the schema, so an administrator sees whose it is. */
static void app_name(const sc_db *db, char *app, size_t cap) {
  snprintf(app, cap, "libshopcore/%s", db->pg->schema);
}

PGconn *sc__pg_connect_start(sc_db *db) {
  char app[80];
  app_name(db, app, sizeof app);
  PGconn *c = connect_start(db->pg->conninfo, app);
  if (c != NULL) PQsetNoticeProcessor(c, quiet, NULL);
  return c;
}

static PGconn *connect_until(const char *conninfo, const char *app,
                             int64_t deadline_ns, char *why, size_t cap) {
  PGconn *c = connect_start(conninfo, app);
  if (c == NULL) {
    snprintf(why, cap, "out of memory");
    return NULL;
  }
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
         st != PGRES_POLLING_FAILED) {
    int64_t left_ms = (deadline_ns - sc__monotonic_ns()) / 1000000;
    if (left_ms <= 0) {
      snprintf(why, cap, "no connection within the busy timeout");
      PQfinish(c);
      return NULL;
    }
    struct pollfd pfd = {
        .fd = PQsocket(c),
        .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
    int n =
        pfd.fd >= 0 ? poll(&pfd, 1, (int)(left_ms > 100 ? 100 : left_ms)) : 1;
    if (n > 0) st = PQconnectPoll(c);
  }
  if (PQstatus(c) != CONNECTION_OK) {
    copy_msg(why, cap, PQerrorMessage(c));
    PQfinish(c);
    return NULL;
  }
  return c;
}

/* Runs one command with no result rows; false with why on failure. */
static bool run(PGconn *c, const char *sql, char *why, size_t cap) {
  PGresult *r = PQexec(c, sql);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
            PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) copy_msg(why, cap, PQerrorMessage(c));
  PQclear(r);
  return ok;
}

PGconn *sc__pg_connect(sc_db *db, char *why, size_t cap) {
  int64_t deadline =
      sc__monotonic_ns() + (int64_t)db->opts.busy_timeout_ms * 1000000;
  return sc__pg_connect_until(db, deadline, why, cap);
}

PGconn *sc__pg_connect_until(sc_db *db, int64_t deadline_ns, char *why,
                             size_t cap) {
  char app[80];
  app_name(db, app, sizeof app);
  PGconn *c = connect_until(db->pg->conninfo, app, deadline_ns, why, cap);
  if (c == NULL) return NULL;
  PQsetNoticeProcessor(c, quiet, NULL);
  /* No wait on the server outlasts the busy timeout: a row lock another
   * session holds fails the statement with 55P03 (SC_BUSY), and a session
   * left idle inside a transaction (a frozen host) gives its locks back. */
  int64_t busy = db->opts.busy_timeout_ms > 0 ? db->opts.busy_timeout_ms : 1;
  int64_t idle = 2 * busy + 5000;
  char sql[256];
  snprintf(sql, sizeof sql,
           "SET search_path TO \"%s\", pg_catalog; SET lock_timeout = %lld;"
           " SET idle_in_transaction_session_timeout = %lld",
           db->pg->schema, (long long)(busy < INT32_MAX ? busy : INT32_MAX),
           (long long)(idle < INT32_MAX ? idle : INT32_MAX));
  if (!run(c, sql, why, cap)) {
    PQfinish(c);
    return NULL;
  }
  return c;
}

int sc__pg_status(const PGresult *r) {
  const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (s == NULL) return SC_IOERR; /* no answer from the server */
  if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0 ||
      strcmp(s, "55P03") == 0 || strcmp(s, "57014") == 0) {
    return SC_BUSY;
  }
  if (strncmp(s, "08", 2) == 0 || strncmp(s, "57", 2) == 0 ||
      strncmp(s, "58", 2) == 0) {
    return SC_IOERR;
  }
  if (strcmp(s, "53200") == 0) return SC_NOMEM;
  if (strncmp(s, "53", 2) == 0) return SC_IOERR;
  if (strncmp(s, "XX", 2) == 0) return SC_CORRUPT;
  return SC_ERROR;
}

/* Records when the writer's backend started: after a loss the look-up
 * terminates that backend by pid and start, since a pid alone may name
 * another session by then (reused, or on a promoted standby). */
static int writer_start(sc__pg *pg, char *why, size_t cap) {
  PGresult *r = PQexec(pg->w,
                       "SELECT backend_start::text FROM pg_stat_activity"
                       " WHERE pid = pg_backend_pid()");
  int rc = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                   !PQgetisnull(r, 0, 0)
               ? SC_OK
               : SC_IOERR;
  if (rc == SC_OK) {
    snprintf(pg->wstart, sizeof pg->wstart, "%s", PQgetvalue(r, 0, 0));
  } else {
    copy_msg(why, cap, PQerrorMessage(pg->w));
  }
  PQclear(r);
  return rc;
}

int sc__pg_writer_connect(sc_db *db, int64_t deadline_ns, char *why,
                          size_t cap) {
  sc__pg *pg = db->pg;
  if (pg->w != NULL) PQfinish(pg->w);
  pg->w = sc__pg_connect_until(db, deadline_ns, why, cap);
  if (pg->w == NULL) return SC_IOERR;
  /* A batch is a handful of short calls: one still running well past the
   * busy timeout is cancelled (57014, SC_BUSY) rather than holding the
   * writer, and sc_close, for ever. */
  char sql[64];
  int64_t limit = 2 * (int64_t)db->opts.busy_timeout_ms + 5000;
  snprintf(sql, sizeof sql, "SET statement_timeout = %lld",
           (long long)(limit < INT32_MAX ? limit : INT32_MAX));
  int rc = run(pg->w, sql, why, cap) ? SC_OK : SC_IOERR;
  if (rc == SC_OK) rc = writer_start(pg, why, cap);
  if (rc == SC_OK) rc = sc__pg_prepare(pg->w, why, cap);
  if (rc == SC_OK && PQenterPipelineMode(pg->w) != 1) {
    copy_msg(why, cap, PQerrorMessage(pg->w));
    rc = SC_ERROR;
  }
  if (rc != SC_OK) {
    PQfinish(pg->w);
    pg->w = NULL;
  }
  return rc;
}

int sc__pg_open(sc_db *db, const char *uri) {
  sc__pg *pg = sc__calloc(1, sizeof *pg);
  if (pg == NULL) return sc__fail(SC_NOMEM, "sc_open: out of memory");
  db->pg = pg;
  pthread_mutex_init(&pg->rlock, NULL);
  pthread_condattr_t monotonic;
  pthread_condattr_init(&monotonic);
  pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
  pthread_cond_init(&pg->rfree, &monotonic);
  pthread_condattr_destroy(&monotonic);
  int rc = split_uri(uri, &pg->conninfo, pg->schema);
  if (rc != SC_OK) {
    sc__pg_close(db);
    return rc;
  }
  /* A random base for batch-log ids: unique across hosts and reopenings
   * without coordination (a collision would fail a batch, not corrupt). */
  FILE *f = fopen("/dev/urandom", "rb");
  uint64_t base = (uint64_t)sc__wall_ms() << 20 ^ (uint64_t)sc__monotonic_ns();
  if (f != NULL) {
    if (fread(&base, sizeof base, 1, f) != 1) base ^= (uint64_t)getpid();
    fclose(f);
  }
  pg->batch_base = (int64_t)(base >> 1);
  sc__pg_channel(pg->schema, pg->channel);
  char why[SC__ERRMSG_MAX];
  PGconn *c = sc__pg_connect(db, why, sizeof why);
  if (c == NULL) {
    rc = sc__fail(SC_IOERR, "sc_open: cannot connect to PostgreSQL: %s", why);
    sc__pg_close(db);
    return rc;
  }
  rc = sc__pg_migrate(db, c);
  PQfinish(c);
  int64_t deadline =
      sc__monotonic_ns() + (int64_t)db->opts.busy_timeout_ms * 1000000;
  if (rc == SC_OK &&
      sc__pg_writer_connect(db, deadline, why, sizeof why) != SC_OK) {
    rc = sc__fail(SC_IOERR, "sc_open: PostgreSQL writer connection: %s", why);
  }
  if (rc != SC_OK) sc__pg_close(db);
  return rc;
}

void sc__pg_close(sc_db *db) {
  sc__pg *pg = db->pg;
  if (pg == NULL) return;
  if (pg->w != NULL) PQfinish(pg->w);
  while (pg->ridle != NULL) {
    sc__pg_read *r = pg->ridle;
    pg->ridle = r->next;
    PQfinish(r->c);
    sc__free(r);
  }
  pthread_mutex_destroy(&pg->rlock);
  pthread_cond_destroy(&pg->rfree);
  sc__free(pg->conninfo);
  sc__free(pg);
  db->pg = NULL;
}

/* ---- read connections ---------------------------------------------------- */

/* Waits, with rlock held, until an idle connection or room for a new one
 * is there: read_pool_max caps the read connections of a handle, so 500
 * reading threads do not open 500 server connections. False once
 * busy_timeout_ms passed. */
static bool wait_for_read(sc_db *db) {
  sc__pg *pg = db->pg;
  struct timespec deadline;
  sc__deadline_in_ms(&deadline, db->opts.busy_timeout_ms);
  int wrc = 0;
  while (pg->ridle == NULL && pg->nread >= db->opts.read_pool_max && wrc == 0) {
    wrc = pthread_cond_timedwait(&pg->rfree, &pg->rlock, &deadline);
  }
  return pg->ridle != NULL || pg->nread < db->opts.read_pool_max;
}

int sc__pg_read_acquire(sc_db *db, PGconn **out) {
  int rc = sc__call_enter(db);
  if (rc != SC_OK) return rc;
  sc__pg *pg = db->pg;
  pthread_mutex_lock(&pg->rlock);
  if (!wait_for_read(db)) {
    pthread_mutex_unlock(&pg->rlock);
    sc__call_leave(db);
    return sc__fail(SC_BUSY,
                    "no read connection free within the busy timeout "
                    "(read_pool_max %d)",
                    db->opts.read_pool_max);
  }
  sc__pg_read *r = pg->ridle;
  if (r != NULL) {
    pg->ridle = r->next;
    pg->nidle--;
  } else {
    pg->nread++; /* counted now, so concurrent readers keep the cap */
  }
  pthread_mutex_unlock(&pg->rlock);
  if (r != NULL) {
    *out = r->c;
    sc__free(r);
    return SC_OK;
  }
  char why[SC__ERRMSG_MAX];
  *out = sc__pg_connect(db, why, sizeof why);
  if (*out != NULL) return SC_OK;
  pthread_mutex_lock(&pg->rlock);
  pg->nread--;
  pthread_cond_signal(&pg->rfree);
  pthread_mutex_unlock(&pg->rlock);
  sc__call_leave(db);
  return sc__fail(SC_IOERR, "cannot connect to PostgreSQL: %s", why);
}

void sc__pg_read_release(sc_db *db, PGconn *c, bool broken) {
  sc__pg *pg = db->pg;
  sc__pg_read *r = NULL;
  if (!broken && PQstatus(c) == CONNECTION_OK &&
      PQtransactionStatus(c) == PQTRANS_IDLE) {
    r = sc__malloc(sizeof *r);
  }
  pthread_mutex_lock(&pg->rlock);
  if (r != NULL && pg->nidle < db->opts.read_pool_max) {
    r->c = c;
    r->next = pg->ridle;
    pg->ridle = r;
    pg->nidle++;
    c = NULL;
    r = NULL;
  } else {
    pg->nread--; /* closed below */
  }
  pthread_cond_signal(&pg->rfree);
  pthread_mutex_unlock(&pg->rlock);
  sc__free(r);
  if (c != NULL) PQfinish(c);
  sc__call_leave(db);
}

/* The SQLite text of a getter in PostgreSQL's words: ?N becomes $N. */
static char *translate(const char *sql) {
  char *out = sc__malloc(strlen(sql) + 1);
  if (out == NULL) return NULL;
  char *o = out;
  for (const char *p = sql; *p; p++)
    *o++ = (*p == '?' && isdigit((unsigned char)p[1])) ? '$' : *p;
  *o = '\0';
  return out;
}

PGresult *sc__pg_read_exec(sc_db *db, PGconn **c, const char *sql, int nparams,
                           const Oid *types, const char *const *vals) {
  for (int tries = 0;; tries++) {
    PGresult *r = PQexecParams(*c, sql, nparams, types, vals, NULL, NULL, 0);
    /* A pooled connection the server dropped while idle (a restart, an
     * administrator) fails its first query: once, a new one is taken. */
    if (PQstatus(*c) == CONNECTION_OK || tries > 0) return r;
    char why[SC__ERRMSG_MAX];
    PGconn *fresh = sc__pg_connect(db, why, sizeof why);
    if (fresh == NULL) return r;
    PQclear(r);
    PQfinish(*c);
    *c = fresh;
  }
}

int sc__pg_read_row(sc_db *db, const char *sql, sc_id id, int64_t *cols,
                    int ncols, const char *what) {
  char *text = translate(sql);
  if (text == NULL) return sc__fail(SC_NOMEM, "reading %s: no memory", what);
  PGconn *c;
  int rc = sc__pg_read_acquire(db, &c);
  if (rc != SC_OK) {
    sc__free(text);
    return rc;
  }
  char arg[24];
  snprintf(arg, sizeof arg, "%lld", (long long)id);
  const char *vals[] = {arg};
  const Oid types[] = {20}; /* int8: "$1 = $1" alone names no type */
  int nparams = strstr(text, "$1") ? 1 : 0;
  PGresult *r = sc__pg_read_exec(db, &c, text, nparams, types, vals);
  sc__free(text);
  bool broken = false;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    char why[SC__ERRMSG_MAX];
    copy_msg(why, sizeof why, PQerrorMessage(c));
    rc = sc__fail(sc__pg_status(r), "reading %s %lld: %s", what, (long long)id,
                  why);
    broken = true;
  } else if (PQntuples(r) == 0) {
    rc = sc__fail(SC_NOT_FOUND, "%s %lld not found", what, (long long)id);
  } else {
    for (int i = 0; i < ncols; i++)
      cols[i] = PQgetisnull(r, 0, i) ? 0 : strtoll(PQgetvalue(r, 0, i), 0, 10);
  }
  PQclear(r);
  sc__pg_read_release(db, c, broken);
  return rc;
}
