/* The fault-injecting VFS shim (see faultvfs.h). Each file it opens is the
 * shim's small header followed by the real VFS's file; every method passes
 * through, except that writes, syncs and reads consult the fault plan. */
#include "faultvfs.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

typedef struct fv_file {
  sqlite3_file base;
  sqlite3_file *real; /* right after this struct */
} fv_file;

static sqlite3_vfs *orig;
static sqlite3_vfs shim;
static atomic_int armed_kinds;
static atomic_long fail_at, calls, injected;
static atomic_bool persistent;
static atomic_int sync_delay_ms;

/* Whether this call of kind fails. */
static bool fault(int kind) {
  if ((atomic_load(&armed_kinds) & kind) == 0) return false;
  long n = atomic_fetch_add(&calls, 1) + 1;
  long at = atomic_load(&fail_at);
  if (n == at || (n > at && atomic_load(&persistent))) {
    atomic_fetch_add(&injected, 1);
    return true;
  }
  return false;
}

void fv_arm(int kinds, long n, bool persist) {
  atomic_store(&armed_kinds, 0);
  atomic_store(&calls, 0);
  atomic_store(&injected, 0);
  atomic_store(&fail_at, n);
  atomic_store(&persistent, persist);
  atomic_store(&armed_kinds, kinds);
}

void fv_slow_syncs(int ms) {
  atomic_store(&sync_delay_ms, ms);
}

void fv_disarm(void) {
  atomic_store(&armed_kinds, 0);
}
long fv_calls(void) {
  return atomic_load(&calls);
}
long fv_injected(void) {
  return atomic_load(&injected);
}

#define REAL(f) (((fv_file *)(f))->real)

static int fv_close(sqlite3_file *f) {
  return REAL(f)->pMethods->xClose(REAL(f));
}

static int fv_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  if (fault(FV_READ)) return SQLITE_IOERR_READ;
  return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int fv_write(sqlite3_file *f, const void *buf, int n,
                    sqlite3_int64 off) {
  /* The write does not happen at all: a failing disk refuses the request. */
  if (fault(FV_WRITE)) return SQLITE_IOERR_WRITE;
  return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int fv_truncate(sqlite3_file *f, sqlite3_int64 size) {
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int fv_sync(sqlite3_file *f, int flags) {
  /* The data was written but is not known durable: that is what a failed
   * fsync means. */
  if (fault(FV_SYNC)) return SQLITE_IOERR_FSYNC;
  int delay = atomic_load(&sync_delay_ms);
  if (delay > 0) usleep((useconds_t)delay * 1000);
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int fv_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int fv_lock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xLock(REAL(f), l);
}

static int fv_unlock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xUnlock(REAL(f), l);
}

static int fv_check_reserved(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int fv_file_control(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int fv_sector_size(sqlite3_file *f) {
  return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int fv_device_characteristics(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int fv_shm_map(sqlite3_file *f, int pg, int sz, int extend,
                      void volatile **out) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, out);
}

static int fv_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}

static void fv_shm_barrier(sqlite3_file *f) {
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int fv_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int fv_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out) {
  return REAL(f)->pMethods->xFetch(REAL(f), off, n, out);
}

static int fv_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods fv_methods = {
    3,
    fv_close,
    fv_read,
    fv_write,
    fv_truncate,
    fv_sync,
    fv_file_size,
    fv_lock,
    fv_unlock,
    fv_check_reserved,
    fv_file_control,
    fv_sector_size,
    fv_device_characteristics,
    fv_shm_map,
    fv_shm_lock,
    fv_shm_barrier,
    fv_shm_unmap,
    fv_fetch,
    fv_unfetch,
};

static int fv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                   int flags, int *out_flags) {
  (void)vfs;
  fv_file *p = (fv_file *)f;
  p->real = (sqlite3_file *)(p + 1);
  int rc = orig->xOpen(orig, name, p->real, flags, out_flags);
  /* SQLite calls xClose only when pMethods is set: mirror the real file. */
  p->base.pMethods = p->real->pMethods ? &fv_methods : NULL;
  return rc;
}

static int fv_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
  (void)v;
  return orig->xDelete(orig, name, sync_dir);
}

static int fv_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return orig->xAccess(orig, name, flags, out);
}

static int fv_full_pathname(sqlite3_vfs *v, const char *name, int n,
                            char *out) {
  (void)v;
  return orig->xFullPathname(orig, name, n, out);
}

static void *fv_dlopen(sqlite3_vfs *v, const char *name) {
  (void)v;
  return orig->xDlOpen(orig, name);
}

static void fv_dlerror(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  orig->xDlError(orig, n, out);
}

static void (*fv_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void) {
  (void)v;
  return orig->xDlSym(orig, h, sym);
}

static void fv_dlclose(sqlite3_vfs *v, void *h) {
  (void)v;
  orig->xDlClose(orig, h);
}

static int fv_randomness(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return orig->xRandomness(orig, n, out);
}

static int fv_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return orig->xSleep(orig, us);
}

static int fv_current_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return orig->xCurrentTime(orig, out);
}

static int fv_get_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return orig->xGetLastError(orig, n, out);
}

static int fv_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return orig->xCurrentTimeInt64(orig, out);
}

int fv_register(void) {
  orig = sqlite3_vfs_find(NULL);
  if (orig == NULL) return SQLITE_ERROR;
  shim = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)sizeof(fv_file) + orig->szOsFile,
      .mxPathname = orig->mxPathname,
      .zName = "faultvfs",
      .xOpen = fv_open,
      .xDelete = fv_delete,
      .xAccess = fv_access,
      .xFullPathname = fv_full_pathname,
      .xDlOpen = fv_dlopen,
      .xDlError = fv_dlerror,
      .xDlSym = fv_dlsym,
      .xDlClose = fv_dlclose,
      .xRandomness = fv_randomness,
      .xSleep = fv_sleep,
      .xCurrentTime = fv_current_time,
      .xGetLastError = fv_get_last_error,
      .xCurrentTimeInt64 = fv_current_time_int64,
  };
  return sqlite3_vfs_register(&shim, 1);
}
