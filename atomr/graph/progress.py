"""A run's progress: the fold of its journal, ids, and snapshots.

Pure: no threads, no I/O. The run actor and rehydration fold the same events
with the same :func:`apply_event`, so a rehydrated run equals the live one.

Numbering: ``super_step`` counts committed super-steps (0 = the input
checkpoint); ``layer`` is the index of the next DAG layer to run. They move
together until a ``goto`` jumps the layer cursor; ``super_step`` never goes back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from atomr import events as ev
from atomr.graph.ids import (SLEEP_KEY, idempotency_key, interrupt_id, looks_like_interrupt_id, pending_sleeps,
                             resume_values, sleep_until)
from atomr.graph.plan import Plan
from atomr.graph.state import apply_writes, fold_superstep

__all__ = [
    "RunProgress",
    "PendingInterrupt",
    "apply_event",
    "replay",
    "skipped_steps",
    "commit_values",
    "executed_ms",
    "SLEEP_KEY",
    "sleep_until",
    "pending_sleeps",
    "interrupt_id",
    "looks_like_interrupt_id",
    "idempotency_key",
    "resume_values",
]


@dataclass(frozen=True, slots=True)
class PendingInterrupt:
    """An interrupt raised by a step and not answered yet."""

    id: str
    step_id: str
    payload: Any
    index: int


@dataclass(slots=True)
class RunProgress:
    """Everything known about a run: the fold of its journal."""

    workflow_id: str
    run_id: str
    values: dict[str, Any] = field(default_factory=dict)
    super_step: int = 0
    layer: int = 0
    status: str = "new"  # new | running | paused | done | failed
    seq: int = 0
    #: step -> raw writes of steps of the in-flight layer that completed
    pending: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    #: interrupts of the in-flight layer, answered or not: id -> interrupt
    asked: dict[str, PendingInterrupt] = field(default_factory=dict)
    #: interrupt id -> resume value
    answers: dict[str, Any] = field(default_factory=dict)
    #: step -> attempts used in the in-flight layer
    attempts: dict[str, int] = field(default_factory=dict)
    pause_reason: str | None = None
    pause_steps: list[str] = field(default_factory=list)
    #: (step, error_type, message) of a failed run
    failure: tuple[str | None, str, str] | None = None
    #: the traceback (user frames) of the step that failed the run, if one raised
    traceback: str | None = None
    #: super-step number whose before-breakpoint was already taken
    bp_cleared: int = -1
    skipped: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(default_factory=dict)
    #: per step of the in-flight layer: index -> result of finished Map elements
    items: dict[str, dict[int, Any]] = field(default_factory=dict)
    #: per Loop step of the in-flight layer: iterations already merged
    iterations: dict[str, int] = field(default_factory=dict)
    #: steps of the in-flight layer that failed for good: step -> (error_type, message)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: branch decisions: branch step -> chosen labels
    branches: dict[str, list[str]] = field(default_factory=dict)
    #: branch steps of the last committed layer whose router has not decided yet
    to_route: list[str] = field(default_factory=list)
    #: steps held (e.g. a Subgraph whose child paused at a breakpoint) until a resume
    holds: set[str] = field(default_factory=set)
    #: the values as they were before the in-flight layer, once a Loop
    #: iteration merged into ``values`` (None: ``values`` is that state). Every
    #: other step of the layer sees this, however far the Loop got.
    layer_base: dict[str, Any] | None = None
    #: why the run was cancelled (status "cancelled")
    cancel_reason: str | None = None
    #: milliseconds spent executing in earlier executions (not paused or sleeping)
    exec_ms: int = 0
    #: when the current execution began (None: the run is not executing)
    exec_from_ms: int | None = None
    #: per Loop step of the in-flight layer: the state it sees (the layer's
    #: base plus its own iterations, never another Loop's)
    loop_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated_ms: int = 0
    #: the run's turn: 0 for its first run, +1 for each ``TurnStarted``
    turn: int = 0

    @property
    def layer_values(self) -> dict[str, Any]:
        """What the steps of the in-flight layer see: the state before the layer."""
        return self.values if self.layer_base is None else self.layer_base

    def loop_view(self, step: str) -> dict[str, Any]:
        """What Loop ``step`` sees: the layer's base plus its own iterations."""
        return self.loop_values.get(step, self.layer_values)

    @property
    def next_super_step(self) -> int:
        """The number the in-flight super-step will have once committed."""
        return self.super_step + 1

    @property
    def interrupts(self) -> list[PendingInterrupt]:
        """Interrupts still waiting for an answer, in the order they were raised."""
        return [i for i in self.asked.values() if i.id not in self.answers]

    def next_steps(self, plan: Plan) -> list[str]:
        """Steps still to run in the current layer (completed siblings excluded)."""
        if self.status == "done" or self.layer >= plan.n_layers:
            return []
        return [
            s for s in plan.layers[self.layer] if s not in self.pending and s not in self.skipped
        ]


