/* The power-loss VFS shim (see powerlossvfs.h). Each tracked path has one
 * node, shared by every connection that opens it: the synced image of the
 * file, the writes and truncations pending since its last sync, and what
 * the durable directory holds for that name. One mutex serializes all I/O
 * on tracked files, so that a power loss sees a consistent set of nodes and
 * nothing moves after it. */
#include "powerlossvfs.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define SECTOR 512

typedef struct image {
  unsigned char *buf;
  size_t len, cap;
} image;

typedef struct pl_op {
  int64_t off; /* where a write starts, or a truncation's new size */
  int len;     /* bytes written; -1: a truncation */
  unsigned char *data;
} pl_op;

typedef struct pl_node {
  struct pl_node *next;
  char *path;
  int type;         /* SQLITE_OPEN_MAIN_DB, SQLITE_OPEN_WAL... */
  bool exists;      /* the file exists now */
  bool dir_dirty;   /* created or deleted since its directory was synced */
  bool ghost_found; /* while dir_dirty: the durable directory has the name */
  image ghost;      /* ...holding this (the synced image of the old file) */
  image base;       /* the current file's synced image */
  pl_op *ops;       /* pending since the last sync, oldest first */
  size_t n_ops, cap_ops;
} pl_node;

typedef struct pl_file {
  sqlite3_file base;
  pl_node *node;      /* NULL: an untracked temporary file */
  sqlite3_file *real; /* right after this struct */
} pl_file;

static sqlite3_vfs *orig;
static sqlite3_vfs shim;
static pthread_mutex_t big = PTHREAD_MUTEX_INITIALIZER;
static pl_node *nodes;
static int loss_mode;
static uint64_t loss_rng;
static double loss_keep, loss_torn;
static bool ignore_sync;
static bool trace; /* SC_POWERLOSS_TRACE=1: every tracked event on stderr */
static atomic_long arm_left;

#define TRACE(...)                  \
  do {                              \
    if (trace) {                    \
      fprintf(stderr, "pl: ");      \
      fprintf(stderr, __VA_ARGS__); \
      fputc('\n', stderr);          \
    }                               \
  } while (0)

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (p == NULL) abort(); /* test code: out of memory is not a scenario */
  return p;
}

static double rng_unit(void) {
  return (double)(tu_rng_next(&loss_rng) >> 11) / 9007199254740992.0;
}

/* ---- images ------------------------------------------------------------- */

static void image_resize(image *im, size_t len) {
  if (len > im->cap) {
    size_t cap = im->cap ? im->cap : 65536;
    while (cap < len)
      cap *= 2;
    im->buf = xrealloc(im->buf, cap);
    im->cap = cap;
  }
  if (len > im->len) memset(im->buf + im->len, 0, len - im->len);
  im->len = len;
}

static void image_write(image *im, int64_t off, const void *data, size_t n) {
  if (n == 0) return; /* an empty image has no buffer yet */
  if ((size_t)off + n > im->len) image_resize(im, (size_t)off + n);
  memcpy(im->buf + off, data, n);
}

static void image_free(image *im) {
  free(im->buf);
  *im = (image){0};
}

static void image_copy(image *to, const image *from) {
  image_resize(to, 0);
  image_write(to, 0, from->buf, from->len);
}

/* Reads a file's whole content (one that existed before the shim saw it:
 * durable by assumption). */
static void image_load(image *im, const char *path) {
  image_resize(im, 0);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return;
  unsigned char chunk[65536];
  ssize_t n;
  while ((n = read(fd, chunk, sizeof chunk)) > 0) {
    image_write(im, (int64_t)im->len, chunk, (size_t)n);
  }
  close(fd);
}

/* Replaces the file at path with im by a rename: threads still running in
 * the process keep their descriptors on the old file, so none of them sees
 * a half-written image (their next I/O on a tracked file blocks anyway). */
static void image_store(const image *im, const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.pl-tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) _exit(70);
  size_t done = 0;
  while (done < im->len) {
    ssize_t n = write(fd, im->buf + done, im->len - done);
    if (n <= 0) _exit(71);
    done += (size_t)n;
  }
  close(fd);
  if (rename(tmp, path) != 0) _exit(72);
}

/* ---- nodes -------------------------------------------------------------- */

static void node_clear_ops(pl_node *n) {
  for (size_t i = 0; i < n->n_ops; i++)
    free(n->ops[i].data);
  n->n_ops = 0;
}

