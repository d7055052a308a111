"""Public value types: Command, outcomes, inspection results. Immutable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

from atomr.errors import AtomrError, RunError, StateError, error_class

__all__ = [
    "Cancelled",
    "Command",
    "Interrupt",
    "Done",
    "Paused",
    "Failed",
    "Outcome",
    "StateView",
    "Checkpoint",
    "StepEvent",
]


@dataclass(frozen=True)
class Command:
    """How to resume a paused (or failed) run.

    ``Command()`` continues; ``resume=v`` answers the single pending interrupt
    (or ``resume={interrupt_id: v, ...}`` answers several); ``update={...}``
    merges edits through the reducers first; ``goto="step"`` continues from
    that step's layer. Forms combine: the update is applied first.
    ``resume=None`` means "no resume value": to answer an interrupt with None,
    name it: ``Command(resume={interrupt_id: None})``.
    """

    resume: Any = None
    update: Mapping[str, Any] | None = None
    goto: str | None = None

    def __post_init__(self) -> None:
        u = self.update
        if u is not None and not isinstance(u, Mapping):
            if isinstance(u, (str, bytes)) or not isinstance(u, Iterable):
                raise StateError(f"Command.update must be a dict {{channel: value}}, got "
                                 f"{type(u).__name__} {u!r}; pass e.g. update={{'x': 1}}")
            u = list(u)
            for i, pair in enumerate(u):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str):
                    raise StateError(f"Command.update item {i} is {pair!r}, not a (channel, value) pair; "
                                     "pass a dict {channel: value} or a list of (channel, value) pairs")
            object.__setattr__(self, "update", [tuple(p) for p in u])
        elif u is not None and not all(isinstance(k, str) for k in u):
            bad = next(k for k in u if not isinstance(k, str))
            raise StateError(f"Command.update key {bad!r} is not a channel name (a str); "
                             "pass a dict {channel: value}")
        if self.goto is not None and (not isinstance(self.goto, str) or not self.goto):
            raise RunError(f"Command.goto must be a step id (a non-empty str) or None, got "
                           f"{self.goto!r}; pass the id of the step to continue from")


@dataclass(frozen=True)
class Interrupt:
    """A pending interrupt: answer it with ``Command(resume={id: value})``."""

    id: str
    step_id: str
    payload: Any


@dataclass(frozen=True)
class Done:
    workflow_id: str
    run_id: str
    state: dict[str, Any]

    status = "done"


@dataclass(frozen=True)
class Paused:
    workflow_id: str
    run_id: str
    super_step: int
    reason: str  # "interrupt" | "before" | "after" | "fork"
    interrupts: list[Interrupt] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    status = "paused"


@dataclass(frozen=True)
class Failed:
    workflow_id: str
    run_id: str
    step_id: str | None
    super_step: int
    error_type: str
    message: str
    #: the step's traceback, its own frames only (not atomr's), when a step raised; else None
    traceback: str | None = None

    status = "failed"

    def raise_error(self) -> None:
        """Raise the failure as an exception (an atomr.errors class when it is one)."""
        cls = error_class(self.error_type) or RunError
        exc: AtomrError
        try:
            exc = cls(self.message)  # type: ignore[call-arg]
        except TypeError:
            # a class whose __init__ takes structured arguments (UnknownChannelError,
            # ReducerError, ...): build it around the stored message
            exc = cls.__new__(cls)
            Exception.__init__(exc, self.message)
        raise exc


@dataclass(frozen=True)
class Cancelled:
    """The run was cancelled (``rt.cancel``): it is over; fork it to run again."""

    workflow_id: str
    run_id: str
    super_step: int
    reason: str = ""

    status = "cancelled"


Outcome = Union[Done, Paused, Failed, Cancelled]


@dataclass(frozen=True)
class StateView:
    """What ``Runtime.get_state`` returns: a run as of its last committed event."""

    workflow_id: str
    run_id: str
    values: dict[str, Any]
    super_step: int
    status: str
    next: list[str]
    interrupts: list[Interrupt]
    pause_reason: str | None = None
    error: tuple[str | None, str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: a sleeping run: when it wakes (epoch seconds)
    wake_at: float | None = None
    #: a cancelled run: why
    cancel_reason: str | None = None
    #: a failed run: the traceback of the step that raised (its own frames), else None
    traceback: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """One entry of ``Runtime.history``: the state at a point of the run."""

    super_step: int
    label: str
    values: dict[str, Any]
    at_ms: int
    seq: int
    next: list[str] = field(default_factory=list)


class StepEvent(NamedTuple):
    """Streamed by ``RunHandle.events()`` while a run goes on.

    ``kind``: "started" | "completed" | "failed" | "retrying" | "interrupted" |
    "cancelled" | "committed" (a super-step merged; ``step`` is None) |
    "outcome" (last event; ``data`` holds the outcome). ``step`` is the step id,
    or ``"step[i]"`` / ``"step#n"`` for a Map element / Loop iteration.
    (A named tuple: cheap to make on the run's hot path.)
    """

    kind: str
    workflow_id: str
    run_id: str
    super_step: int
    step: str | None = None
    attempt: int = 0
    data: Any = None
