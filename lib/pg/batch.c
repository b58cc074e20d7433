/* A batch on PostgreSQL: one pipelined transaction. BEGIN, one function
 * call per operation, a row in the batch log, COMMIT and one Sync go out
 * together, so the batch costs one round trip and one commit however many
 * operations it holds. Each call returns its status as a value, so a
 * refusal never aborts the transaction. What does (an SQL error):
 * - a serialization failure or deadlock (40001, 40P01): the whole batch
 *   runs again;
 * - any other error of one call: that operation fails alone and the batch
 *   runs again without it (no savepoints: PostgreSQL caches only 64
 *   subtransactions per transaction, and past that every reader slows);
 * - a connection lost once the batch was sent: the outcome is unknown
 *   until the batch log answers on a new connection (found: committed; not
 *   found: run it again); when nothing can answer, SC_AMBIGUOUS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../metrics.h"
#include "pg.h"

#define RETRY_MAX 20
#define TRIM_EVERY 4096           /* batches between batch-log trims */
#define TRIM_AGE_MS (3600 * 1000) /* batch-log rows kept this long */

static const char LOG_NAME[] = "sc_batch_log";
static const char SQL_LOG[] =
    "INSERT INTO sc_batch_log(id, at_ms) VALUES($1, $2)";
static const char TRIM_NAME[] = "sc_batch_trim";
static const char SQL_TRIM[] = "DELETE FROM sc_batch_log WHERE at_ms < $1";
static const char SQL_LOOKUP[] = "SELECT 1 FROM sc_batch_log WHERE id = $1";

static const sc__op_pg *const CALLS[] = {
    &sc__pg_policy_create,  &sc__pg_policy_pause,    &sc__pg_coupon_issue,
    &sc__pg_product_create, &sc__pg_product_restock, &sc__pg_deposit,
    &sc__pg_checkout,       &sc__pg_order_pay,       &sc__pg_order_cancel,
    &sc__pg_orders_expire,  &sc__pg_expire_round,    &sc__pg_outbox_round,
    &sc__pg_outbox_event,   &sc__pg_requeue_all,     &sc__pg_purge,
};

/* ---- parameters ------------------------------------------------------------
 */

static void param_set(sc__pg_params *p, const char *v, int len, int fmt) {
  if (p->n >= SC__PG_PARAMS_MAX) return; /* a descriptor's bug: it fails */
  p->v[p->n] = v;
  p->len[p->n] = len;
  p->fmt[p->n] = fmt;
  p->n++;
}

void sc__pg_param_i64(sc__pg_params *p, int64_t v) {
  if (p->n >= SC__PG_PARAMS_MAX) return;
  snprintf(p->buf[p->n], sizeof p->buf[p->n], "%lld", (long long)v);
  param_set(p, p->buf[p->n], 0, 0);
}

void sc__pg_param_text(sc__pg_params *p, const char *s) {
  param_set(p, s, 0, 0);
}

void sc__pg_param_bytes(sc__pg_params *p, const void *b, size_t len) {
  param_set(p, b, (int)len, 1);
}

int sc__pg_param_i64_array(sc__pg_params *p, size_t n,
                           int64_t (*get)(size_t i, const void *ud),
                           const void *ud) {
  if (p->nowned == (int)(sizeof p->owned / sizeof *p->owned)) return SC_ERROR;
  char *s = sc__malloc(2 + 21 * (n + 1));
  if (s == NULL) return SC_NOMEM;
  p->owned[p->nowned++] = s;
  size_t o = 0;
  s[o++] = '{';
  for (size_t i = 0; i < n; i++)
    o += (size_t)sprintf(s + o, "%s%lld", i ? "," : "", (long long)get(i, ud));
  s[o++] = '}';
  s[o] = '\0';
  param_set(p, s, 0, 0);
  return SC_OK;
}