# --- the fold -------------------------------------------------------------


def _reset_layer(p: RunProgress) -> None:
    p.pending = {}
    p.asked = {}
    p.answers = {}
    p.attempts = {}
    p.items = {}
    p.iterations = {}
    p.failed = {}
    p.holds = set()
    p.layer_base = None
    p.loop_values = {}


def commit_values(plan: Plan, p: RunProgress) -> dict[str, Any]:
    """The values after merging the in-flight layer's pending writes (may raise ReducerError)."""
    if not p.pending:
        return p.values
    if len(p.pending) == 1:
        ((step, writes),) = p.pending.items()
        return apply_writes(plan.schema, p.values, writes, step=step)
    return fold_superstep(plan.schema, p.values, p.pending, plan.layers[p.layer])


def apply_event(plan: Plan, p: RunProgress, e: Any, seq: int, values: dict[str, Any] | None = None) -> None:
    """Fold event number ``seq`` into ``p`` (in place).

    ``values``: for SuperStepCommitted, the already merged values when the
    caller computed them (the live actor does, to detect reducer errors before
    journaling); rehydration passes None and merges here, with the same code.
    """
    t = type(e)
    if t is ev.StepStarted:
        p.attempts[e.step] = e.attempt
    elif t is ev.StepCompleted:
        p.pending[e.step] = e.writes
    elif t is ev.SuperStepCommitted:
        p.values = commit_values(plan, p) if values is None else values
        p.super_step = e.super_step
        p.layer = e.layer + 1
        p.updated_ms = e.at_ms or p.updated_ms
        _reset_layer(p)
        if plan.dag.branches:
            p.to_route = [s for s in plan.layers[e.layer]
                          if s in plan.dag.branches and s not in p.skipped]
    elif t is ev.Interrupted:
        if e.index < 0:
            p.holds.add(e.step)
        else:
            p.asked[e.interrupt_id] = PendingInterrupt(e.interrupt_id, e.step, e.payload, e.index)
            # answering an interrupt re-runs the step: that is not a failed attempt
            p.attempts.pop(e.interrupt_id.rsplit(":", 2)[0], None)
    elif t is ev.StepFailed:
        p.attempts[e.step] = e.attempt
        if e.final:
            p.failed[e.step] = (e.error_type, e.message)
    elif t is ev.ItemCompleted:
        p.items.setdefault(e.step, {})[e.index] = e.result
    elif t is ev.LoopIterated:
        if p.layer_base is None:
            p.layer_base = p.values  # values dicts are replaced, never mutated
        seen = p.loop_values.get(e.step, p.layer_base)
        p.loop_values[e.step] = apply_writes(plan.schema, seen, e.writes, step=e.step)
        p.values = apply_writes(plan.schema, p.values, e.writes, step=e.step)
        p.iterations[e.step] = e.iteration
    elif t is ev.RunStarted:
        p.values = apply_writes(plan.schema, plan.schema.initial_values(), list(e.input.items()))
        p.exec_from_ms = e.at_ms
        p.status = "running"
        p.meta = dict(e.meta)
        p.updated_ms = e.at_ms
    elif t is ev.TurnStarted:
        _new_turn(plan, p, e)
    elif t is ev.Paused:
        _stop_clock(p, e.at_ms)
        p.status = e.reason if e.reason in ("sleeping", "queued") else "paused"
        p.pause_reason = e.reason
        p.pause_steps = list(e.steps)
        p.updated_ms = e.at_ms
    elif t is ev.Resumed:
        p.exec_from_ms = e.at_ms
        was_failed = p.status == "failed"
        p.status = "running"
        if p.pause_reason not in ("after", "queued") or e.goto is not None:
            # resuming from an "after" pause must not skip the next layer's
            # interrupt_before breakpoint; nor must a queued run's admission
            # (a resume that was queued cleared it already if it had to)
            p.bp_cleared = p.next_super_step
        p.pause_reason = None
        p.pause_steps = []
        if was_failed:
            for step in p.failed:
                p.attempts.pop(step, None)
            p.failed = {}
        p.failure = p.traceback = None
        p.holds = set()
        if e.goto is not None:
            p.layer = plan.layer_of[e.goto]
            _reset_layer(p)
            p.to_route = []
            p.branches = {b: c for b, c in p.branches.items() if plan.layer_of[b] < p.layer}
            p.skipped = skipped_steps(plan, p.branches)
        else:
            p.answers.update(e.answers)
        p.updated_ms = e.at_ms
    elif t is ev.StateUpdated:
        p.values = apply_writes(plan.schema, p.values, e.edits)
        if p.layer_base is not None:
            p.layer_base = apply_writes(plan.schema, p.layer_base, e.edits)
            p.loop_values = {k: apply_writes(plan.schema, v, e.edits) for k, v in p.loop_values.items()}
        p.updated_ms = e.at_ms
    elif t is ev.RunCompleted:
        _stop_clock(p, e.at_ms)
        p.status = "done"
        p.updated_ms = e.at_ms
    elif t is ev.RunCancelled:
        _stop_clock(p, e.at_ms)
        p.status = "cancelled"
        p.cancel_reason = e.reason
        p.updated_ms = e.at_ms
    elif t is ev.RunFailed:
        _stop_clock(p, e.at_ms)
        p.status = "failed"
        p.failure, p.traceback = (e.step, e.error_type, e.message), e.traceback
        p.updated_ms = e.at_ms
    elif t is ev.Forked:
        p.values = dict(e.values)
        p.super_step = e.from_super_step
        p.layer = e.layer
        p.branches = {k: list(v) for k, v in e.branches.items()}
        p.skipped = skipped_steps(plan, p.branches)
        p.to_route = []
        p.status = "running"
        p.meta = dict(e.meta)
        p.updated_ms = e.at_ms
        _reset_layer(p)
    elif t is ev.BranchTaken:
        _apply_branch(plan, p, e)
    elif t is ev.StepCancelled:
        p.pending[e.step] = []
    # HumanApproved is informational: its writes arrive as StepCompleted.
    p.seq = seq


