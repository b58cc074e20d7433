/* Background WAL checkpoints. SQLite's automatic checkpoint runs inside the
 * committing thread: every ~1,000 pages the writer would stop to copy the WAL
 * into the database and fsync it, and every caller of that batch would wait.
 * Here the writer only notes the WAL's size after each commit (wal hook) and
 * a thread of its own, on its own connection, runs a PASSIVE checkpoint,
 * which never blocks the writer, once per WAL cycle; the writer only
 * finishes the last frames, between batches, once the callers of the last
 * one are woken (see on_wal_commit and sc__checkpointer_writer_turn). */
#include "checkpoint.h"
#include "metrics.h"

#include <string.h>

/* Checkpoint when the WAL holds this many pages (SQLite's default). */
#define CHECKPOINT_PAGES 1000

struct sc__checkpointer {
  sc_db *db;
  sc__conn *conn;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  bool pending, stopping, running;
  /* Set by the writer when the WAL is past twice the threshold: the thread
   * then starts no checkpoint, so the writer's own one is not refused. */
  atomic_bool writer_turn;
  /* The WAL's pages after the commit that gave the writer its turn; 0 when
   * it is not the writer's turn. Writer thread only. */
  int writer_pages;
  /* The thread was asked to checkpoint this WAL cycle. Writer thread. */
  bool asked;
};

/* Runs on the writer thread after each commit: it must stay cheap. */
static int on_wal_commit(void *ud, sqlite3 *h, const char *name, int pages) {
  sc__checkpointer *cp = ud;
  (void)h;
  (void)name;
  sc__metrics_wal_frames(cp->db, pages);
  if (pages < CHECKPOINT_PAGES) {
    atomic_store(&cp->writer_turn, false); /* the WAL has rewound */
    cp->asked = false;
  } else if (pages < 2 * CHECKPOINT_PAGES) {
    /* Once per WAL cycle. Asked again after each commit, the thread ran
     * checkpoints back to back (about 100 a second under load), each
     * copying a few pages and fsyncing the WAL and the database file, and
     * the writer's WAL fsyncs queued behind them in the file system's
     * journal. The WAL cannot rewind before the writer's turn anyway. */
    if (cp->asked) return SQLITE_OK;
    cp->asked = true;
    pthread_mutex_lock(&cp->lock);
    cp->pending = true;
    pthread_cond_signal(&cp->wake);
    pthread_mutex_unlock(&cp->lock);
  } else {
    /* SQLite rewinds the WAL only when a write transaction starts on a fully
     * checkpointed WAL, which a checkpoint running beside a busy writer never
     * leaves behind. The thread has copied all but the newest frames, so the
     * writer finishes (sc__checkpointer_writer_turn), between two
     * transactions, and the next transaction rewinds. Not here: this commit's
     * callers are not woken yet and would wait for its fsync. */
    atomic_store(&cp->writer_turn, true);
    cp->writer_pages = pages;
  }
  return SQLITE_OK;
}

void sc__checkpointer_writer_turn(sc__checkpointer *cp) {
  if (cp == NULL || cp->writer_pages == 0) return;
  /* Not deferred to a moment the queue is empty: under 500 users it rarely
   * is, the WAL then doubled (16 MB) and the tail did not improve. */
  cp->writer_pages = 0;
  /* BUSY means the thread is mid-copy: it starts no other, and the next
   * commit tries again. */
  sqlite3_wal_checkpoint_v2(cp->db->wconn->h, NULL, SQLITE_CHECKPOINT_PASSIVE,
                            NULL, NULL);
}

static void *checkpointer_main(void *arg) {
  sc__checkpointer *cp = arg;
  pthread_setname_np(pthread_self(), "sc-checkpoint");
  sc__metrics_bind_checkpointer(cp->db);
  pthread_mutex_lock(&cp->lock);
  for (;;) {
    while (!cp->pending && !cp->stopping) {
      pthread_cond_wait(&cp->wake, &cp->lock);
    }
    if (cp->stopping) break;
    cp->pending = false;
    if (atomic_load(&cp->writer_turn)) continue;
    pthread_mutex_unlock(&cp->lock);
    /* Failure is not fatal: a busy or failing checkpoint leaves the WAL
     * valid, and the writer's turn, or the next WAL cycle, copies what this
     * one did not. */
    sc__metrics_checkpoint_begin(cp->db);
    sqlite3_wal_checkpoint_v2(cp->conn->h, NULL, SQLITE_CHECKPOINT_PASSIVE,
                              NULL, NULL);
    sc__metrics_checkpoint_end(cp->db);
    pthread_mutex_lock(&cp->lock);
  }
  pthread_mutex_unlock(&cp->lock);
  return NULL;
}

int sc__checkpointer_start(sc_db *db, sc__checkpointer **out) {
  *out = NULL;
  sc__checkpointer *cp = sc__calloc(1, sizeof *cp);
  if (cp == NULL) return sc__fail(SC_NOMEM, "sc_open: out of memory");
  cp->db = db;
  int rc = sc__conn_open(db, SQLITE_OPEN_READWRITE, &cp->conn);
  if (rc != SC_OK) {
    sc__free(cp);
    return rc;
  }
  pthread_mutex_init(&cp->lock, NULL);
  pthread_cond_init(&cp->wake, NULL);
  if (pthread_create(&cp->thread, NULL, checkpointer_main, cp) != 0) {
    sc__checkpointer_stop(cp, NULL);
    return sc__fail(SC_ERROR, "sc_open: cannot start the checkpoint thread");
  }
  cp->running = true;
  /* From here on the writer never checkpoints by itself. */
  sqlite3_wal_autocheckpoint(db->wconn->h, 0);
  sqlite3_wal_hook(db->wconn->h, on_wal_commit, cp);
  *out = cp;
  return SC_OK;
}

void sc__checkpointer_stop(sc__checkpointer *cp, sqlite3 *writer) {
  if (cp == NULL) return;
  if (writer != NULL) sqlite3_wal_hook(writer, NULL, NULL);
  if (cp->running) {
    pthread_mutex_lock(&cp->lock);
    cp->stopping = true;
    pthread_cond_signal(&cp->wake);
    pthread_mutex_unlock(&cp->lock);
    pthread_join(cp->thread, NULL);
  }
  pthread_mutex_destroy(&cp->lock);
  pthread_cond_destroy(&cp->wake);
  sc__conn_close(cp->conn);
  sc__free(cp);
}
