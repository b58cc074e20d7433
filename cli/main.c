/* shopcore: the command-line program of libshopcore. The main job is
 * `shopcore simulate`, a flash sale in-process; the other commands
 * check, repair, administer and back up a database. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct command {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} command;

static const command COMMANDS[] = {
    {"simulate", cmd_simulate,
     "run the flash-sale scenario with virtual users, report, verify"},
    {"verify", cmd_verify, "check every invariant of a database"},
    {"repair", cmd_repair,
     "recount counters, revoke coupons past a cap, free holds of lost "
     "orders"},
    {"init", cmd_init, "create (or migrate) a database"},
    {"product", cmd_product, "add, restock or show products"},
    {"coupon", cmd_coupon, "create, pause, resume or show coupon policies"},
    {"account", cmd_account, "deposit to or show an account"},
    {"order", cmd_order, "show an order"},
    {"outbox", cmd_outbox,
     "events waiting for delivery, dead events, requeue, purge"},
    {"stats", cmd_stats, "what a database holds: counts and sums"},
    {"metrics", cmd_metrics, "the same counts as Prometheus gauges"},
    {"backup", cmd_backup, "online backup of a database to a new file"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof *COMMANDS)

static void usage(FILE *out) {
  fprintf(out,
          "shopcore %s: the flash-sale core on an embedded SQLite file\n"
          "usage: shopcore COMMAND [ARGS] [--db PATH] (shopcore COMMAND "
          "--help for\nmore; every command works on --db PATH, default "
          "./" CLI_DEFAULT_DB ")\n\ncommands:\n",
          sc_version());
  for (size_t i = 0; i < N_COMMANDS; i++) {
    fprintf(out, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
  }
  fprintf(out,
          "\nTimes print as ISO 8601 (UTC); --json gives milliseconds since "
          "the epoch.\nexit status: 0 done, 1 failed (or an invariant "
          "broke), 2 bad usage\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CLI_USAGE;
  }
  const char *name = argv[1];
  if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 ||
      strcmp(name, "help") == 0) {
    usage(stdout);
    return CLI_OK;
  }
  if (strcmp(name, "--version") == 0) {
    printf("shopcore %s\n", sc_version());
    return CLI_OK;
  }
  for (size_t i = 0; i < N_COMMANDS; i++) {
    if (strcmp(COMMANDS[i].name, name) == 0) {
      return COMMANDS[i].fn(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "shopcore: unknown command '%s' (see shopcore --help)\n",
          name);
  return CLI_USAGE;
}
