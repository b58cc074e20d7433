/* A test VFS over SQLite's default one that simulates power loss, in the
 * spirit of SQLite's own crash tests. Every write and truncation reaches the
 * real file at once (so the process reads what it wrote), and is also kept
 * as pending for that file until an xSync of it. For each database, WAL or
 * journal file the shim keeps the synced image: what a reader would find
 * after a power loss if no pending write had reached the disk.
 *
 * pl_power_loss() "loses power": it stops every thread's file I/O, replaces
 * each file with its synced image plus, by the mode, none or a random subset
 * of its pending writes cut into 512-byte sectors (some torn), and _exit()s
 * the process. The model keeps SQLite's powersafe-overwrite promise (which
 * the unix VFS makes): only the bytes a write covered can change.
 *
 * Directory entries: a file created since the last sync of its directory may
 * vanish, and a deleted one may come back with its synced image. The unix
 * VFS fsyncs the directory on the first sync of a WAL or journal it created
 * (a database file is never created by the code under test here), and
 * deletes a checkpointed WAL without a directory sync. The -shm index is not
 * data: it is removed (SQLite rebuilds it from the WAL). Temporary files are
 * passed through untracked. Reads go through xRead (xFetch declines), so
 * memory-mapped I/O cannot bypass the model.
 *
 * Real fsyncs are skipped: nothing of the real disk is at stake.
 *
 * Test-only switches in the environment: SC_POWERLOSS_IGNORE_SYNC=1 makes
 * xSync keep everything pending (a disk that lies about fsync), to show that
 * the checks catch a lost acknowledged write; SC_POWERLOSS_TRACE=1 prints
 * opens, syncs, deletes and the loss's decisions on stderr. Thread-safe. */
#ifndef SC_POWERLOSSVFS_H
#define SC_POWERLOSSVFS_H

#include <stdint.h>

enum {
  PL_DROP_ALL = 0, /* every pending write and truncation is lost */
  PL_SUBSET = 1    /* each pending sector or truncation may survive */
};

/* The exit status of a process that lost power. */
#define PL_EXIT_CODE 77

/* Registers the shim as the default VFS, so that sqlite3_open_v2 without a
 * VFS name (as the library calls it) goes through it. Call once, first, in
 * the process that will lose power. */
int pl_register(void);

/* How the next power loss goes: the mode, the random seed of its choices,
 * the chance that a pending sector (or truncation) survives in PL_SUBSET,
 * and the chance that a surviving sector is torn (a random prefix of the new
 * bytes lands, the rest of what the write covered is garbage). */
void pl_configure(int mode, uint64_t seed, double keep, double torn);

/* Loses power just before the nth write, truncation, sync or delete of a
 * tracked file from now (n >= 1); 0 disarms. */
void pl_arm(long n);

/* Loses power now: never returns; the process exits with PL_EXIT_CODE. */
_Noreturn void pl_power_loss(void);

#endif
