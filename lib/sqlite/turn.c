/* The write turn (see turn.h).
 *
 * The file's byte ranges double as fcntl locks (open-file-description locks,
 * which the kernel drops when their holder dies, however it dies):
 *   byte 0  held while a process sets the mapping up, so that one at a time
 *           decides whether to initialize it;
 *   byte 1  read-locked by every handle for its lifetime: a handle that can
 *           write-lock it is alone, and may (re)initialize the file;
 *   byte 2  read-locked by a handle while it waits for the turn: the holder
 *           tests it at release to learn whether anyone waits.
 * The shared state itself is mapped from the start of the file; fcntl locks
 * and the mapping do not interact. */
#include "turn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define TURN_MAGIC 0x4e545343u /* "SCTN" */
/* The layout's version with the size of the mutex, which differs between
 * ABIs: a 32-bit and a 64-bit process must not share a mapping. */
#define TURN_VERSION (1u << 16 | (uint32_t)sizeof(pthread_mutex_t))
/* A holder stepping aside rechecks every so often that someone still waits
 * (a waiter may give up or die before taking the turn). */
#define HANDOFF_SLICE_MS 10
/* How long a holder steps aside at most: a waiter that has not taken the
 * turn by then is not running (stopped, frozen); this handle then takes
 * turns without stepping aside until another holder shows up, instead of
 * losing this long (or busy_timeout_ms) on every batch. */
#define HANDOFF_MAX_MS 100
#define LOCK_SLICE_NS 1000000000LL

enum { BYTE_INIT = 0, BYTE_ALIVE = 1, BYTE_WAITING = 2 };

typedef struct turn_shared {
  _Atomic uint32_t magic; /* written last by the initializer */
  uint32_t version;
  pthread_mutex_t mutex;   /* the turn: process-shared, robust */
  _Atomic uint32_t taken;  /* a futex word: bumped by each new holder */
  _Atomic int32_t holder;  /* the holder's pid (diagnostics only) */
  _Atomic uint32_t deaths; /* holders that died holding the turn */
} turn_shared;

struct sc__turn {
  int fd;
  turn_shared *sh;
  bool stepping_aside; /* others waited when this handle let go */
  bool created;        /* this handle made the file (sc__turn_discard) */
  char *path;
  uint32_t taken_at_release;
  bool handoff_failed; /* the last step aside timed out: nobody took it */
};

const char *sc__turn_network_fs(int64_t f_type) {
  /* <linux/magic.h> lacks most of these. */
  static const struct {
    int64_t magic;
    const char *name;
  } NETWORK[] = {
      {0x6969, "NFS"},       {0x517b, "SMB"},      {0xff534d42, "CIFS"},
      {0xfe534d42, "SMB2"},  {0x73757245, "Coda"}, {0x5346414f, "AFS"},
      {0x6b414653, "kAFS"},  {0x00c36400, "Ceph"}, {0x01021997, "9P"},
      {0x013111a8, "IBRIX"}, {0x47504653, "GPFS"}, {0x0bd00bd0, "Lustre"},
  };
  uint32_t t = (uint32_t)f_type; /* f_type is signed on some ABIs */
  for (size_t i = 0; i < sizeof NETWORK / sizeof *NETWORK; i++) {
    if ((uint32_t)NETWORK[i].magic == t) return NETWORK[i].name;
  }
  return NULL;
}

/* ---- fcntl byte locks -----------------------------------------------------
 */

