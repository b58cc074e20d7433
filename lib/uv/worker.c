/* The worker: order expiry and outbox dispatch inside the host's libuv loop.
 *
 * Nothing here blocks the loop. Database work runs elsewhere and comes back
 * through the uv_async handle: dispatch is a round trip through the writer
 * (settle the last batch, claim the next: one op, see outbox.c) whose
 * completion the completing thread signals; expiry is such a round trip too
 * (one batch at a time, see sc__expire_round), so the worker starts no
 * thread of its own and uses no thread pool. Submissions never wait for
 * room in the writer's queue: a full queue means try again shortly. The
 * writer's commit hook, on the writer thread, only sets a flag and calls
 * uv_async_send.
 *
 * Timers run on real time; what is due is decided by the db's clock. A
 * timer's delay is (due - db clock now), clamped to [0, poll_interval_ms],
 * and on firing the worker compares again with the db clock: with an
 * injected clock, a jump forward is seen within poll_interval_ms, and a
 * clock that stands still never makes anything due.
 *
 * Retention: a timer submits small purge batches (outbox_purge.c) of the
 * delivered events older than sc_options.outbox_retention_ms, when dispatch
 * has no round with the writer (or after waiting for that a while, so that
 * a worker that is never idle still purges), back to back while batches
 * come back full, then again after a pause. */
#include <string.h>

#include "metrics.h"
#include "worker.h"

/* Events per round trip: a round holds the writer about 6 us per event
 * (ack + claim), so 512 keeps it near 3 ms while draining a backlog at
 * about 100,000 events/s (bench/bench_outbox). */
#define DEFAULT_BATCH_MAX 512
#define DEFAULT_LEASE_MS 30000
#define DEFAULT_POLL_INTERVAL_MS 1000

/* How soon a submission the full queue refused is tried again. */
#define RESUBMIT_MS 2

/* After another host's checkout, an expiry round this much later reads the
 * earliest deadline again (db clock); the notifications of a burst share
 * it. */
#define NUDGE_EXPIRY_MS 20

/* Events per retention batch: well under a millisecond of the writer. */
#define PURGE_BATCH 200
/* A retention batch waits this long for dispatch to be idle, at most
 * PURGE_DEFERRALS_MAX times, then goes anyway. */
#define PURGE_DEFER_MS 10
#define PURGE_DEFERRALS_MAX 20
/* The longest pause between retention checks once nothing is left. */
#define PURGE_PAUSE_MAX_MS 60000

static void request_round(sc_worker *w);
static void poll_fired(uv_timer_t *t);
static void arm_expiry(sc_worker *w);
static void arm_purge(sc_worker *w, uint64_t delay_ms);
static void maybe_close(sc_worker *w);
static void close_listener(sc_worker *w);

/* The size of the first sc_worker_options with a size field (a zeroed
 * struct, size 0, is read as this one). Frozen at 1.0. */
#define WORKER_OPTIONS_SIZE_V1 \
  (offsetof(sc_worker_options, no_expiry) + sizeof(int))

void sc_worker_options_init_sized(sc_worker_options *opts, size_t size) {
  if (opts == NULL || size < sizeof opts->size) return;
  memset(opts, 0, size); /* the caller's bytes only; every default is 0 */
  opts->size = size;
}

void(sc_worker_options_init)(sc_worker_options *opts) {
  sc_worker_options_init_sized(opts, sizeof *opts);
}

static int options_resolve(const sc_worker_options *in, sc_worker_options *o) {
  sc_worker_options_init_sized(o, sizeof *o);
  if (in != NULL) {
    int rc = sc__struct_in("sc_worker_start", o, sizeof *o, in, in->size,
                           WORKER_OPTIONS_SIZE_V1);
    if (rc != SC_OK) return rc;
    o->size = sizeof *o;
  }
  if (o->batch_max < 0 || o->batch_max > SC_OUTBOX_CLAIM_MAX) {
    return sc__fail(SC_INVALID,
                    "sc_worker_start: option batch_max is %d; it must be in "
                    "0..%d",
                    o->batch_max, SC_OUTBOX_CLAIM_MAX);
  }
  if (o->lease_ms < 0 || o->poll_interval_ms < 0) {
    bool lease = o->lease_ms < 0;
    return sc__fail(SC_INVALID,
                    "sc_worker_start: option %s is %lld; it must be >= 0",
                    lease ? "lease_ms" : "poll_interval_ms",
                    (long long)(lease ? o->lease_ms : o->poll_interval_ms));
  }
  if (o->batch_max == 0) o->batch_max = DEFAULT_BATCH_MAX;
  if (o->lease_ms == 0) o->lease_ms = DEFAULT_LEASE_MS;
  if (o->poll_interval_ms == 0) o->poll_interval_ms = DEFAULT_POLL_INTERVAL_MS;
  return SC_OK;
}