int sc__pg_param_text_array(sc__pg_params *p, size_t n,
                            const char *(*get)(size_t i, const void *ud,
                                               size_t *len),
                            const void *ud) {
  if (p->nowned == (int)(sizeof p->owned / sizeof *p->owned)) return SC_ERROR;
  size_t cap = 3;
  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    get(i, ud, &len);
    cap += 2 * len + 8; /* quotes, escapes, comma; or NULL */
  }
  char *s = sc__malloc(cap);
  if (s == NULL) return SC_NOMEM;
  p->owned[p->nowned++] = s;
  size_t o = 0;
  s[o++] = '{';
  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    const char *t = get(i, ud, &len);
    if (i > 0) s[o++] = ',';
    if (t == NULL) {
      memcpy(s + o, "NULL", 4);
      o += 4;
      continue;
    }
    s[o++] = '"';
    for (size_t k = 0; k < len && t[k] != '\0'; k++) {
      if (t[k] == '"' || t[k] == '\\') s[o++] = '\\';
      s[o++] = t[k];
    }
    s[o++] = '"';
  }
  s[o++] = '}';
  s[o] = '\0';
  param_set(p, s, 0, 0);
  return SC_OK;
}

void sc__pg_params_clear(sc__pg_params *p) {
  for (int i = 0; i < p->nowned; i++)
    sc__free(p->owned[i]);
  p->nowned = 0;
  p->n = 0;
}

int sc__pg_prepare(PGconn *c, char *why, size_t cap) {
  typedef struct stmt {
    const char *name, *sql;
  } stmt;
  stmt stmts[2 * (sizeof CALLS / sizeof *CALLS) + 3];
  size_t n = 0;
  for (size_t i = 0; i < sizeof CALLS / sizeof *CALLS; i++) {
    stmts[n++] = (stmt){CALLS[i]->name, CALLS[i]->sql};
    if (CALLS[i]->many_name != NULL) {
      stmts[n++] = (stmt){CALLS[i]->many_name, CALLS[i]->many_sql};
    }
  }
  stmts[n++] = (stmt){LOG_NAME, SQL_LOG};
  stmts[n++] = (stmt){TRIM_NAME, SQL_TRIM};
  stmts[n++] = (stmt){sc__pg_notify_name, sc__pg_notify_sql};
  for (size_t i = 0; i < n; i++) {
    PGresult *r = PQprepare(c, stmts[i].name, stmts[i].sql, 0, NULL);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
      snprintf(why, cap, "preparing %s: %s", stmts[i].name,
               PQresultErrorMessage(r));
    }
    PQclear(r);
    if (!ok) return SC_ERROR;
  }
  return SC_OK;
}

/* ---- one attempt -----------------------------------------------------------
 */

#define GROUP_MAX 1024 /* operations in one grouped call */

typedef enum {
  RUN_UNGROUP, /* a grouped call failed: run again, one call each */
  RUN_COMMITTED,
  RUN_RETRY,   /* serialization failure or deadlock: run it all again */
  RUN_CULPRIT, /* one call failed: it is excluded, run the others again */
  RUN_LOST,    /* the connection broke once the batch was sent */
  RUN_FAILED   /* BEGIN or COMMIT failed otherwise: the batch fails */
} run_outcome;

typedef struct attempt {
  sc__op **ops;
  int n;
  int64_t batch_id, now;
  const char *notify; /* the NOTIFY's payload; NULL = none (notify.c) */
  int status;         /* RUN_FAILED's */
  char why[SC__ERRMSG_MAX];
  bool all_decoded; /* every sent call's row was read */
  bool no_groups;   /* after a grouped call failed: one call per op */
  int *group;       /* group[i] > 1: ops[i..i+group[i]) went as one call */
  int ndecoded;     /* ops[0, ndecoded) sent had their rows read */
} attempt;

static void set_why(attempt *a, const char *what, const char *msg) {
  snprintf(a->why, sizeof a->why, "%s: %s", what, msg ? msg : "");
  size_t n = strlen(a->why);
  while (n > 0 && a->why[n - 1] == '\n')
    a->why[--n] = '\0';
}

static bool send_plain(PGconn *c, const char *sql) {
  return PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
}

static bool send_prepared(PGconn *c, const char *name, const sc__pg_params *p) {
  return PQsendQueryPrepared(c, name, p->n, p->v, p->len, p->fmt, 0) == 1;
}

/* How many operations from ops[i] go as one call: those side by side that
 * share a grouping descriptor and a lock key. */
