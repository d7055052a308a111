"""What a running run must do next: :func:`next_action` and its action types.

Pure: no threads, no I/O. The run actor asks ``next_action`` after every
change and carries the answer out.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from atomr.graph.plan import Plan
from atomr.graph.progress import RunProgress

__all__ = [
    "Dispatch",
    "CommitLayer",
    "PauseBefore",
    "PauseInterrupt",
    "Complete",
    "FailRun",
    "Route",
    "Wait",
    "next_action",
    "after_breakpoint",
]


@dataclass(frozen=True, slots=True)
class Dispatch:
    steps: list[str]


@dataclass(frozen=True, slots=True)
class CommitLayer:
    pass


@dataclass(frozen=True, slots=True)
class PauseBefore:
    steps: list[str]


@dataclass(frozen=True, slots=True)
class PauseInterrupt:
    steps: list[str]


@dataclass(frozen=True, slots=True)
class Complete:
    pass


@dataclass(frozen=True, slots=True)
class Route:
    """Ask the router of this branch step which targets to take."""

    step: str


@dataclass(frozen=True, slots=True)
class FailRun:
    step: str
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to start: results of running steps are awaited."""


_COMMIT = CommitLayer()
_COMPLETE = Complete()
_WAIT = Wait()


def next_action(plan: Plan, p: RunProgress, running: Collection[str] = ()) -> Any:
    """What a running run must do now, given the steps already executing."""
    if p.to_route:
        return Route(p.to_route[0])
    if p.layer >= plan.n_layers:
        return _COMPLETE
    layer = plan.layers[p.layer]
    todo = [s for s in layer if s not in p.pending and s not in p.skipped]
    if not todo:
        return _COMMIT
    if plan.before and p.bp_cleared != p.next_super_step and not p.pending and not p.asked:
        hit = [s for s in todo if s in plan.before]
        if hit and not running:
            return PauseBefore(hit)
    blocked = _blocked_steps(p)
    failed = p.failed
    startable = [s for s in todo if s not in running and s not in blocked and s not in failed]
    if startable:
        return Dispatch(startable)
    if running:
        return _WAIT
    if failed:
        step = next(s for s in layer if s in failed)
        return FailRun(step, *failed[step])
    return PauseInterrupt(sorted({i.step_id for i in p.interrupts} | p.holds))


def _blocked_steps(p: RunProgress) -> set[str]:
    if not p.asked:
        return set(p.holds)
    return {i.step_id for i in p.asked.values() if i.id not in p.answers} | p.holds


def after_breakpoint(plan: Plan, layer: int, skipped: set[str]) -> list[str]:
    """Steps of a just-committed layer that have an interrupt_after breakpoint."""
    if not plan.after:
        return []
    return [s for s in plan.layers[layer] if s in plan.after and s not in skipped]

