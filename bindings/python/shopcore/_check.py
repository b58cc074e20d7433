"""Argument checks, run before anything reaches C.

A wrong type raises TypeError; a value out of range (negative, zero where an
id or a quantity belongs, past int64 or int32) raises ValueError. The
library checks again in C; these checks give Python-shaped errors early.
The library's own limits (name and key lengths, lines per checkout) raise
Invalid, the exception of SC_INVALID, as they do from C.
"""

import operator
from typing import Any, Iterable, List, Mapping, Optional, Tuple

from . import _shopcore as _c
from ._errors import error_for

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def integer(value: Any, what: str) -> int:
    """value as an int: ints and objects with __index__, never bool."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or value is None:
        raise TypeError("{} must be an int, not {}".format(
            what, type(value).__name__))
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError("{} must be an int, not {}".format(
            what, type(value).__name__)) from None


def in_range(value: Any, what: str, low: int, high: int = INT64_MAX) -> int:
    """An int with low <= value <= high."""
    v = integer(value, what)
    if not low <= v <= high:
        if v > high:
            raise ValueError("{} {} is too large (at most {})".format(
                what, v, high))
        raise ValueError("{} {} must be >= {}".format(what, v, low))
    return v


def ident(value: Any, what: str) -> int:
    """An id: 1 .. 2**63-1."""
    if type(value) is int and 0 < value <= INT64_MAX:
        return value
    return in_range(value, what, 1)


def positive(value: Any, what: str) -> int:
    """A quantity or amount > 0."""
    return in_range(value, what, 1)


def non_negative(value: Any, what: str) -> int:
    """A quantity, amount or time >= 0."""
    return in_range(value, what, 0)


def int32(value: Any, what: str, low: int = 0) -> int:
    """A C int field: low .. 2**31-1."""
    return in_range(value, what, low, INT32_MAX)


def text(value: Any, what: str) -> str:
    """A non-empty str without NUL characters."""
    if not isinstance(value, str):
        raise TypeError("{} must be a str, not {}".format(
            what, type(value).__name__))
    if not value:
        raise ValueError("{} must not be empty".format(what))
    if "\0" in value:
        raise ValueError("{} must not contain NUL characters".format(what))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("{} is not encodable as UTF-8".format(what)) from None
    return value


def optional_text(value: Any, what: str) -> Optional[str]:
    """None, or what text() accepts."""
    return None if value is None else text(value, what)


def lines(value: Any) -> List[Tuple[int, int]]:
    """Checkout lines: a mapping {product: qty} or (product, qty) pairs."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError("lines must be a mapping {product: qty} or an "
                        "iterable of (product, qty) pairs")
    pairs: Iterable[Any] = (value.items() if isinstance(value, Mapping)
                            else value)
    try:
        items = list(pairs)
    except TypeError:
        raise TypeError("lines must be a mapping {product: qty} or an "
                        "iterable of (product, qty) pairs, not " +
                        type(value).__name__) from None
    if not items:
        raise ValueError("lines must not be empty")
    # The count first, as the library checks it: past the limit, the lines
    # themselves do not matter.
    if len(items) > _c.SC_CHECKOUT_LINES_MAX:
        raise error_for(_c.SC_INVALID,
                        "checkout: {} lines, more than {} per checkout".format(
                            len(items), _c.SC_CHECKOUT_LINES_MAX))
    out = []
    seen = set()
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError("each line must be a (product, qty) pair, not "
                            "{!r}".format(item))
        product = ident(item[0], "product")
        if product in seen:
            raise ValueError("product {} is on two lines".format(product))
        seen.add(product)
        out.append((product, positive(item[1], "qty")))
    return out


def versions(value: Any, products: List[int]) -> Optional[List[int]]:
    """Expected stock versions, a mapping {product: version} covering every
    line's product, in line order."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError("expected_versions must be a mapping "
                        "{product: version}, not " + type(value).__name__)
    extra = set(value) - set(products)
    if extra:
        raise ValueError("expected_versions names products not on a line: "
                         "{}".format(sorted(extra, key=repr)))
    missing = [p for p in products if p not in value]
    if missing:
        raise ValueError("expected_versions lacks products {}".format(missing))
    return [non_negative(value[p], "expected version") for p in products]