static int group_len(const attempt *a, int i) {
  const sc__op_pg *d = a->ops[i]->pg;
  if (a->no_groups || d->many_name == NULL) return 1;
  int64_t key = d->lock_key(a->ops[i]);
  int n = 1;
  while (i + n < a->n && n < GROUP_MAX && a->ops[i + n]->pg == d &&
         !a->ops[i + n]->excluded && d->lock_key(a->ops[i + n]) == key) {
    n++;
  }
  return n;
}

/* Moves each operation that goes in a grouped call (an issue) up beside the
 * batch's first one of its kind and key, so that one call answers them
 * all: two calls of a policy in one transaction can each wait on another
 * host's batch, and two such batches can wait on each other in a cycle
 * (schema.c, version 3). The outcomes stay those of submission order: no
 * operation between them can rest on an issue of the same batch (a
 * coupon's id is known only once its batch has committed), and a pause of
 * that policy ends the gathering. Only the next GROUP_MAX operations are
 * looked at, so that a batch of any size costs linear time. outer moves
 * with ops. */
static void gather_groups(sc__op **ops, sc__op **outer, int n) {
  for (int i = 0; i < n; i++) {
    const sc__op_pg *d = ops[i]->pg;
    if (ops[i]->excluded || d == NULL || d->many_name == NULL) continue;
    int64_t key = d->lock_key(ops[i]);
    int end = i + 1; /* ops[i, end) is the group so far */
    for (int j = i + 1; j < n && j - i < GROUP_MAX; j++) {
      const sc__op_pg *e = ops[j]->pg;
      if (ops[j]->excluded || (e != d && e != &sc__pg_policy_pause) ||
          e->lock_key(ops[j]) != key) {
        continue;
      }
      if (e != d) break; /* a pause of the policy */
      sc__op *op = ops[j], *out = outer[j];
      memmove(ops + end + 1, ops + end, (size_t)(j - end) * sizeof *ops);
      memmove(outer + end + 1, outer + end, (size_t)(j - end) * sizeof *outer);
      ops[end] = op;
      outer[end] = out;
      end++;
    }
    i = end - 1;
  }
}

/* Sends the whole batch; false if the connection refused it. */
static bool send_batch(sc_db *db, attempt *a, bool trim) {
  PGconn *c = db->pg->w;
  /* Said explicitly: the functions count on READ COMMITTED's re-read of
   * a row they waited for, whatever default_transaction_isolation is. */
  bool ok = send_plain(c, "BEGIN ISOLATION LEVEL READ COMMITTED");
  sc__pg_params p = {0};
  if (ok && trim) {
    sc__pg_param_i64(&p, a->now - TRIM_AGE_MS);
    ok = send_prepared(c, TRIM_NAME, &p);
    sc__pg_params_clear(&p);
  }
  for (int i = 0; ok && i < a->n; i++) {
    sc__op *op = a->ops[i];
    a->group[i] = 0;
    if (op->excluded) continue;
    int len = group_len(a, i);
    if (len > 1) {
      int rc = op->pg->encode_many(db, a->ops + i, len, a->now, &p);
      if (rc != SC_OK) {
        len = 1; /* one call each: the one that cannot encode fails alone */
      } else {
        ok = send_prepared(c, op->pg->many_name, &p);
        a->group[i] = len;
        i += len - 1;
        sc__pg_params_clear(&p);
        continue;
      }
      sc__pg_params_clear(&p);
    }
    int rc = op->pg->encode(db, op, a->now, &p);
    if (rc == SC_OK && p.n > SC__PG_PARAMS_MAX - 1) rc = SC_ERROR;
    if (rc != SC_OK) {
      /* Never sent, so it changes nothing: it fails alone. */
      op->excluded = true;
      op->status =
          sc__op_fail(op, rc, "%s: cannot encode the call", op->pg->name);
    } else {
      ok = send_prepared(c, op->pg->name, &p);
    }
    sc__pg_params_clear(&p);
  }
  if (ok) {
    sc__pg_param_i64(&p, a->batch_id);
    sc__pg_param_i64(&p, a->now);
    ok = send_prepared(c, LOG_NAME, &p);
    sc__pg_params_clear(&p);
  }
  if (ok && a->notify != NULL) {
    sc__pg_param_text(&p, db->pg->channel);
    sc__pg_param_text(&p, a->notify);
    ok = send_prepared(c, sc__pg_notify_name, &p);
    sc__pg_params_clear(&p);
  }
  ok = ok && send_plain(c, "COMMIT") && PQpipelineSync(c) == 1 &&
       PQflush(c) == 0;
  if (!ok) set_why(a, "sending the batch", PQerrorMessage(c));
  return ok;
}

