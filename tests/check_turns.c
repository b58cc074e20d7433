/* Writers of several processes on one file take turns (lib/sqlite/turn.c):
 * under a race of 4 and 8 processes x 16 threads every process makes progress
 * in every second and the cap holds; a held turn is waited for at most
 * busy_timeout_ms, while a writer outside the library is not held up; the
 * turn file takes the database's mode; a network file system is refused.
 * (A holder killed mid-batch: tests/check_crash.c, which has the checks of
 * acknowledged operations.) */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "sqlite/turn.h"

#define THREADS 16
#define SECONDS 3
#define CAP 200 /* the capped policy's max_count: well below the demand */
#define MAX_PROCS 8

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the race ---------------------------------------------------------- */

/* What a child reports: its issues acknowledged in second sec (1-based), or
 * with sec 0 its final tally. */
typedef struct report {
  int32_t proc, sec;
  int64_t ok, capped_ok, capped_tries, failed;
} report;

typedef struct child_ctx {
  sc_db *db;
  sc_id open_policy, capped;
  int proc, fd;
  int64_t t0;
  atomic_bool stop;
  int64_t window_ns;
  atomic_llong ok, capped_ok, capped_tries, failed;
} child_ctx;

static void send_report(int fd, const report *r) {
  if (write(fd, r, sizeof *r) != (ssize_t)sizeof *r) _exit(20);
}

/* Thread THREADS samples the count once a second; the others issue, one in
 * eight from the capped policy. */
static void child_thread(int t, void *ud) {
  child_ctx *c = ud;
  if (t == THREADS) {
    int64_t last = 0;
    for (int sec = 1; sec <= SECONDS; sec++) {
      int64_t wait = c->t0 + sec * c->window_ns - now_ns();
      if (wait > 0) {
        struct timespec d = {wait / 1000000000, wait % 1000000000};
        nanosleep(&d, NULL);
      }
      int64_t ok = atomic_load(&c->ok);
      report r = {.proc = c->proc, .sec = sec, .ok = ok - last};
      send_report(c->fd, &r);
      last = ok;
    }
    atomic_store(&c->stop, true);
    return;
  }
  sc_id user = ((sc_id)c->proc + 1) * 100000000 + (sc_id)t * 1000000;
  for (int64_t i = 1; !atomic_load(&c->stop); i++) {
    bool capped = i % 8 == 0;
    if (capped) atomic_fetch_add(&c->capped_tries, 1);
    int rc = sc_coupon_issue(c->db, capped ? c->capped : c->open_policy,
                             user + i, NULL);
    if (rc == SC_OK) {
      atomic_fetch_add(&c->ok, 1);
      if (capped) atomic_fetch_add(&c->capped_ok, 1);
    } else if (!(capped && rc == SC_SOLD_OUT)) {
      atomic_fetch_add(&c->failed, 1);
    }
  }
}

static void child_main(const char *path, const sc_id policies[2], int proc,
                       int64_t window_ns, int ready_fd, int go_fd, int out_fd) {
  static child_ctx c;
  c.window_ns = window_ns;
  c.open_policy = policies[0];
  c.capped = policies[1];
  c.proc = proc;
  c.fd = out_fd;
  if (sc_open(path, NULL, &c.db) != SC_OK) _exit(21);
  char b = 'r';
  if (write(ready_fd, &b, 1) != 1 || read(go_fd, &b, 1) != 1) _exit(22);
  c.t0 = now_ns();
  tu_race(THREADS + 1, child_thread, &c);
  report r = {.proc = proc,
              .ok = atomic_load(&c.ok),
              .capped_ok = atomic_load(&c.capped_ok),
              .capped_tries = atomic_load(&c.capped_tries),
              .failed = atomic_load(&c.failed)};
  send_report(out_fd, &r);
  if (sc_close(c.db) != SC_OK) _exit(23);
  _exit(0);
}

