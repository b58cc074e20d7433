"""Exceptions: one class per libshopcore status code.

The classes are generated at import from the C library's own status list
(``sc_err_name`` for every code below ``SC_STATUS_COUNT_``), so they cannot
drift from it: a status added in C gets its class here without a change.
``SC_SOLD_OUT`` becomes ``SoldOut``, ``SC_NOT_FOUND`` becomes ``NotFound``.
"""

from typing import Dict, List, Optional, Tuple, Type

from . import _shopcore as _c

__all__: List[str] = ["Error", "error_class", "error_for"]

# Names that CamelCase would render badly, or that would shadow a builtin.
_RENAMED = {
    "SC_ERROR": "InternalError",
    "SC_IOERR": "IOFailure",
    "SC_NOMEM": "NoMemory",
}

# Builtin exceptions a status also is, so generic handlers catch it.
_ALSO = {
    "SC_INVALID": (ValueError,),
    "SC_NOT_FOUND": (LookupError,),
    "SC_NOMEM": (MemoryError,),
}


class Error(Exception):
    """Base class of every error libshopcore reports.

    Attributes:
        code: the status code (``SC_SOLD_OUT`` ...), an int.
        name: its name, ``"SC_SOLD_OUT"``.
        message: the library's detail (``sc_errmsg``) of this failure.

    Business outcomes (``SoldOut``, ``OutOfStock`` ...) are subclasses like
    any other status: catch the one you expect, or ``Error`` for all.
    """

    code: int = _c.SC_ERROR
    name: str = "SC_ERROR"
    #: True for the business outcomes a shop expects under contention
    #: (SoldOut, OutOfStock, Expired ...), False for real errors.
    expected: bool = False

    def __init__(self, message: str = "", code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None and code != type(self).code:
            self.code = code
            self.name = _c.sc_err_name(code)

    def __reduce__(self) -> Tuple[type, Tuple[str, int]]:
        return (type(self), (self.message, self.code))

    def __str__(self) -> str:
        return self.message or _c.sc_strerror(self.code)


def _class_name(c_name: str) -> str:
    if c_name in _RENAMED:
        return _RENAMED[c_name]
    return "".join(p.capitalize() for p in c_name[3:].split("_"))


def _make_classes() -> Tuple[Dict[int, Type[Error]], Dict[str, Type[Error]]]:
    by_code: Dict[int, Type[Error]] = {}
    by_name: Dict[str, Type[Error]] = {}
    for code in range(1, _c.SC_STATUS_COUNT_):
        c_name = _c.sc_err_name(code)
        name = _class_name(c_name)
        doc = "Status {} ({}).".format(c_name, _c.sc_strerror(code))
        bases = (Error,) + _ALSO.get(c_name, ())
        expected = _c.sc_status_outcome(code) == _c.SC_OUTCOME_EXPECTED
        attrs = {"code": code, "name": c_name, "__doc__": doc,
                 "expected": expected, "__module__": "shopcore"}
        cls = type(name, bases, attrs)
        by_code[code] = cls
        by_name[name] = cls
    return by_code, by_name


_BY_CODE, _BY_NAME = _make_classes()
globals().update(_BY_NAME)
__all__ += sorted(_BY_NAME)
Error.__module__ = "shopcore"

# The C module raises these itself: one entry per status, None for SC_OK.
_c.scpy_set_errors(tuple(_BY_CODE.get(code)
                         for code in range(_c.SC_STATUS_COUNT_)))


def error_class(code: int) -> Type[Error]:
    """The exception class of a status code (``Error`` for unknown ones)."""
    return _BY_CODE.get(code, Error)


def error_for(code: int, message: str) -> Error:
    """An exception instance for a status code and a message."""
    return error_class(code)(message, code)
