"""StateSchema: the channels of a workflow's state, each with a reducer and a default."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from atomr.codec import check_encodable
from atomr.errors import SchemaError, UnknownChannelError
from atomr.graph.reducers import LastWriteWins, Reducer, _Builtin

__all__ = ["Channel", "SchemaBuilder", "StateSchema"]

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, frozenset)


@dataclass(frozen=True)
class Channel:
    """One state channel: how writes merge (``reducer``) and its initial value."""

    reducer: Reducer
    default: Any = None


def _channel(key: object, spec: object) -> Channel:
    if not isinstance(key, str) or not key:
        raise SchemaError(f"channel key must be a non-empty str, got {key!r}; rename the channel")
    if isinstance(spec, Channel):
        reducer, default = spec.reducer, spec.default
    elif isinstance(spec, tuple):
        if len(spec) != 2:
            raise SchemaError(
                f"channel {key!r}: expected a reducer or a (reducer, default) pair, "
                f"got a tuple of {len(spec)} items"
            )
        reducer, default = spec
    else:
        reducer, default = spec, None
    if isinstance(reducer, type) and issubclass(reducer, _Builtin):
        raise SchemaError(
            f"channel {key!r}: got the class {reducer.__name__}, not a reducer; "
            f"instantiate it: {reducer.__name__}()"
        )
    if not callable(reducer):
        raise SchemaError(
            f"channel {key!r}: reducer is not callable (got {type(reducer).__name__}); "
            "pass a reducer such as LastWriteWins() or a function (current, incoming) -> merged"
        )
    # the default is part of every snapshot: refuse one that cannot be stored now
    check_encodable(default, f"the default of channel {key!r}")
    return Channel(reducer, default)  # type: ignore[arg-type]


class StateSchema:
    """The channels of a state: ``StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0)})``."""

    __slots__ = ("_channels", "_keys", "_reducers", "_copy_defaults")

    def __init__(self, channels: Mapping[str, Reducer | tuple[Reducer, Any] | Channel] | None = None) -> None:
        chans = {key: _channel(key, spec) for key, spec in (channels or {}).items()}
        self._channels: dict[str, Channel] = chans
        self._keys = frozenset(chans)
        self._reducers: dict[str, Reducer] = {k: c.reducer for k, c in chans.items()}
        self._copy_defaults = any(not isinstance(c.default, _IMMUTABLE) for c in chans.values())

    @staticmethod
    def builder() -> SchemaBuilder:
        """A new :class:`SchemaBuilder`."""
        return SchemaBuilder()

    @property
    def channels(self) -> Mapping[str, Channel]:
        """Read-only mapping channel key -> :class:`Channel`."""
        return MappingProxyType(self._channels)

    def keys(self) -> frozenset[str]:
        """The channel keys."""
        return self._keys

    def reducer(self, key: str) -> Reducer:
        """The reducer of channel ``key``."""
        try:
            return self._reducers[key]
        except KeyError:
            raise UnknownChannelError(key, self._keys) from None

    def initial_values(self) -> dict[str, Any]:
        """Every channel mapped to a fresh (deep) copy of its default."""
        if not self._copy_defaults:
            return {k: c.default for k, c in self._channels.items()}
        return {k: copy.deepcopy(c.default) for k, c in self._channels.items()}

    def __contains__(self, key: object) -> bool:
        return key in self._channels

    def __iter__(self) -> Iterator[str]:
        return iter(self._channels)

    def __len__(self) -> int:
        return len(self._channels)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateSchema):
            return NotImplemented
        return self._channels == other._channels

    def __hash__(self) -> int:
        return hash(self._keys)

    def __repr__(self) -> str:
        parts = []
        for k, c in self._channels.items():
            parts.append(f"{k!r}: {c.reducer!r}" if c.default is None else f"{k!r}: ({c.reducer!r}, {c.default!r})")
        return "StateSchema({" + ", ".join(parts) + "})"


class SchemaBuilder:
    """Chainable builder of a :class:`StateSchema` (mirrors the reference API)."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def add(self, key: str, reducer: Reducer) -> SchemaBuilder:
        """Add channel ``key`` merged by ``reducer``, default None."""
        return self.add_with_default(key, reducer, None)

    def add_with_default(self, key: str, reducer: Reducer, default: Any) -> SchemaBuilder:
        """Add channel ``key`` merged by ``reducer`` starting at ``default``."""
        if key in self._channels:
            raise SchemaError(f"channel {key!r} is declared twice; declare each channel once")
        self._channels[key] = _channel(key, (reducer, default))
        return self

    def add_lww(self, key: str) -> SchemaBuilder:
        """Add a last-write-wins channel ``key``, default None."""
        return self.add(key, LastWriteWins())

    def build(self) -> StateSchema:
        """The :class:`StateSchema` declared so far."""
        return StateSchema(self._channels)
