"""Merging step writes into the state: the pure hot path of the runtime.

Nothing here mutates a values dict it was given: every merge returns a new
(shallow-copied) dict, so old values can be shared with steps still reading
them, and a failed merge leaves the state exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from atomr.errors import MissingInput, ReducerError, StepResultError, UnknownChannelError
from atomr.graph.schema import StateSchema

__all__ = [
    "RunState",
    "Write",
    "apply_writes",
    "check_channels",
    "check_required",
    "fold_superstep",
    "normalize_writes",
]

Write = tuple[str, Any]
"""One write: ``(channel, value)``."""


def normalize_writes(step: str, result: Any) -> list[Write]:
    """A step's return value as a list of ``(channel, value)`` writes.

    Accepts a mapping, a list/tuple of ``(key, value)`` pairs, or None; anything
    else raises :class:`StepResultError`.
    """
    if result is None:
        return []
    if isinstance(result, Mapping):
        for key in result:
            if not isinstance(key, str):
                raise StepResultError(step, result, f"key {key!r} is not a str channel name")
        return list(result.items())
    if isinstance(result, (list, tuple)):
        out: list[Write] = []
        for i, item in enumerate(result):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                hint = "; wrap a single pair in a list" if i == 0 and isinstance(item, str) else ""
                raise StepResultError(
                    step, result, f"item {i} is {item!r}, not a (channel, value) pair{hint}"
                )
            key = item[0]
            if not isinstance(key, str):
                raise StepResultError(step, result, f"item {i} has key {key!r}, not a str channel name")
            out.append(item if type(item) is tuple else (key, item[1]))  # type: ignore[arg-type]
        return out
    raise StepResultError(step, result)


def check_channels(schema: StateSchema, writes: Iterable[Write], step: str | None = None) -> None:
    """Raise :class:`UnknownChannelError` for the first write to an undeclared channel."""
    reducers = schema._reducers
    for key, _ in writes:
        if key not in reducers:
            raise UnknownChannelError(key, schema.keys(), step)


def check_required(schema: StateSchema, data: Mapping[str, Any], where: str = "the run input") -> None:
    """Raise :class:`MissingInput` when ``data`` (a fresh run's input) lacks a
    field the typed ``schema`` requires (a model's / dataclass's field without a default)."""
    missing = [k for k in schema.required if k not in data]
    if missing:
        raise MissingInput(missing, getattr(schema.source, "__qualname__", "the state"), where)


def _as_seq(writes: Iterable[Write] | Mapping[str, Any]) -> Sequence[Write]:
    if isinstance(writes, (list, tuple)):
        return writes
    if isinstance(writes, Mapping):
        return list(writes.items())
    return list(writes)


def _merge_into(
    schema: StateSchema, out: dict[str, Any], writes: Iterable[Write], step: str | None
) -> None:
    reducers = schema._reducers
    key = ""
    if schema._validators:
        _merge_checked(schema, out, writes, step)
        return
    try:
        for key, value in writes:
            out[key] = reducers[key](out.get(key), value)
    except Exception as exc:
        raise ReducerError(key, exc, step) from exc


def _merge_checked(
    schema: StateSchema, out: dict[str, Any], writes: Iterable[Write], step: str | None
) -> None:
    """Merge, then validate each merged value (a typed schema: StateSchema.from_type)."""
    reducers, checks = schema._reducers, schema._validators
    for key, value in writes:
        try:
            merged = reducers[key](out.get(key), value)
        except Exception as exc:
            raise ReducerError(key, exc, step) from exc
        check = checks.get(key)
        out[key] = merged if check is None else check(merged, step)


def apply_writes(
    schema: StateSchema,
    values: Mapping[str, Any],
    writes: Iterable[Write] | Mapping[str, Any],
    step: str | None = None,
) -> dict[str, Any]:
    """A new dict: ``values`` with each write merged through its channel's reducer, in order.

    Every channel is checked before anything is merged; ``values`` is never mutated.
    """
    seq = _as_seq(writes)
    check_channels(schema, seq, step)
    out = dict(values)
    _merge_into(schema, out, seq, step)
    return out


def fold_superstep(
    schema: StateSchema,
    values: Mapping[str, Any],
    writes_by_step: Mapping[str, Sequence[Write]],
    order: Sequence[str],
) -> dict[str, Any]:
    """Merge the writes of one super-step deterministically into a new dict.

    Steps are folded in ``order`` (the topological order), each step's writes
    in the order it returned them; steps of ``order`` without writes are
    skipped, and steps with writes missing from ``order`` are folded last,
    sorted by id, so no write is ever lost.
    """
    plan: list[tuple[str, Sequence[Write]]] = []
    done: set[str] = set()
    for step in order:
        if step in done:
            continue
        writes = writes_by_step.get(step)
        if writes is not None:
            done.add(step)
            plan.append((step, writes))
    if len(done) < len(writes_by_step):
        for step in sorted(s for s in writes_by_step if s not in done):
            writes = writes_by_step[step]
            if writes is not None:
                plan.append((step, writes))
    for step, writes in plan:
        check_channels(schema, writes, step)
    out = dict(values)
    for step, writes in plan:
        _merge_into(schema, out, writes, step)
    return out


class RunState:
    """The values of a run's channels plus its super-step counter.

    Every merge replaces :attr:`values` with a new dict (the old one is never
    mutated), and is all-or-nothing.
    """

    __slots__ = ("schema", "_values", "super_step")

    def __init__(
        self, schema: StateSchema, values: dict[str, Any] | None = None, super_step: int = 0
    ) -> None:
        self.schema = schema
        self._values: dict[str, Any] = schema.initial_values() if values is None else values
        self.super_step = super_step

    @property
    def values(self) -> dict[str, Any]:
        """The current values (do not mutate: take a :meth:`snapshot` to edit)."""
        return self._values

    def read(self, key: str) -> Any:
        """The value of channel ``key`` (None when unset)."""
        if key not in self.schema._reducers:
            raise UnknownChannelError(key, self.schema.keys())
        return self._values.get(key)

    __getitem__ = read

    def get(self, key: str, default: Any = None) -> Any:
        """The value of channel ``key``, or ``default`` when unset or undeclared."""
        return self._values.get(key, default) if key in self.schema._reducers else default

    def __contains__(self, key: object) -> bool:
        return key in self.schema._reducers

    def merge_writes(
        self, writes: Iterable[Write] | Mapping[str, Any], step: str | None = None
    ) -> None:
        """Merge a batch of writes in order; on any error the state is left unchanged."""
        self._values = apply_writes(self.schema, self._values, writes, step)

    def write(self, key: str, value: Any) -> None:
        """Merge one write through the channel's reducer."""
        self._values = apply_writes(self.schema, self._values, ((key, value),))

    def merge_superstep(
        self, writes_by_step: Mapping[str, Sequence[Write]], order: Sequence[str]
    ) -> None:
        """Fold one super-step's writes (see :func:`fold_superstep`); all-or-nothing."""
        self._values = fold_superstep(self.schema, self._values, writes_by_step, order)

    def advance(self) -> int:
        """Move to the next super-step and return its number."""
        self.super_step += 1
        return self.super_step

    def snapshot(self) -> dict[str, Any]:
        """A shallow copy of the current values."""
        return dict(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunState):
            return NotImplemented
        return (
            self.super_step == other.super_step
            and self._values == other._values
            and self.schema == other.schema
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RunState(super_step={self.super_step}, values={self._values!r})"
