"""The background worker: a thread of the library that expires due orders
on time and hands every outbox event to a Python callable."""

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from . import _check as chk
from . import _shopcore as _c
from ._types import Event

if TYPE_CHECKING:  # pragma: no cover
    from ._db import Database

__all__ = ["Worker", "EventHandler"]

#: What a worker calls per event. Returning normally (anything but False)
#: acknowledges the event; returning False or raising retries it later with
#: backoff (after ``outbox_max_attempts`` it is dead).
EventHandler = Callable[[Event], Optional[bool]]

_log = logging.getLogger("shopcore")


class Worker:
    """A running worker; create it with ``Database.start_worker``.

    The handler runs on the worker's own thread (not the caller's), one
    event at a time; events of one aggregate arrive in sequence order, each
    at least once (deduplicate by ``event.id``). While the worker runs,
    pending orders are also expired at their deadline.

    One worker runs per database handle at a time (starting a second
    raises Misuse). ``stop()`` (or leaving a ``with`` block, or closing the
    database) finishes the event in flight, stops the thread and joins it;
    no handler call happens after it returns. A handler must not stop its
    own worker or close the database (RuntimeError).
    """

    def __init__(self, db: "Database", handler: Optional[EventHandler],
                 batch_max: int, lease_ms: int, poll_interval_ms: int,
                 expire_orders: bool) -> None:
        # Private: use Database.start_worker().
        if handler is not None and not callable(handler):
            raise TypeError("handler must be callable, not {}".format(
                type(handler).__name__))
        if not isinstance(expire_orders, bool):
            raise TypeError("expire_orders must be a bool")
        self._handler = handler
        self._db = db
        self._lock = threading.Lock()
        self._delivered = 0
        self._failed = 0
        self._w = _c.scpy_worker_start(
            db._h, None if handler is None else self._dispatch,
            chk.in_range(batch_max, "batch_max", 0, _c.SC_OUTBOX_CLAIM_MAX),
            chk.non_negative(lease_ms, "lease_ms"),
            chk.non_negative(poll_interval_ms, "poll_interval_ms"),
            0 if expire_orders else 1)

    def _dispatch(self, raw: Dict[str, Any]) -> bool:
        # Called by the C handler with the GIL held, on the worker's thread.
        assert self._handler is not None
        try:
            event = Event._from_dict(raw)
            ok = self._handler(event) is not False
        except Exception:
            _log.exception("shopcore: event handler failed on event %s; it "
                           "will be retried", raw.get("id"))
            ok = False
        with self._lock:
            if ok:
                self._delivered += 1
            else:
                self._failed += 1
        return ok

    def stop(self) -> None:
        """Stops the worker and joins its thread. A second call does
        nothing; so does a call after the database was closed (closing
        stops its workers)."""
        _c.scpy_worker_stop(self._w)

    @property
    def running(self) -> bool:
        """True until the worker is stopped."""
        return bool(_c.scpy_worker_running(self._w))

    @property
    def delivered(self) -> int:
        """Handler calls that acknowledged their event."""
        with self._lock:
            return self._delivered

    @property
    def failed(self) -> int:
        """Handler calls that returned False or raised (retried later)."""
        with self._lock:
            return self._failed

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "<shopcore.Worker {} delivered={} failed={}>".format(
            "running" if self.running else "stopped", self.delivered,
            self.failed)
