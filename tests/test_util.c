#include "test_util.h"

#include <errno.h>
#include <libpq-fe.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "pg/pg.h"

/* ---- PostgreSQL mode ------------------------------------------------------
 * SC_TEST_DB=pg runs a suite against the server at SC_TEST_PG_URI (or the
 * one libpq's PGHOST, PGPORT, ... name, as scripts/pg-cluster.sh sets them):
 * each "path" is then a URI with a schema of its own, dropped by tu_remove_db.
 */

bool tu_pg_mode(void) {
  const char *m = getenv("SC_TEST_DB");
  return m != NULL && strcmp(m, "pg") == 0;
}

static const char *pg_base_uri(void) {
  const char *u = getenv("SC_TEST_PG_URI");
  return u != NULL && u[0] != '\0' ? u : "postgresql://";
}

int tu_pg_skip_unless_server(void) {
  if (!tu_pg_mode()) return 0;
  PGconn *c = PQconnectdb(pg_base_uri());
  bool ok = PQstatus(c) == CONNECTION_OK;
  if (!ok) {
    fprintf(stderr, "skipped: no PostgreSQL server at %s: %s", pg_base_uri(),
            PQerrorMessage(c));
  }
  PQfinish(c);
  return ok ? 0 : 77;
}

/* The schema named in a test URI ("...schema=NAME"). */
static const char *uri_schema(const char *uri) {
  const char *s = strstr(uri, "schema=");
  return s ? s + 7 : NULL;
}

/* A connection to the server whose search_path is the URI's schema. */
static void pg_quiet(void *ud, const char *msg) {
  (void)ud;
  (void)msg;
}

static PGconn *pg_outside(const char *uri) {
  PGconn *c = PQconnectdb(pg_base_uri());
  ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
  PQsetNoticeProcessor(c, pg_quiet, NULL);
  char sql[256];
  snprintf(sql, sizeof sql, "SET search_path TO %s", uri_schema(uri));
  PQclear(PQexec(c, sql));
  return c;
}

PGconn *tu_pg_connect(const char *path) {
  return pg_outside(path);
}

static PGresult *pg_run(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType s = PQresultStatus(r);
  ck_assert_msg(s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK, "%s: %s", sql,
                PQresultErrorMessage(r));
  return r;
}

void tu_side_path(const char *path, int i, char *out, size_t cap) {
  if (!tu_pg_mode()) {
    snprintf(out, cap, "%s.%d", path, i);
    return;
  }
  const char *dir = getenv("SC_TEST_TMPDIR");
  snprintf(out, cap, "%s/%s.%d", dir && dir[0] ? dir : "/tmp", uri_schema(path),
           i);
}

char *tu_db_path(const char *tag) {
  static atomic_int counter;
  if (tu_pg_mode()) {
    const char *base = pg_base_uri();
    char *uri = malloc(1024);
    ck_assert_ptr_nonnull(uri);
    char schema[64];
    snprintf(schema, sizeof schema, "t%d_%d", (int)getpid(),
             atomic_fetch_add(&counter, 1));
    snprintf(uri, 1024, "%s%sschema=%s", base, strchr(base, '?') ? "&" : "?",
             schema);
    (void)tag;
    return uri;
  }
  const char *dir = getenv("SC_TEST_TMPDIR");
  if (dir == NULL || dir[0] == '\0') dir = "/tmp";
  char *path = malloc(512);
  ck_assert_ptr_nonnull(path);
  snprintf(path, 512, "%s/%s-%d-%d.db", dir, tag, (int)getpid(),
           atomic_fetch_add(&counter, 1));
  unlink(path);
  return path;
}

void tu_remove_db(char *path) {
  if (path == NULL) return;
  if (tu_pg_mode()) {
    PGconn *c = pg_outside(path);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE",
             uri_schema(path));
    PQclear(pg_run(c, sql));
    PQfinish(c);
    free(path);
    return;
  }
  char side[600];
  unlink(path);
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-turn", path);
  unlink(side);
  free(path);
}

int64_t tu_clock_read(void *ud) {
  return atomic_load(&((tu_clock *)ud)->now_ms);
}