static void node_push(pl_node *n, int64_t off, int len, const void *data) {
  if (n->n_ops == n->cap_ops) {
    n->cap_ops = n->cap_ops ? n->cap_ops * 2 : 64;
    n->ops = xrealloc(n->ops, n->cap_ops * sizeof *n->ops);
  }
  pl_op *op = &n->ops[n->n_ops++];
  *op = (pl_op){.off = off, .len = len};
  if (len > 0) {
    op->data = xrealloc(NULL, (size_t)len);
    memcpy(op->data, data, (size_t)len);
  }
}

/* Whether the unix VFS fsyncs the directory on the first sync of a file of
 * this type it created. */
static bool syncs_dir(int type) {
  return type == SQLITE_OPEN_WAL || type == SQLITE_OPEN_MAIN_JOURNAL ||
         type == SQLITE_OPEN_SUPER_JOURNAL;
}

/* An fsync: the pending writes are now the synced image. */
static void node_sync(pl_node *n) {
  TRACE("sync %s: %zu pending, synced %zu bytes", n->path, n->n_ops,
        n->base.len);
  if (ignore_sync) return;
  for (size_t i = 0; i < n->n_ops; i++) {
    const pl_op *op = &n->ops[i];
    if (op->len < 0) {
      image_resize(&n->base, (size_t)op->off);
    } else {
      image_write(&n->base, op->off, op->data, (size_t)op->len);
    }
  }
  node_clear_ops(n);
  if (syncs_dir(n->type) && n->dir_dirty) {
    n->dir_dirty = false;
    image_free(&n->ghost);
  }
}

static pl_node *node_find(const char *path) {
  for (pl_node *n = nodes; n != NULL; n = n->next) {
    if (strcmp(n->path, path) == 0) return n;
  }
  return NULL;
}

/* The node of a file being opened: found_before says whether it existed. */
static pl_node *node_open(const char *path, int type, bool found_before) {
  pl_node *n = node_find(path);
  if (n == NULL) {
    n = xrealloc(NULL, sizeof *n);
    *n = (pl_node){.type = type, .next = nodes};
    n->path = xrealloc(NULL, strlen(path) + 1);
    strcpy(n->path, path);
    nodes = n;
    TRACE("open %s (first, %s)", path, found_before ? "found" : "created");
    if (found_before) {
      /* First seen here: what is on disk is durable. */
      image_load(&n->base, path);
      n->exists = true;
      return n;
    }
  }
  TRACE("open %s (%s)", path, found_before ? "found" : "created");
  if (!n->exists && !found_before) {
    /* Created now: the directory entry is pending. */
    if (!n->dir_dirty) {
      n->dir_dirty = true;
      n->ghost_found = false;
    }
    n->exists = true;
    image_resize(&n->base, 0);
    node_clear_ops(n);
  } else if (!n->exists) {
    /* Something outside the shim made it: take it as durable. */
    image_load(&n->base, path);
    n->exists = true;
  }
  return n;
}

static void node_delete(pl_node *n, bool sync_dir) {
  TRACE("delete %s (%s): %zu pending", n->path,
        sync_dir ? "dir synced" : "dir pending", n->n_ops);
  if (!n->exists) return;
  if (sync_dir) {
    n->dir_dirty = false;
    image_free(&n->ghost);
  } else if (!n->dir_dirty) {
    /* The unlink is pending: the old file may come back as it was synced. */
    n->dir_dirty = true;
    n->ghost_found = true;
    image_copy(&n->ghost, &n->base);
  }
  n->exists = false;
  image_resize(&n->base, 0);
  node_clear_ops(n);
}

/* ---- the power loss ----------------------------------------------------- */

/* Applies the surviving part of one pending write to im. */
static void survive_write(image *im, const pl_op *op) {
  int64_t end = op->off + op->len;
  for (int64_t s = op->off; s < end;) {
    int64_t e = (s / SECTOR + 1) * SECTOR;
    if (e > end) e = end;
    const unsigned char *src = op->data + (s - op->off);
    size_t n = (size_t)(e - s);
    if (rng_unit() < loss_keep) {
      if (rng_unit() < loss_torn) {
        /* A torn sector: some new bytes, then garbage where it wrote. */
        unsigned char torn[SECTOR];
        size_t k = (size_t)(tu_rng_next(&loss_rng) % n);
        memcpy(torn, src, k);
        for (size_t i = k; i < n; i++)
          torn[i] = (unsigned char)tu_rng_next(&loss_rng);
        image_write(im, s, torn, n);
      } else {
        image_write(im, s, src, n);
      }
    }
    s = e;
  }
}

