/* A worker on a loop and a thread of its own, for hosts without libuv and
 * for the Python bindings. The thread runs the loop until the worker has
 * closed; sc_worker_stop_thread asks for that through a uv_async handle
 * (the only thread-safe way into a loop) and joins. */
#include <errno.h>
#include <string.h>

#include "worker.h"

struct sc__worker_thread {
  uv_loop_t loop;
  uv_async_t stop;
  pthread_t tid;
  sem_t started;
  sc_db *db;
  const sc_worker_options *opts; /* the caller's, until started */
  sc_worker *w;
  int start_rc;
  char errmsg[SC__ERRMSG_MAX];
};

static void stop_requested(uv_async_t *a) {
  sc__worker_thread *t = a->data;
  sc__worker_stop(t->w, NULL, NULL);
  uv_close((uv_handle_t *)&t->stop, NULL);
}

/* Starts the worker on the thread's loop; on failure the loop is left
 * closed and start_rc / errmsg say why. */
static int thread_start(sc__worker_thread *t) {
  int rc = uv_loop_init(&t->loop);
  if (rc != 0) {
    return sc__fail(SC_ERROR, "sc_worker_start_thread: uv_loop_init: %s",
                    uv_strerror(rc));
  }
  rc = uv_async_init(&t->loop, &t->stop, stop_requested);
  if (rc != 0) {
    uv_loop_close(&t->loop);
    return sc__fail(SC_ERROR, "sc_worker_start_thread: uv_async_init: %s",
                    uv_strerror(rc));
  }
  t->stop.data = t;
  rc = sc_worker_start(t->db, &t->loop, t->opts, &t->w);
  if (rc != SC_OK) {
    uv_close((uv_handle_t *)&t->stop, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
    return rc;
  }
  t->w->thread = t;
  return SC_OK;
}

static void *thread_main(void *arg) {
  sc__worker_thread *t = arg;
  pthread_setname_np(pthread_self(), "sc-worker");
  t->start_rc = thread_start(t);
  bool ok = t->start_rc == SC_OK;
  if (!ok) snprintf(t->errmsg, sizeof t->errmsg, "%s", sc_errmsg(NULL));
  sem_post(&t->started); /* the starter may free t from here on if !ok */
  if (ok) uv_run(&t->loop, UV_RUN_DEFAULT);
  return NULL;
}

int sc_worker_start_thread(sc_db *db, const sc_worker_options *opts,
                           sc_worker **out) {
  const char *fn = "sc_worker_start_thread";
  if (out == NULL) return sc__fail(SC_MISUSE, "%s: out is NULL", fn);
  *out = NULL;
  SC__CHECK_DB(db);
  sc__worker_thread *t = sc__calloc(1, sizeof *t);
  if (t == NULL) return sc__fail(SC_NOMEM, "%s: out of memory", fn);
  t->db = db;
  t->opts = opts;
  if (sem_init(&t->started, 0, 0) != 0) {
    sc__free(t);
    return sc__fail(SC_ERROR, "%s: sem_init: %s", fn, strerror(errno));
  }
  if (pthread_create(&t->tid, NULL, thread_main, t) != 0) {
    sem_destroy(&t->started);
    sc__free(t);
    return sc__fail(SC_ERROR, "%s: cannot start a thread", fn);
  }
  while (sem_wait(&t->started) != 0 && errno == EINTR) {
  }
  int rc = t->start_rc;
  if (rc != SC_OK) {
    pthread_join(t->tid, NULL);
    sc__set_errmsg(t->errmsg);
    sem_destroy(&t->started);
    sc__free(t);
    return rc;
  }
  *out = t->w;
  return SC_OK;
}

int sc_worker_stop_thread(sc_worker *w) {
  const char *fn = "sc_worker_stop_thread";
  if (w == NULL) return sc__fail(SC_MISUSE, "%s: w is NULL", fn);
  sc__worker_thread *t = w->thread;
  if (t == NULL) {
    return sc__fail(SC_MISUSE,
                    "%s: this worker runs on the host's loop; stop "
                    "it with sc_worker_stop",
                    fn);
  }
  if (pthread_equal(pthread_self(), t->tid)) {
    return sc__fail(SC_MISUSE,
                    "%s: called on the worker's own thread (from "
                    "its handler); call it from another thread",
                    fn);
  }
  /* w is freed on the worker's thread once it has closed: not used below. */
  uv_async_send(&t->stop);
  pthread_join(t->tid, NULL);
  int rc = uv_loop_close(&t->loop);
  sem_destroy(&t->started);
  sc__free(t);
  return rc == 0
             ? SC_OK
             : sc__fail(SC_ERROR, "%s: uv_loop_close: %s", fn, uv_strerror(rc));
}
