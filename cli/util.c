/* Option parsing, strict numbers and one-line errors, shared by every
 * command. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static int vreport(const char *cmd, int status, const char *fmt, va_list ap) {
  fprintf(stderr, "shopcore %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  return status;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cmd, CLI_USAGE, fmt, ap);
  va_end(ap);
  return CLI_USAGE;
}

int cli_fail(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cmd, CLI_FAILED, fmt, ap);
  va_end(ap);
  return CLI_FAILED;
}

int cli_sc_fail(const char *cmd, int rc) {
  return cli_fail(cmd, "%s: %s", sc_err_name(rc), sc_errmsg(NULL));
}

static cli_opt *find_opt(cli_opt *opts, int n, const char *name, size_t len) {
  for (int i = 0; i < n; i++) {
    if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
      return &opts[i];
    }
  }
  return NULL;
}

/* One "--name[=value]" argument; may consume the next one as its value. */
static int parse_long(const char *cmd, int argc, char **argv, int *i,
                      cli_opt *opts, int n_opts) {
  const char *name = argv[*i] + 2;
  const char *eq = strchr(name, '=');
  size_t len = eq ? (size_t)(eq - name) : strlen(name);
  cli_opt *o = find_opt(opts, n_opts, name, len);
  if (o == NULL) {
    return cli_usage(cmd, "unknown option --%.*s (see --help)", (int)len, name);
  }
  if (!o->has_arg) {
    if (eq) return cli_usage(cmd, "--%s takes no value", o->name);
    o->value = "";
    return CLI_OK;
  }
  if (eq) {
    o->value = eq + 1;
  } else if (*i + 1 < argc) {
    o->value = argv[++*i];
  } else {
    return cli_usage(cmd, "--%s needs a value", o->name);
  }
  return CLI_OK;
}

int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, int n_opts,
              const char **pos, int max_pos, int *n_pos, bool *help) {
  *n_pos = 0;
  *help = false;
  bool only_pos = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!only_pos && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
      *help = true;
    } else if (!only_pos && strcmp(a, "--") == 0) {
      only_pos = true;
    } else if (!only_pos && strncmp(a, "--", 2) == 0) {
      int rc = parse_long(cmd, argc, argv, &i, opts, n_opts);
      if (rc != CLI_OK) return rc;
    } else if (!only_pos && a[0] == '-' && a[1] != '\0' &&
               !(a[1] >= '0' && a[1] <= '9')) {
      return cli_usage(cmd, "unknown option %s (see --help)", a);
    } else if (*n_pos < max_pos) {
      pos[(*n_pos)++] = a;
    } else {
      return cli_usage(cmd, "unexpected argument '%s' (see --help)", a);
    }
  }
  return CLI_OK;
}

const char *cli_get(const cli_opt *opts, int n_opts, const char *name) {
  for (int i = 0; i < n_opts; i++) {
    if (strcmp(opts[i].name, name) == 0) return opts[i].value;
  }
  return NULL;
}

int cli_int64(const char *cmd, const char *what, const char *text, int64_t min,
              int64_t max, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (text[0] == '\0' || *end != '\0' || errno == ERANGE) {
    return cli_usage(cmd, "%s: '%s' is not an integer", what, text);
  }
  if (v < min || v > max) {
    return cli_usage(cmd, "%s: %lld is out of range %lld..%lld", what, v,
                     (long long)min, (long long)max);
  }
  *out = v;
  return CLI_OK;
}

int cli_double(const char *cmd, const char *what, const char *text, double min,
               double max, double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (text[0] == '\0' || *end != '\0' || errno == ERANGE || !isfinite(v)) {
    return cli_usage(cmd, "%s: '%s' is not a number", what, text);
  }
  if (v < min || v > max) {
    return cli_usage(cmd, "%s: %g is out of range %g..%g", what, v, min, max);
  }
  *out = v;
  return CLI_OK;
}

/* ---- times ----------------------------------------------------------------
 */

const char *cli_iso_time(int64_t ms, char buf[CLI_TIME_LEN]) {
  int64_t secs = ms / 1000, frac = ms % 1000;
  if (frac < 0) secs--, frac += 1000; /* before 1970: floor, not truncate */
  time_t t = (time_t)secs;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL ||
      strftime(buf, CLI_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
    snprintf(buf, CLI_TIME_LEN, "%lld ms", (long long)ms);
    return buf;
  }
  size_t len = strlen(buf);
  snprintf(buf + len, CLI_TIME_LEN - len, ".%03dZ", (int)frac);
  return buf;
}

/* Exactly n decimal digits at *p, advancing *p past them. */
static bool digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    char ch = (*p)[i];
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  *p += n;
  *out = v;
  return true;
}

/* The time and zone after "YYYY-MM-DD": "THH:MM[:SS[.fff...]]" and then
 * nothing (UTC), "Z" or "+HH:MM" / "-HH:MM". */
