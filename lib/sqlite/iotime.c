/* fsync timing: a thin VFS over the default one through which the library
 * opens its files. It times every xSync and counts the pages written to the
 * database file, by file (database or WAL), into the counters the calling
 * thread is bound to (sc__io_bind): the writer's and the checkpoint thread's
 * (metrics.c). Other threads, and files of other kinds, pass through
 * uncounted. Each file is the underlying VFS's own, with a copy of its
 * methods in which only xSync and xWrite are replaced (and, for the WAL,
 * the methods that must see its writes done): the real methods see their
 * own file struct, as if there were no shim.
 *
 * SQLite writes each WAL frame as two pwrites, the 24-byte frame header and
 * then the page right after it. The shim holds such a small write back
 * until the next call on the file: when that is the adjacent write, both
 * go down as one (a syscall less per page: a checkout dirties dozens), and
 * anything else writes the held bytes first. Nothing can read a frame
 * before its page is written (SQLite publishes frames in the wal-index only
 * after the commit's writes and sync), and a failed write fails the
 * commit as before. The shim wraps whatever
 * VFS is the default when a database is opened (a host's or a test's VFS
 * registered later, or in a forked child, gets a shim of its own). */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"

/* What follows the real file in each file the shim opens. The replaced
 * methods find it from the file's pMethods, which points into it. */
/* A WAL write this small (a frame header: 24 bytes; the WAL header: 32) is
 * held back for the write that follows it. */
#define HELD_MAX 32

typedef struct io_tail {
  const sqlite3_io_methods *real;
  sqlite3_io_methods methods; /* real's, with xSync and xWrite replaced */
  int file;                   /* SC__IO_DB, SC__IO_WAL, or -1: not counted */
  /* The WAL only: a small write held back (held_len > 0), and a buffer for
   * it joined with the write after it (grown as needed; NULL until then). */
  int held_len;
  sqlite3_int64 held_off;
  unsigned char held[HELD_MAX];
  unsigned char *joined;
  int joined_cap;
} io_tail;

/* One shim per underlying VFS (pAppData is the underlying VFS). */
#define MAX_SHIMS 8
typedef struct shim {
  sqlite3_vfs vfs;
  char name[32];
  size_t tail_offset;
} shim;
static shim shims[MAX_SHIMS];
static int n_shims;
static pthread_mutex_t shims_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local sc__io_counters *bound;

void sc__io_bind(sc__io_counters *c) {
  bound = c;
}

static io_tail *tail_of(sqlite3_file *f) {
  return (io_tail *)((char *)f->pMethods - offsetof(io_tail, methods));
}

#define ORIG(v) ((sqlite3_vfs *)(v)->pAppData)

static int held_flush(sqlite3_file *f, io_tail *t);

static int io_sync(sqlite3_file *f, int flags) {
  io_tail *t = tail_of(f);
  int held_rc = held_flush(f, t);
  if (held_rc != SQLITE_OK) return held_rc;
  sc__io_counters *c = bound;
  if (c == NULL || t->file < 0) return t->real->xSync(f, flags);
  int64_t start = sc__monotonic_ns();
  atomic_store(&c->sync_file, t->file);
  atomic_store(&c->sync_since_ns, start);
  int rc = t->real->xSync(f, flags);
  atomic_fetch_add(&c->sync_ns[t->file], sc__monotonic_ns() - start);
  atomic_fetch_add(&c->syncs[t->file], 1);
  atomic_store(&c->sync_since_ns, 0);
  return rc;
}

static void count_write(const io_tail *t) {
  sc__io_counters *c = bound;
  if (c != NULL && t->file == SC__IO_DB) {
    atomic_fetch_add_explicit(&c->db_writes, 1, memory_order_relaxed);
  }
}

/* Writes the held bytes, if any. */
static int held_flush(sqlite3_file *f, io_tail *t) {
  if (t->held_len == 0) return SQLITE_OK;
  int n = t->held_len;
  t->held_len = 0;
  return t->real->xWrite(f, t->held, n, t->held_off);
}

/* The held bytes and buf, adjacent, as one write; false if no buffer could
 * be had (then they go as two). */
static bool held_join(sqlite3_file *f, io_tail *t, const void *buf, int n,
                      int *rc) {
  int total = t->held_len + n;
  if (total > t->joined_cap) {
    unsigned char *b = sqlite3_realloc(t->joined, total);
    if (b == NULL) return false;
    t->joined = b;
    t->joined_cap = total;
  }
  memcpy(t->joined, t->held, (size_t)t->held_len);
  memcpy(t->joined + t->held_len, buf, (size_t)n);
  sqlite3_int64 off = t->held_off;
  t->held_len = 0;
  *rc = t->real->xWrite(f, t->joined, total, off);
  return true;
}

static int io_write(sqlite3_file *f, const void *buf, int n,
                    sqlite3_int64 off) {
  io_tail *t = tail_of(f);
  count_write(t);
  if (t->file != SC__IO_WAL) return t->real->xWrite(f, buf, n, off);
  int rc;
  if (t->held_len > 0 && off == t->held_off + t->held_len &&
      held_join(f, t, buf, n, &rc)) {
    return rc;
  }
  rc = held_flush(f, t);
  if (rc != SQLITE_OK) return rc;
  if (n <= HELD_MAX) {
    memcpy(t->held, buf, (size_t)n);
    t->held_len = n;
    t->held_off = off;
    return SQLITE_OK;
  }
  return t->real->xWrite(f, buf, n, off);
}