static int byte_lock(int fd, int cmd, short type, off_t byte) {
  struct flock fl = {
      .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
  int rc;
  do {
    rc = fcntl(fd, cmd, &fl);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

/* Whether another handle waits for the turn. */
static bool others_waiting(int fd) {
  struct flock fl = {.l_type = F_WRLCK,
                     .l_whence = SEEK_SET,
                     .l_start = BYTE_WAITING,
                     .l_len = 1};
  return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

/* ---- futex ------------------------------------------------------------- */

static void futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t ns) {
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word) {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ---- opening ----------------------------------------------------------- */

static int init_shared(turn_shared *sh) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  int rc = pthread_mutex_init(&sh->mutex, &a);
  pthread_mutexattr_destroy(&a);
  if (rc != 0) return rc;
  sh->version = TURN_VERSION;
  atomic_store(&sh->magic, TURN_MAGIC);
  return 0;
}

/* Maps the file, initializing it if no other handle has it open. */
static int map_shared(sc__turn *t, const char *path) {
  if (byte_lock(t->fd, F_OFD_SETLKW, F_WRLCK, BYTE_INIT) != 0) {
    return sc__fail(SC_IOERR, "sc_open: cannot lock %s: %s", path,
                    strerror(errno));
  }
  int st = SC_OK;
  /* Removed by a failed sc_open since this handle opened it: start over. */
  struct stat linked;
  if (fstat(t->fd, &linked) == 0 && linked.st_nlink == 0) {
    byte_lock(t->fd, F_OFD_SETLK, F_UNLCK, BYTE_INIT);
    return SC_CANCELED;
  }
  bool alone = byte_lock(t->fd, F_OFD_SETLK, F_WRLCK, BYTE_ALIVE) == 0;
  /* Alone, the file is rebuilt from zeros: whatever an earlier process
   * left (a half-done setup, a dead holder's mutex) goes. */
  if (alone && (ftruncate(t->fd, 0) != 0 ||
                ftruncate(t->fd, sizeof(turn_shared)) != 0)) {
    st = sc__fail(SC_IOERR, "sc_open: cannot size %s: %s", path,
                  strerror(errno));
  }
  struct stat s;
  if (st == SC_OK &&
      (fstat(t->fd, &s) != 0 || s.st_size < (off_t)sizeof(turn_shared))) {
    st = sc__fail(SC_ERROR, "sc_open: %s is too short for a turn file", path);
  }
  if (st == SC_OK) {
    void *m = mmap(NULL, sizeof(turn_shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED, t->fd, 0);
    if (m == MAP_FAILED) {
      st = sc__fail(SC_IOERR, "sc_open: cannot map %s: %s", path,
                    strerror(errno));
    } else {
      t->sh = m;
    }
  }
  if (st == SC_OK && alone && init_shared(t->sh) != 0) {
    st = sc__fail(SC_ERROR, "sc_open: cannot set up the mutex in %s", path);
  }
  if (st == SC_OK && (atomic_load(&t->sh->magic) != TURN_MAGIC ||
                      t->sh->version != TURN_VERSION)) {
    st = sc__fail(SC_ERROR,
                  "sc_open: %s is in use by another build of libshopcore"
                  " (layout %#x, this one %#x); close it first",
                  path, t->sh->version, TURN_VERSION);
  }
  if (st == SC_OK && byte_lock(t->fd, F_OFD_SETLK, F_RDLCK, BYTE_ALIVE) != 0) {
    st = sc__fail(SC_IOERR, "sc_open: cannot lock %s: %s", path,
                  strerror(errno));
  }
  byte_lock(t->fd, F_OFD_SETLK, F_UNLCK, BYTE_INIT);
  return st;
}

/* A new turn file takes the database's mode, umask or not, and for root its
 * owner: otherwise a second user allowed to write the database could not
 * open the turn file. */
static void match_mode(int fd, const struct stat *db) {
  struct stat s;
  if (fstat(fd, &s) != 0 || s.st_size != 0) return;
  if ((s.st_mode & 0777) != (db->st_mode & 0777)) {
    if (fchmod(fd, db->st_mode & 0777) != 0) return;
  }
  if (geteuid() == 0 && (s.st_uid != db->st_uid || s.st_gid != db->st_gid)) {
    if (fchown(fd, db->st_uid, db->st_gid) != 0) return;
  }
}

/* realpath(3) into the library's allocator; NULL with errno on failure. */
static char *real_path(const char *path) {
  char *r = realpath(path, NULL);
  if (r == NULL) return NULL;
  char *copy = sc__strdup(r);
  free(r);
  if (copy == NULL) errno = ENOMEM;
  return copy;
}

/* The database's path with every symbolic link resolved, as SQLite's unix
 * VFS resolves it before it names the -wal and -shm files: processes that
 * reach one file by different links must share one turn file too, or they
 * would not take turns. A file yet to be created is resolved through its
 * directory. Falls back to the path as given when neither resolves (the
 * open then fails in SQLite with its own message). NULL only when out of
 * memory. */
static char *canonical_db_path(const char *db_path) {
  char *p = real_path(db_path);
  if (p != NULL || errno == ENOMEM) return p;
  /* A link whose target is yet to be created (SQLite creates the target):
   * follow it, as SQLite does, a bounded number of times (a loop of links
   * ends in the path as given). */
  char cur[PATH_MAX], target[PATH_MAX];
  if (strlen(db_path) >= sizeof cur) return sc__strdup(db_path);
  strcpy(cur, db_path);
  for (int hops = 0; hops < 40; hops++) {
    ssize_t n = readlink(cur, target, sizeof target - 1);
    if (n <= 0) break;
    target[n] = '\0';
    const char *slash = strrchr(cur, '/');
    if (target[0] == '/' || slash == NULL) {
      strcpy(cur, target);
    } else {
      size_t dir = (size_t)(slash - cur) + 1;
      if (dir + (size_t)n >= sizeof cur) break;
      memcpy(cur + dir, target, (size_t)n + 1);
    }
  }
  db_path = cur;
  const char *slash = strrchr(db_path, '/');
  const char *base = slash ? slash + 1 : db_path;
  char *dir = NULL;
  if (slash == NULL) {
    dir = real_path(".");
  } else if (slash == db_path) {
    dir = sc__strdup("/");
  } else {
    char *d = sc__malloc((size_t)(slash - db_path) + 1);
    if (d == NULL) return NULL;
    memcpy(d, db_path, (size_t)(slash - db_path));
    d[slash - db_path] = '\0';
    dir = real_path(d);
    sc__free(d);
  }
  if (dir == NULL) return errno == ENOMEM ? NULL : sc__strdup(db_path);
  size_t nd = strlen(dir), nb = strlen(base);
  bool root = nd == 1 && dir[0] == '/';
  p = sc__malloc(nd + nb + 2);
  if (p != NULL) {
    memcpy(p, dir, nd);
    size_t at = nd;
    if (!root) p[at++] = '/';
    memcpy(p + at, base, nb + 1);
  }
  sc__free(dir);
  return p;
}

static char *turn_path(const char *db_path) {
  char *real = canonical_db_path(db_path);
  if (real == NULL) return NULL;
  size_t n = strlen(real);
  char *p = sc__malloc(n + sizeof "-turn");
  if (p != NULL) {
    memcpy(p, real, n);
    memcpy(p + n, "-turn", sizeof "-turn");
  }
  sc__free(real);
  return p;
}

/* The file system the database is (or will be) on: its own, or for a file
 * yet to be created its directory's. */
static int db_statfs(const char *db_path, struct statfs *fs) {
  if (statfs(db_path, fs) == 0) return 0;
  if (errno != ENOENT) return errno;
  const char *slash = strrchr(db_path, '/');
  if (slash == NULL) return statfs(".", fs) == 0 ? 0 : errno;
  if (slash == db_path) return statfs("/", fs) == 0 ? 0 : errno;
  char *dir = sc__malloc((size_t)(slash - db_path) + 1);
  if (dir == NULL) return ENOMEM;
  memcpy(dir, db_path, (size_t)(slash - db_path));
  dir[slash - db_path] = '\0';
  int rc = statfs(dir, fs) == 0 ? 0 : errno;
  sc__free(dir);
  return rc;
}

int sc__turn_open(const char *db_path, sc__turn **out) {
  *out = NULL;
  struct statfs fs;
  int err = db_statfs(db_path, &fs);
  if (err != 0) {
    return sc__fail(err == ENOMEM ? SC_NOMEM : SC_IOERR, "sc_open: %s: %s",
                    db_path, strerror(err));
  }
  const char *net = sc__turn_network_fs((int64_t)fs.f_type);
  if (net != NULL) {
    return sc__fail(SC_IOERR,
                    "sc_open: %s is on a network file system (%s): the"
                    " processes writing it could not share their write turn"
                    " (nor SQLite its WAL index); keep it on a local disk",
                    db_path, net);
  }
  /* A database yet to be created gets SQLite's default mode, 0644 less the
   * umask; so does its turn file. */
  struct stat db = {.st_mode = 0644, .st_uid = geteuid(), .st_gid = getegid()};
  bool db_exists = stat(db_path, &db) == 0;
  char *path = turn_path(db_path);
  sc__turn *t = sc__calloc(1, sizeof *t);
  if (path == NULL || t == NULL) {
    sc__free(path);
    sc__free(t);
    return sc__fail(SC_NOMEM, "sc_open: out of memory");
  }
  t->path = path;
  int st;
  do {
    const int flags = O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW;
    t->fd = open(path, flags | O_EXCL, db.st_mode & 0777);
    t->created = t->fd >= 0;
    if (t->fd < 0 && errno == EEXIST) {
      t->fd = open(path, flags, db.st_mode & 0777);
    }
    st = SC_OK;
    if (t->fd < 0) {
      st = sc__fail(SC_IOERR,
                    "sc_open: cannot open %s: %s (every process writing the"
                    " database needs read-write access to it; a new one takes"
                    " the database file's owner and mode)",
                    path, strerror(errno));
    } else {
      if (db_exists) match_mode(t->fd, &db);
      st = map_shared(t, path);
      if (st == SC_CANCELED) {
        close(t->fd);
        t->fd = -1;
      }
    }
  } while (st == SC_CANCELED);
  if (st != SC_OK) {
    sc__turn_close(t);
    return st;
  }
  *out = t;
  return SC_OK;
}

void sc__turn_close(sc__turn *t) {
  if (t == NULL) return;
  if (t->sh != NULL) munmap(t->sh, sizeof *t->sh);
  if (t->fd >= 0) close(t->fd); /* drops this handle's byte locks */
  sc__free(t->path);
  sc__free(t);
}

void sc__turn_discard(sc__turn *t) {
  if (t == NULL) return;
  /* Under the setup lock, and only while no other handle has it: one
   * that opened it meanwhile sees it unlinked there and starts over. */
  if (t->created && t->fd >= 0 &&
      byte_lock(t->fd, F_OFD_SETLKW, F_WRLCK, BYTE_INIT) == 0) {
    if (byte_lock(t->fd, F_OFD_SETLK, F_WRLCK, BYTE_ALIVE) == 0) {
      unlink(t->path);
    }
  }
  sc__turn_close(t);
}

/* ---- taking turns ------------------------------------------------------ */

/* Waits for the mutex until the monotonic deadline_ns. pthread_mutex_timedlock
 * takes a wall-clock deadline (ThreadSanitizer knows no clocklock), so the
 * wait goes in slices of at most a second, each recomputed from the
 * monotonic clock: a clock step can stretch or cut one slice, not the
 * wait. The kernel wakes the waiter at unlock either way. */
static int lock_until(pthread_mutex_t *m, int64_t deadline_ns) {
  for (;;) {
    int64_t left = deadline_ns - sc__monotonic_ns();
    if (left < 0) left = 0;
    int64_t slice = left < LOCK_SLICE_NS ? left : LOCK_SLICE_NS;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    slice += until.tv_nsec;
    until.tv_sec += slice / 1000000000;
    until.tv_nsec = slice % 1000000000;
    int rc = pthread_mutex_timedlock(m, &until);
    if (rc != ETIMEDOUT || left <= LOCK_SLICE_NS) return rc;
  }
}

/* After letting go while others waited, waits until one of them has taken
 * the turn (or nobody waits any more, or HANDOFF_MAX_MS or time is up). */
static void step_aside(sc__turn *t, int64_t deadline_ns) {
  t->stepping_aside = false;
  int64_t handoff_end_ns = sc__monotonic_ns() + HANDOFF_MAX_MS * 1000000LL;
  if (handoff_end_ns < deadline_ns) deadline_ns = handoff_end_ns;
  for (;;) {
    if (atomic_load(&t->sh->taken) != t->taken_at_release) return;
    int64_t left = deadline_ns - sc__monotonic_ns();
    if (left <= 0) {
      t->handoff_failed = true;
      return;
    }
    if (left > HANDOFF_SLICE_MS * 1000000LL) {
      left = HANDOFF_SLICE_MS * 1000000LL;
    }
    futex_wait(&t->sh->taken, t->taken_at_release, left);
    if (atomic_load(&t->sh->taken) == t->taken_at_release &&
        !others_waiting(t->fd)) {
      return;
    }
  }
}

int sc__turn_acquire(sc__turn *t, int timeout_ms, char *why, size_t cap) {
  int64_t wait_ns = (int64_t)timeout_ms * 1000000;
  int64_t deadline_ns = sc__monotonic_ns() + wait_ns;
  if (t->stepping_aside) step_aside(t, deadline_ns);
  /* Seen as waiting from before the lock call until the turn is ours. */
  byte_lock(t->fd, F_OFD_SETLK, F_RDLCK, BYTE_WAITING);
  int rc = lock_until(&t->sh->mutex, deadline_ns);
  byte_lock(t->fd, F_OFD_SETLK, F_UNLCK, BYTE_WAITING);
  if (rc == EOWNERDEAD) {
    /* The holder died mid-batch: SQLite rolls its transaction back (the
     * kernel dropped its file locks); the turn itself is sound. */
    pthread_mutex_consistent(&t->sh->mutex);
    atomic_fetch_add(&t->sh->deaths, 1);
    rc = 0;
  }
  if (rc == ETIMEDOUT) {
    snprintf(why, cap, "waited %d ms for the write turn (held by process %d)",
             timeout_ms, (int)atomic_load(&t->sh->holder));
    return SC_BUSY;
  }
  if (rc != 0) {
    snprintf(why, cap, "cannot take the write turn: %s", strerror(rc));
    return SC_ERROR;
  }
  atomic_store(&t->sh->holder, (int32_t)getpid());
  /* Another holder since this handle's last turn: waiters move again. */
  if (atomic_fetch_add(&t->sh->taken, 1) != t->taken_at_release) {
    t->handoff_failed = false;
  }
  futex_wake_all(&t->sh->taken); /* a holder that stepped aside */
  return SC_OK;
}

void sc__turn_release(sc__turn *t) {
  atomic_store(&t->sh->holder, 0);
  t->stepping_aside = !t->handoff_failed && others_waiting(t->fd);
  t->taken_at_release = atomic_load(&t->sh->taken);
  pthread_mutex_unlock(&t->sh->mutex);
}

int sc__turn_peek(const char *db_path, pid_t *holder, uint32_t *deaths) {
  char *path = turn_path(db_path);
  if (path == NULL) return sc__fail(SC_NOMEM, "out of memory");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  sc__free(path);
  if (fd < 0) return sc__fail(SC_IOERR, "no turn file: %s", strerror(errno));
  struct stat s;
  if (fstat(fd, &s) != 0 || s.st_size < (off_t)sizeof(turn_shared)) {
    close(fd);
    return sc__fail(SC_IOERR, "the turn file is not set up");
  }
  turn_shared *sh = mmap(NULL, sizeof *sh, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (sh == MAP_FAILED) {
    return sc__fail(SC_IOERR, "cannot map the turn file: %s", strerror(errno));
  }
  *holder = atomic_load(&sh->holder);
  *deaths = atomic_load(&sh->deaths);
  munmap(sh, sizeof *sh);
  return SC_OK;
}
