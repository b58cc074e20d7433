"""The database handle and open()."""

import atexit
import os
import threading
import weakref
from typing import (Any, Iterable, List, Mapping, Optional, Tuple, Type,
                    Union)

from . import _check as chk
from . import _shopcore as _c
from ._errors import Error, error_for
from ._types import (Account, CouponPolicy, DeadEvent, Durability, Event,
                     Order, OrderStatus, OutboxStats, Product, RepairResult,
                     Stats, Stock)
from ._worker import EventHandler, Worker

__all__ = ["Database", "ManualClock", "open", "NAME_MAX", "KEY_MAX",
           "CHECKOUT_LINES_MAX"]

#: The most events one claim_events() or dead_events() call returns.
CLAIM_MAX: int = _c.SC_OUTBOX_CLAIM_MAX
#: The longest product or policy name, in UTF-8 bytes; longer raises Invalid.
NAME_MAX: int = _c.SC_NAME_MAX
#: The longest idempotency key, in UTF-8 bytes; longer raises Invalid.
KEY_MAX: int = _c.SC_KEY_MAX
#: The most lines one checkout may have; more raises Invalid.
CHECKOUT_LINES_MAX: int = _c.SC_CHECKOUT_LINES_MAX

PathLike = Union[str, "os.PathLike[str]"]
Lines = Union[Mapping[int, int], Iterable[Tuple[int, int]]]

# Databases still open, closed at interpreter exit: a worker thread must not
# call into an interpreter that is finalizing.
_open_dbs: "weakref.WeakSet[Database]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for db in list(_open_dbs):
        try:
            db.close()
        except Exception:  # pragma: no cover - nothing to report to at exit
            pass


class ManualClock:
    """A clock you set by hand, for deterministic tests of deadlines and
    validity windows: ``open(path, clock=ManualClock(start_ms))``.

    The library reads it from its own threads; setting it is thread-safe.
    """

    def __init__(self, now_ms: int = 0) -> None:
        self._c = _c.scpy_clock_new(chk.non_negative(now_ms, "now_ms"))

    @property
    def now_ms(self) -> int:
        """The current time, milliseconds since the epoch."""
        return int(_c.scpy_clock_get(self._c))

    @now_ms.setter
    def now_ms(self, value: int) -> None:
        _c.scpy_clock_set(self._c, chk.non_negative(value, "now_ms"))

    def advance(self, ms: int) -> int:
        """Moves the clock forward by ms (>= 0); returns the new time."""
        now = self.now_ms + chk.non_negative(ms, "ms")
        self.now_ms = now
        return now

    def __repr__(self) -> str:
        return "ManualClock({})".format(self.now_ms)