static void race_processes(int procs) {
  /* A "second" is stretched under the sanitizers, as Check's timeouts are
   * (scripts/test.sh sets the multiplier). */
  const char *mult = getenv("CK_TIMEOUT_MULTIPLIER");
  int64_t window_ns = 1000000000LL * (mult && atoi(mult) > 1 ? atoi(mult) : 1);
  char *path = tu_db_path("turns");
  sc_db *db = tu_open(path, NULL);
  sc_coupon_policy_spec open = {.name = "open", .max_count = 1000000000};
  sc_coupon_policy_spec capped = {.name = "capped", .max_count = CAP};
  sc_id policies[2];
  ck_assert_sc(sc_coupon_policy_create(db, &open, &policies[0]), SC_OK);
  ck_assert_sc(sc_coupon_policy_create(db, &capped, &policies[1]), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);

  int ready[2], go[2], out[2];
  ck_assert_int_eq(pipe(ready), 0);
  ck_assert_int_eq(pipe(go), 0);
  ck_assert_int_eq(pipe(out), 0);
  pid_t pids[MAX_PROCS];
  for (int k = 0; k < procs; k++) {
    pids[k] = fork();
    ck_assert_int_ge(pids[k], 0);
    if (pids[k] == 0) {
      child_main(path, policies, k, window_ns, ready[1], go[0], out[1]);
    }
  }
  close(ready[1]);
  close(go[0]);
  close(out[1]);
  char b;
  for (int k = 0; k < procs; k++)
    ck_assert_int_eq(read(ready[0], &b, 1), 1);
  char start[MAX_PROCS];
  memset(start, 'g', sizeof start);
  ck_assert_int_eq(write(go[1], start, (size_t)procs), procs);

  int64_t per_sec[MAX_PROCS][SECONDS + 1] = {{0}};
  bool seen[MAX_PROCS][SECONDS + 1] = {{false}};
  int64_t capped_total = 0, capped_tries = 0, ok_total = 0;
  report r;
  while (read(out[0], &r, sizeof r) == (ssize_t)sizeof r) {
    ck_assert(r.proc >= 0 && r.proc < procs && r.sec >= 0 && r.sec <= SECONDS);
    seen[r.proc][r.sec] = true;
    per_sec[r.proc][r.sec] = r.ok;
    if (r.sec == 0) {
      ck_assert_msg(r.failed == 0, "process %d: %lld issues failed", r.proc,
                    (long long)r.failed);
      capped_total += r.capped_ok;
      capped_tries += r.capped_tries;
      ok_total += r.ok;
    }
  }
  for (int k = 0; k < procs; k++) {
    int status = 0;
    ck_assert_int_eq(waitpid(pids[k], &status, 0), pids[k]);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "process %d ended with status 0x%x", k, status);
  }
  close(ready[0]);
  close(go[1]);
  close(out[0]);
  printf("%d processes x %d threads, issues per %.0f ms:\n", procs, THREADS,
         (double)window_ns / 1e6);
  for (int k = 0; k < procs; k++) {
    printf("  process %d:", k + 1);
    for (int s = 1; s <= SECONDS; s++)
      printf(" %6lld", (long long)per_sec[k][s]);
    printf("  (%lld in all)\n", (long long)per_sec[k][0]);
  }
  fflush(stdout);
  for (int k = 0; k < procs; k++) {
    ck_assert(seen[k][0]);
    for (int s = 1; s <= SECONDS; s++) {
      ck_assert_msg(seen[k][s] && per_sec[k][s] > 0,
                    "process %d issued nothing in second %d", k + 1, s);
    }
  }
  /* The cap holds across processes: every try was issued until the cap,
   * and none after it. */
  ck_assert_int_eq(capped_total, capped_tries < CAP ? capped_tries : CAP);
  db = tu_open(path, NULL);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), ok_total);
  tu_remove_db(path);
}

START_TEST(four_processes_all_progress_every_second) {
  race_processes(4);
}
END_TEST

START_TEST(eight_processes_all_progress_every_second) {
  race_processes(8);
}
END_TEST

