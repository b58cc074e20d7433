/* The write turn: writers of several processes on one database file take
 * turns, one batch each, instead of racing for SQLite's write lock (a file
 * lock with no queue, whose losers sleep in a backoff while the winner takes
 * it again at once).
 *
 * The turn lives in a small file beside the database, "<db>-turn", mapped
 * into every libshopcore process that writes it: a process-shared, robust
 * mutex, so that a waiter sleeps in the kernel until the holder lets go, and
 * a holder that dies hands the turn on (EOWNERDEAD) instead of wedging the
 * others. A holder that lets go while others wait steps aside until one of
 * them has taken the turn (for at most 100 ms: a waiter that does not take
 * it is stopped, and is not waited for again until another holder shows
 * up), so turns go round rather than to whoever asks again first. Only
 * libshopcore writers take turns; any other writer still meets them at SQLite's
 * own lock and busy handler. */
#ifndef SC_TURN_H
#define SC_TURN_H

#include <stdint.h>
#include <sys/types.h>

typedef struct sc__turn sc__turn;

/* Opens (creating it if need be) the turn file of the database at db_path,
 * after checking that the database is on a local file system: called before
 * SQLite opens the database, so that a refusal creates nothing. A new file
 * gets the database file's mode (and, for
 * root, its owner), as SQLite's -shm does, so whoever may write the
 * database may take turns. Fails with an sc__fail message: SC_IOERR (a
 * network file system, no access), SC_ERROR (a layout another build uses),
 * SC_NOMEM. */
int sc__turn_open(const char *db_path, sc__turn **out);
void sc__turn_close(sc__turn *t); /* NULL is a no-op */
/* Closes t after a failed sc_open, removing the turn file if t created it
 * and no other handle has it open: a refused open leaves nothing behind.
 * NULL is a no-op. */
void sc__turn_discard(sc__turn *t);

/* Waits for the turn at most timeout_ms: SC_OK, else SC_BUSY (or SC_ERROR)
 * with the reason in why. Not reentrant: one batch at a time per handle. */
int sc__turn_acquire(sc__turn *t, int timeout_ms, char *why, size_t cap);
void sc__turn_release(sc__turn *t);

/* The name of the network file system that statfs's f_type denotes (on which
 * a shared mapping is not shared between machines), or NULL for a local
 * one. */
const char *sc__turn_network_fs(int64_t f_type);

/* For tests and diagnostics: the process holding the turn of the database at
 * db_path (0: none) and how many holders died holding it. SC_OK, SC_IOERR
 * (no turn file). */
int sc__turn_peek(const char *db_path, pid_t *holder, uint32_t *deaths);

#endif