PGresult *sc__pg_next_result(PGconn *c) {
  PGresult *r = PQgetResult(c);
  if (r == NULL) return NULL;
  if (PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
    PGresult *end = PQgetResult(c);
    if (end != NULL) { /* never: one result per query */
      PQclear(end);
    }
  }
  return r;
}

int64_t sc__pg_col(const PGresult *r, int col) {
  return PQgetisnull(r, 0, col) ? 0 : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

/* Reads a call's row into its operation. */
static void decode_call(sc_db *db, sc__op *op, const PGresult *r) {
  int st = atoi(PQgetvalue(r, 0, 0));
  if (st != SC_OK) {
    op->status = sc__op_fail(op, st, "%s", PQgetvalue(r, 0, 1));
    return;
  }
  op->status = SC_OK;
  if (op->pg->decode != NULL) op->pg->decode(db, op, r);
  db->batch_events += atoi(PQgetvalue(r, 0, 3));
}

/* Whether a failed result asks for the whole batch again: a serialization
 * failure, a deadlock, or (not a call's) a batch id already logged. */
static bool retryable(const PGresult *r, bool is_call) {
  const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  return s != NULL && (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0 ||
                       (!is_call && strcmp(s, "23505") == 0));
}

/* Whether a failed result says the connection is gone (the backend was
 * terminated, the network cut) rather than that a call failed: the batch
 * may then have committed, so no call is to blame until the batch log
 * answers. */
static bool conn_lost(PGconn *c, const PGresult *r) {
  if (PQstatus(c) == CONNECTION_BAD) return true;
  const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  return s == NULL || strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 ||
         strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0;
}

/* Reads one result: the first failure decides the outcome. */
typedef struct reader {
  attempt *a;
  run_outcome outcome;
  bool failed, committed;
} reader;

static bool read_step(sc_db *db, reader *rd, sc__op *op, bool is_commit) {
  PGresult *r = sc__pg_next_result(db->pg->w);
  if (r == NULL) return false;
  ExecStatusType s = PQresultStatus(r);
  if (s == PGRES_FATAL_ERROR && !rd->failed) {
    rd->failed = true;
    if (conn_lost(db->pg->w, r)) {
      rd->outcome = RUN_LOST;
      PQclear(r);
      return false;
    } else if (retryable(r, op != NULL)) {
      rd->outcome = RUN_RETRY;
      set_why(rd->a, "batch", PQresultErrorMessage(r));
    } else if (op != NULL) {
      /* This call's own error: it fails alone, the others go again. */
      rd->outcome = RUN_CULPRIT;
      op->excluded = true;
      char msg[SC__ERRMSG_MAX];
      snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
      msg[strcspn(msg, "\n")] = '\0';
      op->status =
          sc__op_fail(op, sc__pg_status(r), "%s: %s", op->pg->name, msg);
    } else {
      rd->outcome = RUN_FAILED;
      rd->a->status = sc__pg_status(r);
      set_why(rd->a, is_commit ? "commit" : "batch", PQresultErrorMessage(r));
    }
  } else if (s == PGRES_TUPLES_OK && op != NULL && !rd->failed) {
    decode_call(db, op, r);
  } else if (s == PGRES_COMMAND_OK && is_commit && !rd->failed) {
    rd->committed = true;
  }
  PQclear(r);
  return true;
}

/* Reads a grouped call's rows, one per operation, in order. A failure of
 * the call runs the batch again with one call per operation, to find the
 * one at fault. */
static bool read_group(sc_db *db, reader *rd, sc__op **ops, int n) {
  PGresult *r = sc__pg_next_result(db->pg->w);
  if (r == NULL) return false;
  ExecStatusType s = PQresultStatus(r);
  if (s == PGRES_FATAL_ERROR && !rd->failed) {
    rd->failed = true;
    rd->outcome = retryable(r, false) ? RUN_RETRY : RUN_UNGROUP;
    set_why(rd->a, "batch", PQresultErrorMessage(r));
  } else if (s == PGRES_TUPLES_OK && !rd->failed && PQntuples(r) == n) {
    for (int k = 0; k < n; k++) {
      int st = atoi(PQgetvalue(r, k, 0));
      if (st != SC_OK) {
        ops[k]->status = sc__op_fail(ops[k], st, "%s", PQgetvalue(r, k, 1));
        continue;
      }
      ops[k]->status = SC_OK;
      ops[k]->pg->decode_row(ops[k], r, k);
      db->batch_events += atoi(PQgetvalue(r, k, 3));
    }
  } else if (s == PGRES_TUPLES_OK && !rd->failed) {
    rd->failed = true; /* a bug: every operation needs its row */
    rd->outcome = RUN_UNGROUP;
    set_why(rd->a, "batch", "a grouped call answered the wrong row count");
  }
  PQclear(r);
  return true;
}

static run_outcome read_batch(sc_db *db, attempt *a, bool trim) {
  reader rd = {.a = a, .outcome = RUN_COMMITTED};
  bool ok = read_step(db, &rd, NULL, false); /* BEGIN */
  if (ok && trim) ok = read_step(db, &rd, NULL, false);
  for (int i = 0; ok && i < a->n; i++) {
    if (a->group[i] > 1) {
      ok = read_group(db, &rd, a->ops + i, a->group[i]);
      i += a->group[i] - 1;
    } else if (!a->ops[i]->excluded) {
      ok = read_step(db, &rd, a->ops[i], false);
    }
    if (ok && !rd.failed) a->ndecoded = i + 1;
  }
  if (ok) a->all_decoded = !rd.failed;
  if (ok) ok = read_step(db, &rd, NULL, false); /* the batch log */
  if (ok && a->notify != NULL) ok = read_step(db, &rd, NULL, false);
  if (ok) ok = read_step(db, &rd, NULL, true); /* COMMIT */
  PGresult *sync = ok ? PQgetResult(db->pg->w) : NULL;
  ok = sync != NULL && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
  PQclear(sync);
  if (!ok) {
    set_why(a, "connection lost", PQerrorMessage(db->pg->w));
    return rd.committed ? RUN_COMMITTED : RUN_LOST;
  }
  if (PQtransactionStatus(db->pg->w) != PQTRANS_IDLE) {
    /* The failed transaction is still open: end it. */
    if (send_plain(db->pg->w, "ROLLBACK") && PQpipelineSync(db->pg->w) == 1) {
      PQclear(sc__pg_next_result(db->pg->w));
      PQclear(PQgetResult(db->pg->w));
    }
  }
  if (rd.outcome == RUN_COMMITTED && !rd.committed) {
    a->status = SC_ERROR;
    set_why(a, "commit", "no answer to COMMIT");
    return RUN_FAILED;
  }
  return rd.outcome;
}

/* ---- after a lost connection ------------------------------------------------
 */

/* Whether the batch committed, asked on a new connection once the old
 * backend is gone (it could otherwise still commit after the look-up).
 * 1 committed, 0 not, -1 unknown. */
static int lookup(sc_db *db, int old_pid, const char *old_start,
                  int64_t batch_id, int64_t deadline) {
  char why[SC__ERRMSG_MAX];
  while (sc__monotonic_ns() < deadline) {
    PGconn *c = sc__pg_connect_until(db, deadline, why, sizeof why);
    if (c == NULL) {
      sc__sleep_ms(50);
      continue;
    }
    char pid[24], id[24];
    snprintf(pid, sizeof pid, "%d", old_pid);
    snprintf(id, sizeof id, "%lld", (long long)batch_id);
    const char *pv[] = {pid, old_start}, *iv[] = {id};
    int answer = -1;
    for (int gone = 0; !gone && sc__monotonic_ns() < deadline;) {
      PGresult *r =
          PQexecParams(c,
                       "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE pid = $1::int AND backend_start::text = $2"
                       " AND pid <> pg_backend_pid()",
                       2, NULL, pv, NULL, NULL, 0);
      if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        break;
      }
      gone = PQntuples(r) == 0;
      PQclear(r);
      if (!gone) sc__sleep_ms(10);
      if (gone) {
        r = PQexecParams(c, SQL_LOOKUP, 1, NULL, iv, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) answer = PQntuples(r) > 0;
        PQclear(r);
      }
    }
    PQfinish(c);
    if (answer >= 0) return answer;
    sc__sleep_ms(50);
  }
  return -1;
}

