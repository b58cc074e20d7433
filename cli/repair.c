/* shopcore verify, repair and backup: the usual recovery steps (verify the
 * counts, correct the data) and a consistent copy, on the library's
 * sc_verify, sc_repair and sc_backup. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char VERIFY_HELP[] =
    "usage: shopcore verify DB\n"
    "Checks every invariant of the database (coupon caps, stock and holds,\n"
    "balances and ledgers, order states, outbox events, integrity_check) on\n"
    "one snapshot and prints one line per violation, or \"ok\".\n"
    "Exit status: 0 all hold, 1 a violation (or DB cannot be read), 2 bad "
    "usage.\n";

static const char REPAIR_HELP[] =
    "usage: shopcore repair DB [--dry-run]\n"
    "For a database written by something else or imported: removes the "
    "lines of\norders that no longer exist, releases coupons held by missing "
    "or closed\norders, revokes the newest unused coupons issued past a cap "
    "or a per-user\nlimit, and recomputes every counter (issued_count, "
    "reserved, balance, held)\nfrom the rows, in one transaction. Every "
    "change is listed; then verify runs.\n"
    "  --dry-run   list the changes, make none\n"
    "Exit status: 0 repaired and verify passes (dry run: listed), 1 "
    "otherwise,\n2 bad usage.\n";

static const char BACKUP_HELP[] =
    "usage: shopcore backup DB DEST\n"
    "Copies DB to the new file DEST with SQLite's online backup: one "
    "consistent\nsnapshot, taken while other processes go on writing. DEST "
    "must not exist.\n";

/* The usual start of a command on one database: DB [more positionals]. */
static int parse_db_command(const char *cmd, const char *help_text, int argc,
                            char **argv, cli_opt *opts, int n_opts,
                            const char **pos, int want_pos) {
  int n_pos = 0;
  bool help = false;
  int rc =
      cli_parse(cmd, argc, argv, opts, n_opts, pos, want_pos, &n_pos, &help);
  if (rc != CLI_OK) return rc;
  if (help) {
    fputs(help_text, stdout);
    return -1;
  }
  if (n_pos < want_pos) {
    return cli_usage(cmd, "%s (see --help)",
                     n_pos == 0 ? "DB is missing" : "DEST is missing");
  }
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
  const char *pos[1];
  int rc = parse_db_command("verify", VERIFY_HELP, argc, argv, NULL, 0, pos, 1);
  if (rc != CLI_OK) return rc < 0 ? CLI_OK : rc;
  sc_db *db = cli_open_existing("verify", pos[0], NULL);
  if (db == NULL) return CLI_FAILED;
  rc = run_verify("verify", db);
  sc_close(db);
  return rc;
}

int cmd_repair(int argc, char **argv) {
  cli_opt opts[] = {{"dry-run", false, NULL}};
  const char *pos[1];
  int rc = parse_db_command("repair", REPAIR_HELP, argc, argv, opts, 1, pos, 1);
  if (rc != CLI_OK) return rc < 0 ? CLI_OK : rc;
  bool dry = cli_get(opts, 1, "dry-run") != NULL;
  sc_db *db = cli_open_existing("repair", pos[0], NULL);
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
  const char *pos[2];
  int rc = parse_db_command("backup", BACKUP_HELP, argc, argv, NULL, 0, pos, 2);
  if (rc != CLI_OK) return rc < 0 ? CLI_OK : rc;
  sc_db *db = cli_open_existing("backup", pos[0], NULL);
  if (db == NULL) return CLI_FAILED;
  int src = sc_backup(db, pos[1]);
  rc = src == SC_OK ? CLI_OK : cli_sc_fail("backup", src);
  if (rc == CLI_OK) printf("backup: %s -> %s\n", pos[0], pos[1]);
  sc_close(db);
  return rc;
}
