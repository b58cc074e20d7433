"""libshopcore for Python: the concurrent part of a flash-sale shop, on an
embedded SQLite file.

    import shopcore

    with shopcore.open("shop.db") as db:
        policy = db.create_policy("flash", max_count=1000)
        try:
            coupon = db.issue_coupon(policy, user=42)
        except shopcore.SoldOut:
            ...                 # an expected outcome, not a failure

Every call may be made from many threads at once: the GIL is released while
the library works, and writes from all threads share one durable commit.
Status codes are exceptions (``shopcore.Error`` and one subclass per status:
``SoldOut``, ``LimitReached``, ``OutOfStock``, ``InsufficientBalance`` ...);
results are immutable values (``Product``, ``Stock``, ``Account``, ``Order`` ...).
"""

from . import _errors
from . import _shopcore as _c
from ._errors import *  # noqa: F401,F403 - one class per status code
from ._errors import Error, error_class, error_for
from ._types import (Account, CouponPolicy, DeadEvent, Durability, Event,
                     EventType, Order, OrderStatus, OutboxStats, Product,
                     RepairResult, Stats, Stock)
from ._worker import EventHandler, Worker
from ._db import (CHECKOUT_LINES_MAX, KEY_MAX, NAME_MAX, Database,
                  ManualClock, open)

#: The version of the linked C library, "MAJOR.MINOR.PATCH".
__version__: str = _c.sc_version()

__all__ = ["open", "Database", "Worker", "EventHandler", "ManualClock",
           "Stock", "Product", "Account", "CouponPolicy", "Order", "Event", "EventType",
           "OrderStatus", "Durability", "DeadEvent", "OutboxStats", "Stats",
           "RepairResult", "NAME_MAX", "KEY_MAX", "CHECKOUT_LINES_MAX",
           "__version__"]
__all__ += _errors.__all__
