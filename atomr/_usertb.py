"""The traceback of a step's exception as its author wants it: their frames only.

Runs in the step's thread when the step raised (never on the success path).
Frames of atomr's own modules (the executor that called the step, ``ctx``
helpers) are left out; library frames the step called into stay.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

__all__ = ["user_traceback", "MAX_CHARS"]

_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: longest traceback kept (its end is kept: the raising frame and the error)
MAX_CHARS = 16_000


def _own(filename: str) -> bool:
    try:
        return os.path.abspath(filename).startswith(_OWN)
    except (TypeError, ValueError):
        return False


def _strip(te: traceback.TracebackException, seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if not _own(f.filename)])
    for nested in (te.__cause__, te.__context__):
        if nested is not None:
            _strip(nested, seen)
    for sub in getattr(te, "exceptions", None) or ():  # an ExceptionGroup's members
        _strip(sub, seen)


def user_traceback(exc: BaseException) -> str | None:
    """``Traceback (most recent call last): ...`` of ``exc`` without atomr's
    frames (chained exceptions too), at most :data:`MAX_CHARS`; None when it
    cannot be formatted. Never raises."""
    try:
        te: Any = traceback.TracebackException.from_exception(exc)
        _strip(te, set())
        text = "".join(te.format())
        if len(text) > MAX_CHARS:
            text = "...(traceback cut)...\n" + text[-MAX_CHARS:]
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    except BaseException:  # noqa: BLE001 - a __str__ that raises, a recursion...
        return None