/* ---- a held turn --------------------------------------------------------- */

/* The turn held elsewhere (here by the test itself, as another process
 * would): a batch waits busy_timeout_ms and fails with SC_BUSY, changing
 * nothing; a writer outside the library is not held up by the turn; once
 * the turn is let go, writing works again. */
START_TEST(a_held_turn_is_waited_for_then_busy) {
  char *path = tu_db_path("turns-held");
  sc_options o;
  sc_options_init(&o);
  o.busy_timeout_ms = 300;
  sc_db *db = tu_open(path, &o);
  sc_coupon_policy_spec spec = {.name = "p", .max_count = 10};
  sc_id policy = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);

  sc__turn *t = NULL;
  char why[256];
  ck_assert_sc(sc__turn_open(path, &t), SC_OK);
  ck_assert_sc(sc__turn_acquire(t, 1000, why, sizeof why), SC_OK);
  pid_t holder = 0;
  uint32_t deaths = 0;
  ck_assert_sc(sc__turn_peek(path, &holder, &deaths), SC_OK);
  ck_assert_int_eq(holder, getpid());

  int64_t t0 = now_ns();
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_BUSY);
  int64_t waited_ms = (now_ns() - t0) / 1000000;
  ck_assert_msg(strstr(sc_errmsg(db), "write turn") != NULL, "%s",
                sc_errmsg(db));
  ck_assert_int_ge(waited_ms, 300);
  ck_assert_int_lt(waited_ms, 5000);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 0);

  /* A host's own writer meets only SQLite's lock. */
  sqlite3 *h = NULL;
  ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  ck_assert_int_eq(sqlite3_exec(h,
                                "BEGIN IMMEDIATE; UPDATE sc_coupon_policy"
                                " SET name = 'q' WHERE id = 1; COMMIT",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(h);

  sc__turn_release(t);
  ck_assert_sc(sc_coupon_issue(db, policy, 1, NULL), SC_OK);
  sc__turn_close(t);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* Whether a handle waits for the turn of the database at path (byte 2 of
 * the turn file read-locked, lib/sqlite/turn.c). */
static bool someone_waits(const char *path) {
  char side[600];
  snprintf(side, sizeof side, "%s-turn", path);
  int fd = open(side, O_RDWR);
  ck_assert_int_ge(fd, 0);
  struct flock fl = {
      .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2, .l_len = 1};
  ck_assert_int_eq(fcntl(fd, F_OFD_GETLK, &fl), 0);
  close(fd);
  return fl.l_type != F_UNLCK;
}

/* Stepping aside for a waiter that never comes costs up to HANDOFF_MAX_MS
 * (100 ms, lib/sqlite/turn.c) per batch: 20 batches would lose about 2 s. */
#define STOPPED_DEPOSITS 20

static int64_t deposits_ms(sc_db *db, int n) {
  int64_t t0 = now_ns();
  for (int i = 0; i < n; i++) {
    ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  }
  return (now_ns() - t0) / 1000000;
}

/* A process stopped (SIGSTOP, a debugger, a frozen cgroup) while it waits
 * for the turn never takes it: the others must not keep stepping aside for
 * it, a whole busy_timeout_ms per batch. */
START_TEST(a_stopped_waiter_does_not_slow_the_others) {
  char *path = tu_db_path("turns-stopped");
  sc_options o;
  sc_options_init(&o);
  o.busy_timeout_ms = 2000;
  sc_db *db = tu_open(path, &o);
  sc__turn *t = NULL;
  char why[256];
  ck_assert_sc(sc__turn_open(path, &t), SC_OK);
  ck_assert_sc(sc__turn_acquire(t, 1000, why, sizeof why), SC_OK);
  pid_t child = fork();
  ck_assert_int_ge(child, 0);
  if (child == 0) {
    sc__turn *mine = NULL;
    if (sc__turn_open(path, &mine) != SC_OK) _exit(1);
    sc__turn_acquire(mine, 60000, why, sizeof why);
    _exit(0);
  }
  for (int i = 0; i < 500 && !someone_waits(path); i++)
    usleep(10000);
  ck_assert(someone_waits(path));
  ck_assert_int_eq(kill(child, SIGSTOP), 0);
  int status = 0;
  ck_assert_int_eq(waitpid(child, &status, WUNTRACED), child);
  ck_assert(WIFSTOPPED(status));
  sc__turn_release(t);
  sc__turn_close(t);
  int64_t stopped_ms = deposits_ms(db, STOPPED_DEPOSITS);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  /* The same deposits with nobody waiting, on the same disk just after. */
  int64_t alone_ms = deposits_ms(db, STOPPED_DEPOSITS);
  printf("%d deposits: %lld ms beside a stopped waiter, %lld ms alone\n",
         STOPPED_DEPOSITS, (long long)stopped_ms, (long long)alone_ms);
  ck_assert_msg(stopped_ms - alone_ms < STOPPED_DEPOSITS * 50,
                "%d deposits took %lld ms beside a stopped waiter, %lld alone",
                STOPPED_DEPOSITS, (long long)stopped_ms, (long long)alone_ms);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* ---- the file ------------------------------------------------------------ */

static mode_t turn_mode(const char *path) {
  char side[600];
  snprintf(side, sizeof side, "%s-turn", path);
  struct stat s;
  ck_assert_int_eq(stat(side, &s), 0);
  return s.st_mode & 0777;
}

/* Like SQLite's -shm: the turn file has the database's mode whatever the
 * umask, so a second user who may write the database may take turns. */
START_TEST(the_turn_file_takes_the_database_mode) {
  char *path = tu_db_path("turns-mode");
  ck_assert_sc(sc_close(tu_open(path, NULL)), SC_OK);
  char side[600];
  snprintf(side, sizeof side, "%s-turn", path);
  mode_t old = umask(022);
  const mode_t modes[] = {0600, 0664, 0666};
  for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
    ck_assert_int_eq(chmod(path, modes[i]), 0);
    ck_assert_int_eq(unlink(side), 0);
    ck_assert_sc(sc_close(tu_open(path, NULL)), SC_OK);
    ck_assert_int_eq(turn_mode(path), modes[i]);
  }
  umask(old);
  tu_remove_db(path);
}
END_TEST

/* Two paths to one file (a symbolic link, as a deployment's "current"
 * directory often is) share one turn file, next to the real file, as
 * SQLite's -wal and -shm are: else the processes using either path would
 * not take turns with each other. */
START_TEST(a_linked_path_shares_the_real_files_turn) {
  char *path = tu_db_path("turns-linked");
  char link_path[600], real_side[700], link_side[700];
  snprintf(link_path, sizeof link_path, "%s-link.db", path);
  snprintf(real_side, sizeof real_side, "%s-turn", path);
  snprintf(link_side, sizeof link_side, "%s-turn", link_path);
  unlink(link_path);
  ck_assert_int_eq(symlink(path, link_path), 0);
  /* The link is opened first: the file does not exist yet, and the link
   * dangles until SQLite creates its target. */
  sc_db *via_link = tu_open(link_path, NULL);
  sc_db *direct = tu_open(path, NULL);
  struct stat st;
  ck_assert_int_eq(stat(real_side, &st), 0);
  ck_assert_int_eq(lstat(link_side, &st), -1);
  ck_assert_int_eq(errno, ENOENT);
  sc_id p = 0;
  ck_assert_sc(sc_product_create(via_link, "linked", 100, 5, &p), SC_OK);
  sc_stock s;
  ck_assert_sc(sc_stock_get(direct, p, &s), SC_OK);
  ck_assert_int_eq(s.available, 5);
  ck_assert_sc(sc_close(via_link), SC_OK);
  ck_assert_sc(sc_close(direct), SC_OK);
  ck_assert_int_eq(unlink(link_path), 0);
  tu_remove_db(path);
}
END_TEST

/* A refused sc_open changes nothing: the turn file it made goes again,
 * and one that an open handle uses stays (and still works). */
START_TEST(a_refused_open_leaves_no_turn_file) {
  char *path = tu_db_path("turns-refused");
  char side[600];
  snprintf(side, sizeof side, "%s-turn", path);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("not a database: some text, long enough to be read as a header..\n", f);
  fclose(f);
  sc_db *db = (sc_db *)0x1;
  ck_assert_sc(sc_open(path, NULL, &db), SC_CORRUPT);
  ck_assert_ptr_null(db);
  struct stat st;
  ck_assert_int_eq(stat(side, &st), -1);
  ck_assert_int_eq(errno, ENOENT);
  ck_assert_int_eq(unlink(path), 0);
  /* Beside an open handle, a refused open (bad options come before the
   * turn; a newer schema after it) keeps the shared file. */
  db = tu_open(path, NULL);
  ck_assert_int_eq(stat(side, &st), 0);
  sqlite3 *h;
  ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(h,
                                "BEGIN; UPDATE sc_meta SET value = value + 1000"
                                " WHERE key = 'schema_version'; COMMIT",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sc_db *other = (sc_db *)0x1;
  ck_assert_int_ne(sc_open(path, NULL, &other), SC_OK);
  ck_assert_ptr_null(other);
  ck_assert_int_eq(stat(side, &st), 0);
  ck_assert_int_eq(sqlite3_exec(h,
                                "UPDATE sc_meta SET value = value - 1000"
                                " WHERE key = 'schema_version'",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(h);
  ck_assert_sc(sc_account_deposit(db, 1, 100, NULL), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  tu_remove_db(path);
}
END_TEST

/* Runs as user nobody in a forked child: opens the database and issues
 * coupons. Exits 0 if every call worked, 10 + the step that failed, or, with
 * expect_refusal, 0 if sc_open refused the turn file with SC_IOERR. */
static void as_nobody(const char *path, sc_id policy, bool expect_refusal) {
  if (setgid(65534) != 0 || setuid(65534) != 0) _exit(9);
  sc_db *db = NULL;
  int rc = sc_open(path, NULL, &db);
  if (expect_refusal) {
    _exit(rc == SC_IOERR && strstr(sc_errmsg(NULL), "-turn") != NULL &&
                  strstr(sc_errmsg(NULL), "read-write access") != NULL
              ? 0
              : 10);
  }
  if (rc != SC_OK) {
    fprintf(stderr, "as nobody: sc_open: %s: %s\n", sc_err_name(rc),
            sc_errmsg(NULL));
    _exit(11);
  }
  for (sc_id user = 1; user <= 200; user++) {
    if (sc_coupon_issue(db, policy, 1000000 + user, NULL) != SC_OK) _exit(12);
  }
  _exit(sc_close(db) == SC_OK ? 0 : 13);
}

static int wait_child(pid_t pid) {
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + status;
}

/* A second user who may write the database takes turns with the first
 * (root here): the turn file has the database's mode. A turn file the
 * second user may not write is refused with a message that names it. Needs
 * root to switch users; skipped otherwise. */
START_TEST(processes_of_two_users_take_turns) {
  if (geteuid() != 0) {
    printf("two users: skipped (not root)\n");
    return;
  }
  char *dir = tu_db_path("turns-users");
  ck_assert_int_eq(mkdir(dir, 0777), 0);
  ck_assert_int_eq(chmod(dir, 0777), 0);
  char path[600], side[620];
  snprintf(path, sizeof path, "%s/shop.db", dir);
  snprintf(side, sizeof side, "%s-turn", path);
  mode_t old = umask(022);
  sc_db *db = tu_open(path, NULL); /* a new database: 0644, so is the turn */
  sc_coupon_policy_spec spec = {.name = "p", .max_count = 100000};
  sc_id policy = 0;
  ck_assert_sc(sc_coupon_policy_create(db, &spec, &policy), SC_OK);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(chmod(path, 0666), 0);
  ck_assert_int_eq(turn_mode(path), 0644);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) as_nobody(path, policy, true);
  ck_assert_int_eq(wait_child(pid), 0);

  /* With no process on the file, the turn file may go; the next open makes
   * it with the database's mode, and both users write side by side (each
   * in a child: a process with threads must not fork). */
  ck_assert_int_eq(unlink(side), 0);
  ck_assert_sc(sc_close(tu_open(path, NULL)), SC_OK);
  ck_assert_int_eq(turn_mode(path), 0666);
  /* SQLite creates -wal and -shm under the umask and sets the database's
   * mode only after: a second user opening in that instant finds them
   * read-only ("attempt to write a readonly database", about one run in
   * four here). That window is SQLite's, not the turn's; the README tells
   * multi-user hosts to use a umask that lets the group write. */
  umask(0);
  pid_t root = fork();
  ck_assert_int_ge(root, 0);
  if (root == 0) {
    sc_db *mine = NULL;
    if (sc_open(path, NULL, &mine) != SC_OK) _exit(11);
    for (sc_id user = 1; user <= 200; user++) {
      if (sc_coupon_issue(mine, policy, user, NULL) != SC_OK) _exit(12);
    }
    _exit(sc_close(mine) == SC_OK ? 0 : 13);
  }
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) as_nobody(path, policy, false);
  ck_assert_int_eq(wait_child(root), 0);
  ck_assert_int_eq(wait_child(pid), 0);
  db = tu_open(path, NULL);
  tu_assert_verify(db);
  ck_assert_sc(sc_close(db), SC_OK);
  ck_assert_int_eq(tu_count(path, "SELECT count(*) FROM sc_coupon"), 400);
  umask(old);
  char *db_path = strdup(path);
  tu_remove_db(db_path);
  ck_assert_int_eq(rmdir(dir), 0);
  free(dir);
}
END_TEST

/* The detection behind the refusal (this machine has no network file
 * system to try): statfs's f_type of NFS, SMB and CIFS are recognized, local
 * ones are not. sc_open on a local file works, and makes no turn file when
 * it refuses the path. */
START_TEST(network_file_systems_are_recognized) {
  ck_assert_str_eq(sc__turn_network_fs(0x6969), "NFS");
  ck_assert_str_eq(sc__turn_network_fs(0x517b), "SMB");
  ck_assert_str_eq(sc__turn_network_fs(0xff534d42), "CIFS");
  ck_assert_str_eq(sc__turn_network_fs(0xfe534d42), "SMB2");
  /* f_type is a signed long: CIFS's magic may arrive sign-extended. */
  ck_assert_str_eq(sc__turn_network_fs((int64_t)(int32_t)0xff534d42), "CIFS");
  ck_assert_ptr_null(sc__turn_network_fs(0xef53));     /* ext4 */
  ck_assert_ptr_null(sc__turn_network_fs(0x01021994)); /* tmpfs */
  ck_assert_ptr_null(sc__turn_network_fs(0x58465342)); /* xfs */
  ck_assert_ptr_null(sc__turn_network_fs(0x9123683e)); /* btrfs */
  ck_assert_ptr_null(sc__turn_network_fs(0x794c7630)); /* overlayfs */
}
END_TEST

int main(void) {
  Suite *s = suite_create("turns");
  TCase *tc = tu_tcase("turns");
  tcase_add_test(tc, network_file_systems_are_recognized);
  tcase_add_test(tc, the_turn_file_takes_the_database_mode);
  tcase_add_test(tc, a_refused_open_leaves_no_turn_file);
  tcase_add_test(tc, a_linked_path_shares_the_real_files_turn);
  tcase_add_test(tc, a_held_turn_is_waited_for_then_busy);
  tcase_add_test(tc, a_stopped_waiter_does_not_slow_the_others);
  tcase_add_test(tc, processes_of_two_users_take_turns);
  tcase_add_test(tc, four_processes_all_progress_every_second);
  tcase_add_test(tc, eight_processes_all_progress_every_second);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
