/* The shopcore command-line program: shared declarations. Every command is
 * a function taking its own argv (argv[0] is the command's name) and
 * returning the process exit status: 0 done, 1 the operation failed (or
 * verify found a violation), 2 bad usage. Errors are one line on stderr. */
#ifndef SC_CLI_H
#define SC_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "shopcore.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* ---- options (util.c) ---- */

typedef struct cli_opt {
  const char *name; /* "users" for --users */
  bool has_arg;
  const char *value; /* the argument, or "" for a flag that was given */
} cli_opt;

/* Parses argv[1..] into opts (by --name or --name=value) and positionals
 * (at most max_pos). "--help"/"-h" sets *help. Prints one line and returns
 * CLI_USAGE on an unknown option, a missing argument or too many
 * positionals. */
int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, int n_opts,
              const char **pos, int max_pos, int *n_pos, bool *help);
/* The option named name, or NULL if it was not given. */
const char *cli_get(const cli_opt *opts, int n_opts, const char *name);

/* Strict number parsing within [min, max]: prints one line and returns
 * CLI_USAGE on anything else. what names the value in the message. */
int cli_int64(const char *cmd, const char *what, const char *text, int64_t min,
              int64_t max, int64_t *out);
int cli_double(const char *cmd, const char *what, const char *text, double min,
               double max, double *out);

/* One-line error messages: "shopcore CMD: message". Return the status. */
int cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int cli_fail(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A library failure: "shopcore CMD: SC_NAME: detail"; returns CLI_FAILED. */
int cli_sc_fail(const char *cmd, int rc);

/* ---- times and JSON (util.c) ----
 * The program prints times as ISO 8601 in UTC ("2026-12-01T09:00:00.000Z");
 * behind --json they are the library's own numbers, milliseconds since the
 * epoch, in fields named *_ms. */
#define CLI_TIME_LEN 32
/* ms since the epoch as ISO 8601 UTC, in buf; returns buf. */
const char *cli_iso_time(int64_t ms, char buf[CLI_TIME_LEN]);
/* A point in time given either as milliseconds since the epoch
 * ("1764579600000") or as ISO 8601 ("2026-12-01", "2026-12-01T09:00",
 * "2026-12-01T09:00:00Z", "2026-12-01T09:00:00.250+01:00"; no zone means UTC),
 * within [min, max]. Prints one line and returns CLI_USAGE on anything else. */
int cli_time(const char *cmd, const char *what, const char *text, int64_t min,
             int64_t max, int64_t *out);
/* text as a JSON string, quoted and escaped. */
void cli_json_string(FILE *out, const char *text);

/* Whether path is a PostgreSQL URI (postgresql://, postgres://). */
bool cli_is_uri(const char *path);
/* Opens an existing database (refusing to create a file by accident; a
 * PostgreSQL URI's schema is created by sc_open); NULL after printing the
 * error. */
sc_db *cli_open_existing(const char *cmd, const char *path,
                         const sc_options *opts);

/* ---- a subcommand on one database (dbcmd.c) ----
 * Most subcommands share one shape: parse options and positionals, check
 * the numbers, open the database, make one library call, report, close.
 * cli_cmd_start and cli_cmd_end hold that shape, so a subcommand keeps only
 * its call and its output:
 *
 *   cli_cmd c;
 *   int rc = cli_cmd_start(&c, &SPEC, argc, argv);
 *   if (rc != CLI_OK) return CLI_DONE(rc);
 *   int src = sc_...(c.db, c.num[0]);
 *   if (src == SC_OK) printf(...);
 *   return cli_cmd_end(&c, src);
 *
 * A subcommand with checks of its own runs them between cli_cmd_parse and
 * cli_cmd_open, so bad input is refused before the database is opened. */

#define CLI_DEFAULT_DB "shop.db"
#define ID_MAX INT64_MAX
#define MONEY_MAX ((int64_t)1 << 53)
#define CLI_POS_MAX 2  /* positionals a subcommand takes at most */
#define CLI_OPTS_MAX 9 /* options a subcommand takes at most, --db included */

/* A positional argument: an integer within [min, max], named what in
 * messages; or, when what is NULL, text passed on as given. */
typedef struct cli_arg {
  const char *what;
  int64_t min, max;
} cli_arg;
/* A positive id named what: the usual positional. */
#define CLI_ID(what) \
  { what, 1, ID_MAX }

/* What a subcommand accepts. Every one also takes --db PATH, and --json
 * when json is set. */
typedef struct cli_spec {
  const char *cmd;   /* "product restock": names it in every message */
  const char *usage; /* "ID QTY": shown by --help and when one is missing */
  const char *help;  /* more lines for --help, or NULL */
  int n_pos;         /* exactly this many positionals */
  cli_arg pos[CLI_POS_MAX];
  /* Further options, each taking a value; a NULL (or the end) ends them. */
  const char *opts[CLI_OPTS_MAX - 2];
  bool json; /* takes the flag --json: print one JSON object */
} cli_spec;

/* One run of a subcommand: what cli_cmd_parse found, and the database
 * cli_cmd_open opened. */
typedef struct cli_cmd {
  const char *cmd; /* spec->cmd */
  cli_opt opts[CLI_OPTS_MAX];
  int n_opts;
  const char *pos[CLI_POS_MAX];
  int64_t num[CLI_POS_MAX]; /* pos[i] as a number, where spec->pos[i] is one */
  bool json;                /* --json was given */
  sc_db *db;
} cli_cmd;

/* Parses argv against spec: --db and spec's options, exactly spec->n_pos
 * positionals, the numeric ones checked in order. Returns CLI_OK,
 * CLI_USAGE after printing why, or -1 after printing the help (CLI_DONE
 * turns that into the exit status). */
int cli_cmd_parse(cli_cmd *c, const cli_spec *spec, int argc, char **argv);
#define CLI_DONE(rc) ((rc) < 0 ? CLI_OK : (rc))
/* Opens the existing database named by --db (or ./shop.db) into c->db:
 * CLI_OK, or CLI_FAILED after printing why. */
int cli_cmd_open(cli_cmd *c);
/* cli_cmd_parse, then cli_cmd_open: the start of most subcommands. */
int cli_cmd_start(cli_cmd *c, const cli_spec *spec, int argc, char **argv);
/* Ends a subcommand whose library call returned src: prints the failure,
 * if any, and closes c->db. Returns the exit status. */
int cli_cmd_end(cli_cmd *c, int src);
/* --db, or ./shop.db. */
const char *cli_db_path(const cli_opt *opts, int n);

/* ---- the commands ---- */

int cmd_simulate(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_repair(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_product(int argc, char **argv);
int cmd_coupon(int argc, char **argv);
int cmd_account(int argc, char **argv);
int cmd_order(int argc, char **argv);
int cmd_outbox(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_backup(int argc, char **argv);

/* A group of subcommands ("product add"): dispatches on argv[1]. */
typedef struct cli_sub {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *usage; /* "NAME --price P --stock N" */
  const char *summary;
} cli_sub;
int cli_dispatch(const char *group, const char *help, const cli_sub *subs,
                 int n_subs, int argc, char **argv);

#endif