/* A timer delay in real ms for something due at due_ms on the db clock. */
static uint64_t delay_until(sc_worker *w, int64_t due_ms) {
  int64_t d = due_ms - sc__now_ms(w->db);
  if (d < 0) d = 0;
  if (d > w->opts.poll_interval_ms) d = w->opts.poll_interval_ms;
  return (uint64_t)d;
}

/* ---- the cross-thread signals ------------------------------------------- */

/* Runs on the writer thread after every commit, under the engine's hook
 * lock (sc_worker_stop removes the hook under it, so no call is in progress
 * once it is gone). */
static void on_commit(void *ud, int events_written) {
  sc_worker *w = ud;
  bool deadline = atomic_load(&w->db->earliest_deadline_ms) != 0;
  if (events_written == 0 && !deadline) return;
  pthread_mutex_lock(&w->flags_lock);
  if (events_written > 0) w->events_committed = true;
  uv_async_send(&w->wake);
  pthread_mutex_unlock(&w->flags_lock);
}

/* Runs on the completing thread (see sc__op_done_fn). The flag and the send
 * happen under the lock, so once the loop has seen the flag this thread no
 * longer touches w (the worker may be freed right after). */
static void on_round_done(sc__op *op) {
  sc_worker *w = (sc_worker *)((char *)op - offsetof(sc_worker, round));
  pthread_mutex_lock(&w->flags_lock);
  w->round_done = true;
  uv_async_send(&w->wake);
  pthread_mutex_unlock(&w->flags_lock);
}

/* The same for the expiry round. */
static void on_expiry_done(sc__op *op) {
  sc_worker *w = (sc_worker *)((char *)op - offsetof(sc_worker, expiry));
  pthread_mutex_lock(&w->flags_lock);
  w->expiry_done = true;
  uv_async_send(&w->wake);
  pthread_mutex_unlock(&w->flags_lock);
}

/* ---- dispatch -------------------------------------------------------------
 */

static void resubmit_fired(uv_timer_t *t);

/* Hands the prepared round to the writer without waiting. A full queue
 * keeps it, settlements included, for another try shortly; a closing db
 * drops it: the leases of what was delivered run out and the events are
 * delivered again elsewhere (at least once). */
static void send_round(sc_worker *w) {
  int rc = sc__op_try_submit(w->db, &w->round.base);
  w->round_unsent = rc == SC_BUSY;
  if (rc == SC_OK) {
    w->round_busy = true;
  } else if (rc == SC_BUSY) {
    uv_timer_start(&w->dispatch_timer, resubmit_fired, RESUBMIT_MS, 0);
  } else {
    w->db_closed = true;
  }
}

static void resubmit_fired(uv_timer_t *t) {
  sc_worker *w = t->data;
  if (w->round_unsent && !w->db_closed) send_round(w);
}

static void submit_round(sc_worker *w, int n_settle) {
  w->round.settle = w->settle;
  w->round.n_settle = n_settle;
  w->round.claim_max = w->stopping ? 0 : w->opts.batch_max;
  w->round.lease_ms = w->opts.lease_ms;
  w->round.events = w->events;
  sc__outbox_round_init(&w->round);
  w->round.base.done = on_round_done;
  w->dirty = false;
  uv_timer_stop(&w->dispatch_timer);
  send_round(w);
}

static void request_round(sc_worker *w) {
  if (w->stopping || w->db_closed || w->opts.on_event == NULL) return;
  if (w->round_busy || w->round_unsent || w->dispatching) {
    w->dirty = true;
    return;
  }
  submit_round(w, 0);
}