void tu_use_clock(sc_options *o, tu_clock *c, int64_t start_ms) {
  atomic_store(&c->now_ms, start_ms);
  o->clock_ms = tu_clock_read;
  o->clock_ud = c;
}

sc_db *tu_open(const char *path, const sc_options *opts) {
  sc_db *db = NULL;
  ck_assert_sc(sc_open(path, opts, &db), SC_OK);
  ck_assert_ptr_nonnull(db);
  return db;
}

void tu_assert_verify(sc_db *db) {
  char *report = NULL;
  int rc = sc_verify(db, &report);
  ck_assert_msg(rc == SC_OK, "sc_verify: %s: %s", sc_err_name(rc),
                report ? report : sc_errmsg(db));
  ck_assert_ptr_nonnull(report);
  ck_assert_str_eq(report, "ok\n");
  sc_free(report);
}

typedef struct race {
  tu_thread_fn fn;
  void *ud;
  int index;
  pthread_barrier_t *start;
} race;

static void *race_main(void *arg) {
  race *r = arg;
  pthread_barrier_wait(r->start);
  r->fn(r->index, r->ud);
  return NULL;
}

void tu_race(int n, tu_thread_fn fn, void *ud) {
  pthread_t *threads = calloc((size_t)n, sizeof *threads);
  race *races = calloc((size_t)n, sizeof *races);
  pthread_barrier_t start;
  ck_assert_ptr_nonnull(threads);
  ck_assert_ptr_nonnull(races);
  pthread_barrier_init(&start, NULL, (unsigned)n);
  for (int i = 0; i < n; i++) {
    races[i] = (race){fn, ud, i, &start};
    ck_assert_int_eq(pthread_create(&threads[i], NULL, race_main, &races[i]),
                     0);
  }
  for (int i = 0; i < n; i++)
    pthread_join(threads[i], NULL);
  pthread_barrier_destroy(&start);
  free(threads);
  free(races);
}

void tu_fork_race(int n, tu_process_fn fn, void *ud) {
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  ck_assert_ptr_nonnull(pids);
  for (int i = 0; i < n; i++) {
    pids[i] = fork();
    ck_assert_int_ge(pids[i], 0);
    if (pids[i] == 0) _exit(fn(i, ud));
  }
  for (int i = 0; i < n; i++) {
    int status = 0;
    ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "process %d failed (status 0x%x)", i, status);
  }
  free(pids);
}

/* A plain SQLite connection of its own to the file, patient with the
 * library's writer. */
static sqlite3 *outside_connection(const char *path, int flags) {
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open_v2(path, &h, flags, NULL), SQLITE_OK);
  sqlite3_busy_timeout(h, 10000);
  return h;
}

