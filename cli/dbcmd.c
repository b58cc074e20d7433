/* A subcommand on one database: the shape most subcommands share (parse,
 * check the numbers, open, call the library, report, close), so that each
 * keeps only its own call and output. Every check runs before the database
 * is opened, so bad input changes nothing. */
#include <stdio.h>

#include "cli.h"

/* Parses the options and exactly spec->n_pos positionals; returns CLI_OK,
 * CLI_USAGE, or -1 when --help was printed. */
static int parse_sub(const cli_spec *spec, int argc, char **argv, cli_opt *opts,
                     int n_opts, const char **pos) {
  const char *cmd = spec->cmd, *usage = spec->usage;
  int want_pos = spec->n_pos;
  int n_pos = 0;
  bool help = false;
  int rc =
      cli_parse(cmd, argc, argv, opts, n_opts, pos, want_pos, &n_pos, &help);
  if (rc != CLI_OK) return rc;
  if (help) {
    printf(
        "usage: shopcore %s %s\n  --db PATH   the database (default "
        "./" CLI_DEFAULT_DB ")\n",
        cmd, usage);
    if (spec->json) {
      printf(
          "  --json      print one JSON object (times in ms since the "
          "epoch)\n");
    }
    if (spec->help) fputs(spec->help, stdout);
    return -1;
  }
  if (n_pos < want_pos) {
    return cli_usage(cmd, "missing arguments: %s (see --help)", usage);
  }
  return CLI_OK;
}

/* --db first, then spec's options, then --json if spec takes it:
 * cli_parse fills in their values. */
static void init_opts(cli_cmd *c, const cli_spec *spec) {
  c->opts[0] = (cli_opt){"db", true, NULL};
  c->n_opts = 1;
  for (int i = 0; i < CLI_OPTS_MAX - 2 && spec->opts[i]; i++) {
    c->opts[c->n_opts++] = (cli_opt){spec->opts[i], true, NULL};
  }
  if (spec->json) c->opts[c->n_opts++] = (cli_opt){"json", false, NULL};
}

int cli_cmd_parse(cli_cmd *c, const cli_spec *spec, int argc, char **argv) {
  *c = (cli_cmd){.cmd = spec->cmd};
  init_opts(c, spec);
  int rc = parse_sub(spec, argc, argv, c->opts, c->n_opts, c->pos);
  c->json = cli_get(c->opts, c->n_opts, "json") != NULL;
  for (int i = 0; rc == CLI_OK && i < spec->n_pos; i++) {
    const cli_arg *a = &spec->pos[i];
    if (a->what) {
      rc = cli_int64(c->cmd, a->what, c->pos[i], a->min, a->max, &c->num[i]);
    }
  }
  return rc;
}

int cli_cmd_open(cli_cmd *c) {
  c->db = cli_open_existing(c->cmd, cli_db_path(c->opts, c->n_opts), NULL);
  return c->db ? CLI_OK : CLI_FAILED;
}

int cli_cmd_start(cli_cmd *c, const cli_spec *spec, int argc, char **argv) {
  int rc = cli_cmd_parse(c, spec, argc, argv);
  return rc == CLI_OK ? cli_cmd_open(c) : rc;
}

int cli_cmd_end(cli_cmd *c, int src) {
  /* The failure is reported before closing: sc_errmsg holds the detail of
   * this thread's last failure, which sc_close could replace. */
  int rc = src == SC_OK ? CLI_OK : cli_sc_fail(c->cmd, src);
  sc_close(c->db);
  c->db = NULL;
  return rc;
}

const char *cli_db_path(const cli_opt *opts, int n) {
  const char *p = cli_get(opts, n, "db");
  return p ? p : CLI_DEFAULT_DB;
}
