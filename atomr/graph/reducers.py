"""Reducers: how a channel merges a new write into its current value.

A reducer is any callable ``(current, incoming) -> merged``. The built-ins
below never mutate their inputs (the runtime shares old values with steps that
may still be reading them) and are associative, so the writes of parallel
steps can be folded in any grouping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = [
    "AppendList",
    "AppendMessages",
    "LastWriteWins",
    "MaxByTimestamp",
    "MergeMap",
    "Reducer",
    "empty_of_reducer",
]


@runtime_checkable
class Reducer(Protocol):
    """Merges ``incoming`` into ``current`` and returns the result."""

    def __call__(self, current: Any, incoming: Any, /) -> Any: ...


class _Builtin:
    """Common behaviour of the built-in reducers: equal by type, readable repr."""

    __slots__ = ()
    associative: ClassVar[bool] = True

    def __call__(self, current: Any, incoming: Any, /) -> Any:  # pragma: no cover
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LastWriteWins(_Builtin):
    """The incoming value replaces the current one."""

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any, /) -> Any:
        return incoming


def _as_items(value: Any) -> list[Any] | tuple[Any, ...]:
    """None -> empty, list/tuple -> itself, anything else -> a one-item list."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return value
    return [value]


class AppendList(_Builtin):
    """List concatenation; None is empty, a list/tuple is its items, any other value one item."""

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any, /) -> list[Any]:
        return [*_as_items(current), *_as_items(incoming)]


def _message_id(msg: Any) -> str | None:
    mid = msg.get("id") if isinstance(msg, Mapping) else getattr(msg, "id", None)
    if mid is None or isinstance(mid, str):
        return mid
    raise TypeError(
        f"message id must be a str or None, got {type(mid).__name__} {mid!r}; "
        "give every message a string 'id'"
    )


class AppendMessages(_Builtin):
    """Chat-message list merge (like LangGraph's ``add_messages``).

    An incoming message whose ``"id"`` is already present replaces that entry in
    place; messages without an id are appended. ``incoming`` may be one message
    or a list of them; a None current is the empty list.
    """

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any, /) -> list[Any]:
        if isinstance(incoming, Mapping):
            incoming = (incoming,)
        out: list[Any] = []
        where: dict[str, int] = {}
        # Current is folded the same way as incoming so that duplicate ids
        # collapse and the operation stays associative.
        for part in (_as_items(current), _as_items(incoming)):
            for msg in part:
                mid = _message_id(msg)
                if mid is None:
                    out.append(msg)
                elif mid in where:
                    out[where[mid]] = msg
                else:
                    where[mid] = len(out)
                    out.append(msg)
        return out


class MergeMap(_Builtin):
    """Shallow dict merge, incoming wins on key clash; a non-dict current is empty."""

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any, /) -> dict[Any, Any]:
        if not isinstance(incoming, Mapping):
            raise TypeError(
                f"MergeMap needs a dict to merge, got {type(incoming).__name__}; "
                "write a dict such as {'key': value}"
            )
        if isinstance(current, Mapping):
            return {**current, **incoming}
        return dict(incoming)


class MaxByTimestamp(_Builtin):
    """Keeps the value with the larger numeric ``field`` (missing = -inf); ties go to incoming."""

    __slots__ = ("field",)

    def __init__(self, field: str = "ts_ms") -> None:
        self.field = field

    def _ts(self, value: Any) -> float:
        if isinstance(value, Mapping):
            ts = value.get(self.field)
            if isinstance(ts, (int, float)) and not isinstance(ts, bool) and not (
                isinstance(ts, float) and math.isnan(ts)
            ):
                return ts
        return -math.inf

    def __call__(self, current: Any, incoming: Any, /) -> Any:
        return incoming if self._ts(incoming) >= self._ts(current) else current

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.field == self.field  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.field))

    def __repr__(self) -> str:
        return "MaxByTimestamp()" if self.field == "ts_ms" else f"MaxByTimestamp(field={self.field!r})"


def empty_of_reducer(reducer: Any) -> Any:
    """What a channel merged by ``reducer`` starts as when no default is given:
    ``[]`` for a list (AppendList, AppendMessages), ``{}`` for a map (MergeMap),
    else None."""
    if isinstance(reducer, (AppendList, AppendMessages)):
        return []
    if isinstance(reducer, MergeMap):
        return {}
    return None