/* ---- the batch -------------------------------------------------------------
 */

static void fail_rest(attempt *a, int status, const char *why,
                      const char *tail) {
  for (int i = 0; i < a->n; i++) {
    sc__op *op = a->ops[i];
    if (op->excluded) continue;
    op->status = sc__op_fail(op, status, "%s%s", why, tail);
  }
}

/* The batch committed but the connection broke before every row was
 * read: the calls whose rows were read keep their status, the others
 * did something nobody saw. */
static void fail_unread(attempt *a) {
  for (int i = a->ndecoded; i < a->n; i++) {
    sc__op *op = a->ops[i];
    if (op->excluded) continue;
    op->status = sc__op_fail(op, SC_AMBIGUOUS,
                             "%s: the batch committed but this operation's "
                             "result was lost; read first, or retry with the "
                             "same idempotency key",
                             a->why);
  }
}

static bool reconnect(sc_db *db, int64_t deadline, char *why, size_t cap) {
  for (;;) {
    if (sc__monotonic_ns() >= deadline) {
      if (why[0] == '\0') snprintf(why, cap, "the busy timeout passed");
      return false;
    }
    if (sc__pg_writer_connect(db, deadline, why, cap) == SC_OK) return true;
    sc__sleep_ms(50);
  }
}

static bool any_left(const attempt *a) {
  for (int i = 0; i < a->n; i++)
    if (!a->ops[i]->excluded) return true;
  return false;
}

