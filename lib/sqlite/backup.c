/* sc_backup: SQLite's online backup from a read connection. One step copies
 * every page inside one read transaction, so the copy is the snapshot of a
 * single moment while the writer goes on committing beside it (WAL). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static void remove_files(const char *path) {
  static const char *const SUFFIXES[] = {"", "-journal", "-wal", "-shm"};
  char side[4096];
  for (size_t i = 0; i < sizeof SUFFIXES / sizeof *SUFFIXES; i++) {
    if (snprintf(side, sizeof side, "%s%s", path, SUFFIXES[i]) <
        (int)sizeof side) {
      unlink(side);
    }
  }
}

static int copy_into(sc__conn *src, const char *dest_path) {
  sqlite3 *dest = NULL;
  int rc = sqlite3_open_v2(dest_path, &dest,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc != SQLITE_OK) {
    int st =
        sc__fail(sc__status_from_sqlite(rc), "sc_backup: cannot open %s: %s",
                 dest_path, dest ? sqlite3_errmsg(dest) : "no memory");
    sqlite3_close(dest);
    return st;
  }
  sqlite3_backup *b = sqlite3_backup_init(dest, "main", src->h, "main");
  if (b == NULL) {
    int st = sc__fail(sc__status_from_sqlite(sqlite3_errcode(dest)),
                      "sc_backup: %s", sqlite3_errmsg(dest));
    sqlite3_close(dest);
    return st;
  }
  rc = sqlite3_backup_step(b, -1);
  int frc = sqlite3_backup_finish(b);
  if (rc == SQLITE_DONE) rc = frc;
  int st = SC_OK;
  if (rc != SQLITE_OK && rc != SQLITE_DONE) {
    st = sc__fail(sc__status_from_sqlite(rc), "sc_backup: copying to %s: %s",
                  dest_path, sqlite3_errstr(rc));
  }
  sqlite3_close(dest);
  return st;
}

int sc_backup(sc_db *db, const char *dest_path) {
  SC__CHECK_DB(db);
  if (db->pg != NULL) {
    return sc__fail(SC_MISUSE,
                    "sc_backup is not supported on PostgreSQL yet (use "
                    "pg_dump)");
  }
  if (dest_path == NULL || dest_path[0] == '\0') {
    return sc__fail(SC_INVALID, "sc_backup: destination is NULL or empty");
  }
  /* Claim the name atomically: a file someone creates between a check and
   * the open would otherwise be overwritten (and removed on failure). An
   * empty file is a valid new database for SQLite. */
  int fd = open(dest_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EEXIST) {
    return sc__fail(SC_EXISTS, "sc_backup: %s already exists", dest_path);
  }
  if (fd < 0) {
    return sc__fail(SC_IOERR, "sc_backup: cannot create %s: %s", dest_path,
                    strerror(errno));
  }
  close(fd);
  sc__conn *c;
  int rc = sc__read_acquire(db, &c);
  if (rc != SC_OK) {
    remove_files(dest_path);
    return rc;
  }
  rc = copy_into(c, dest_path);
  sc__read_release(db, c);
  if (rc != SC_OK) remove_files(dest_path);
  return rc;
}
