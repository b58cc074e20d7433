/* The shopcore command-line program: shared declarations. Every command is
 * a function taking its own argv (argv[0] is the command's name) and
 * returning the process exit status: 0 done, 1 the operation failed (or
 * verify found a violation), 2 bad usage. Errors are one line on stderr. */
#ifndef SC_CLI_H
#define SC_CLI_H

#include <stdbool.h>
#include <stdint.h>

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

/* Opens an existing database (refusing to create one by accident); NULL
 * after printing the error. */
sc_db *cli_open_existing(const char *cmd, const char *path,
                         const sc_options *opts);

/* ---- administration commands (util.c) ---- */

#define CLI_DEFAULT_DB "shop.db"
#define ID_MAX INT64_MAX
#define MONEY_MAX ((int64_t)1 << 53)
/* Parses a subcommand's options (which include {"db", true}) and exactly
 * want_pos positionals; returns CLI_OK, CLI_USAGE, or -1 when --help was
 * printed (CLI_DONE turns that into the exit status). */
int cli_parse_sub(const char *cmd, const char *usage, int argc, char **argv,
                  cli_opt *opts, int n_opts, const char **pos, int want_pos);
#define CLI_DONE(rc) ((rc) < 0 ? CLI_OK : (rc))
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
