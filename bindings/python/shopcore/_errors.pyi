"""Type stub of shopcore._errors: the classes generated from the C status
list, for type checkers. tests/python/test_errors.py checks that it names
exactly the generated classes."""

from typing import Optional, Tuple, Type

__all__ = [
    "Error", "error_class", "error_for", "Ambiguous", "Busy", "Canceled",
    "Closed", "Conflict", "Corrupt", "CouponUnavailable", "Exists", "Expired",
    "IOFailure", "IdempotencyMismatch", "InsufficientBalance",
    "InternalError", "Invalid", "InvalidState", "LimitReached", "Misuse",
    "NoMemory", "NotActive", "NotFound", "OutOfStock", "Paused", "SoldOut"
]

class Error(Exception):
    code: int
    name: str
    expected: bool
    message: str
    def __init__(self, message: str = ..., code: Optional[int] = ...) -> None: ...
    def __reduce__(self) -> Tuple[type, Tuple[str, int]]: ...

def error_class(code: int) -> Type[Error]: ...
def error_for(code: int, message: str) -> Error: ...

class InternalError(Error):
    """SC_ERROR: internal error."""

class Misuse(Error):
    """SC_MISUSE: library used incorrectly."""

class Invalid(Error, ValueError):
    """SC_INVALID: invalid argument."""

class NoMemory(Error, MemoryError):
    """SC_NOMEM: out of memory."""

class IOFailure(Error):
    """SC_IOERR: I/O error."""

class Corrupt(Error):
    """SC_CORRUPT: database is corrupt or not a database."""

class Busy(Error):
    """SC_BUSY: database is busy."""

class Closed(Error):
    """SC_CLOSED: database is closed."""

class Canceled(Error):
    """SC_CANCELED: operation canceled."""

class NotFound(Error, LookupError):
    """SC_NOT_FOUND: not found."""

class Exists(Error):
    """SC_EXISTS: already exists."""

class SoldOut(Error):
    """SC_SOLD_OUT: sold out."""

class LimitReached(Error):
    """SC_LIMIT_REACHED: per-user limit reached."""

class Paused(Error):
    """SC_PAUSED: paused."""

class NotActive(Error):
    """SC_NOT_ACTIVE: not active."""

class OutOfStock(Error):
    """SC_OUT_OF_STOCK: out of stock."""

class InsufficientBalance(Error):
    """SC_INSUFFICIENT_BALANCE: insufficient balance."""

class CouponUnavailable(Error):
    """SC_COUPON_UNAVAILABLE: coupon unavailable."""

class Expired(Error):
    """SC_EXPIRED: expired."""

class InvalidState(Error):
    """SC_INVALID_STATE: invalid state."""

class Conflict(Error):
    """SC_CONFLICT: version conflict."""

class IdempotencyMismatch(Error):
    """SC_IDEMPOTENCY_MISMATCH: idempotency key reused with a different request."""

class Ambiguous(Error):
    """SC_AMBIGUOUS: outcome unknown: the commit may or may not have happened.

    Retry with the same idempotency key, or read first. After a failed
    fsync the database refuses writes with Ambiguous until reopened."""
