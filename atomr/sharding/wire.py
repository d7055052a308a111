"""What crosses the process boundary between the router and a shard: exceptions and outcomes."""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass, field
from typing import Any

from atomr.errors import AtomrError
from atomr.types import Done, Failed, Outcome, Paused, StateView

__all__ = ["export_exc", "first_line", "import_exc", "outcome_from_view"]


@dataclass(frozen=True)
class _ExcInfo:
    """An exception that does not survive pickling (its __init__ takes other args)."""

    module: str
    qualname: str
    message: str
    state: dict[str, Any] = field(default_factory=dict)


def export_exc(exc: BaseException) -> Any:
    """``exc`` itself when it pickles, else an :class:`_ExcInfo` describing it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - send it piecewise
        pass
    state = {}
    for k, v in getattr(exc, "__dict__", {}).items():
        try:
            pickle.dumps(v)
        except Exception:  # noqa: BLE001
            continue
        state[k] = v
    cls = type(exc)
    return _ExcInfo(cls.__module__, cls.__qualname__, str(exc), state)


def import_exc(info: Any) -> BaseException:
    """The exception :func:`export_exc` sent (its own class when importable here)."""
    if isinstance(info, BaseException):
        return info
    cls: Any = None
    try:
        cls = importlib.import_module(info.module)
        for part in info.qualname.split("."):
            cls = getattr(cls, part)
    except Exception:  # noqa: BLE001
        cls = None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        exc = cls.__new__(cls)
        exc.args = (info.message,)
        try:
            exc.__dict__.update(info.state)
        except AttributeError:
            pass
        return exc  # type: ignore[no-any-return]
    return AtomrError(f"{info.qualname}: {info.message}")


def outcome_from_view(v: StateView) -> Outcome | None:
    """The outcome a settled run's state describes; None while it runs."""
    if v.status == "done":
        return Done(v.workflow_id, v.run_id, dict(v.values))
    if v.status == "paused":
        return Paused(v.workflow_id, v.run_id, v.super_step, v.pause_reason or "",
                      list(v.interrupts), list(v.next))
    if v.status == "failed":
        step, etype, message = v.error if v.error else (None, "RunError", "")
        return Failed(v.workflow_id, v.run_id, step, v.super_step, etype, message, v.traceback)
    return None


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
