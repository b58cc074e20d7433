/* Coupon issuance on PostgreSQL, all in one run on one server:
 *   (a) libshopcore with group commit: 64 callers on one handle, each batch
 *       one pipelined transaction;
 *   (b) the plain approach (what pgbench does): 64 connections, each issue
 *       one autocommit statement doing the conditional UPDATE and the
 *       INSERT;
 * the ratio a/b; then 1, 2 and 4 processes (hosts) at once, each with its
 * own handle and 64 callers, on one policy.
 *
 *   bench_pg [--seconds S] [--threads 64] [--procs 1,2,4] [--uri URI]
 *
 * The server is the one at --uri, else $SC_BENCH_PG_URI, else libpq's
 * defaults (PGHOST, ...: run it under scripts/pg-cluster.sh). Each run uses a
 * schema of its own, dropped afterwards. Run the server with fsync=on to
 * measure durable commits, and track_wal_io_timing=on to time its WAL
 * flushes: after (a), a line gives its cost per issue (the server's CPU,
 * the client's, the WAL flushes). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_PROCS 16
#define MAX_THREADS 1024

static const char *base_uri = "postgresql://";

static void die(const char *what, const char *why) {
  fprintf(stderr, "bench_pg: %s: %s\n", what, why);
  exit(1);
}

/* The URI of a fresh schema for one run. */
static void run_uri(char *buf, size_t cap, const char *tag) {
  static int n;
  snprintf(buf, cap, "%s%sschema=bench_%s_%d_%d", base_uri,
           strchr(base_uri, '?') ? "&" : "?", tag, (int)getpid(), n++);
}

static PGconn *plain_connect(const char *schema) {
  PGconn *c = PQconnectdb(base_uri);
  if (PQstatus(c) != CONNECTION_OK) die("connect", PQerrorMessage(c));
  char sql[256];
  snprintf(sql, sizeof sql, "SET search_path TO %s", schema);
  PQclear(PQexec(c, sql));
  return c;
}

static void quiet(void *ud, const char *msg) {
  (void)ud;
  (void)msg;
}

static void drop_schema(const char *uri) {
  PGconn *c = PQconnectdb(base_uri);
  PQsetNoticeProcessor(c, quiet, NULL);
  char sql[256];
  snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE",
           strstr(uri, "schema=") + 7);
  PQclear(PQexec(c, sql));
  PQfinish(c);
}

static sc_id setup(const char *uri) {
  sc_db *db = NULL;
  if (sc_open(uri, NULL, &db) != SC_OK) die("open", sc_errmsg(NULL));
  sc_coupon_policy_spec spec = {.name = "bench", .max_count = INT64_MAX / 2};
  sc_id policy = 0;
  if (sc_coupon_policy_create(db, &spec, &policy) != SC_OK) {
    die("policy", sc_errmsg(db));
  }
  sc_close(db);
  return policy;
}

/* ---- where one handle's time goes ------------------------------------------
 */

/* What one handle's run cost: the CPU of the server's backends (read from
 * /proc, so only for a server on this machine), this process's CPU, and
 * the server's WAL flushes (timed with track_wal_io_timing=on). */
typedef struct costs {
  double server_s, client_s, flush_ms;
  int64_t flushes;
} costs;

/* CPU seconds of a process from /proc/PID/stat (utime + stime), -1 if it
 * cannot be read. */
static double proc_cpu(const char *pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%s/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the name may hold spaces */
  unsigned long long ut = 0, st = 0;
  if (p == NULL || sscanf(p + 2,
                          "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u"
                          " %llu %llu",
                          &ut, &st) != 2) {
    return -1;
  }
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static costs costs_now(PGconn *c) {
  costs k = {0};
  PGresult *r = PQexec(c,
                       "SELECT pid FROM pg_stat_activity"
                       " WHERE backend_type = 'client backend'"
                       " AND pid <> pg_backend_pid()");
  for (int i = 0; i < PQntuples(r) && k.server_s >= 0; i++) {
    double cpu = proc_cpu(PQgetvalue(r, i, 0));
    k.server_s = cpu < 0 ? -1 : k.server_s + cpu;
  }
  PQclear(r);
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  k.client_s = (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
               ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec) / 1e6;
  r = PQexec(c, "SELECT wal_sync, wal_sync_time FROM pg_stat_wal");
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    k.flushes = atoll(PQgetvalue(r, 0, 0));
    k.flush_ms = atof(PQgetvalue(r, 0, 1));
  }
  PQclear(r);
  return k;
}

/* Prints the run's cost per issue. The server's backends report their WAL
 * figures to pg_stat_wal at most once a second, so the flushes are those
 * reported by the end of the run. */