static void committed(sc_db *db, const attempt *a) {
  db->pg->batches++;
  if (a->notify != NULL) sc__pg_notified(db, a->notify);
}

static bool run_attempts(sc_db *db, attempt *a) {
  sc__pg *pg = db->pg;
  int64_t deadline =
      sc__monotonic_ns() + (int64_t)db->opts.busy_timeout_ms * 1000000;
  for (int tries = 0;; tries++) {
    db->batch_events = 0;
    if (!any_left(a)) return false;
    for (int i = 0; i < a->n; i++) {
      if (!a->ops[i]->excluded) {
        a->ops[i]->status = SC_OK;
        a->ops[i]->errmsg[0] = '\0';
      }
    }
    char why[SC__ERRMSG_MAX] = "";
    if ((pg->w == NULL || PQstatus(pg->w) != CONNECTION_OK) &&
        !reconnect(db, deadline, why, sizeof why)) {
      fail_rest(a, SC_IOERR, why,
                " (PostgreSQL unreachable; the operation was not committed)");
      return false;
    }
    /* Reset before sending: should the send fail, an earlier attempt's
     * (rolled back) results must not count as this one's. */
    a->all_decoded = false;
    a->ndecoded = 0;
    a->batch_id = pg->batch_base + ++pg->batch_seq;
    bool trim = pg->batches % TRIM_EVERY == TRIM_EVERY - 1;
    a->notify = sc__pg_notify_payload(db, a->ops, a->n);
    int pid = PQbackendPID(pg->w);
    char start[sizeof pg->wstart];
    memcpy(start, pg->wstart, sizeof start);
    run_outcome o =
        send_batch(db, a, trim) ? read_batch(db, a, trim) : RUN_LOST;
    if (o == RUN_LOST) {
      int found = lookup(db, pid, start, a->batch_id, deadline);
      PQfinish(pg->w);
      pg->w = NULL;
      if (found == 1 && a->all_decoded) o = RUN_COMMITTED;
      if (found == 1 && !a->all_decoded) {
        fail_unread(a);
        committed(db, a);
        return true;
      }
      if (found < 0) {
        fail_rest(a, SC_AMBIGUOUS, a->why,
                  ": the outcome is unknown (it may or may not be durable); "
                  "retry with the same idempotency key, or read first");
        return false;
      }
      if (found == 0 && sc__monotonic_ns() < deadline) continue; /* again */
      if (found == 0) {
        fail_rest(a, SC_IOERR, a->why,
                  " (the connection was lost, and the busy timeout passed; "
                  "the operation was not committed)");
        return false;
      }
    }
    switch (o) {
      case RUN_COMMITTED:
        committed(db, a);
        return true;
      case RUN_CULPRIT:
        if (sc__monotonic_ns() < deadline) continue;
        fail_rest(a, SC_BUSY, a->why,
                  " (another operation of the batch failed and the busy "
                  "timeout passed; not committed)");
        return false;
      case RUN_UNGROUP:
        a->no_groups = true;
        continue;
      case RUN_RETRY:
        if (tries < RETRY_MAX && sc__monotonic_ns() < deadline) {
          sc__sleep_ms(tries < 3 ? 0
                                 : 1 + rand() % (1 << (tries < 8 ? tries : 8)));
          continue;
        }
        fail_rest(a, SC_BUSY, a->why, " (retried; not committed)");
        return false;
      default:
        /* PostgreSQL checks the NOTIFY queue's room at COMMIT: a full
         * queue ("too many notifications", 54000) fails the commit. The
         * notification only speeds up other hosts, so the batch runs again
         * without it, and the handle keeps quiet for a while. */
        if (a->notify != NULL && sc__monotonic_ns() < deadline) {
          sc__pg_notify_failed(db);
          continue;
        }
        fail_rest(a, a->status, a->why, " (the operation was not committed)");
        return false;
    }
  }
}

