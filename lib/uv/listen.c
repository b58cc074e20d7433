/* The worker's ear on PostgreSQL: a connection of its own that LISTENs on
 * the schema's channel (pg/notify.c), watched in the worker's loop, so that
 * a batch committed by another host wakes dispatch at once rather than at
 * the next poll.
 *
 * Nothing here waits on the server: the connection is made with libpq's
 * non-blocking connect (only a host name's look-up, if the URI names one,
 * is made inside PQconnectStartParams), and its socket is watched with a
 * uv_poll handle.
 * The listener is only an accelerator: the worker's poll still runs, so
 * while the connection is down (the server restarted, the backend was
 * terminated) nothing is lost but speed. A lost connection is made again
 * after a pause that doubles up to BACKOFF_MAX_MS, and once it listens
 * again the worker is woken once, for what was committed meanwhile.
 *
 * A notifying host keeps quiet for a few ms after each notification
 * (pg/notify.c); one more round TRAIL_MS after a notification finds what
 * the batches of that gap committed. All delays here are real time (the
 * loop's timers); the expiry deadline a "d" notification hints at is
 * counted on the db clock by the worker (sc__worker_nudge). */
#include <string.h>

#include "../pg/pg.h"
#include "worker.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define TRAIL_MS 25

typedef enum { L_IDLE, L_CONNECTING, L_LISTENING } listen_state;

struct sc__listen {
  sc_worker *w;
  PGconn *c;
  listen_state state;
  PostgresPollingStatusType connect_st;
  uv_poll_t *poll; /* on PQsocket(c); a new one if the socket changes */
  int poll_fd;
  uv_timer_t timer; /* the pause before a reconnect; the connect's limit */
  uv_timer_t trail; /* the round after a notification */
  bool trail_deadline;
  uint64_t backoff_ms;
  int open_handles;
  bool closing;
  void (*done)(sc_worker *w);
};

static void on_poll(uv_poll_t *p, int status, int events);
static void reconnect_fired(uv_timer_t *t);

static void handle_closed(uv_handle_t *h) {
  sc__listen *l = h->data;
  if (h->type == UV_POLL) sc__free(h);
  if (--l->open_handles > 0 || !l->closing) return;
  sc_worker *w = l->w;
  void (*done)(sc_worker *) = l->done;
  sc__free(l);
  done(w);
}

/* Stops watching the socket: before libpq closes it (PQfinish), as libuv
 * asks, or because it changed. The handle is freed once closed. */
static void drop_poll(sc__listen *l) {
  if (l->poll == NULL) return;
  uv_poll_stop(l->poll);
  uv_close((uv_handle_t *)l->poll, handle_closed);
  l->poll = NULL;
}

/* The connection is gone or never came: close it and try again after a
 * pause; the worker's poll covers the gap. */
