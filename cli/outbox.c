/* shopcore outbox: the transactional outbox from an operator's side: how
 * many events wait, which are dead (failed every delivery), requeueing
 * them once the consumer is fixed, and purging delivered ones. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char OUTBOX_HELP[] =
    "shopcore outbox: event delivery\n"
    "The outbox is a table of events (order created, paid, ...) written in "
    "the same\ntransaction as the change they describe, so none is lost or "
    "invented; a\nconsumer (the worker, or sc_outbox_claim) delivers them "
    "and acknowledges each.\nAn event whose delivery failed every retry is "
    "dead: kept, not delivered again,\nuntil it is requeued (made pending "
    "again).";

static int outbox_list(int argc, char **argv) {
  static const cli_spec SPEC = {
      .cmd = "outbox list", .usage = "[--json]", .json = true};
  cli_cmd c;
  int rc = cli_cmd_start(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_outbox_stats s;
  int src = sc_outbox_stats_get(c.db, &s);
  if (src == SC_OK && c.json) {
    printf("{\"pending\": %lld, \"dead\": %lld, \"oldest_pending_ms\": ",
           (long long)s.pending, (long long)s.dead);
    if (s.pending > 0) {
      printf("%lld}\n", (long long)s.oldest_pending_ms);
    } else {
      printf("null}\n");
    }
  } else if (src == SC_OK) {
    printf("outbox: %lld pending, %lld dead", (long long)s.pending,
           (long long)s.dead);
    if (s.pending > 0) {
      char at[CLI_TIME_LEN];
      printf(", oldest pending created at %s",
             cli_iso_time(s.oldest_pending_ms, at));
    }
    printf("\n");
  }
  return cli_cmd_end(&c, src);
}

static void print_dead(const sc_dead_event *d) {
  const sc_event *e = &d->event;
  char at[CLI_TIME_LEN];
  printf(
      "event %lld: %s, aggregate %lld seq %lld, created at %s, %d "
      "attempt(s), last error: %s\n",
      (long long)e->id, sc_event_type_name(e->type), (long long)e->aggregate_id,
      (long long)e->seq, cli_iso_time(e->created_at_ms, at), e->attempts,
      d->last_error[0] ? d->last_error : "(none)");
}

/* One dead event as a JSON object, an element of "events". */
static void print_dead_json(const sc_dead_event *d, bool first) {
  const sc_event *e = &d->event;
  printf(
      "%s{\"id\": %lld, \"type\": \"%s\", \"aggregate_id\": %lld, "
      "\"seq\": %lld, \"created_at_ms\": %lld, \"attempts\": %d, "
      "\"last_error\": ",
      first ? "" : ", ", (long long)e->id, sc_event_type_name(e->type),
      (long long)e->aggregate_id, (long long)e->seq,
      (long long)e->created_at_ms, e->attempts);
  cli_json_string(stdout, d->last_error);
  printf("}");
}

/* --after and --limit, both optional, within what sc_outbox_dead_list
 * accepts. */
static int dead_range(const cli_cmd *c, int64_t *after, int64_t *limit) {
  const char *a = cli_get(c->opts, c->n_opts, "after");
  const char *l = cli_get(c->opts, c->n_opts, "limit");
  int rc = a ? cli_int64(c->cmd, "--after", a, 0, ID_MAX, after) : CLI_OK;
  if (rc == CLI_OK && l) {
    rc = cli_int64(c->cmd, "--limit", l, 1, SC_OUTBOX_CLAIM_MAX, limit);
  }
  return rc;
}

static int outbox_dead(int argc, char **argv) {
  static const cli_spec SPEC = {.cmd = "outbox dead",
                                .usage = "[--after ID] [--limit N] [--json]",
                                .opts = {"after", "limit"},
                                .json = true};
  cli_cmd c;
  int64_t after = 0, limit = 100;
  int rc = cli_cmd_parse(&c, &SPEC, argc, argv);
  if (rc == CLI_OK) rc = dead_range(&c, &after, &limit);
  if (rc == CLI_OK) rc = cli_cmd_open(&c);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_dead_event *events = NULL;
  int n = 0;
  int src = sc_outbox_dead_list(c.db, after, (int)limit, &events, &n);
  if (src == SC_OK && c.json) {
    printf("{\"events\": [");
    for (int i = 0; i < n; i++)
      print_dead_json(&events[i], i == 0);
    printf("]}\n");
  } else if (src == SC_OK) {
    for (int i = 0; i < n; i++)
      print_dead(&events[i]);
    printf("%d dead event(s)\n", n);
  }
  sc_dead_events_free(events, n);
  return cli_cmd_end(&c, src);
}

