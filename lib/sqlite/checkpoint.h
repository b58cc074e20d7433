/* Background WAL checkpoints (checkpoint.c). Internal header. */
#ifndef SC_CHECKPOINT_H
#define SC_CHECKPOINT_H

#include "internal.h"

typedef struct sc__checkpointer sc__checkpointer;

/* Starts the checkpoint thread and hooks the writer connection to it. */
int sc__checkpointer_start(sc_db *db, sc__checkpointer **out);
/* Called by the writer after each batch, once its callers are woken:
 * finishes a checkpoint the WAL hook left to it. NULL is a no-op. */
void sc__checkpointer_writer_turn(sc__checkpointer *cp);
/* Unhooks writer (if not NULL), stops and joins the thread, frees. NULL is a
 * no-op. */
void sc__checkpointer_stop(sc__checkpointer *cp, sqlite3 *writer);

#endif