/* What the handler's result makes of one event. */
static void judge(sc_worker *w, int i, int rc) {
  sc__settle *s = &w->settle[i];
  s->id = w->events[i].id;
  s->claim = w->events[i].claim;
  s->reason = NULL;
  s->verdict = rc == SC_OK ? SC__SETTLE_ACK : SC__SETTLE_NACK;
  if (rc != SC_OK) {
    snprintf(w->reasons[i], SC__REASON_MAX, "the handler returned %s",
             sc_err_name(rc));
    s->reason = w->reasons[i];
  }
}

/* Whether the leases of the round's events have run out (db clock): from
 * then on another consumer may hold them. */
static bool lease_over(sc_worker *w) {
  int64_t until;
  if (!sc__add_i64(w->round.claimed_at_ms, w->round.lease_ms, &until)) {
    return false;
  }
  return sc__now_ms(w->db) >= until;
}

/* Hands each claimed event to the handler, in id order (one per aggregate,
 * so per-aggregate order is the claim's). An undecodable payload never
 * reaches the handler: no retry can fix it, so it is dead at once. Once the
 * worker is stopping (the handler may stop it), the rest are released; so
 * are those whose lease ran out while earlier handlers ran (a slow handler
 * and a large batch): another consumer may have claimed them, and the
 * release, fenced by the claim token, is void if so. */
static int dispatch(sc_worker *w) {
  int n = w->round.n_events;
  w->dispatching = true;
  for (int i = 0; i < n; i++) {
    sc_event *ev = &w->events[i];
    sc_event_data data;
    if (w->stopping || lease_over(w)) {
      w->settle[i] = (sc__settle){
          .id = ev->id, .verdict = SC__SETTLE_RELEASE, .claim = ev->claim};
    } else if (sc_event_decode(ev->payload, ev->payload_len, &data) != SC_OK) {
      snprintf(w->reasons[i], SC__REASON_MAX, "undecodable payload: %s",
               sc_errmsg(NULL));
      w->settle[i] = (sc__settle){.id = ev->id,
                                  .verdict = SC__SETTLE_DEAD,
                                  .reason = w->reasons[i],
                                  .claim = ev->claim};
    } else {
      judge(w, i, w->opts.on_event(ev, w->opts.ud));
    }
  }
  w->dispatching = false;
  sc__events_clear(w->events, n);
  return n;
}

/* Idle: poll again after poll_interval_ms, or sooner when a retry this
 * worker set comes due. (Other consumers' retries and leases are found by
 * the poll: looking for them on every round would scan every pending
 * event.) */
static void go_idle(sc_worker *w) {
  uint64_t delay = (uint64_t)w->opts.poll_interval_ms;
  if (w->retry_due_ms > 0) delay = delay_until(w, w->retry_due_ms);
  uv_timer_start(&w->dispatch_timer, poll_fired, delay, 0);
}

static void poll_fired(uv_timer_t *t) {
  request_round(t->data);
}

/* Keeps the earliest retry still ahead: one the last claim already saw due
 * is behind us, the round's own nacks are ahead. */
static void track_retries(sc_worker *w) {
  sc__outbox_round *r = &w->round;
  if (w->retry_due_ms != 0 && r->claim_max > 0 &&
      w->retry_due_ms <= r->claimed_at_ms) {
    w->retry_due_ms = 0;
  }
  if (r->next_due_ms != 0 &&
      (w->retry_due_ms == 0 || r->next_due_ms < w->retry_due_ms)) {
    w->retry_due_ms = r->next_due_ms;
  }
}

static void round_finished(sc_worker *w) {
  w->round_busy = false;
  if (w->round.base.status != SC_OK) {
    /* Busy past its timeout, I/O...: nothing was claimed or settled; the
     * settlements are lost to lease expiry, the claim is retried later.
     * The claim may have copied payloads before its commit failed. */
    sc__events_clear(w->events, w->round.n_events);
    w->round.n_events = 0;
    if (!w->stopping) go_idle(w);
    maybe_close(w);
    return;
  }
  track_retries(w);
  int n = dispatch(w);
  if (n > 0 || (w->dirty && !w->stopping)) {
    submit_round(w, n); /* settles this batch, claims the next */
  } else if (!w->stopping) {
    go_idle(w);
  }
  maybe_close(w);
}

/* ---- expiry ---------------------------------------------------------------
 */

static void note_deadline(sc_worker *w, int64_t deadline_ms) {
  if (deadline_ms > 0 &&
      (w->deadline_ms == 0 || deadline_ms < w->deadline_ms)) {
    w->deadline_ms = deadline_ms;
  }
}