void tu_exec(const char *path, const char *sql) {
  if (tu_pg_mode()) {
    PGconn *c = pg_outside(path);
    PQclear(pg_run(c, sql));
    PQfinish(c);
    return;
  }
  sqlite3 *h = outside_connection(path, SQLITE_OPEN_READWRITE);
  char *err = NULL;
  ck_assert_msg(sqlite3_exec(h, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s",
                sql, err ? err : "");
  sqlite3_close(h);
}

int64_t tu_count(const char *path, const char *sql) {
  if (tu_pg_mode()) {
    PGconn *c = pg_outside(path);
    PGresult *r = pg_run(c, sql);
    ck_assert_int_eq(PQntuples(r), 1);
    /* A boolean reads as 1 or 0, as SQLite's would. */
    const char *v = PQgetvalue(r, 0, 0);
    int64_t n = strcmp(v, "t") == 0 ? 1 : strtoll(v, NULL, 10);
    PQclear(r);
    PQfinish(c);
    return n;
  }
  sqlite3 *h = outside_connection(path, SQLITE_OPEN_READONLY);
  sqlite3_stmt *st = NULL;
  ck_assert_msg(sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK, "%s",
                sqlite3_errmsg(h));
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return n;
}

/* tu_rows on PostgreSQL: the same format, values as the server's text. */
static char *pg_rows(const char *path, const char *const *sql, size_t n) {
  PGconn *c = pg_outside(path);
  size_t cap = 1 << 16, len = 0;
  char *out = calloc(1, cap);
  ck_assert_ptr_nonnull(out);
  for (size_t i = 0; i < n; i++) {
    PGresult *r = pg_run(c, sql[i]);
    for (int row = 0; row < PQntuples(r); row++) {
      for (int col = 0; col < PQnfields(r); col++) {
        const char *v =
            PQgetisnull(r, row, col) ? "NULL" : PQgetvalue(r, row, col);
        len += (size_t)snprintf(out + len, cap - len, "%s|", v);
        ck_assert_uint_lt(len, cap - 64);
      }
      out[len++] = '\n';
    }
    PQclear(r);
  }
  PQfinish(c);
  return out;
}

char *tu_rows(const char *path, const char *const *sql, size_t n) {
  if (tu_pg_mode()) return pg_rows(path, sql, n);
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
  size_t cap = 1 << 16, len = 0;
  char *out = calloc(1, cap);
  ck_assert_ptr_nonnull(out);
  for (size_t i = 0; i < n; i++) {
    sqlite3_stmt *st = NULL;
    ck_assert_msg(sqlite3_prepare_v2(h, sql[i], -1, &st, NULL) == SQLITE_OK,
                  "%s: %s", sql[i], sqlite3_errmsg(h));
    while (sqlite3_step(st) == SQLITE_ROW) {
      for (int col = 0; col < sqlite3_column_count(st); col++) {
        const char *v = (const char *)sqlite3_column_text(st, col);
        len += (size_t)snprintf(out + len, cap - len, "%s|", v ? v : "NULL");
        ck_assert_uint_lt(len, cap - 64);
      }
      out[len++] = '\n';
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return out;
}

struct tu_gate {
  sc__op base;
  sem_t entered, release, done;
};

static int gate_run(sc_db *db, sc__conn *w, sc__op *base) {
  (void)db;
  (void)w;
  tu_gate *g = (tu_gate *)base;
  sem_post(&g->entered);
  while (sem_wait(&g->release) != 0 && errno == EINTR) {
  }
  return SC_OK;
}

static void gate_done(sc__op *base) {
  sem_post(&((tu_gate *)base)->done);
}

/* On PostgreSQL the gate is an operation of its own transaction, run by
 * the writer thread after its batch's calls: it holds the writer as well. */
static int gate_alone(sc_db *db, sc__op *base) {
  return gate_run(db, NULL, base);
}

static const sc__op_pg GATE_PG = {.name = "tu_gate", .alone = gate_alone};

tu_gate *tu_gate_close(sc_db *db) {
  tu_gate *g = calloc(1, sizeof *g);
  ck_assert_ptr_nonnull(g);
  g->base = (sc__op){
      .run = gate_run, .done = gate_done, .pg = &GATE_PG, .kind = SC__OP_ADMIN};
  sem_init(&g->entered, 0, 0);
  sem_init(&g->release, 0, 0);
  sem_init(&g->done, 0, 0);
  ck_assert_sc(sc__op_submit(db, &g->base), SC_OK);
  while (sem_wait(&g->entered) != 0 && errno == EINTR) {
  }
  return g;
}

void tu_gate_open(tu_gate *g) {
  sem_post(&g->release);
  while (sem_wait(&g->done) != 0 && errno == EINTR) {
  }
  sem_destroy(&g->entered);
  sem_destroy(&g->release);
  sem_destroy(&g->done);
  free(g);
}

void tu_wait_queued(sc_db *db, int n) {
  for (;;) {
    pthread_mutex_lock(&db->qlock);
    int queued = db->qlen;
    pthread_mutex_unlock(&db->qlock);
    if (queued >= n) return;
    usleep(1000);
  }
}

uint64_t tu_rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int64_t tu_rng_range(uint64_t *s, int64_t lo, int64_t hi) {
  return lo + (int64_t)(tu_rng_next(s) % (uint64_t)(hi - lo + 1));
}

TCase *tu_tcase(const char *name) {
  TCase *tc = tcase_create(name);
  /* Races under sanitizers on two shared cores can take a while; a hung
   * test is still caught. */
  tcase_set_timeout(tc, 600);
  return tc;
}

int tu_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  int skip = tu_pg_skip_unless_server();
  if (skip != 0) {
    srunner_free(sr); /* frees the suite too */
    return skip;
  }
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
