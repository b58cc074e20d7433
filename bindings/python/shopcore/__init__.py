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
results are immutable values (``Stock``, ``Account``, ``Order`` ...).
"""

from . import _shopcore as _c
from ._errors import *  # noqa: F401,F403 - one class per status code
from ._errors import __all__ as _error_names
from ._errors import Error, error_class
from ._types import (Account, CouponPolicy, Durability, Event, EventType,
                     Order, OrderStatus, RepairResult, Stats, Stock)
from ._worker import EventHandler, Worker
from ._db import Database, ManualClock, open

#: The version of the linked C library, "MAJOR.MINOR.PATCH".
__version__: str = _c.sc_version()

__all__ = ["open", "Database", "Worker", "EventHandler", "ManualClock",
           "Stock", "Account", "CouponPolicy", "Order", "Event", "EventType",
           "OrderStatus", "Durability", "Stats", "RepairResult",
           "error_class",
           "__version__"] + [n for n in _error_names if n != "error_for"]

del _error_names