/* Submits one expiry round for what is due now. A full queue, or a db that
 * cannot be reached, is tried again later through the expiry timer. */
static void expire_now(sc_worker *w) {
  int64_t now = sc__now_ms(w->db);
  w->deadline_ms = 0;
  sc__expire_round_prepare(&w->expiry, now);
  w->expiry.base.done = on_expiry_done;
  int rc = sc__op_try_submit(w->db, &w->expiry.base);
  if (rc == SC_OK) {
    w->expire_busy = true;
  } else if (rc == SC_BUSY) {
    note_deadline(w, now + RESUBMIT_MS);
    arm_expiry(w);
  } else {
    w->db_closed = true;
  }
}

static void expiry_finished(sc_worker *w) {
  w->expire_busy = false;
  sc__expire_round *r = &w->expiry;
  if (!w->stopping && !w->db_closed) {
    if (r->base.status != SC_OK) {
      /* The database could not be reached: try again a poll later. */
      note_deadline(w, sc__now_ms(w->db) + w->opts.poll_interval_ms);
    } else if (r->more) {
      expire_now(w); /* a full batch: more may be due */
    } else {
      note_deadline(w, r->next_deadline_ms);
    }
  }
  arm_expiry(w);
  maybe_close(w);
}

/* Fires at the earliest known deadline, or a poll interval from now at the
 * latest. Either way one expiry round runs: it expires what is due and
 * reads the earliest deadline again, which is how orders of other processes
 * (whose commits this handle never sees) are found. */
static void expiry_fired(uv_timer_t *t) {
  sc_worker *w = t->data;
  if (w->stopping || w->expire_busy) return;
  expire_now(w);
}

static void arm_expiry(sc_worker *w) {
  if (w->stopping || w->expire_busy || w->opts.no_expiry) return;
  uint64_t delay = w->deadline_ms == 0 ? (uint64_t)w->opts.poll_interval_ms
                                       : delay_until(w, w->deadline_ms);
  uv_timer_start(&w->expiry_timer, expiry_fired, delay, 0);
}

/* ---- retention ------------------------------------------------------------
 */

static void on_purge_done(sc__op *op) {
  sc_worker *w = (sc_worker *)((char *)op - offsetof(sc_worker, purge));
  pthread_mutex_lock(&w->flags_lock);
  w->purge_done = true;
  uv_async_send(&w->wake);
  pthread_mutex_unlock(&w->flags_lock);
}

/* The pause between retention checks once a batch came back short: a tenth
 * of the retention, within [poll_interval_ms, PURGE_PAUSE_MAX_MS]. */
static uint64_t purge_pause(sc_worker *w) {
  int64_t d = w->db->opts.outbox_retention_ms / 10;
  if (d > PURGE_PAUSE_MAX_MS) d = PURGE_PAUSE_MAX_MS;
  if (d < w->opts.poll_interval_ms) d = w->opts.poll_interval_ms;
  return (uint64_t)d;
}

static void purge_fired(uv_timer_t *t) {
  sc_worker *w = t->data;
  if (w->stopping || w->db_closed || w->purge_busy) return;
  /* A pass starts when dispatch is idle (or has kept it waiting long
   * enough); once started it goes on batch after batch, so that it keeps up
   * with a steady flow of events. */
  if (!w->purge_more && (w->round_busy || w->round_unsent) &&
      w->purge_deferrals++ < PURGE_DEFERRALS_MAX) {
    arm_purge(w, PURGE_DEFER_MS); /* dispatch first */
    return;
  }
  w->purge_deferrals = 0;
  int64_t before = sc__now_ms(w->db) - w->db->opts.outbox_retention_ms;
  sc__purge_round_prepare(&w->purge, before, PURGE_BATCH);
  w->purge.base.done = on_purge_done;
  int rc = sc__op_try_submit(w->db, &w->purge.base);
  if (rc == SC_OK) {
    w->purge_busy = true;
  } else if (rc == SC_BUSY) {
    arm_purge(w, RESUBMIT_MS);
  } else {
    w->db_closed = true;
  }
}

static void arm_purge(sc_worker *w, uint64_t delay_ms) {
  if (w->stopping || w->purge_busy) return;
  uv_timer_start(&w->purge_timer, purge_fired, delay_ms, 0);
}

