"""Result types: immutable values returned by the Database methods."""

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, NamedTuple

from . import _shopcore as _c

__all__ = ["Durability", "OrderStatus", "EventType", "Stock", "Product",
           "Account",
           "CouponPolicy", "Order", "Event", "DeadEvent", "OutboxStats", "Stats",
           "RepairResult"]


class Durability(enum.IntEnum):
    """What an acknowledged operation survives (``open(durability=...)``)."""

    #: synchronous=FULL: every acknowledged operation survives power loss.
    FULL = _c.SC_DURABILITY_FULL
    #: synchronous=NORMAL: survives a process crash; a power loss may lose
    #: the last commits.
    NORMAL = _c.SC_DURABILITY_NORMAL


class OrderStatus(enum.IntEnum):
    """The state of an order; exactly one at a time."""

    PENDING = _c.SC_ORDER_PENDING
    CONFIRMED = _c.SC_ORDER_CONFIRMED
    CANCELLED = _c.SC_ORDER_CANCELLED
    EXPIRED = _c.SC_ORDER_EXPIRED


class EventType(enum.IntEnum):
    """The kind of state change an outbox event records."""

    COUPON_ISSUED = _c.SC_EVENT_COUPON_ISSUED
    ORDER_CREATED = _c.SC_EVENT_ORDER_CREATED
    ORDER_PAID = _c.SC_EVENT_ORDER_PAID
    ORDER_CANCELLED = _c.SC_EVENT_ORDER_CANCELLED
    ORDER_EXPIRED = _c.SC_EVENT_ORDER_EXPIRED
    DEPOSIT = _c.SC_EVENT_DEPOSIT
    POLICY_PAUSED = _c.SC_EVENT_POLICY_PAUSED
    POLICY_RESUMED = _c.SC_EVENT_POLICY_RESUMED


class Stock(NamedTuple):
    """A product's stock, read on one snapshot."""

    #: units on hand, reserved ones included
    total: int
    #: units held by PENDING orders
    reserved: int
    #: total - reserved
    available: int
    #: +1 on every reservation, release and restock (force increment)
    version: int


class Product(NamedTuple):
    """A product: its name, price and stock, read on one snapshot."""

    name: str
    #: minor units (cents)
    price: int
    stock: Stock


class Account(NamedTuple):
    """A user's account, in minor units (cents)."""

    #: the sum of the ledger
    balance: int
    #: the totals of the user's PENDING orders
    held: int
    #: balance - held: what a new checkout may hold
    available: int


class CouponPolicy(NamedTuple):
    """A coupon policy's state."""

    #: the policy's id
    id: int
    #: the cap: never more coupons than this
    max_count: int
    #: coupons issued so far
    issued_count: int
    #: coupons one user may hold
    per_user_limit: int
    #: True while the kill switch is on
    paused: bool

    @property
    def remaining(self) -> int:
        """Coupons still available under the cap."""
        return self.max_count - self.issued_count


class Order(NamedTuple):
    """An order."""

    #: the order's id
    id: int
    #: the user who checked out
    user: int
    #: its state
    status: OrderStatus
    #: what the user pays, discount deducted, in minor units
    total: int
    #: the coupon's discount, in minor units
    discount: int
    #: the payment deadline, milliseconds since the epoch (the db's clock)
    expires_at_ms: int


class Stats(NamedTuple):
    """What the database holds, counted on one snapshot (full scans: for an
    administrator or a slow dashboard, not a hot path)."""

    products: int
    units_total: int
    units_reserved: int
    accounts: int
    balance_total: int
    held_total: int
    orders_pending: int
    orders_confirmed: int
    orders_cancelled: int
    orders_expired: int
    policies: int
    coupons: int
    #: outbox events not yet delivered
    events_pending: int
    #: outbox events that failed every attempt
    events_dead: int


class RepairResult(NamedTuple):
    """What Database.repair() changed (or would change, in a dry run)."""

    #: the number of changes
    changes: int
    #: one line per change, "nothing to repair" when none
    report: str


@dataclass(frozen=True)
class Event:
    """One outbox event: a state change, delivered at least once.

    ``data`` is the payload, decoded in C (no msgpack package needed): a dict
    with ``type``, ``v`` (schema version), ``at_ms`` and the fields the type
    carries (``user``, ``order``, ``policy``, ``coupon``, ``amount``,
    ``discount``, ``expires_at_ms``). Deduplicate by ``id``.
    """

    #: unique; the consumer's deduplication key
    id: int
    #: what changed
    type: EventType
    #: the order, coupon, account (user) or policy it is about
    aggregate_id: int
    #: 1, 2, 3 ... per aggregate, without gaps
    seq: int
    #: when it was written, milliseconds since the epoch (the db's clock)
    created_at_ms: int
    #: deliveries before this one
    attempts: int
    #: this delivery's fencing token (new on every claim; 0 in dead-event
    #: listings): Database.ack(event) and nack(event) pass it, and only the
    #: latest claim's token settles the event
    claim: int
    #: the decoded payload
    data: Mapping[str, int] = field(hash=False, repr=True)

    @property
    def type_name(self) -> str:
        """The type's name: ``"order_paid"`` ..."""
        return str(_c.sc_event_type_name(int(self.type)))

    @classmethod
    def _from_dict(cls, d: Dict[str, Any]) -> "Event":
        return cls(d["id"], EventType(d["type"]), d["aggregate_id"], d["seq"],
                   d["created_at_ms"], d["attempts"], d["claim"], d["data"])


class DeadEvent(NamedTuple):
    """An event that failed every delivery attempt; it holds back the later
    events of its aggregate until requeued (Database.requeue)."""

    #: the event; attempts is the number of failed deliveries
    event: Event
    #: the reason given by the last nack ("" if none)
    last_error: str


class OutboxStats(NamedTuple):
    """The outbox's events, counted on one snapshot."""

    #: not yet delivered, not dead
    pending: int
    #: failed every attempt
    dead: int
    #: created_at_ms of the oldest pending event; 0 when none
    oldest_pending_ms: int