static int outbox_requeue(int argc, char **argv) {
  const char *cmd = "outbox requeue";
  cli_opt opts[] = {{"db", true, NULL}, {"all", false, NULL}};
  const char *pos[1] = {NULL};
  int n_pos = 0;
  bool help = false;
  int rc = cli_parse(cmd, argc, argv, opts, 2, pos, 1, &n_pos, &help);
  if (rc != CLI_OK) return rc;
  bool all = cli_get(opts, 2, "all") != NULL;
  if (help) {
    printf(
        "usage: shopcore outbox requeue ID | --all [--db PATH]\n"
        "Makes a dead event (or every one) pending again.\n");
    return CLI_OK;
  }
  if (all == (n_pos == 1)) return cli_usage(cmd, "give either ID or --all");
  int64_t id = 0;
  if (!all && (rc = cli_int64(cmd, "ID", pos[0], 1, ID_MAX, &id))) return rc;
  sc_db *db = cli_open_existing(cmd, cli_db_path(opts, 2), NULL);
  if (db == NULL) return CLI_FAILED;
  int n = 1;
  int src = all ? sc_outbox_requeue_all(db, &n) : sc_outbox_requeue(db, id);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail(cmd, src);
  if (rc == CLI_OK) printf("requeued %d event(s)\n", n);
  sc_close(db);
  return rc;
}

/* --before: a time (ms since the epoch or ISO 8601), or an age with a
 * unit (500ms, 30s, 15m, 12h, 7d) counted back from now. */
static int purge_cutoff(const char *cmd, const char *text, int64_t *out) {
  static const struct {
    const char *unit;
    int64_t ms;
  } UNITS[] = {
      {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000LL}};
  size_t len = strlen(text);
  for (size_t u = 0; u < sizeof UNITS / sizeof *UNITS; u++) {
    size_t ul = strlen(UNITS[u].unit);
    if (len <= ul || strcmp(text + len - ul, UNITS[u].unit) != 0) continue;
    char num[32];
    if (len - ul >= sizeof num) break;
    memcpy(num, text, len - ul);
    num[len - ul] = '\0';
    int64_t n;
    int rc = cli_int64(cmd, "--before", num, 0, INT64_MAX / UNITS[u].ms, &n);
    if (rc != CLI_OK) return rc;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *out = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - n * UNITS[u].ms;
    return CLI_OK;
  }
  return cli_time(cmd, "--before", text, 0, INT64_MAX, out);
}

static int outbox_purge(int argc, char **argv) {
  static const cli_spec SPEC = {.cmd = "outbox purge",
                                .usage = "--before TIME|AGE [--json]",
                                .help =
                                    "  --before    ISO 8601 "
                                    "(2026-12-01T09:00:00Z), ms since the "
                                    "epoch,\n              or an age: 7d, "
                                    "12h, 30m, 45s, 500ms\n",
                                .opts = {"before"},
                                .json = true};
  cli_cmd c;
  int rc = cli_cmd_parse(&c, &SPEC, argc, argv);
  if (rc != CLI_OK) return CLI_DONE(rc);
  const char *before = cli_get(c.opts, c.n_opts, "before");
  if (before == NULL) {
    return cli_usage(c.cmd,
                     "give --before: an ISO 8601 time, ms since the epoch, "
                     "or an age such as 7d, 12h, 30m, 45s, 500ms");
  }
  int64_t cutoff = 0;
  rc = purge_cutoff(c.cmd, before, &cutoff);
  if (rc == CLI_OK) rc = cli_cmd_open(&c);
  if (rc != CLI_OK) return rc;
  int64_t purged = 0;
  int src = sc_outbox_purge(c.db, cutoff, &purged);
  if (src == SC_OK && c.json) {
    printf("{\"purged\": %lld, \"before_ms\": %lld}\n", (long long)purged,
           (long long)cutoff);
  } else if (src == SC_OK) {
    char at[CLI_TIME_LEN];
    printf("purged %lld delivered event(s) acked before %s\n",
           (long long)purged, cli_iso_time(cutoff, at));
  }
  return cli_cmd_end(&c, src);
}

int cmd_outbox(int argc, char **argv) {
  static const cli_sub SUBS[] = {
      {"list", outbox_list, "[--json] [--db PATH]",
       "counts pending and dead events"},
      {"dead", outbox_dead, "[--after ID] [--limit N] [--json] [--db PATH]",
       "lists dead events with their last error"},
      {"requeue", outbox_requeue, "ID | --all [--db PATH]",
       "makes dead events pending again (after the consumer is fixed)"},
      {"purge", outbox_purge, "--before TIME|AGE [--json] [--db PATH]",
       "removes delivered events acked before then"},
  };
  return cli_dispatch("outbox", OUTBOX_HELP, SUBS, 4, argc, argv);
}