static void purge_finished(sc_worker *w) {
  w->purge_busy = false;
  sc__purge_round *r = &w->purge;
  w->purge_more = false;
  if (r->base.status == SC_OK) {
    sc__metrics_purged(w->db, r->purged);
    w->purge_more = r->purged == r->limit;
  }
  /* A failed batch (busy, I/O) is tried again after the pause. */
  if (!w->db_closed) arm_purge(w, w->purge_more ? 0 : purge_pause(w));
  maybe_close(w);
}

/* ---- the wake-up handler --------------------------------------------------
 */

static void woken(uv_async_t *a) {
  sc_worker *w = a->data;
  pthread_mutex_lock(&w->flags_lock);
  bool events = w->events_committed, done = w->round_done;
  bool expired = w->expiry_done, purged = w->purge_done;
  w->events_committed = w->round_done = w->expiry_done = false;
  w->purge_done = false;
  pthread_mutex_unlock(&w->flags_lock);
  int64_t deadline = atomic_exchange(&w->db->earliest_deadline_ms, 0);
  if (deadline != 0 && !w->opts.no_expiry && !w->stopping) {
    int64_t before = w->deadline_ms;
    note_deadline(w, deadline);
    if (w->deadline_ms != before) arm_expiry(w); /* an earlier deadline */
  }
  if (expired) expiry_finished(w);
  if (purged) purge_finished(w);
  if (done) round_finished(w);
  if (events) request_round(w);
}

void sc__worker_nudge(sc_worker *w, bool deadline) {
  if (w->stopping || w->db_closed) return;
  request_round(w);
  if (deadline && !w->opts.no_expiry) {
    note_deadline(w, sc__now_ms(w->db) + NUDGE_EXPIRY_MS);
    arm_expiry(w);
  }
}

/* ---- start and stop -------------------------------------------------------
 */

static void worker_free(sc_worker *w) {
  pthread_mutex_destroy(&w->flags_lock);
  sc__expire_round_free(&w->expiry);
  sc__free(w->events);
  sc__free(w->settle);
  sc__free(w->reasons);
  sc__free(w);
}

static int worker_alloc(sc_db *db, uv_loop_t *loop, const sc_worker_options *o,
                        sc_worker **out) {
  sc_worker *w = sc__calloc(1, sizeof *w);
  if (w == NULL) return sc__fail(SC_NOMEM, "sc_worker_start: out of memory");
  w->db = db;
  w->loop = loop;
  w->opts = *o;
  pthread_mutex_init(&w->flags_lock, NULL);
  size_t n = (size_t)o->batch_max;
  w->events = sc__calloc(n, sizeof *w->events);
  w->settle = sc__calloc(n, sizeof *w->settle);
  w->reasons = sc__calloc(n, sizeof *w->reasons);
  int expiry_rc = sc__expire_round_init(&w->expiry);
  if (w->events == NULL || w->settle == NULL || w->reasons == NULL ||
      expiry_rc != SC_OK) {
    worker_free(w);
    return sc__fail(SC_NOMEM, "sc_worker_start: out of memory");
  }
  *out = w;
  return SC_OK;
}

/* Installs the commit hook unless another worker has one on this db. */
static int hook_install(sc_worker *w) {
  sc_db *db = w->db;
  pthread_mutex_lock(&db->hook_lock);
  bool taken = db->worker_attached;
  if (!taken) {
    db->commit_hook = on_commit;
    db->commit_hook_ud = w;
    db->worker_attached = w->attached = true;
  }
  pthread_mutex_unlock(&db->hook_lock);
  if (taken) {
    return sc__fail(SC_MISUSE,
                    "sc_worker_start: a worker already runs on "
                    "this database handle");
  }
  return SC_OK;
}

static int worker_init_handles(sc_worker *w) {
  int rc = uv_async_init(w->loop, &w->wake, woken);
  if (rc != 0) {
    return sc__fail(SC_ERROR, "sc_worker_start: uv_async_init: %s",
                    uv_strerror(rc));
  }
  uv_timer_init(w->loop, &w->expiry_timer);
  uv_timer_init(w->loop, &w->dispatch_timer);
  uv_timer_init(w->loop, &w->purge_timer);
  w->wake.data = w->expiry_timer.data = w->dispatch_timer.data = w;
  w->purge_timer.data = w;
  w->open_handles = 4;
  return SC_OK;
}

