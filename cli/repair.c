/* shopcore verify, repair and backup: the usual recovery steps (verify the
 * counts, correct the data) and a consistent copy, on the library's
 * sc_verify, sc_repair and sc_backup. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char VERIFY_HELP[] =
    "usage: shopcore verify [--db PATH]\n"
    "Checks every invariant of the database (coupon caps, stock and holds,\n"
    "balances and ledgers, order states, outbox events, and SQLite's own\n"
    "integrity_check of the file's pages and indexes) on one snapshot and\n"
    "prints one line per violation, or \"ok\".\n"
    "  --db PATH   the database (default ./" CLI_DEFAULT_DB
    ")\n"
    "Exit status: 0 all hold, 1 a violation (or the database cannot be "
    "read),\n2 bad usage. (The older form `shopcore verify PATH` still works, "
    "deprecated.)\n";

static const char REPAIR_HELP[] =
    "usage: shopcore repair [--db PATH] [--dry-run]\n"
    "For a database written by something else or imported: removes the "
    "lines of\norders that no longer exist, releases coupons held by missing "
    "or closed\norders, revokes the newest unused coupons issued past a cap "
    "or a per-user\nlimit, and recomputes every counter (issued_count, "
    "reserved, balance, held)\nfrom the rows, in one transaction. Every "
    "change is listed; then verify runs.\n"
    "  --db PATH   the database (default ./" CLI_DEFAULT_DB
    ")\n"
    "  --dry-run   list the changes, make none\n"
    "Exit status: 0 repaired and verify passes (dry run: listed), 1 "
    "otherwise,\n2 bad usage. (The older form `shopcore repair PATH` still "
    "works, deprecated.)\n";

static const char BACKUP_HELP[] =
    "usage: shopcore backup [--db PATH] DEST\n"
    "Copies the database to the new file DEST with SQLite's online backup: "
    "one\nconsistent snapshot, taken while other processes go on writing. "
    "DEST must\nnot exist.\n"
    "  --db PATH   the database (default ./" CLI_DEFAULT_DB
    ")\n"
    "(The older form `shopcore backup PATH DEST` still works, deprecated.)\n";

/* The start of verify, repair and backup: --db PATH (opts[0]) and n_dest
 * more positionals (backup's DEST). Until 1.0 these three took the database
 * as their first positional; that form still works, with a warning. Sets
 * *db and dest[]; returns CLI_OK, CLI_USAGE, or -1 after the help. */
static int parse_db_command(const char *cmd, const char *help_text, int argc,
                            char **argv, cli_opt *opts, int n_opts,
                            const char **db, const char **dest, int n_dest) {
  const char *pos[2] = {NULL, NULL};
  int n_pos = 0;
  bool help = false;
  int rc =
      cli_parse(cmd, argc, argv, opts, n_opts, pos, n_dest + 1, &n_pos, &help);
  if (rc != CLI_OK) return rc;
  if (help) {
    fputs(help_text, stdout);
    return -1;
  }
  *db = cli_db_path(opts, n_opts);
  int first = 0;
  if (n_pos == n_dest + 1) {
    if (cli_get(opts, n_opts, "db")) {
      return cli_usage(cmd, "unexpected argument '%s' (see --help)",
                       pos[n_dest]);
    }
    *db = pos[0];
    first = 1;
    fprintf(stderr,
            "shopcore %s: warning: the database as a positional argument is "
            "deprecated, use --db %s\n",
            cmd, pos[0]);
  } else if (n_pos < n_dest) {
    return cli_usage(cmd, "DEST is missing (see --help)");
  }
  for (int i = 0; i < n_dest; i++)
    dest[i] = pos[first + i];
  return CLI_OK;
}

/* Runs sc_verify and prints its report; CLI_OK when every invariant holds. */
static int run_verify(const char *cmd, sc_db *db) {
  char *report = NULL;
  int rc = sc_verify(db, &report);
  if (rc != SC_OK && rc != SC_CORRUPT) return cli_sc_fail(cmd, rc);
  printf("verify: %s", report);
  sc_free(report);
  return rc == SC_OK ? CLI_OK : CLI_FAILED;
}

int cmd_verify(int argc, char **argv) {
  cli_opt opts[] = {{"db", true, NULL}};
  const char *path;
  int rc = parse_db_command("verify", VERIFY_HELP, argc, argv, opts, 1, &path,
                            NULL, 0);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_db *db = cli_open_existing("verify", path, NULL);
  if (db == NULL) return CLI_FAILED;
  rc = run_verify("verify", db);
  sc_close(db);
  return rc;
}

int cmd_repair(int argc, char **argv) {
  cli_opt opts[] = {{"db", true, NULL}, {"dry-run", false, NULL}};
  const char *path;
  int rc = parse_db_command("repair", REPAIR_HELP, argc, argv, opts, 2, &path,
                            NULL, 0);
  if (rc != CLI_OK) return CLI_DONE(rc);
  bool dry = cli_get(opts, 2, "dry-run") != NULL;
  sc_db *db = cli_open_existing("repair", path, NULL);
  if (db == NULL) return CLI_FAILED;
  char *report = NULL;
  int changes = 0;
  int src = sc_repair(db, dry, &changes, &report);
  if (src != SC_OK && src != SC_CORRUPT) {
    rc = cli_sc_fail("repair", src);
  } else {
    fputs(report, stdout);
    printf("%s: %d change(s)%s\n", dry ? "dry run" : "repaired", changes,
           dry ? " listed, none made" : "");
    rc = src == SC_OK ? CLI_OK : cli_sc_fail("repair", src);
    if (!dry) {
      int vrc = run_verify("repair", db);
      if (rc == CLI_OK) rc = vrc;
    }
  }
  sc_free(report);
  sc_close(db);
  return rc;
}

int cmd_backup(int argc, char **argv) {
  cli_opt opts[] = {{"db", true, NULL}};
  const char *path, *dest;
  int rc = parse_db_command("backup", BACKUP_HELP, argc, argv, opts, 1, &path,
                            &dest, 1);
  if (rc != CLI_OK) return CLI_DONE(rc);
  sc_db *db = cli_open_existing("backup", path, NULL);
  if (db == NULL) return CLI_FAILED;
  int src = sc_backup(db, dest);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail("backup", src);
  if (rc == CLI_OK) printf("backup: %s -> %s\n", path, dest);
  sc_close(db);
  return rc;
}