static void print_costs(const costs *a, const costs *b, const bu_result *r) {
  double n = (double)r->ops;
  int64_t flushes = b->flushes - a->flushes;
  if (n <= 0) return;
  printf("cost per issue: server ");
  if (a->server_s >= 0 && b->server_s >= 0) {
    printf("%.1f us CPU", (b->server_s - a->server_s) * 1e6 / n);
  } else {
    printf("n/a (not on this machine)");
  }
  printf(", client %.1f us CPU; %lld WAL flushes (%.1f issues each)",
         (b->client_s - a->client_s) * 1e6 / n, (long long)flushes,
         flushes > 0 ? n / (double)flushes : 0);
  if (b->flush_ms > a->flush_ms && flushes > 0) {
    printf(", %.3f ms each", (b->flush_ms - a->flush_ms) / (double)flushes);
  } else {
    printf(", not timed (track_wal_io_timing=off)");
  }
  printf("\n");
}

/* ---- (a) the library ------------------------------------------------------
 */

typedef struct lib_ctx {
  sc_db *db;
  sc_id policy;
  int64_t user_base;
} lib_ctx;

static int lib_issue(int t, int64_t i, void *ud) {
  (void)t;
  lib_ctx *c = ud;
  return sc_coupon_issue(c->db, c->policy, c->user_base + i + 1, NULL);
}

static bu_result run_lib(const char *uri, sc_id policy, int threads,
                         double seconds, int64_t user_base) {
  lib_ctx c = {.policy = policy, .user_base = user_base};
  if (sc_open(uri, NULL, &c.db) != SC_OK) die("open", sc_errmsg(NULL));
  sc_metrics_reset(c.db);
  PGconn *pc = PQconnectdb(base_uri);
  costs before = costs_now(pc);
  bu_result r = bu_run("coupon_issue_pg", "group_commit", threads, seconds,
                       lib_issue, &c);
  costs after = costs_now(pc);
  PQfinish(pc);
  sc_close(c.db);
  bu_print(&r);
  print_costs(&before, &after, &r);
  return r;
}

/* ---- (b) the plain approach -----------------------------------------------
 */

/* The plain approach keeps its count in the policy row, as most
 * applications do (the library's schema counts in slots instead):
 * run_plain adds that column to its own schema. */
static const char SQL_PLAIN_COUNT[] =
    "ALTER TABLE sc_coupon_policy"
    " ADD COLUMN issued_count bigint NOT NULL DEFAULT 0";
static const char SQL_PLAIN[] =
    "WITH claimed AS (UPDATE sc_coupon_policy"
    " SET issued_count = issued_count + 1"
    " WHERE id = $1 AND issued_count < max_count RETURNING id)"
    " INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms)"
    " SELECT id, $2, 0 FROM claimed";

typedef struct plain_ctx {
  PGconn *conns[MAX_THREADS];
  sc_id policy;
} plain_ctx;

static int plain_issue(int t, int64_t i, void *ud) {
  plain_ctx *c = ud;
  char p[24], u[24];
  snprintf(p, sizeof p, "%lld", (long long)c->policy);
  snprintf(u, sizeof u, "%lld", (long long)(i + 1));
  const char *vals[] = {p, u};
  PGresult *r = PQexecPrepared(c->conns[t], "issue", 2, vals, NULL, NULL, 0);
  int bad =
      PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(r), "1") != 0;
  PQclear(r);
  return bad;
}

static bu_result run_plain(const char *uri, sc_id policy, int threads,
                           double seconds) {
  plain_ctx *c = calloc(1, sizeof *c);
  c->policy = policy;
  for (int t = 0; t < threads; t++) {
    c->conns[t] = plain_connect(strstr(uri, "schema=") + 7);
    if (t == 0) {
      PGresult *r = PQexec(c->conns[t], SQL_PLAIN_COUNT);
      if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        die("plain count", PQresultErrorMessage(r));
      }
      PQclear(r);
    }
    PGresult *r = PQprepare(c->conns[t], "issue", SQL_PLAIN, 2, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      die("prepare", PQresultErrorMessage(r));
    }
    PQclear(r);
  }
  bu_result r =
      bu_run("coupon_issue_pg", "plain", threads, seconds, plain_issue, c);
  for (int t = 0; t < threads; t++)
    PQfinish(c->conns[t]);
  free(c);
  return r;
}

/* ---- several processes ----------------------------------------------------
 */

/* procs processes x threads on one policy, started together; returns the
 * total rate and fills res. */
