"""Decisions of the driven step kinds (Map, Loop, Subgraph, any-join), and outcomes.

Pure: no threads, no I/O. The run actor keeps one :class:`Driven` per Map /
Loop / Subgraph step of the in-flight layer and asks these functions what to
start, and when the step is over; it then carries the answer out (journal,
executor, child runs).

A Map over n items costs O(1) per item: the items still to start wait in a
queue, so neither a start nor a completion scans the list.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from atomr import events as ev
from atomr.errors import LoopLimitError
from atomr.graph.plan import Plan
from atomr.graph.progress import RunProgress, apply_event
from atomr.graph.schema import StateSchema
from atomr.types import Cancelled, Done, Failed, Interrupt, Paused

__all__ = [
    "Driven",
    "Settle",
    "blocked_units",
    "map_begin",
    "map_take",
    "map_settle",
    "loop_next",
    "loop_held",
    "loop_child_run",
    "body_input",
    "run_writes",
    "child_run_id",
    "child_run_of",
    "any_join_losers",
    "outcome_of",
]


@dataclass(slots=True)
class Driven:
    """In-memory progress of a driven step of the in-flight layer."""

    items: list[Any] = field(default_factory=list)
    #: Map: indices still to start, in order (a retried element goes back in front)
    todo: deque[int] = field(default_factory=deque)
    #: Map element indices / Loop iteration numbers / 0 for a Subgraph's child
    inflight: set[int] = field(default_factory=set)
    #: the first final failure of an element or iteration: (error_type, message)
    failed: tuple[str, str] | None = None
    #: a Subgraph's child was asked again after a refusal
    retried: bool = False


@dataclass(frozen=True, slots=True)
class Settle:
    """A driven step is over: ``how`` is "done" (with ``writes``), "failed"
    (with ``error``) or "held" (it waits for answers to interrupts)."""

    how: str
    writes: list[tuple[str, Any]] = field(default_factory=list)
    error: tuple[str, str] = ("", "")


_HELD = Settle("held")


def blocked_units(p: RunProgress, step: str) -> set[str]:
    """Units of ``step`` (``step[i]``, ``step#n``) with an unanswered interrupt."""
    if not p.asked:
        return set()
    return {i.id.rsplit(":", 2)[0] for i in p.asked.values()
            if i.step_id == step and i.id not in p.answers}


# --- Map ----------------------------------------------------------------------


def map_begin(step: str, items_channel: str, p: RunProgress) -> Driven | Settle:
    """The driver of a Map step, or a failure when its channel holds no list."""
    items = p.layer_values.get(items_channel)
    if not isinstance(items, (list, tuple)):
        return Settle("failed", error=("MapError", (
            f"Map step {step!r} needs a list in channel {items_channel!r}, got "
            f"{type(items).__name__}; write a list there before this step runs")))
    done = p.items.get(step, {})
    blocked = blocked_units(p, step)
    todo = deque(i for i in range(len(items))
                 if i not in done and (not blocked or f"{step}[{i}]" not in blocked))
    return Driven(items=list(items), todo=todo)


def map_take(d: Driven, limit: int) -> list[int]:
    """Element indices to start now (at most ``limit`` in flight); none after a failure."""
    out: list[int] = []
    if d.failed is not None:
        return out
    todo, inflight = d.todo, d.inflight
    while todo and len(inflight) < limit:
        i = todo.popleft()
        inflight.add(i)
        out.append(i)
    return out


def map_settle(d: Driven, done: Mapping[int, Any], into: str) -> Settle | None:
    """None while elements run; else how the Map step ends."""
    if d.inflight or (d.todo and d.failed is None):
        return None
    if d.failed is not None:
        return Settle("failed", error=d.failed)
    n = len(d.items)
    if len(done) == n:
        return Settle("done", writes=[(into, [done[i] for i in range(n)])])
    return _HELD


# --- Loop ---------------------------------------------------------------------


def loop_next(step: str, p: RunProgress, go: bool, max_iterations: int) -> int | Settle:
    """After the predicate said ``go``: the iteration number to run, or how the loop ends."""
    it = p.iterations.get(step, 0)
    if not go:
        return Settle("done")
    if it >= max_iterations:
        return Settle("failed", error=(LoopLimitError.__name__, (
            f"loop {step!r} still wants to run after max_iterations={max_iterations} "
            "iterations; raise max_iterations or make while_ become false")))
    return it


def loop_held(step: str, p: RunProgress) -> bool:
    """The loop's next iteration waits for an answer to its interrupt (its
    own, ``step#n:ss:i``, or one of its Dag body's, ``step#n/...``)."""
    if not p.asked:
        return False
    unit = f"{step}#{p.iterations.get(step, 0)}"
    prefix = unit + "/"
    return any(u == unit or u.startswith(prefix) for u in blocked_units(p, step))


def loop_child_run(workflow_id: str, run_id: str, step: str, iteration: int, super_step: int) -> str:
    """The run id of iteration ``iteration`` of Loop ``step`` (a Dag body) in
    super-step ``super_step``: a ``goto`` that runs the loop again gets new runs."""
    return f"{child_run_id(workflow_id, run_id, step)}#{iteration}@{super_step}"


def body_input(schema: StateSchema, seen: Mapping[str, Any]) -> dict[str, Any]:
    """The input of a Dag body's child run: the channels of ``seen`` that differ
    from their initial value (the child starts from ``seen``)."""
    init = schema.initial_values()
    return {k: v for k, v in seen.items() if k not in init or init[k] != v}


def run_writes(plan: Plan, events: Iterable[tuple[int, Any]]) -> list[tuple[str, Any]]:
    """Every write a run merged after its input, in merge order: Loop
    iterations as they happened, each committed layer's steps in layer order,
    state updates. Applied through the reducers to the run's input values,
    they give its final values."""
    p = RunProgress(plan.dag.entry, "")
    out: list[tuple[str, Any]] = []
    for seq, e in events:
        t = type(e)
        if t is ev.SuperStepCommitted:
            layer = plan.layers[p.layer]  # as commit_values folds it
            pending = p.pending
            order = [s for s in layer if s in pending] + sorted(s for s in pending if s not in layer)
            for s in order:
                out.extend((c, v) for c, v in pending[s])
        elif t is ev.LoopIterated:
            out.extend((c, v) for c, v in e.writes)
        elif t is ev.StateUpdated:
            out.extend((c, v) for c, v in e.edits)
        apply_event(plan, p, e, seq)
    return out


# --- Subgraph -------------------------------------------------------------------


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace("/", "%2F")


def child_run_id(workflow_id: str, run_id: str, step: str, super_step: int | None = None) -> str:
    """The run id of a Subgraph step's child run: unambiguous, whatever the ids
    hold ("/" and "%" in a part are escaped), and readable for plain ids.
    ``super_step``: the super-step the step runs in, for an execution after the
    run's first turn (``".../<step>/<super_step>"``): each execution has a child of its own."""
    base = f"{_escape(workflow_id)}/{_escape(run_id)}/{_escape(step)}"
    return base if super_step is None else f"{base}/{super_step}"


def child_run_of(p: RunProgress, step: str) -> str:
    """The child run id of Subgraph ``step`` in the in-flight super-step of run ``p``:
    the plain id in the run's first turn, one per super-step in later turns."""
    return child_run_id(p.workflow_id, p.run_id, step, p.next_super_step if p.turn else None)


def child_answers(step: str, answers: Mapping[str, Any], pending: Iterable[str]) -> dict[str, Any]:
    """The parent's answers to a paused child's interrupts (ids ``step/<child id>``)."""
    prefix = step + "/"
    wanted = set(pending)
    return {iid[len(prefix):]: v for iid, v in answers.items()
            if iid.startswith(prefix) and iid[len(prefix):] in wanted}


# --- any-join -------------------------------------------------------------------


def any_join_losers(plan: Plan, p: RunProgress, winner: str) -> list[str]:
    """Siblings to cancel now that ``winner`` finished first before an any-join."""
    layer = plan.layers[p.layer]
    return [o for o in plan.cancel_on_done.get(winner, ())
            if o in layer and o not in p.pending and o not in p.skipped]


# --- outcomes -------------------------------------------------------------------


def outcome_of(p: RunProgress) -> Done | Paused | Failed | Cancelled | None:
    """The outcome of a settled run (paused, done, failed), from its fold; None
    while it runs."""
    wid, rid = p.workflow_id, p.run_id
    if p.status == "done":
        return Done(wid, rid, p.values)
    if p.status == "paused":
        return Paused(wid, rid, p.super_step, p.pause_reason or "",
                      [Interrupt(i.id, i.step_id, i.payload) for i in p.interrupts], list(p.pause_steps))
    if p.status == "cancelled":
        return Cancelled(wid, rid, p.super_step, p.cancel_reason or "")
    if p.status == "failed":
        step, etype, message = p.failure if p.failure else (None, "RunError", "")
        return Failed(wid, rid, step, p.super_step, etype, message, p.traceback)
    return None
