"""StateSchema: the channels of a workflow's state, each with a reducer and a default.

A schema is declared channel by channel (``StateSchema({"log": AppendList()})``)
or read from a typed class with :meth:`StateSchema.from_type`: a ``TypedDict``,
a dataclass or a pydantic v2 model whose fields are the channels, reducers in
``Annotated[type, reducer]``; a pydantic model's schema also validates every
value merged into a channel against the field's type.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, get_args, get_origin

from atomr import codec
from atomr.codec import check_encodable
from atomr.errors import SchemaError, UnknownChannelError
from atomr.graph.reducers import LastWriteWins, Reducer, _Builtin, empty_of_reducer
from atomr.graph.validate import validator

__all__ = ["Channel", "SchemaBuilder", "StateSchema"]

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, frozenset)


@dataclass(frozen=True)
class Channel:
    """One state channel: how writes merge (``reducer``) and its initial value.

    ``absent``: the channel has no value until written (a ``NotRequired`` key
    of a TypedDict, a field without a default); ``default`` is then unused.
    """

    reducer: Reducer
    default: Any = None
    absent: bool = False


def _channel(key: object, spec: object) -> Channel:
    if not isinstance(key, str) or not key:
        raise SchemaError(f"channel key must be a non-empty str, got {key!r}; rename the channel")
    reducer: Any
    absent = False
    if isinstance(spec, Channel):
        reducer, default, absent = spec.reducer, spec.default, spec.absent
    elif isinstance(spec, tuple):
        if len(spec) != 2:
            raise SchemaError(
                f"channel {key!r}: expected a reducer or a (reducer, default) pair, "
                f"got a tuple of {len(spec)} items"
            )
        reducer, default = spec
    else:  # a list / map channel starts empty ([] / {}), any other None
        reducer, default = spec, empty_of_reducer(spec)
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
    return Channel(reducer, None if absent else default, absent)  # type: ignore[arg-type]


class StateSchema:
    """The channels of a state: ``StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0)})``.

    A channel given only its reducer starts ``[]`` for a list reducer (AppendList,
    AppendMessages), ``{}`` for MergeMap, else None; ``(reducer, default)`` sets it."""

    __slots__ = ("_channels", "_keys", "_reducers", "_copy_defaults", "_validators", "source", "required")

    def __init__(self, channels: Mapping[str, Reducer | tuple[Reducer, Any] | Channel] | None = None) -> None:
        chans = {key: _channel(key, spec) for key, spec in (channels or {}).items()}
        self._channels: dict[str, Channel] = chans
        self._keys = frozenset(chans)
        self._reducers: dict[str, Reducer] = {k: c.reducer for k, c in chans.items()}
        self._copy_defaults = any(not isinstance(c.default, _IMMUTABLE) for c in chans.values())
        #: channel -> check(merged value, step) -> the value to keep (raises StateValidationError)
        self._validators: dict[str, Callable[[Any, str | None], Any]] = {}
        #: the class read by :meth:`from_type` (else None); the fields a fresh run's input must give
        self.source: Any = None
        self.required: frozenset[str] = frozenset()

    @classmethod
    def from_type(cls, state_type: Any, *, validate: bool | None = None) -> StateSchema:
        """The schema of a ``TypedDict``, a dataclass or a pydantic v2 model.

        Each key / field is a channel. ``Annotated[T, reducer]`` gives its
        reducer (a Reducer such as ``AppendMessages()``, or any
        ``(current, incoming) -> merged`` callable such as ``operator.add``);
        a plain ``T`` is LastWriteWins. Initial values: a dataclass's or a
        model's defaults; a ``NotRequired`` key, or a field without a default,
        starts absent (a model's or a dataclass's such field is ``required``:
        a fresh run's input must give it, else MissingInput); a channel with a reducer and no default over a list,
        dict, set, tuple, str, int or float type starts empty (``[]``, ``0``...);
        other TypedDict keys start None. A callable reducer (not a built-in
        one) of a channel that starts absent or None takes the first write as
        it is.

        ``validate`` (default: True for a pydantic model, else False; needs
        pydantic): every value merged into a channel — the run's input, each
        step's writes, ``Command(update=...)``, fork edits — is validated
        against the field's type (with its constraints) and the validated value
        is kept (pydantic's lax mode: ``"3"`` for an ``int`` becomes ``3``). A
        value that does not fit raises StateValidationError (a ReducerError)
        naming the channel, the step and the expected type, and the state is
        left unchanged: the input is refused, a bad step write fails the run at
        that step. A model's ``field_validator`` s of a field run on its
        channel's writes too (see :mod:`atomr.graph.validate`).

        Pydantic models, dataclasses and enums found in the field types are
        registered with :func:`atomr.codec.register` (when they are not yet,
        and have a stable name) so that such values can be stored.
        """
        fields, model = _typed_fields(state_type)
        chans: dict[str, Channel] = {}
        for key, f in fields.items():
            _register_types(f.tp)
            reducer = LastWriteWins() if f.reducer is None else f.reducer
            has_default, default = f.has_default, f.default
            if not has_default and not f.not_required and not isinstance(reducer, LastWriteWins):
                empty = _empty_of(f.tp)
                empty = empty_of_reducer(reducer) if empty is None else empty
                has_default, default = empty is not None, empty
            if not has_default and f.typed_dict and not f.not_required:
                has_default, default = True, None  # a TypedDict key
            if not isinstance(reducer, _Builtin) and (not has_default or default is None):
                reducer = _FirstWrite(reducer)
            chans[key] = Channel(reducer, default, not has_default)
        schema = cls(chans)
        schema.source = state_type
        schema.required = frozenset(k for k, c in chans.items() if c.absent and not fields[k].typed_dict)
        if model if validate is None else validate:
            schema._validators = {key: validator(state_type, key, f.tp, f.tp, f.info, _is_reducer, model)
                                  for key, f in fields.items()}
        return schema

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
        """Every channel (but those that start absent) mapped to a fresh (deep) copy of its default."""
        if not self._copy_defaults:
            return {k: c.default for k, c in self._channels.items() if not c.absent}
        return {k: copy.deepcopy(c.default) for k, c in self._channels.items() if not c.absent}

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
            if c.absent:
                parts.append(f"{k!r}: Channel({c.reducer!r}, absent=True)")
            else:
                plain = c.default == empty_of_reducer(c.reducer) and type(c.default) is type(empty_of_reducer(c.reducer))
                parts.append(f"{k!r}: {c.reducer!r}" if plain else f"{k!r}: ({c.reducer!r}, {c.default!r})")
        return "StateSchema({" + ", ".join(parts) + "})"


class SchemaBuilder:
    """Chainable builder of a :class:`StateSchema` (mirrors the reference API)."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def add(self, key: str, reducer: Reducer) -> SchemaBuilder:
        """Add channel ``key`` merged by ``reducer``, starting ``[]`` / ``{}`` (list / map), else None."""
        return self.add_with_default(key, reducer, empty_of_reducer(reducer))

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


# -- typed classes (StateSchema.from_type) -----------------------------------------------------

_WRAPPERS = frozenset({"Required", "NotRequired", "ReadOnly"})


class _Field:
    __slots__ = ("tp", "reducer", "has_default", "default", "not_required", "typed_dict", "info")

    def __init__(self, tp: Any, reducer: Reducer | None, has_default: bool = False, default: Any = None,
                 not_required: bool = False, typed_dict: bool = False, info: Any = None) -> None:
        self.tp, self.reducer, self.has_default, self.default = tp, reducer, has_default, default
        self.not_required, self.typed_dict, self.info = not_required, typed_dict, info


class _FirstWrite:
    """A callable reducer of a channel that starts without a value: the first
    write is kept as it is (``operator.add`` cannot add to None)."""

    __slots__ = ("reducer",)

    def __init__(self, reducer: Reducer) -> None:
        self.reducer = reducer

    def __call__(self, current: Any, incoming: Any, /) -> Any:
        return incoming if current is None else self.reducer(current, incoming)

    def __eq__(self, other: object) -> bool:
        return type(other) is _FirstWrite and other.reducer == self.reducer  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.reducer)

    def __repr__(self) -> str:
        return repr(self.reducer)


def _is_reducer(meta: object) -> bool:
    return callable(meta) and not isinstance(meta, type)


def _split(key: str, hint: Any) -> tuple[Any, Reducer | None, str | None]:
    """(the type without its reducer and qualifiers, the reducer, "NotRequired" / "Required" / None)."""
    qualifier, reducer, extra = None, None, []
    while True:
        origin = get_origin(hint)
        if getattr(origin, "_name", None) in _WRAPPERS:
            qualifier = qualifier if origin._name == "ReadOnly" else origin._name  # type: ignore[union-attr]
            hint = get_args(hint)[0]
        elif origin is Annotated:
            for m in hint.__metadata__:
                if isinstance(m, type) and issubclass(m, _Builtin):
                    raise SchemaError(f"channel {key!r}: Annotated holds the class {m.__name__}, not a "
                                      f"reducer; instantiate it: {m.__name__}()")
                if not _is_reducer(m):
                    extra.append(m)
                elif reducer is not None:
                    raise SchemaError(f"channel {key!r} has two reducers in Annotated; give it one")
                else:
                    reducer = m
            hint = hint.__origin__
        else:
            return (Annotated[(hint, *extra)] if extra else hint), reducer, qualifier


def _typed_fields(tp: Any) -> tuple[dict[str, _Field], bool]:
    """The fields of a TypedDict, a dataclass or a pydantic model; True for a model."""
    if not isinstance(tp, type):
        raise SchemaError(f"StateSchema.from_type takes a TypedDict, a dataclass or a pydantic model "
                          f"class, got {type(tp).__name__} {tp!r}")
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - NameError of a forward reference, ...
        raise SchemaError(f"cannot read the annotations of {tp.__qualname__}: {type(exc).__name__}: "
                          f"{exc}; define the types they name before calling from_type") from None
    out: dict[str, _Field] = {}
    pyd = sys.modules.get("pydantic")
    if pyd is not None and issubclass(tp, pyd.BaseModel):
        for key, info in getattr(tp, "model_fields").items():
            base, reducer, _ = _split(key, hints.get(key, info.annotation))
            required = info.is_required()
            default = None if required else info.get_default(call_default_factory=True, validated_data={})
            out[key] = _Field(base, reducer, not required, default, info=info)
        return out, True
    if dataclasses.is_dataclass(tp):
        for f in dataclasses.fields(tp):
            base, reducer, _ = _split(f.name, hints.get(f.name, f.type))
            if f.default is not dataclasses.MISSING:
                out[f.name] = _Field(base, reducer, True, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = _Field(base, reducer, True, f.default_factory())
            else:
                out[f.name] = _Field(base, reducer)
        return out, False
    if issubclass(tp, dict) and hasattr(tp, "__required_keys__"):
        optional = set(getattr(tp, "__optional_keys__", ()))
        for key, hint in hints.items():
            base, reducer, qualifier = _split(key, hint)
            not_required = qualifier == "NotRequired" or (qualifier != "Required" and key in optional)
            out[key] = _Field(base, reducer, not_required=not_required, typed_dict=True)
        return out, False
    raise SchemaError(f"StateSchema.from_type takes a TypedDict, a dataclass or a pydantic model class; "
                      f"{tp.__qualname__} is none of them")


def _empty_of(tp: Any) -> Any:
    """``[]``, ``{}``, ``0``... for a channel of a list, dict, set, tuple, str, int or float type."""
    while get_origin(tp) is Annotated:
        tp = tp.__origin__
    origin = get_origin(tp) or tp
    return origin() if origin in (list, dict, set, frozenset, tuple, str, int, float) else None


def _register_types(tp: Any) -> None:
    """Register the pydantic models, dataclasses and enums named in a channel's type."""
    seen: list[Any] = [tp]
    while seen:
        t = seen.pop()
        seen.extend(get_args(t))
        if not isinstance(t, type) or t in codec._user.BY_TYPE or "<locals>" in t.__qualname__:
            continue
        pyd = sys.modules.get("pydantic")
        if issubclass(t, enum.Enum) or dataclasses.is_dataclass(t) or (
                pyd is not None and issubclass(t, pyd.BaseModel) and t is not pyd.BaseModel):
            try:
                codec.register(t)
            except Exception:  # noqa: BLE001 - e.g. its name is taken: storing it will say so
                pass
