/* A test VFS over SQLite's default one that fails the Nth write, sync or
 * read (SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC, SQLITE_IOERR_READ), once or
 * from N on. Every file SQLite opens through it counts: the database, its
 * WAL and its shared-memory index (whose reads and writes go through
 * xShmMap, not xRead/xWrite, and are never failed). Thread-safe. */
#ifndef SC_FAULTVFS_H
#define SC_FAULTVFS_H

#include <stdbool.h>

enum { FV_WRITE = 1, FV_SYNC = 2, FV_READ = 4 };

/* Registers the shim as the default VFS, so that sqlite3_open_v2 without a
 * VFS name (as the library calls it) goes through it. Call once, first. */
int fv_register(void);
/* From now on, the nth call of one of the kinds fails (and, if persistent,
 * every later one too). Counting starts at zero. */
void fv_arm(int kinds, long n, bool persistent);
void fv_disarm(void);
/* Every sync sleeps ms first (0: none): a slow disk, which keeps a batch's
 * commit, and the write turn, held for that long. */
void fv_slow_syncs(int ms);
/* Calls of the armed kinds since fv_arm, and failures injected. */
long fv_calls(void);
long fv_injected(void);

#endif