class Database:
    """An open libshopcore database; create it with ``shopcore.open()``.

    Every method may be called from any number of threads at once: the GIL
    is released while the library works, and writes from all threads are
    committed together (group commit). A write returns once it is durable.

    Failures raise a subclass of ``shopcore.Error`` (``SoldOut``,
    ``OutOfStock`` ...); bad arguments raise TypeError or ValueError before
    reaching the library. Use it as a context manager, or call ``close()``;
    any call after closing raises ``shopcore.Closed``.
    """

    def __init__(self, handle: Any, path: str,
                 clock: Optional[ManualClock]) -> None:
        # Private: use shopcore.open().
        self._h = handle
        self._path = path
        self._clock = clock
        self._workers: "weakref.WeakSet[Worker]" = weakref.WeakSet()
        self._workers_lock = threading.Lock()
        _open_dbs.add(self)

    # ---- life cycle ------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once close() has been called."""
        return bool(_c.scpy_is_closed(self._h))

    def close(self) -> None:
        """Stops this database's workers, waits for calls in progress in
        other threads, and closes the file. Calling it again does nothing.
        """
        _c.scpy_close(self._h)
        _open_dbs.discard(self)
        with self._workers_lock:
            workers = list(self._workers)
        for w in workers:
            w.stop()  # already stopped by the close: releases its handler

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<shopcore.Database {!r}{}>".format(
            self._path, " closed" if self.closed else "")

    @property
    def peak_concurrent_calls(self) -> int:
        """The most calls that were ever in progress at once on this handle,
        the GIL released. Above 1 shows that Python threads really ran
        library calls concurrently."""
        return int(_c.scpy_peak_calls(self._h))

    def _calls_in_progress(self) -> int:
        # For tests: the calls between their entry and exit right now.
        return int(_c.scpy_calls_in_progress(self._h))

    # ---- catalog and stock -----------------------------------------------

    def create_product(self, name: str, price: int, stock: int = 0) -> int:
        """Creates a product; returns its id.

        Args:
            name: non-empty, at most NAME_MAX (255) bytes in UTF-8.
            price: minor units (cents), >= 0.
            stock: units on hand, >= 0.

        Raises: Invalid (a name past NAME_MAX).
        """
        return int(_c.sc_product_create(self._h, chk.text(name, "name"),
                                        chk.non_negative(price, "price"),
                                        chk.non_negative(stock, "stock")))

    def restock(self, product: int, qty: int) -> None:
        """Adds qty (> 0) units to a product's stock.

        Raises: NotFound (no such product), Invalid (overflow).
        """
        _c.sc_product_restock(self._h, chk.ident(product, "product"),
                              chk.positive(qty, "qty"))

    def product(self, product: int) -> Product:
        """Reads a product: name, price and stock, on one snapshot.

        Raises: NotFound.
        """
        name, price, stock = _c.sc_product_get(self._h,
                                               chk.ident(product, "product"))
        return Product(name, price, Stock._make(stock))

    def stock(self, product: int) -> Stock:
        """Reads a product's stock. Raises NotFound."""
        return Stock._make(_c.sc_stock_get(self._h,
                                           chk.ident(product, "product")))

    # ---- accounts ----------------------------------------------------------

    def deposit(self, user: int, amount: int,
                idempotency_key: Optional[str] = None) -> None:
        """Credits amount (> 0, minor units) to a user's account, creating
        it on first use.

        With an idempotency_key (at most KEY_MAX, 255, bytes in UTF-8), a
        replay with the same user and amount changes nothing; another user
        or amount raises IdempotencyMismatch.

        Raises: Invalid (a key past KEY_MAX), IdempotencyMismatch.
        """
        _c.sc_account_deposit(self._h, chk.ident(user, "user"),
                              chk.positive(amount, "amount"),
                              chk.optional_text(idempotency_key,
                                                "idempotency_key"))

    def account(self, user: int) -> Account:
        """Reads a user's account. Raises NotFound."""
        return Account._make(_c.sc_account_get(self._h,
                                               chk.ident(user, "user")))

    # ---- coupons -----------------------------------------------------------

    def create_policy(self, name: str, max_count: int, *,
                      per_user_limit: int = 1, discount_amount: int = 0,
                      discount_percent: int = 0, max_discount: int = 0,
                      starts_at_ms: int = 0, ends_at_ms: int = 0) -> int:
        """Creates a coupon policy; returns its id.

        Args:
            name: non-empty, at most NAME_MAX (255) bytes in UTF-8.
            max_count: the cap (> 0): never more coupons than this, whatever
                the concurrency.
            per_user_limit: coupons one user may hold (>= 1).
            discount_amount: a fixed discount in minor units, or
            discount_percent: percent off (1..100), capped by max_discount
                when that is > 0. Not both.
            starts_at_ms, ends_at_ms: the validity window (0 = unbounded);
                active while starts <= now < ends.

        Raises: Invalid (inconsistent discounts or window, a name past
        NAME_MAX).
        """
        spec = (chk.text(name, "name"), chk.positive(max_count, "max_count"),
                chk.int32(per_user_limit, "per_user_limit", 1),
                chk.non_negative(discount_amount, "discount_amount"),
                chk.int32(discount_percent, "discount_percent"),
                chk.non_negative(max_discount, "max_discount"),
                chk.non_negative(starts_at_ms, "starts_at_ms"),
                chk.non_negative(ends_at_ms, "ends_at_ms"))
        if spec[4] > 100:
            raise ValueError("discount_percent {} is above 100".format(
                spec[4]))
        return int(_c.sc_coupon_policy_create(self._h, spec))

    def pause_policy(self, policy: int, paused: bool = True) -> None:
        """The kill switch: stops issuance (paused=False resumes). Pausing a
        paused policy changes nothing. Raises NotFound."""
        if not isinstance(paused, bool):
            raise TypeError("paused must be a bool, not " +
                            type(paused).__name__)
        _c.sc_coupon_policy_pause(self._h, chk.ident(policy, "policy"),
                                  int(paused))

    def resume_policy(self, policy: int) -> None:
        """Resumes issuance of a paused policy; resuming a running policy
        changes nothing. Raises NotFound."""
        _c.sc_coupon_policy_resume(self._h, chk.ident(policy, "policy"))

    def policy(self, policy: int) -> CouponPolicy:
        """Reads a coupon policy. Raises NotFound."""
        pid = chk.ident(policy, "policy")
        max_count, issued, per_user, paused = _c.sc_coupon_policy_get(
            self._h, pid)
        return CouponPolicy(pid, max_count, issued, per_user, bool(paused))

    def issue_coupon(self, policy: int, user: int) -> int:
        """Issues one coupon of policy to user; returns the coupon's id.

        The cap holds whatever the concurrency (threads and processes).

        Raises: SoldOut, LimitReached (the user holds per_user_limit),
        Paused, NotActive (outside the validity window), NotFound.
        """
        return int(_c.sc_coupon_issue(self._h, chk.ident(policy, "policy"),
                                      chk.ident(user, "user")))

    # ---- orders ------------------------------------------------------------

    def checkout(self, user: int, lines: Lines, *,
                 coupon: Optional[int] = None, ttl_ms: int = 0,
                 idempotency_key: Optional[str] = None,
                 expected_versions: Optional[Mapping[int, int]] = None
                 ) -> int:
        """Reserves stock, holds the coupon and the total against the user's
        available balance, and creates a PENDING order: all or nothing.
        Returns the order's id.

        Args:
            user: the buyer, who must have an account.
            lines: {product: qty} or [(product, qty), ...]; each product
                once, each qty > 0; at most CHECKOUT_LINES_MAX (1,000).
            coupon: one of the user's coupons, or None.
            ttl_ms: time to pay; 0 = the database's default_order_ttl_ms.
            idempotency_key: a replay with the same key and request returns
                the first order's id and changes nothing; at most KEY_MAX
                (255) bytes in UTF-8.
            expected_versions: {product: stock version} for every line; a
                product whose version moved raises Conflict.

        Raises: OutOfStock, InsufficientBalance, CouponUnavailable,
        Conflict, NotFound, IdempotencyMismatch, Invalid (also past a
        limit: more than CHECKOUT_LINES_MAX lines, a key past KEY_MAX).
        """
        pairs = chk.lines(lines)
        versions = chk.versions(expected_versions, [p for p, _ in pairs])
        req = (chk.ident(user, "user"), pairs,
               0 if coupon is None else chk.ident(coupon, "coupon"),
               chk.non_negative(ttl_ms, "ttl_ms"),
               chk.optional_text(idempotency_key, "idempotency_key"),
               versions)
        return int(_c.sc_checkout(self._h, req))

    def pay(self, order: int) -> None:
        """Pays a PENDING order before its deadline: debits the balance,
        consumes the stock, uses the coupon. Paying twice does nothing.

        Raises: Expired (deadline passed), InvalidState (cancelled),
        NotFound.
        """
        _c.sc_order_pay(self._h, chk.ident(order, "order"))

    def cancel(self, order: int) -> None:
        """Cancels a PENDING order, releasing its stock, hold and coupon.
        Cancelling twice does nothing. Raises InvalidState, NotFound."""
        _c.sc_order_cancel(self._h, chk.ident(order, "order"))

    def order(self, order: int) -> Order:
        """Reads an order. Raises NotFound."""
        oid = chk.ident(order, "order")
        user, status, total, discount, expires = _c.sc_order_get(self._h, oid)
        return Order(oid, user, OrderStatus(status), total, discount, expires)

    def expire_due(self) -> int:
        """Expires every PENDING order past its deadline (by the database's
        clock); returns how many. A running worker does this on time.

        An order that cannot be released (a damaged row: a hold or stock
        reservation edited by hand) is skipped and left as it is, counted
        in shopcore_orders_expire_skipped_total (metrics_prometheus) and
        named by verify(); the others expire all the same."""
        return int(_c.sc_orders_expire_due(self._h))

    # ---- invariants --------------------------------------------------------

    def verify(self) -> str:
        """Checks every invariant of the design on one snapshot; returns the
        report ("ok") when all hold. Raises Corrupt with the findings."""
        (rc, message), report = _c.sc_verify(self._h)
        if rc != 0:
            raise error_for(rc, message + ("\n" + report if report else ""))
        return str(report).strip()

    def repair(self, dry_run: bool = False) -> RepairResult:
        """The recovery steps for a database written by something else:
        recomputes every counter from the rows, releases coupons of orders
        that are gone or closed, revokes unused coupons issued past a cap.
        One transaction; no events. Run verify() afterwards.

        Raises Corrupt (with the report) when a finding could not be
        repaired; the others are.
        """
        if not isinstance(dry_run, bool):
            raise TypeError("dry_run must be a bool")
        (rc, message), changes, report = _c.sc_repair(self._h, int(dry_run))
        if rc != 0:
            raise error_for(rc, message + ("\n" + report if report else ""))
        return RepairResult(int(changes), str(report).strip())

    def backup(self, dest_path: "PathLike") -> None:
        """Copies the database to dest_path (which must not exist) as one
        consistent snapshot while writers go on. Raises Exists, IOFailure.
        """
        _c.sc_backup(self._h, _path_text(dest_path, "dest_path"))

    def stats(self) -> Stats:
        """Counts what the database holds (full scans: not a hot path)."""
        return Stats._make(_c.sc_stats_get(self._h))

    def metrics_count(self, status: Union[int, Type[Error]] = 0,
                      op: Optional[str] = None) -> int:
        """Operations of kind op ("checkout", "coupon_issue" ...; None =
        every kind) that completed with status since open: a status code, or
        its exception class (``shopcore.SoldOut``); 0 is success.

        Raises: NotFound (no operation of that name), Invalid (not a status
        code).
        """
        if isinstance(status, type) and issubclass(status, Error):
            code = status.code
        else:
            code = chk.in_range(status, "status", -2**31, 2**31 - 1)
        return int(_c.sc_metrics_count(self._h, chk.optional_text(op, "op"),
                                       code))

    def metrics_prometheus(self) -> str:
        """This handle's operation counters, latency summaries, batch sizes,
        the commit-duration histogram, slow commits (20 ms or more by
        default), fsyncs by file, checkpoints, queue depth and alerts in the
        Prometheus text format. SC_DEBUG_SLOW_COMMITS=1 in the environment
        before opening also logs each slow commit on stderr."""
        return str(_c.sc_metrics_prometheus(self._h))

    # ---- events ------------------------------------------------------------

    def claim_events(self, max: int = 100, lease_ms: int = 30000
                     ) -> List[Event]:
        """Claims up to max deliverable events for lease_ms: an event is
        handed out only when every earlier event of its aggregate is
        acknowledged, and not again until its lease ends. Acknowledge each
        with ack(), or nack() it to have it retried."""
        raw = _c.sc_outbox_claim(self._h,
                                 chk.in_range(max, "max", 1, CLAIM_MAX),
                                 chk.positive(lease_ms, "lease_ms"))
        return [Event._from_dict(d) for d in raw]

    def ack(self, event: Union[Event, int],
            claim: Optional[int] = None) -> None:
        """Marks a delivery done: the event is delivered and the next event
        of its aggregate becomes deliverable. Pass the claimed Event (its
        claim token goes with it), or an event id and its claim token.
        Acking again with the same token changes nothing; a late ack (lease
        over, nobody claimed it since) still delivers it.
        Raises NotFound; Conflict when the token is not the event's latest
        claim (its lease ran out and it was claimed again) or the event was
        never claimed; nothing changes then."""
        event_id, token = _delivery(event, claim)
        _c.sc_outbox_ack(self._h, event_id, token)

    def nack(self, event: Union[Event, int],
             reason: Optional[str] = None,
             claim: Optional[int] = None) -> None:
        """A failed delivery: the event is retried later with backoff, and
        is dead after outbox_max_attempts. The reason is kept as the dead
        event's last_error, truncated to 500 bytes. Pass the claimed Event,
        or an event id and its claim token. Raises NotFound, Conflict (as
        ack), InvalidState (delivered, dead, or this claim already
        nacked)."""
        event_id, token = _delivery(event, claim)
        _c.sc_outbox_nack(self._h, event_id, token,
                          chk.optional_text(reason, "reason"))

    def dead_events(self, after: int = 0, max: int = 100
                    ) -> List[DeadEvent]:
        """Lists dead events in id order, from the first with an id above
        `after` (pass the last id seen to page on)."""
        raw = _c.sc_outbox_dead_list(
            self._h, chk.non_negative(after, "after"),
            chk.in_range(max, "max", 1, CLAIM_MAX))
        return [DeadEvent(Event._from_dict(d), why) for d, why in raw]

    def requeue(self, event: Union[Event, DeadEvent, int]) -> None:
        """Makes a dead event deliverable again, with attempts 0.
        Raises NotFound, InvalidState (not dead)."""
        if isinstance(event, DeadEvent):
            event = event.event
        _c.sc_outbox_requeue(self._h, _event_id(event))

    def requeue_all(self) -> int:
        """Requeues every dead event; returns how many."""
        return int(_c.sc_outbox_requeue_all(self._h))

    def purge_events(self, before: int) -> int:
        """Removes delivered events acked before `before` (milliseconds
        since the epoch, the database's clock), in batches of at most 500
        that each hold the writer briefly; returns how many. Pending,
        leased and dead events are kept, and so is the newest event of all
        (ids are never reused); an aggregate's sequence goes on from its
        last number. A running worker does this on its own for
        outbox_retention_ms. Raises Busy, IOFailure (the batches committed
        before stay purged)."""
        return int(_c.sc_outbox_purge(self._h, chk.in_range(
            before, "before", -chk.INT64_MAX - 1)))

    def outbox_stats(self) -> OutboxStats:
        """Counts the outbox's pending and dead events."""
        return OutboxStats._make(_c.sc_outbox_stats_get(self._h))

    def start_worker(self, handler: Optional[EventHandler], *,
                     batch_max: int = 0, lease_ms: int = 0,
                     poll_interval_ms: int = 0,
                     expire_orders: bool = True) -> Worker:
        """Starts the background worker (one per database at a time): it
        calls handler(event) for every event on the worker's own thread, and
        expires due orders at their deadline. See Worker. Closing the
        database stops it.

        Args:
            handler: called per event; None = expiry only.
            batch_max: events claimed per round trip; 0 = 256.
            lease_ms: lease of claimed events (redelivered after it if this
                process dies holding them); 0 = 30,000 ms.
            poll_interval_ms: fallback poll for events other processes
                wrote, and the longest a timer waits before it reads the
                clock again; 0 = 1,000 ms.
            expire_orders: False leaves expiry to another process.

        Raises: Misuse (a worker already runs on this database), Closed.
        """
        w = Worker(self, handler, batch_max, lease_ms, poll_interval_ms,
                   expire_orders)
        with self._workers_lock:
            self._workers.add(w)
        return w


