/* The worker's state, shared by worker.c (the worker on a host's loop) and
 * worker_thread.c (a loop and a thread of its own). Internal header. */
#ifndef SC_WORKER_H
#define SC_WORKER_H

#include <uv.h>

#include "internal.h"

#define SC__REASON_MAX 160 /* a nack's or dead letter's reason */

typedef struct sc__worker_thread sc__worker_thread;
typedef struct sc__listen sc__listen;

struct sc_worker {
  sc_db *db;
  uv_loop_t *loop;
  sc_worker_options opts; /* zero fields resolved to defaults */
  uv_async_t wake;        /* commits, round completions */
  uv_timer_t expiry_timer;
  uv_timer_t dispatch_timer; /* retries coming due, and the fallback poll */
  uv_timer_t purge_timer;    /* the next retention batch */
  int open_handles; /* closed ones counted down by the close callback */

  /* Loop thread only. */
  bool stopping, closing, db_closed;
  bool attached;        /* this worker set db->worker_attached */
  bool round_busy;      /* a round trip is with the writer */
  bool round_unsent;    /* round is ready but the queue was full */
  bool dirty;           /* events were committed while it was */
  bool dispatching;     /* inside the handlers */
  bool expire_busy;     /* an expiry round is with the writer */
  bool purge_busy;      /* a retention batch is with the writer */
  bool purge_more;      /* the last batch was full: a pass goes on */
  int purge_deferrals;  /* times the next pass waited for dispatch */
  int64_t deadline_ms;  /* earliest PENDING deadline known (db clock); 0 */
  int64_t retry_due_ms; /* earliest retry this worker's nacks set; 0 */
  sc__outbox_round round;
  sc_event *events;   /* room for batch_max */
  sc__settle *settle; /* room for batch_max */
  char (*reasons)[SC__REASON_MAX];
  void (*close_cb)(sc_worker *w, void *ud);
  void *close_ud;

  sc__expire_round expiry; /* expiry runs through the writer too */
  sc__purge_round purge;   /* and so does retention */

  /* Cross-thread: set by the writer's commit hook and the completer. */
  pthread_mutex_t flags_lock;
  bool events_committed; /* the commit hook saw events */
  bool round_done;       /* the round's op completed */
  bool expiry_done;      /* the expiry round's op completed */
  bool purge_done;       /* the retention batch's op completed */

  sc__worker_thread *thread; /* sc_worker_start_thread's; NULL otherwise */
  sc__listen *listen;        /* on PostgreSQL: other hosts' commits */
};

/* Stops w (not yet stopping): no more rounds or expiry; in-flight work
 * completes, then the handles close and close_cb (may be NULL) runs, and w
 * is freed. Loop thread. */
void sc__worker_stop(sc_worker *w, void (*close_cb)(sc_worker *w, void *ud),
                     void *ud);

/* Another host committed events (deadline: perhaps a new expiry deadline
 * too): a dispatch round now, and an expiry round soon, which reads the
 * earliest deadline again. Loop thread (listen.c). */
void sc__worker_nudge(sc_worker *w, bool deadline);

/* On PostgreSQL, starts listening for the notifications of other hosts'
 * batches (listen.c); *out is NULL on SQLite, where the commit hook sees
 * every commit of the handle and other processes are found by the poll.
 * SC_NOMEM. Loop thread. */
int sc__listen_start(sc_worker *w, sc__listen **out);
/* Closes the listener's connection and handles; done(w) runs once they
 * are closed, and l is freed. Loop thread. */
void sc__listen_close(sc__listen *l, void (*done)(sc_worker *w));

#endif