bool sc__pg_run_batch(sc_db *db, sc__op *batch, int n) {
  /* The operations the batch runs (ops: a wrapper's inner one in its
   * place, outer: the one submitted), and the calls that went as one. */
  sc__op **ops = sc__calloc((size_t)n, sizeof *ops);
  sc__op **outer = sc__calloc((size_t)n, sizeof *outer);
  int *group = sc__calloc((size_t)n, sizeof *group);
  if (ops == NULL || outer == NULL || group == NULL) {
    sc__free(ops);
    sc__free(outer);
    sc__free(group);
    for (sc__op *op = batch; op != NULL; op = op->next)
      op->status = sc__op_fail(op, SC_NOMEM, "out of memory (not committed)");
    return false;
  }
  int k = 0;
  for (sc__op *op = batch; op != NULL && k < n; op = op->next) {
    sc__op *run = op;
    int st = SC_OK;
    if (op->pg != NULL && op->pg->unwrap != NULL) {
      run = op->pg->unwrap(op, &st);
      if (run == NULL) run = op;
    }
    run->excluded = st != SC_OK || run->pg == NULL || run->pg->alone != NULL;
    if (st == SC_OK && run->pg == NULL) {
      run->status =
          sc__op_fail(run, SC_MISUSE, "%s is not supported on PostgreSQL yet",
                      sc__op_kind_name(run->kind));
    }
    outer[k] = op;
    ops[k++] = run;
  }
  /* In submission order, as on SQLite: sorting the calls by the row they
   * lock changed outcomes (a deposit sorted before the checkout submitted
   * ahead of it). A deadlock with another host's batch is retried. Only a
   * policy's issues are gathered into one call, which changes no outcome
   * (gather_groups). */
  gather_groups(ops, outer, k);
  attempt a = {.ops = ops, .n = k, .now = sc__now_ms(db), .group = group};
  bool committed = run_attempts(db, &a);
  sc__free(group);
  for (int i = 0; i < k; i++) {
    if (ops[i]->pg != NULL && ops[i]->pg->alone != NULL) {
      ops[i]->status = ops[i]->pg->alone(db, ops[i]);
    }
  }
  /* Wrappers take their inner operation's outcome. */
  for (int i = 0; i < k; i++) {
    if (ops[i] == outer[i]) continue;
    outer[i]->status = ops[i]->status;
    memcpy(outer[i]->errmsg, ops[i]->errmsg, sizeof outer[i]->errmsg);
  }
  sc__free(outer);
  sc__free(ops);
  if (!committed) db->batch_events = 0;
  return committed;
}