static double run_procs(int procs, int threads, double seconds,
                        bu_result *res) {
  char uri[1024];
  run_uri(uri, sizeof uri, "procs");
  sc_id policy = setup(uri);
  int ready[2], go[2], out[2];
  if (pipe(ready) || pipe(go) || pipe(out)) exit(1);
  pid_t pids[MAX_PROCS];
  for (int k = 0; k < procs; k++) {
    pids[k] = fork();
    if (pids[k] < 0) exit(1);
    if (pids[k] != 0) continue;
    lib_ctx c = {.policy = policy, .user_base = (int64_t)(k + 1) << 40};
    if (sc_open(uri, NULL, &c.db) != SC_OK) die("open", sc_errmsg(NULL));
    char b = 'r';
    if (write(ready[1], &b, 1) != 1 || read(go[0], &b, 1) != 1) _exit(2);
    bu_result r =
        bu_run("coupon_issue_pg", "procs", threads, seconds, lib_issue, &c);
    sc_close(c.db);
    if (write(out[1], &r, sizeof r) != (ssize_t)sizeof r) _exit(3);
    _exit(0);
  }
  char b, start[MAX_PROCS];
  for (int k = 0; k < procs; k++)
    if (read(ready[0], &b, 1) != 1) exit(1);
  memset(start, 'g', sizeof start);
  if (write(go[1], start, (size_t)procs) != (ssize_t)procs) exit(1);
  double total = 0;
  for (int k = 0; k < procs; k++) {
    if (read(out[0], &res[k], sizeof res[k]) != (ssize_t)sizeof res[k]) {
      die("a process", "failed");
    }
    total += res[k].ops_per_s;
  }
  for (int k = 0; k < procs; k++)
    waitpid(pids[k], NULL, 0);
  close(ready[0]), close(ready[1]), close(go[0]), close(go[1]);
  close(out[0]), close(out[1]);
  drop_schema(uri);
  return total;
}

int main(int argc, char **argv) {
  double seconds = bu_arg_seconds(argc, argv, 5.0);
  int threads = 64, nt;
  int tdflt[] = {64};
  nt = bu_arg_threads(argc, argv, &threads, 1, tdflt, 1);
  (void)nt;
  int procs[8], pdflt[] = {1, 2, 4};
  int np = bu_arg_list(argc, argv, "--procs", procs, 8, pdflt, 3);
  const char *env = getenv("SC_BENCH_PG_URI");
  if (env != NULL && env[0] != '\0') base_uri = env;
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--uri") == 0) base_uri = argv[i + 1];
  PGconn *c = PQconnectdb(base_uri);
  if (PQstatus(c) != CONNECTION_OK) die("connect", PQerrorMessage(c));
  PGresult *r = PQexec(c, "SHOW fsync");
  printf("server %d, fsync=%s, synchronous_commit=", PQserverVersion(c),
         PQgetvalue(r, 0, 0));
  PQclear(r);
  r = PQexec(c, "SHOW synchronous_commit");
  printf("%s\n", PQgetvalue(r, 0, 0));
  PQclear(r);
  PQfinish(c);

  bu_print_header("coupon issuance on PostgreSQL, one handle vs plain");
  char uri[1024];
  run_uri(uri, sizeof uri, "lib");
  sc_id policy = setup(uri);
  bu_result a = run_lib(uri, policy, threads, seconds, 0);
  drop_schema(uri);
  run_uri(uri, sizeof uri, "plain");
  policy = setup(uri);
  bu_result b = run_plain(uri, policy, threads, seconds);
  bu_print(&b);
  drop_schema(uri);
  bu_print_ratio("group_commit_vs_plain", &a, &b);

  double one = 0;
  for (int i = 0; i < np; i++) {
    if (procs[i] < 1 || procs[i] > MAX_PROCS) continue;
    bu_result res[MAX_PROCS];
    double total = run_procs(procs[i], threads, seconds, res);
    if (procs[i] == 1) one = total;
    printf("%d process%s x %d callers: total %9.0f issues/s", procs[i],
           procs[i] == 1 ? "" : "es", threads, total);
    for (int k = 0; k < procs[i]; k++)
      printf("%s%.0f", k ? " + " : " (", res[k].ops_per_s);
    printf(")");
    if (one > 0) printf(" = %.2fx one process", total / one);
    printf("\n");
    printf(
        "BENCH_JSON {\"bench\":\"coupon_issue_pg_procs\",\"procs\":%d,"
        "\"threads\":%d,\"ops_per_s\":%.1f,\"vs_one_process\":%.3f}\n",
        procs[i], procs[i] * threads, total, one > 0 ? total / one : 0);
    fflush(stdout);
  }
  return 0;
}
