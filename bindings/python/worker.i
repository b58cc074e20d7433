/* The background worker for Python (included by shopcore.i): the library's
 * worker runs on its own loop and thread (sc_worker_start_thread), and its
 * event handler calls a Python callable with the GIL taken on that thread.
 *
 * Lifetime: a worker is listed on its database handle while it runs. It is
 * stopped exactly once, by whoever unlists it: its own stop, the handle's
 * close (which stops every listed worker before sc_close, as the C API
 * requires), or the capsule's destructor. A stop holds a call slot on the
 * handle, so a close waits for it rather than closing under a stopping
 * worker; a stop that finds the handle closing waits until the close has
 * stopped the worker. Stopping joins the worker thread, so it always runs
 * with the GIL released: the handler may be waiting for the GIL then. */

%{
struct scpy_worker {
  sc_worker *w;         /* the running worker, while listed */
  PyObject *callback;   /* owned; called with an event dict */
  PyObject *db_capsule; /* owned: the handle outlives its workers */
  scpy_db *h;
  scpy_worker *next; /* on h->workers */
  bool listed;       /* guarded by h->lock */
  atomic_bool halted; /* not running: before start, and once stopped */
};

static bool scpy_in_handler_of(scpy_db *h) {
  return scpy_in_handler != NULL && scpy_in_handler->h == h;
}

static bool scpy_finalizing(void) {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

/* Runs on the worker's thread: SC_OK acks the event. The callable's result
 * False, or an exception (reported as unraisable: the package's callable
 * catches and logs the user's exceptions itself), retries it later. */
static int scpy_on_event(const sc_event *ev, void *ud) {
  scpy_worker *pw = ud;
  /* Taking the GIL during finalization would end this thread inside the
   * library; the package stops workers at exit, so this is a last guard. */
  if (scpy_finalizing()) return SC_CANCELED;
  PyGILState_STATE gil = PyGILState_Ensure();
  scpy_in_handler = pw;
  int rc = SC_ERROR;
  PyObject *event = scpy_event_dict(ev);
  if (event != NULL) {
    PyObject *r = PyObject_CallFunctionObjArgs(pw->callback, event, NULL);
    if (r != NULL) rc = r == Py_False ? SC_ERROR : SC_OK;
    Py_XDECREF(r);
    Py_DECREF(event);
  }
  if (PyErr_Occurred()) PyErr_WriteUnraisable(pw->callback);
  scpy_in_handler = NULL;
  PyGILState_Release(gil);
  return rc;
}

/* Takes pw off its handle's list; true if this caller must stop it. */
static bool scpy_worker_unlist(scpy_worker *pw) {
  scpy_db *h = pw->h;
  pthread_mutex_lock(&h->lock);
  bool was = pw->listed;
  if (was) {
    scpy_worker **p = &h->workers;
    while (*p != pw) p = &(*p)->next;
    *p = pw->next;
    pw->listed = false;
  }
  pthread_mutex_unlock(&h->lock);
  return was;
}

/* Called without the GIL, by the one caller that unlisted pw. */
static int scpy_worker_halt(scpy_worker *pw) {
  int rc = sc_worker_stop_thread(pw->w);
  pw->w = NULL;
  atomic_store(&pw->halted, true);
  return rc;
}

/* Stops pw if it runs and returns once it does not; without the GIL. */
static int scpy_worker_stop_once(scpy_worker *pw) {
  scpy_db *h = pw->h;
  int rc = SC_OK;
  atomic_fetch_add(&h->calls, 1);
  if (!atomic_load(&h->closed) && scpy_worker_unlist(pw)) {
    rc = scpy_worker_halt(pw);
  }
  atomic_fetch_sub(&h->calls, 1);
  /* Unlisted by a concurrent stop or by the close: wait for its join. */
  while (!atomic_load(&pw->halted)) scpy_sleep_ms(1);
  return rc;
}

/* From the handle's close, without the GIL, once no call is in progress. */
static void scpy_stop_workers(scpy_db *h) {
  for (;;) {
    pthread_mutex_lock(&h->lock);
    scpy_worker *pw = h->workers;
    pthread_mutex_unlock(&h->lock);
    if (pw == NULL) return;
    if (scpy_worker_unlist(pw)) scpy_worker_halt(pw);
  }
}

static void scpy_worker_destroy(PyObject *capsule) {
  scpy_worker *pw = PyCapsule_GetPointer(capsule, SCPY_WORKER_CAPSULE);
  if (pw == NULL) return;
  if (!atomic_load(&pw->halted)) {
    Py_BEGIN_ALLOW_THREADS
    scpy_worker_stop_once(pw);
    Py_END_ALLOW_THREADS
  }
  Py_XDECREF(pw->callback);
  Py_XDECREF(pw->db_capsule);
  free(pw);
}

static scpy_worker *scpy_worker_get(PyObject *obj) {
  if (!PyCapsule_IsValid(obj, SCPY_WORKER_CAPSULE)) {
    PyErr_SetString(PyExc_TypeError, "expected a shopcore worker handle");
    return NULL;
  }
  return PyCapsule_GetPointer(obj, SCPY_WORKER_CAPSULE);
}
%}

%nothread;
%inline %{
/** Starts a worker on its own thread calling callback(event_dict) per
 * event (None: expiry only); the options are sc_worker_options'. Returns
 * the worker handle. */
PyObject *scpy_worker_start(PyObject *db_capsule, PyObject *callback,
                            int batch_max, long long lease_ms,
                            long long poll_interval_ms, int no_expiry) {
  if (callback != Py_None && !PyCallable_Check(callback)) {
    PyErr_SetString(PyExc_TypeError, "the event handler must be callable");
    return NULL;
  }
  scpy_db *h = scpy_db_enter(db_capsule);
  if (h == NULL) return NULL;
  scpy_worker *pw = calloc(1, sizeof *pw);
  if (pw == NULL) {
    scpy_db_leave(h);
    return PyErr_NoMemory();
  }
  Py_INCREF(callback);
  Py_INCREF(db_capsule);
  pw->callback = callback;
  pw->db_capsule = db_capsule;
  pw->h = h;
  atomic_init(&pw->halted, true);
  PyObject *capsule = PyCapsule_New(pw, SCPY_WORKER_CAPSULE, scpy_worker_destroy);
  if (capsule == NULL) {
    scpy_db_leave(h);
    Py_DECREF(callback);
    Py_DECREF(db_capsule);
    free(pw);
    return NULL;
  }
  sc_worker_options o;
  sc_worker_options_init(&o);
  o.on_event = callback != Py_None ? scpy_on_event : NULL;
  o.ud = pw;
  o.batch_max = batch_max;
  o.lease_ms = lease_ms;
  o.poll_interval_ms = poll_interval_ms;
  o.no_expiry = no_expiry;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = sc_worker_start_thread(h->db, &o, &pw->w);
  Py_END_ALLOW_THREADS
  if (rc == SC_OK) {
    /* Listed while this call still holds its slot: close cannot have
     * passed its wait for calls, so it will find and stop this worker. */
    pthread_mutex_lock(&h->lock);
    pw->next = h->workers;
    h->workers = pw;
    pw->listed = true;
    atomic_store(&pw->halted, false);
    pthread_mutex_unlock(&h->lock);
  } else {
    scpy_raise_status(rc);
  }
  scpy_db_leave(h);
  if (rc != SC_OK) Py_CLEAR(capsule);
  return capsule;
}

/** Stops the worker and joins its thread; events in flight are completed
 * first. A second stop, or a stop after the database closed, does nothing. */
PyObject *scpy_worker_stop(PyObject *worker) {
  scpy_worker *pw = scpy_worker_get(worker);
  if (pw == NULL) return NULL;
  if (scpy_in_handler == pw) {
    PyErr_SetString(PyExc_RuntimeError,
                    "cannot stop a worker from its own event handler");
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = scpy_worker_stop_once(pw);
  Py_END_ALLOW_THREADS
  /* No handler call can come any more: dropping the callable breaks the
   * reference cycle worker -> callable -> Python Worker -> worker. */
  Py_CLEAR(pw->callback);
  if (rc != SC_OK) {
    scpy_raise_status(rc);
    return NULL;
  }
  Py_RETURN_NONE;
}

/** True while the worker runs. */
PyObject *scpy_worker_running(PyObject *worker) {
  scpy_worker *pw = scpy_worker_get(worker);
  if (pw == NULL) return NULL;
  return PyBool_FromLong(!atomic_load(&pw->halted));
}
%}
%thread;