int sc_worker_start(sc_db *db, uv_loop_t *loop, const sc_worker_options *opts,
                    sc_worker **out) {
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_worker_start: out is NULL");
  *out = NULL;
  SC__CHECK_DB(db);
  if (loop == NULL) return sc__fail(SC_MISUSE, "sc_worker_start: loop is NULL");
  sc_worker_options o;
  int rc = options_resolve(opts, &o);
  sc_worker *w = NULL;
  /* Only a check: a handle that is closing takes no new worker. */
  if (rc == SC_OK) rc = sc__call_enter(db);
  if (rc != SC_OK) return rc;
  sc__call_leave(db);
  rc = worker_alloc(db, loop, &o, &w);
  if (rc != SC_OK) return rc;
  /* The handles first: the commit hook calls uv_async_send on w->wake from
   * the writer thread as soon as it is installed. */
  rc = worker_init_handles(w);
  if (rc != SC_OK) {
    worker_free(w);
    return rc;
  }
  rc = sc__listen_start(w, &w->listen);
  if (rc == SC_OK) rc = hook_install(w);
  if (rc != SC_OK) {
    /* The handles are open: w is freed in their close callbacks. */
    w->stopping = true;
    close_listener(w);
    maybe_close(w);
    return rc;
  }
  /* What is already there: overdue orders, the first deadline, events
   * committed before the worker started. */
  if (!o.no_expiry) expire_now(w);
  request_round(w);
  arm_purge(w, (uint64_t)o.poll_interval_ms);
  *out = w;
  return SC_OK;
}

static void closed_one(sc_worker *w) {
  if (--w->open_handles > 0) return;
  if (w->attached) {
    /* Nothing of the worker reads db from here on: the host may close it,
     * from close_cb too. */
    pthread_mutex_lock(&w->db->hook_lock);
    w->db->worker_attached = false;
    pthread_mutex_unlock(&w->db->hook_lock);
  }
  if (w->close_cb != NULL) w->close_cb(w, w->close_ud);
  worker_free(w);
}

static void handle_closed(uv_handle_t *h) {
  closed_one(h->data);
}

/* Closes the handles once nothing is in flight: the round trip, the expiry
 * and retention work have come back, the handler has returned. */
static void maybe_close(sc_worker *w) {
  if (!w->stopping || w->closing || w->round_busy || w->expire_busy ||
      w->purge_busy || w->dispatching) {
    return;
  }
  w->closing = true;
  uv_close((uv_handle_t *)&w->wake, handle_closed);
  uv_close((uv_handle_t *)&w->expiry_timer, handle_closed);
  uv_close((uv_handle_t *)&w->dispatch_timer, handle_closed);
  uv_close((uv_handle_t *)&w->purge_timer, handle_closed);
}

/* The listener closes at once, whatever is in flight: it needs nothing of
 * a round, and it should not reconnect to a server the host is done with. */
static void close_listener(sc_worker *w) {
  if (w->listen == NULL) return;
  w->open_handles++;
  sc__listen_close(w->listen, closed_one);
  w->listen = NULL;
}

void sc__worker_stop(sc_worker *w, void (*close_cb)(sc_worker *w, void *ud),
                     void *ud) {
  w->stopping = true;
  w->close_cb = close_cb;
  w->close_ud = ud;
  sc__set_commit_hook(w->db, NULL, NULL);
  uv_timer_stop(&w->expiry_timer);
  uv_timer_stop(&w->dispatch_timer);
  uv_timer_stop(&w->purge_timer);
  close_listener(w);
  /* A round the full queue refused is dropped: its acks are lost to lease
   * expiry (at least once). Rounds with the writer finish first. */
  w->round_unsent = false;
  maybe_close(w);
}

int sc_worker_stop(sc_worker *w, void (*close_cb)(sc_worker *w, void *ud),
                   void *ud) {
  if (w == NULL) return sc__fail(SC_MISUSE, "sc_worker_stop: w is NULL");
  if (w->thread != NULL) {
    return sc__fail(SC_MISUSE,
                    "sc_worker_stop: this worker runs on its own "
                    "thread; stop it with sc_worker_stop_thread");
  }
  if (w->stopping) {
    return sc__fail(SC_MISUSE,
                    "sc_worker_stop: the worker is already stopping");
  }
  sc__worker_stop(w, close_cb, ud);
  return SC_OK;
}