def _new_turn(plan: Plan, p: RunProgress, e: ev.TurnStarted) -> None:
    """A done run takes another turn: the input merged through the reducers,
    the graph from its roots again; the super-step count goes on."""
    p.values = apply_writes(plan.schema, p.values, list(e.input.items()))
    p.turn = e.turn
    p.exec_ms = 0  # run_timeout_s counts each turn's executing time
    p.layer = 0
    _reset_layer(p)
    p.branches = {}
    p.skipped = set()
    p.to_route = []
    p.pause_reason = None
    p.pause_steps = []
    p.failure = None
    p.cancel_reason = None
    p.status = "running"
    p.exec_from_ms = e.at_ms
    p.updated_ms = e.at_ms


def _stop_clock(p: RunProgress, at_ms: int) -> None:
    if p.exec_from_ms is not None:
        p.exec_ms += max(0, at_ms - p.exec_from_ms)
        p.exec_from_ms = None


def executed_ms(p: RunProgress, now_ms: int) -> int:
    """Milliseconds the run has spent executing (paused and sleeping time excluded)."""
    return p.exec_ms + (max(0, now_ms - p.exec_from_ms) if p.exec_from_ms is not None else 0)


def _apply_branch(plan: Plan, p: RunProgress, e: ev.BranchTaken) -> None:
    p.branches[e.step] = list(e.chosen)
    if e.step in p.to_route:
        p.to_route.remove(e.step)
    p.skipped = skipped_steps(plan, p.branches)


def skipped_steps(plan: Plan, decisions: Mapping[str, Sequence[str]]) -> set[str]:
    """Steps that will not run given the branch decisions so far.

    A step is skipped when every edge into it is dead: it comes from a skipped
    step, or from a decided branch that did not pick it. A step with one live
    edge still runs (a join waits only for its non-skipped predecessors).
    """
    if not decisions:
        return set()
    branches = plan.dag.branches
    chosen = {b: {branches[b].targets[label] for label in labels if label in branches[b].targets}
              for b, labels in decisions.items() if b in branches}
    skipped: set[str] = set()
    preds = plan.dag.preds
    for s in plan.order:
        ps = preds[s]
        if not ps:
            continue
        for q in ps:
            if q in skipped:
                continue
            c = chosen.get(q)
            if c is not None and s in branches[q].targets.values() and s not in c:
                continue
            break  # a live edge
        else:
            skipped.add(s)
    return skipped


def replay(plan: Plan, workflow_id: str, run_id: str, events: Iterable[tuple[int, Any]],
           start: RunProgress | None = None) -> RunProgress:
    """Fold ``(seq, event)`` pairs onto ``start`` (or an empty run)."""
    p = start if start is not None else RunProgress(workflow_id, run_id)
    for seq, e in events:
        apply_event(plan, p, e, seq)
    return p

# --- snapshots --------------------------------------------------------------
