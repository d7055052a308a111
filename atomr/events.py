"""Journal events: what happened to a run, one frozen dataclass each.

A run's journal is an append-only, gap-free sequence of these (numbered from 1).
Folding them in order through :func:`atomr.graph.superstep.apply_event` gives the
run's state; the live run actor folds exactly the events it journals, so a
rehydrated run cannot drift from a live one. Their byte layout is defined once,
in :mod:`atomr.store.format`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "Event",
    "RunStarted",
    "StepStarted",
    "StepCompleted",
    "StepFailed",
    "SuperStepCommitted",
    "Interrupted",
    "Paused",
    "Resumed",
    "StateUpdated",
    "BranchTaken",
    "HumanApproved",
    "RunCompleted",
    "RunFailed",
    "Forked",
    "StepCancelled",
    "ItemCompleted",
    "LoopIterated",
    "RunCancelled",
    "TurnStarted",
]

Writes = list  # list[tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class RunStarted:
    input: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class StepStarted:
    step: str
    super_step: int
    attempt: int
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class StepCompleted:
    """A step's raw writes (pending until its super-step commits)."""

    step: str
    super_step: int
    writes: Writes


@dataclass(frozen=True, slots=True)
class StepFailed:
    step: str
    super_step: int
    error_type: str
    message: str
    attempt: int
    final: bool


@dataclass(frozen=True, slots=True)
class SuperStepCommitted:
    """Every step of the layer is done: merge their writes; ``super_step`` is the new count."""

    super_step: int
    layer: int
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A step asked for input. ``index`` < 0 marks a hold (a Subgraph whose child
    paused without an interrupt): any resume releases it."""

    step: str
    super_step: int
    interrupt_id: str
    payload: Any
    index: int


@dataclass(frozen=True, slots=True)
class Paused:
    reason: str  # "interrupt" | "before" | "after" | "fork"
    steps: list[str]
    super_step: int
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Resumed:
    """A Command was accepted: ``answers`` maps interrupt ids to resume values."""

    answers: dict[str, Any]
    goto: str | None
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class StateUpdated:
    edits: Writes
    by: str
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class BranchTaken:
    step: str
    chosen: list[str]


@dataclass(frozen=True, slots=True)
class HumanApproved:
    step: str
    approver: str | None


@dataclass(frozen=True, slots=True)
class RunCompleted:
    super_step: int
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class RunFailed:
    step: str | None
    error_type: str
    message: str
    super_step: int
    at_ms: int = 0
    #: the failing step's traceback (its user frames), when a step raised
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Forked:
    """First event of a forked run: the source checkpoint it starts from."""

    from_workflow: str
    from_run: str
    from_super_step: int
    values: dict[str, Any]
    layer: int
    branches: dict[str, list[str]]
    meta: dict[str, Any] = field(default_factory=dict)
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class StepCancelled:
    step: str
    super_step: int
    reason: str


@dataclass(frozen=True, slots=True)
class ItemCompleted:
    """One element of a Map step finished (kept across crashes and pauses)."""

    step: str
    super_step: int
    index: int
    result: Any


@dataclass(frozen=True, slots=True)
class LoopIterated:
    """One iteration of a Loop step: its writes are merged right away."""

    step: str
    super_step: int
    iteration: int
    writes: Writes
    at_ms: int = 0


Event = Union[
    RunStarted,
    StepStarted,
    StepCompleted,
    StepFailed,
    SuperStepCommitted,
    Interrupted,
    Paused,
    Resumed,
    StateUpdated,
    BranchTaken,
    HumanApproved,
    RunCompleted,
    RunFailed,
    Forked,
    StepCancelled,
    ItemCompleted,
    LoopIterated,
]


@dataclass(frozen=True, slots=True)
class RunCancelled:
    """The run was cancelled: its in-flight super-step is not committed; it is over."""

    reason: str
    super_step: int
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """A done run takes another turn (``start(..., if_exists="continue")``): its
    ``input`` is merged into the state through the reducers and the graph runs
    again from its roots. ``turn`` counts from 1 (the first run is turn 0);
    super-steps keep counting."""

    turn: int
    input: dict[str, Any]
    at_ms: int = 0