/* What the disk holds for n's name after the loss: false if nothing. */
static bool node_survivor(const pl_node *n, image *out) {
  bool subset = loss_mode == PL_SUBSET;
  if (n->dir_dirty && !(subset && rng_unit() < 0.5)) {
    /* The directory change did not reach the disk. */
    TRACE("loss %s: directory change lost (%s)", n->path,
          n->ghost_found ? "the old file is back" : "no file");
    if (!n->ghost_found) return false;
    image_copy(out, &n->ghost);
    return true;
  }
  TRACE("loss %s: %s, synced %zu bytes, %zu pending", n->path,
        n->exists ? "there" : "gone", n->base.len, n->n_ops);
  if (!n->exists) return false;
  image_copy(out, &n->base);
  if (!subset) return true;
  for (size_t i = 0; i < n->n_ops; i++) {
    const pl_op *op = &n->ops[i];
    if (op->len >= 0) {
      survive_write(out, op);
    } else if (rng_unit() < loss_keep) {
      image_resize(out, (size_t)op->off);
    }
  }
  return true;
}

/* Called with big held; never unlocks it, so no other thread's I/O on a
 * tracked file runs again. */
static _Noreturn void lose_power_locked(void) {
  image out = {0};
  for (pl_node *n = nodes; n != NULL; n = n->next) {
    if (node_survivor(n, &out)) {
      image_store(&out, n->path);
    } else {
      unlink(n->path);
    }
    if (n->type == SQLITE_OPEN_MAIN_DB) {
      char shm[4096];
      snprintf(shm, sizeof shm, "%s-shm", n->path);
      unlink(shm);
    }
  }
  _exit(PL_EXIT_CODE);
}

void pl_power_loss(void) {
  pthread_mutex_lock(&big);
  lose_power_locked();
}

void pl_configure(int mode, uint64_t seed, double keep, double torn) {
  pthread_mutex_lock(&big);
  loss_mode = mode;
  loss_rng = seed;
  loss_keep = keep;
  loss_torn = torn;
  pthread_mutex_unlock(&big);
}

void pl_arm(long n) {
  atomic_store(&arm_left, n);
}

/* Counts a mutating call (big held): the armed one loses power first. */
static void tick(void) {
  if (atomic_load(&arm_left) > 0 && atomic_fetch_sub(&arm_left, 1) == 1) {
    TRACE("power lost at the armed I/O call");
    lose_power_locked();
  }
}

/* ---- io methods --------------------------------------------------------- */

#define REAL(f) (((pl_file *)(f))->real)
#define NODE(f) (((pl_file *)(f))->node)

static int pl_close(sqlite3_file *f) {
  return REAL(f)->pMethods->xClose(REAL(f));
}

static int pl_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  if (NODE(f) == NULL) return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
  pthread_mutex_lock(&big);
  int rc = REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
  pthread_mutex_unlock(&big);
  return rc;
}

static int pl_write(sqlite3_file *f, const void *buf, int n,
                    sqlite3_int64 off) {
  pl_node *node = NODE(f);
  if (node == NULL) return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
  pthread_mutex_lock(&big);
  tick();
  int rc = REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
  if (rc == SQLITE_OK) node_push(node, off, n, buf);
  pthread_mutex_unlock(&big);
  return rc;
}

static int pl_truncate(sqlite3_file *f, sqlite3_int64 size) {
  pl_node *node = NODE(f);
  if (node == NULL) return REAL(f)->pMethods->xTruncate(REAL(f), size);
  pthread_mutex_lock(&big);
  tick();
  int rc = REAL(f)->pMethods->xTruncate(REAL(f), size);
  if (rc == SQLITE_OK) node_push(node, size, -1, NULL);
  pthread_mutex_unlock(&big);
  return rc;
}

static int pl_sync(sqlite3_file *f, int flags) {
  (void)flags;
  pl_node *node = NODE(f);
  if (node == NULL) return SQLITE_OK;
  /* No real fsync: the model decides what a power loss keeps. */
  pthread_mutex_lock(&big);
  tick();
  node_sync(node);
  pthread_mutex_unlock(&big);
  return SQLITE_OK;
}

static int pl_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int pl_lock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xLock(REAL(f), l);
}

static int pl_unlock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xUnlock(REAL(f), l);
}

static int pl_check_reserved(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int pl_file_control(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int pl_sector_size(sqlite3_file *f) {
  return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int pl_device_characteristics(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int pl_shm_map(sqlite3_file *f, int pg, int sz, int extend,
                      void volatile **out) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, out);
}

static int pl_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}

static void pl_shm_barrier(sqlite3_file *f) {
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int pl_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int pl_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out) {
  /* Declined: SQLite then reads through xRead, which the model sees. */
  (void)f;
  (void)off;
  (void)n;
  *out = NULL;
  return SQLITE_OK;
}

static int pl_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  (void)f;
  (void)off;
  (void)p;
  return SQLITE_OK;
}