static bool iso_rest(const char *t, struct tm *tm, int *frac_ms,
                     int *offset_min) {
  *frac_ms = 0;
  *offset_min = 0;
  if (*t == '\0') return true;
  if (*t != 'T' && *t != 't' && *t != ' ') return false;
  t++;
  if (!digits(&t, 2, &tm->tm_hour) || *t++ != ':' ||
      !digits(&t, 2, &tm->tm_min)) {
    return false;
  }
  if (*t == ':') {
    t++;
    if (!digits(&t, 2, &tm->tm_sec)) return false;
    if (*t == '.' || *t == ',') {
      int scale = 100, n = 0;
      for (t++; *t >= '0' && *t <= '9'; t++, n++) {
        *frac_ms += (*t - '0') * scale;
        scale /= 10;
      }
      if (n == 0) return false;
    }
  }
  if (*t == 'Z' || *t == 'z') return t[1] == '\0';
  if (*t == '+' || *t == '-') {
    int sign = *t++ == '-' ? -1 : 1, oh, om;
    if (!digits(&t, 2, &oh) || *t++ != ':' || !digits(&t, 2, &om) ||
        *t != '\0' || oh > 23 || om > 59) {
      return false;
    }
    *offset_min = sign * (oh * 60 + om);
    return true;
  }
  return *t == '\0';
}

/* ISO 8601 as ms since the epoch; false if text is not a valid date. */
static bool parse_iso(const char *text, int64_t *out) {
  const char *t = text;
  struct tm tm = {0};
  int year, frac_ms, offset_min;
  if (!digits(&t, 4, &year) || *t++ != '-' || !digits(&t, 2, &tm.tm_mon) ||
      *t++ != '-' || !digits(&t, 2, &tm.tm_mday) ||
      !iso_rest(t, &tm, &frac_ms, &offset_min)) {
    return false;
  }
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 59) {
    return false;
  }
  int mday = tm.tm_mday;
  tm.tm_year = year - 1900;
  tm.tm_mon -= 1;
  time_t secs = timegm(&tm);
  if (tm.tm_mday != mday) return false; /* normalised: 2026-02-30 */
  *out = ((int64_t)secs - (int64_t)offset_min * 60) * 1000 + frac_ms;
  return true;
}

int cli_time(const char *cmd, const char *what, const char *text, int64_t min,
             int64_t max, int64_t *out) {
  bool integer = text[0] != '\0' && strspn(text, "0123456789") == strlen(text);
  if (integer) return cli_int64(cmd, what, text, min, max, out);
  int64_t v;
  if (!parse_iso(text, &v)) {
    return cli_usage(cmd,
                     "%s: '%s' is neither ms since the epoch nor an ISO 8601 "
                     "time such as 2026-12-01T09:00:00Z",
                     what, text);
  }
  if (v < min) {
    char a[CLI_TIME_LEN];
    return cli_usage(cmd, "%s: %s is before %s", what, text,
                     cli_iso_time(min, a));
  }
  if (v > max) return cli_usage(cmd, "%s: %s is out of range", what, text);
  *out = v;
  return CLI_OK;
}

void cli_json_string(FILE *out, const char *text) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
    if (*p == '"' || *p == '\\') {
      fprintf(out, "\\%c", *p);
    } else if (*p < 0x20) {
      fprintf(out, "\\u%04x", *p);
    } else {
      fputc(*p, out);
    }
  }
  fputc('"', out);
}

bool cli_is_uri(const char *path) {
  return strncmp(path, "postgresql://", 13) == 0 ||
         strncmp(path, "postgres://", 11) == 0;
}

sc_db *cli_open_existing(const char *cmd, const char *path,
                         const sc_options *opts) {
  /* A PostgreSQL URI names a server, not a file: sc_open says whether it
   * answers. */
  if (!cli_is_uri(path) && access(path, F_OK) != 0) {
    cli_fail(cmd, "%s: no such database (create one with shopcore init)", path);
    return NULL;
  }
  sc_db *db = NULL;
  int rc = sc_open(path, opts, &db);
  if (rc != SC_OK) {
    cli_sc_fail(cmd, rc);
    return NULL;
  }
  return db;
}

int cli_dispatch(const char *group, const char *help, const cli_sub *subs,
                 int n_subs, int argc, char **argv) {
  const char *sub = argc > 1 ? argv[1] : "";
  bool want_help = argc < 2 || strcmp(sub, "--help") == 0 ||
                   strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0;
  for (int i = 0; i < n_subs && !want_help; i++) {
    if (strcmp(subs[i].name, sub) == 0) return subs[i].fn(argc - 1, argv + 1);
  }
  if (!want_help) {
    return cli_usage(group, "unknown subcommand '%s' (see shopcore %s --help)",
                     sub, group);
  }
  if (argc < 2) {
    return cli_usage(group, "a subcommand is needed (see shopcore %s --help)",
                     group);
  }
  printf("%s\nusage:\n", help);
  for (int i = 0; i < n_subs; i++) {
    printf("  shopcore %s %s %s\n      %s\n", group, subs[i].name,
           subs[i].usage, subs[i].summary);
  }
  printf("Each subcommand takes --help.\n");
  return CLI_OK;
}