/* The WAL's other methods that touch its bytes see the held write done. */
static int wal_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  io_tail *t = tail_of(f);
  int rc = held_flush(f, t);
  return rc != SQLITE_OK ? rc : t->real->xRead(f, buf, n, off);
}

static int wal_truncate(sqlite3_file *f, sqlite3_int64 size) {
  io_tail *t = tail_of(f);
  int rc = held_flush(f, t);
  return rc != SQLITE_OK ? rc : t->real->xTruncate(f, size);
}

static int wal_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  io_tail *t = tail_of(f);
  int rc = held_flush(f, t);
  return rc != SQLITE_OK ? rc : t->real->xFileSize(f, size);
}

static int wal_file_control(sqlite3_file *f, int op, void *arg) {
  io_tail *t = tail_of(f);
  int rc = held_flush(f, t);
  return rc != SQLITE_OK ? rc : t->real->xFileControl(f, op, arg);
}

static int wal_close(sqlite3_file *f) {
  io_tail *t = tail_of(f);
  held_flush(f, t); /* a write SQLite made; its status has nowhere to go */
  sqlite3_free(t->joined);
  t->joined = NULL;
  return t->real->xClose(f);
}

static int io_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                   int flags, int *out_flags) {
  int rc = ORIG(vfs)->xOpen(ORIG(vfs), name, f, flags, out_flags);
  if (f->pMethods == NULL) return rc;
  io_tail *t = (io_tail *)((char *)f + ((shim *)vfs)->tail_offset);
  t->real = f->pMethods;
  t->methods = *f->pMethods;
  t->methods.xSync = io_sync;
  t->methods.xWrite = io_write;
  t->file = (flags & SQLITE_OPEN_MAIN_DB) ? SC__IO_DB
            : (flags & SQLITE_OPEN_WAL)   ? SC__IO_WAL
                                          : -1;
  t->held_len = 0;
  t->joined = NULL;
  t->joined_cap = 0;
  if (t->file == SC__IO_WAL) {
    t->methods.xRead = wal_read;
    t->methods.xTruncate = wal_truncate;
    t->methods.xFileSize = wal_file_size;
    t->methods.xFileControl = wal_file_control;
    t->methods.xClose = wal_close;
  }
  f->pMethods = &t->methods;
  return rc;
}

/* The rest of the VFS is the underlying one's. */
static int io_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
  return ORIG(v)->xDelete(ORIG(v), name, sync_dir);
}

static int io_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  return ORIG(v)->xAccess(ORIG(v), name, flags, out);
}

static int io_full_pathname(sqlite3_vfs *v, const char *name, int n,
                            char *out) {
  return ORIG(v)->xFullPathname(ORIG(v), name, n, out);
}

static int io_randomness(sqlite3_vfs *v, int n, char *out) {
  return ORIG(v)->xRandomness(ORIG(v), n, out);
}

static int io_sleep(sqlite3_vfs *v, int us) {
  return ORIG(v)->xSleep(ORIG(v), us);
}

static int io_current_time(sqlite3_vfs *v, double *out) {
  return ORIG(v)->xCurrentTime(ORIG(v), out);
}

static int io_get_last_error(sqlite3_vfs *v, int n, char *out) {
  return ORIG(v)->xGetLastError ? ORIG(v)->xGetLastError(ORIG(v), n, out) : 0;
}

static int io_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out) {
  return ORIG(v)->xCurrentTimeInt64(ORIG(v), out);
}

const char *sc__io_vfs(void) {
  sqlite3_vfs *orig = sqlite3_vfs_find(NULL);
  if (orig == NULL || orig->iVersion < 2 || orig->xOpen == io_open) {
    return NULL; /* the default VFS as it is */
  }
  const char *name = NULL;
  pthread_mutex_lock(&shims_lock);
  for (int i = 0; i < n_shims && name == NULL; i++) {
    if (ORIG(&shims[i].vfs) == orig) name = shims[i].name;
  }
  if (name == NULL && n_shims < MAX_SHIMS) {
    shim *s = &shims[n_shims];
    size_t align = _Alignof(max_align_t);
    s->tail_offset = ((size_t)orig->szOsFile + align - 1) / align * align;
    snprintf(s->name, sizeof s->name, "%s-%d", SC__IO_VFS, n_shims);
    s->vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)(s->tail_offset + sizeof(io_tail)),
        .mxPathname = orig->mxPathname,
        .zName = s->name,
        .pAppData = orig,
        .xOpen = io_open,
        .xDelete = io_delete,
        .xAccess = io_access,
        .xFullPathname = io_full_pathname,
        .xRandomness = io_randomness,
        .xSleep = io_sleep,
        .xCurrentTime = io_current_time,
        .xGetLastError = io_get_last_error,
        .xCurrentTimeInt64 = io_current_time_int64,
    };
    if (sqlite3_vfs_register(&s->vfs, 0) == SQLITE_OK) {
      n_shims++;
      name = s->name;
    }
  }
  pthread_mutex_unlock(&shims_lock);
  return name; /* NULL (more VFSes than shims): untimed */
}