static const sqlite3_io_methods pl_methods = {
    3,
    pl_close,
    pl_read,
    pl_write,
    pl_truncate,
    pl_sync,
    pl_file_size,
    pl_lock,
    pl_unlock,
    pl_check_reserved,
    pl_file_control,
    pl_sector_size,
    pl_device_characteristics,
    pl_shm_map,
    pl_shm_lock,
    pl_shm_barrier,
    pl_shm_unmap,
    pl_fetch,
    pl_unfetch,
};

/* ---- vfs methods -------------------------------------------------------- */

static bool tracked(const char *name, int flags) {
  int type = flags & 0x0FFF00; /* the SQLITE_OPEN_* file types */
  return name != NULL && !(flags & SQLITE_OPEN_DELETEONCLOSE) &&
         (type == SQLITE_OPEN_MAIN_DB || syncs_dir(type));
}

static int pl_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                   int flags, int *out_flags) {
  (void)vfs;
  pl_file *p = (pl_file *)f;
  p->real = (sqlite3_file *)(p + 1);
  p->node = NULL;
  if (!tracked(name, flags)) {
    int rc = orig->xOpen(orig, name, p->real, flags, out_flags);
    p->base.pMethods = p->real->pMethods ? &pl_methods : NULL;
    return rc;
  }
  pthread_mutex_lock(&big);
  /* Not xAccess: the unix VFS reports an empty file as missing. */
  bool found = access(name, F_OK) == 0;
  int rc = orig->xOpen(orig, name, p->real, flags, out_flags);
  if (rc == SQLITE_OK) p->node = node_open(name, flags & 0x0FFF00, found);
  pthread_mutex_unlock(&big);
  /* SQLite calls xClose only when pMethods is set: mirror the real file. */
  p->base.pMethods = p->real->pMethods ? &pl_methods : NULL;
  return rc;
}

static int pl_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
  (void)v;
  pthread_mutex_lock(&big);
  pl_node *n = node_find(name);
  if (n != NULL) tick();
  int rc = orig->xDelete(orig, name, sync_dir);
  if (n != NULL && rc == SQLITE_OK) node_delete(n, sync_dir != 0);
  pthread_mutex_unlock(&big);
  return rc;
}

static int pl_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return orig->xAccess(orig, name, flags, out);
}

static int pl_full_pathname(sqlite3_vfs *v, const char *name, int n,
                            char *out) {
  (void)v;
  return orig->xFullPathname(orig, name, n, out);
}

static void *pl_dlopen(sqlite3_vfs *v, const char *name) {
  (void)v;
  return orig->xDlOpen(orig, name);
}

static void pl_dlerror(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  orig->xDlError(orig, n, out);
}

static void (*pl_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void) {
  (void)v;
  return orig->xDlSym(orig, h, sym);
}

static void pl_dlclose(sqlite3_vfs *v, void *h) {
  (void)v;
  orig->xDlClose(orig, h);
}

static int pl_randomness(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return orig->xRandomness(orig, n, out);
}

static int pl_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return orig->xSleep(orig, us);
}

static int pl_current_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return orig->xCurrentTime(orig, out);
}

static int pl_get_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return orig->xGetLastError(orig, n, out);
}

static int pl_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return orig->xCurrentTimeInt64(orig, out);
}

int pl_register(void) {
  orig = sqlite3_vfs_find(NULL);
  if (orig == NULL) return SQLITE_ERROR;
  const char *env = getenv("SC_POWERLOSS_IGNORE_SYNC");
  ignore_sync = env != NULL && env[0] != '\0' && env[0] != '0';
  env = getenv("SC_POWERLOSS_TRACE");
  trace = env != NULL && env[0] != '\0' && env[0] != '0';
  shim = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)sizeof(pl_file) + orig->szOsFile,
      .mxPathname = orig->mxPathname,
      .zName = "powerlossvfs",
      .xOpen = pl_open,
      .xDelete = pl_delete,
      .xAccess = pl_access,
      .xFullPathname = pl_full_pathname,
      .xDlOpen = pl_dlopen,
      .xDlError = pl_dlerror,
      .xDlSym = pl_dlsym,
      .xDlClose = pl_dlclose,
      .xRandomness = pl_randomness,
      .xSleep = pl_sleep,
      .xCurrentTime = pl_current_time,
      .xGetLastError = pl_get_last_error,
      .xCurrentTimeInt64 = pl_current_time_int64,
  };
  return sqlite3_vfs_register(&shim, 1);
}