def _event_id(event: Union[Event, int]) -> int:
    if isinstance(event, Event):
        return event.id
    return chk.ident(event, "event")


def _delivery(event: Union[Event, int],
              claim: Optional[int]) -> Tuple[int, int]:
    """The event id and claim token a settlement presents: the Event's own
    token unless one is given; an id without a token presents 0, which no
    claim ever has (Conflict)."""
    if claim is None:
        claim = event.claim if isinstance(event, Event) else 0
    return _event_id(event), chk.non_negative(claim, "claim")


def _path_text(path: Any, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("{} must be a str or os.PathLike, not {}".format(
            what, type(path).__name__))
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    return chk.text(text, what)


def open(path: "PathLike", *, durability: Union[Durability, str] = "full",
         batch_max: int = 0, busy_timeout_ms: int = 0, queue_max: int = 0,
         read_pool_max: int = 0, default_order_ttl_ms: int = 0,
         outbox_max_attempts: int = 0, outbox_retry_base_ms: int = 0,
         outbox_retry_max_ms: int = 0, outbox_retention_ms: int = 0,
         clock: Optional[ManualClock] = None) -> Database:
    """Opens (creating if needed) a libshopcore database file.

    The library's tables are all prefixed ``sc_``, so the file may be shared
    with your application's own tables. Options left at 0 take the
    library's defaults. Several processes may open the same file (for
    example gunicorn workers: open it in each worker after the fork); their
    writers take turns through a small ``<path>-turn`` file beside it. A
    file on a network file system (NFS, SMB/CIFS, ...) is refused with
    IOFailure.

    A PostgreSQL connection URI (``postgresql://...`` or
    ``postgres://...``, optionally with ``?schema=NAME``) opens the same
    API on that server instead, for several hosts sharing one database;
    ``backup`` is not supported there (Misuse; pg_dump is the tool).

    Args:
        path: the file (":memory:" is refused), or a PostgreSQL URI.
        durability: "full" (every acknowledged write survives power loss)
            or "normal" (survives a process crash).
        batch_max: operations per commit; 1 disables group commit.
        busy_timeout_ms: wait for another process's write lock (or turn)
            before Busy.
        queue_max: operations waiting for the writer before callers block.
        read_pool_max: idle read connections kept.
        default_order_ttl_ms: time to pay when checkout's ttl_ms is 0.
        outbox_max_attempts: deliveries before an event is dead.
        outbox_retry_base_ms, outbox_retry_max_ms: retry backoff.
        outbox_retention_ms: a running worker purges delivered events
            acked longer ago than this; 0 = 7 days.
        clock: a ManualClock, for tests; None = the wall clock.

    Raises: Invalid, IOFailure, Corrupt, Busy.
    """
    fspath = _path_text(path, "path")
    dur = _durability(durability)
    if clock is not None and not isinstance(clock, ManualClock):
        raise TypeError("clock must be a shopcore.ManualClock or None")
    handle = _c.scpy_open(
        fspath, None if clock is None else clock._c, int(dur),
        chk.int32(batch_max, "batch_max"),
        chk.int32(busy_timeout_ms, "busy_timeout_ms"),
        chk.int32(queue_max, "queue_max"),
        chk.int32(read_pool_max, "read_pool_max"),
        chk.non_negative(default_order_ttl_ms, "default_order_ttl_ms"),
        chk.int32(outbox_max_attempts, "outbox_max_attempts"),
        chk.non_negative(outbox_retry_base_ms, "outbox_retry_base_ms"),
        chk.non_negative(outbox_retry_max_ms, "outbox_retry_max_ms"),
        chk.non_negative(outbox_retention_ms, "outbox_retention_ms"))
    return Database(handle, fspath, clock)


def _durability(value: Union[Durability, str]) -> Durability:
    if isinstance(value, Durability):
        return value
    if isinstance(value, str):
        try:
            return Durability[value.upper()]
        except KeyError:
            raise ValueError("durability must be 'full' or 'normal', not "
                             "{!r}".format(value)) from None
    raise TypeError("durability must be 'full', 'normal' or a Durability")
