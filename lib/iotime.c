/* fsync timing: a thin VFS over the default one through which the library
 * opens its files. It times every xSync and counts the pages written to the
 * database file, by file (database or WAL), into the counters the calling
 * thread is bound to (sc__io_bind): the writer's and the checkpoint thread's
 * (metrics.c). Other threads, and files of other kinds, pass through
 * uncounted. Each file is the default VFS's own, with a copy of its methods
 * in which only xSync and xWrite are replaced: the real methods see their
 * own file struct, as if there were no shim. */
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "metrics.h"

/* What follows the real file in each file the shim opens. */
typedef struct io_tail {
  const sqlite3_io_methods *real;
  sqlite3_io_methods methods; /* real's, with xSync and xWrite replaced */
  int file;                   /* SC__IO_DB, SC__IO_WAL, or -1: not counted */
} io_tail;

static sqlite3_vfs *orig;
static sqlite3_vfs shim;
static size_t tail_offset;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int registered = SQLITE_ERROR;
static _Thread_local sc__io_counters *bound;

void sc__io_bind(sc__io_counters *c) {
  bound = c;
}

static io_tail *tail_of(sqlite3_file *f) {
  return (io_tail *)((char *)f + tail_offset);
}

static int io_sync(sqlite3_file *f, int flags) {
  io_tail *t = tail_of(f);
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

static int io_write(sqlite3_file *f, const void *buf, int n,
                    sqlite3_int64 off) {
  io_tail *t = tail_of(f);
  sc__io_counters *c = bound;
  if (c != NULL && t->file == SC__IO_DB) {
    atomic_fetch_add_explicit(&c->db_writes, 1, memory_order_relaxed);
  }
  return t->real->xWrite(f, buf, n, off);
}

static int io_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                   int flags, int *out_flags) {
  (void)vfs;
  int rc = orig->xOpen(orig, name, f, flags, out_flags);
  if (f->pMethods == NULL) return rc;
  io_tail *t = tail_of(f);
  t->real = f->pMethods;
  t->methods = *f->pMethods;
  t->methods.xSync = io_sync;
  t->methods.xWrite = io_write;
  t->file = (flags & SQLITE_OPEN_MAIN_DB) ? SC__IO_DB
            : (flags & SQLITE_OPEN_WAL)   ? SC__IO_WAL
                                          : -1;
  f->pMethods = &t->methods;
  return rc;
}

/* The rest of the VFS is the default one's. */
static int io_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
  (void)v;
  return orig->xDelete(orig, name, sync_dir);
}

static int io_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return orig->xAccess(orig, name, flags, out);
}

static int io_full_pathname(sqlite3_vfs *v, const char *name, int n,
                            char *out) {
  (void)v;
  return orig->xFullPathname(orig, name, n, out);
}

static int io_randomness(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return orig->xRandomness(orig, n, out);
}

static int io_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return orig->xSleep(orig, us);
}

static int io_current_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return orig->xCurrentTime(orig, out);
}

static int io_get_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return orig->xGetLastError ? orig->xGetLastError(orig, n, out) : 0;
}

static int io_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return orig->xCurrentTimeInt64(orig, out);
}

static void register_once(void) {
  orig = sqlite3_vfs_find(NULL);
  if (orig == NULL || orig->iVersion < 2) return;
  /* The tail starts at the next pointer-aligned offset after the file. */
  size_t align = _Alignof(max_align_t);
  tail_offset = ((size_t)orig->szOsFile + align - 1) / align * align;
  shim = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)(tail_offset + sizeof(io_tail)),
      .mxPathname = orig->mxPathname,
      .zName = SC__IO_VFS,
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
  registered = sqlite3_vfs_register(&shim, 0);
}

const char *sc__io_vfs(void) {
  pthread_once(&once, register_once);
  return registered == SQLITE_OK ? SC__IO_VFS : NULL;
}
