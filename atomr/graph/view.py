"""The read-only state a step of a typed workflow gets: ``state.field`` and ``state["field"]``.

A workflow whose schema comes from :meth:`StateSchema.from_type` hands its
steps (and routers, Loop predicates) a :class:`TypedState` over the values of
the super-step; any other workflow a plain read-only mapping. Built in the run
actor's turn, read in the step's thread; it never changes after it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["TypedState", "viewer"]

_get = object.__getattribute__


class TypedState(Mapping[str, Any]):
    """A read-only view of a typed state: ``state.title`` is ``state["title"]``.

    A field named like a mapping method (``items``, ``get``, ``keys``...) is
    the field: ``state.items`` is the channel's value, not the method
    (``state["items"]`` reads it too; ``state.to_dict()`` gives a plain dict
    of every value). A channel without a value yet (a
    ``NotRequired`` key not written) raises AttributeError as an attribute,
    KeyError as an item.
    """

    __slots__ = ("_atomr_values", "_atomr_fields", "_atomr_type")

    def __init__(self, values: Mapping[str, Any], fields: frozenset[str], type_name: str = "state") -> None:
        object.__setattr__(self, "_atomr_values", values)
        object.__setattr__(self, "_atomr_fields", fields)
        object.__setattr__(self, "_atomr_type", type_name)

    def __getattribute__(self, name: str) -> Any:
        if name in _get(self, "_atomr_fields"):
            values = _get(self, "_atomr_values")
            if name in values:
                return values[name]
            raise AttributeError(name)  # __getattr__ says why
        return _get(self, name)

    def __getattr__(self, name: str) -> Any:
        fields, owner = _get(self, "_atomr_fields"), _get(self, "_atomr_type")
        if name in fields:
            raise AttributeError(
                f"field {name!r} of {owner} has no value yet (it starts absent and no step or input "
                f"wrote it); read it with state[{name!r}] in a try, or give the field a default")
        raise AttributeError(f"{owner} has no field {name!r} (fields: {', '.join(sorted(fields))})")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the state a step gets is read-only (cannot set {name!r}); "
                             f"return the write instead: {{{name!r}: value}}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"the state a step gets is read-only (cannot delete {name!r})")

    def __getitem__(self, key: str) -> Any:
        return _get(self, "_atomr_values")[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_get(self, "_atomr_values"))

    def __len__(self) -> int:
        return len(_get(self, "_atomr_values"))

    def __contains__(self, key: object) -> bool:
        return key in _get(self, "_atomr_values")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TypedState):
            other = _get(other, "_atomr_values")
        return dict(_get(self, "_atomr_values")) == other if isinstance(other, Mapping) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the values as a plain dict."""
        return dict(_get(self, "_atomr_values"))

    def __reduce__(self) -> Any:  # a copy travels (e.g. to a Ray worker) as a view again
        return (TypedState, (dict(_get(self, "_atomr_values")), _get(self, "_atomr_fields"),
                             _get(self, "_atomr_type")))

    def __repr__(self) -> str:
        return f"{_get(self, '_atomr_type')}View({dict(_get(self, '_atomr_values'))!r})"


def viewer(schema: Any) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    """``values -> the read-only state steps get`` for a workflow over ``schema``:
    a :class:`TypedState` when the schema was read from a class, else a
    ``MappingProxyType``."""
    source = getattr(schema, "source", None)
    if source is None:
        return MappingProxyType
    fields = frozenset(schema.keys())
    name = getattr(source, "__qualname__", "state")

    def view(values: Mapping[str, Any]) -> Mapping[str, Any]:
        return TypedState(values, fields, name)

    return view
