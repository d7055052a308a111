"""Checks of option values where they are given: right type, finite, in range.

Every check raises the named error the caller passes (a ``GraphError`` for a
definition, a ``StoreError`` for a store option, ...) with a message saying
what was expected and what was got. ``bool`` is never accepted as a number
(``True`` is an ``int`` to Python, but ``max_attempts=True`` is a mistake).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from atomr.errors import AtomrError

__all__ = ["check_int", "check_number", "check_optional_number"]


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}" if isinstance(lo, float) else f">= {lo}")
    if hi is not None:
        parts.append(f"<= {hi:g}" if isinstance(hi, float) else f"<= {hi}")
    return " and ".join(parts)


def _fail(error: type[AtomrError], what: str, expected: str, value: Any, hint: str) -> AtomrError:
    got = f"{type(value).__name__} {value!r}" if not isinstance(value, (int, float)) or isinstance(value, bool) else repr(value)
    return error(f"{what} must be {expected}, got {got}; {hint or 'pass a value in that range'}")


def check_int(value: Any, what: str, *, lo: int | None = None, hi: int | None = None,
              error: type[AtomrError], hint: str = "") -> int:
    """``value`` as an int (any integral type but bool), within ``lo..hi``."""
    bounds = _bounds(lo, hi)
    expected = "an int" + (f" {bounds}" if bounds else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(error, what, expected, value, hint)
    n = operator.index(value)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise _fail(error, what, expected, value, hint)
    return n


def check_number(value: Any, what: str, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, allow_inf: bool = False,
                 error: type[AtomrError], hint: str = "") -> float:
    """``value`` as a float: a real number but bool, not NaN, finite unless
    ``allow_inf``, within ``lo..hi`` (``lo`` excluded when ``lo_open``)."""
    bounds = _bounds(None if lo is None else float(lo), None if hi is None else float(hi), lo_open)
    expected = ("a number" if allow_inf else "a finite number") + (f" {bounds}" if bounds else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(error, what, expected, value, hint)
    try:
        x = float(value)
    except (OverflowError, ValueError, TypeError):
        raise _fail(error, what, expected, value, hint) from None
    if math.isnan(x) or (math.isinf(x) and not allow_inf):
        raise _fail(error, what, expected, value, hint)
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise _fail(error, what, expected, value, hint)
    if hi is not None and x > hi:
        raise _fail(error, what, expected, value, hint)
    return x


def check_optional_number(value: Any, what: str, **kw: Any) -> float | None:
    """None, or :func:`check_number` of ``value``."""
    return None if value is None else check_number(value, what, **kw)