static void lost(sc__listen *l) {
  drop_poll(l);
  if (l->c != NULL) PQfinish(l->c);
  l->c = NULL;
  l->state = L_IDLE;
  if (l->closing) return;
  uv_timer_start(&l->timer, reconnect_fired, l->backoff_ms, 0);
  l->backoff_ms =
      l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

/* Watches the connection's socket for events. uv_poll_start after a stop
 * registers the socket anew, which a socket libpq replaced under the same
 * number needs. */
static void watch(sc__listen *l, int events) {
  int fd = PQsocket(l->c);
  if (fd < 0) {
    lost(l);
    return;
  }
  if (l->poll != NULL && l->poll_fd != fd) drop_poll(l);
  if (l->poll == NULL) {
    uv_poll_t *p = sc__malloc(sizeof *p);
    if (p == NULL || uv_poll_init(l->w->loop, p, fd) != 0) {
      sc__free(p);
      lost(l);
      return;
    }
    p->data = l;
    l->poll = p;
    l->poll_fd = fd;
    l->open_handles++;
  } else {
    uv_poll_stop(l->poll);
  }
  if (uv_poll_start(l->poll, events, on_poll) != 0) lost(l);
}

/* The connection is up: LISTEN on the channel, without waiting. */
static void send_listen(sc__listen *l) {
  uv_timer_stop(&l->timer);
  char *id = PQescapeIdentifier(l->c, l->w->db->pg->channel,
                                strlen(l->w->db->pg->channel));
  char sql[96];
  snprintf(sql, sizeof sql, "LISTEN %s", id ? id : "");
  PQfreemem(id);
  if (id == NULL || PQsetnonblocking(l->c, 1) != 0 ||
      PQsendQuery(l->c, sql) != 1) {
    lost(l);
    return;
  }
  l->state = L_LISTENING;
  int flushed = PQflush(l->c);
  if (flushed < 0) {
    lost(l);
    return;
  }
  watch(l, UV_READABLE | (flushed ? UV_WRITABLE : 0));
}

static void connect_step(sc__listen *l) {
  PostgresPollingStatusType st = PQconnectPoll(l->c);
  l->connect_st = st;
  if (st == PGRES_POLLING_FAILED) {
    lost(l);
  } else if (st == PGRES_POLLING_OK) {
    send_listen(l);
  } else {
    watch(l, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
  }
}

static void connect_timeout(uv_timer_t *t) {
  sc__listen *l = t->data;
  if (l->state == L_CONNECTING) lost(l);
}

static void connect_begin(sc__listen *l) {
  l->c = sc__pg_connect_start(l->w->db);
  if (l->c == NULL || PQstatus(l->c) == CONNECTION_BAD) {
    lost(l);
    return;
  }
  l->state = L_CONNECTING;
  int limit = l->w->db->opts.busy_timeout_ms;
  uv_timer_start(&l->timer, connect_timeout,
                 (uint64_t)(limit > 0 ? limit : 1000), 0);
  /* libpq's rule: the first poll waits for the socket to be writable. */
  watch(l, UV_WRITABLE);
}

static void reconnect_fired(uv_timer_t *t) {
  sc__listen *l = t->data;
  if (!l->closing && l->state == L_IDLE) connect_begin(l);
}

static void trail_fired(uv_timer_t *t) {
  sc__listen *l = t->data;
  bool deadline = l->trail_deadline;
  l->trail_deadline = false;
  if (!l->closing) sc__worker_nudge(l->w, deadline);
}

/* Reads what arrived: LISTEN's answer, then notifications. */
static void readable(sc__listen *l) {
  if (PQconsumeInput(l->c) != 1) {
    lost(l);
    return;
  }
  while (!PQisBusy(l->c)) {
    PGresult *r = PQgetResult(l->c);
    if (r == NULL) break;
    ExecStatusType s = PQresultStatus(r);
    PQclear(r);
    if (s != PGRES_COMMAND_OK) {
      lost(l);
      return;
    }
    /* Listening (again): what was committed before is found once. */
    l->backoff_ms = BACKOFF_MIN_MS;
    sc__worker_nudge(l->w, true);
  }
  bool any = false, deadline = false;
  PGnotify *n;
  while ((n = PQnotifies(l->c)) != NULL) {
    any = true;
    deadline = deadline || n->extra[0] == 'd';
    PQfreemem(n);
  }
  if (PQstatus(l->c) == CONNECTION_BAD) {
    lost(l);
    return;
  }
  if (!any) return;
  sc__worker_nudge(l->w, deadline);
  l->trail_deadline = l->trail_deadline || deadline;
  if (!uv_is_active((uv_handle_t *)&l->trail)) {
    uv_timer_start(&l->trail, trail_fired, TRAIL_MS, 0);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  sc__listen *l = p->data;
  if (l->closing || p != l->poll) return;
  if (status < 0) {
    lost(l);
  } else if (l->state == L_CONNECTING) {
    connect_step(l);
  } else if (l->state == L_LISTENING) {
    if (events & UV_WRITABLE) {
      int flushed = PQflush(l->c);
      if (flushed < 0) {
        lost(l);
        return;
      }
      if (flushed == 0) watch(l, UV_READABLE);
    }
    if ((events & UV_READABLE) && l->c != NULL) readable(l);
  }
}

int sc__listen_start(sc_worker *w, sc__listen **out) {
  *out = NULL;
  if (w->db->pg == NULL) return SC_OK; /* SQLite: the commit hook is enough */
  sc__listen *l = sc__calloc(1, sizeof *l);
  if (l == NULL) return sc__fail(SC_NOMEM, "sc_worker_start: out of memory");
  l->w = w;
  l->backoff_ms = BACKOFF_MIN_MS;
  uv_timer_init(w->loop, &l->timer);
  uv_timer_init(w->loop, &l->trail);
  l->timer.data = l->trail.data = l;
  l->open_handles = 2;
  connect_begin(l);
  *out = l;
  return SC_OK;
}

void sc__listen_close(sc__listen *l, void (*done)(sc_worker *w)) {
  l->closing = true;
  l->done = done;
  drop_poll(l); /* before PQfinish closes the socket */
  if (l->c != NULL) PQfinish(l->c);
  l->c = NULL;
  uv_close((uv_handle_t *)&l->timer, handle_closed);
  uv_close((uv_handle_t *)&l->trail, handle_closed);
}
