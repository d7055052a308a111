"""Carrying out the decisions of the driven step kinds in a run actor.

Map, Loop and Subgraph steps are driven from the run actor's turn (a Loop
with a Dag body by :mod:`atomr._run.loops`); what to
start and when a step is over is decided by the pure functions of
:mod:`atomr.graph.drive`; this mixin journals and sends accordingly. Loop
predicates run here (user code, expected to be quick); Loop bodies and Map
elements run on the executor like any step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atomr import _trace
from atomr import events as ev
from atomr._load import load_progress
from atomr._run.attempts import Attempt
from atomr.actors.step import safe_text
from atomr.errors import StepCrashed
from atomr.graph import drive
from atomr.graph.drive import Driven, Settle
from atomr.graph.progress import interrupt_id
from atomr._run.loops import LoopBodies
from atomr.kinds import DagBody, Loop, Map, Subgraph
from atomr.messages import INTERRUPT, ITEM, LOOP_BODY, OK, Accepted, Rejected, Resume, StepDone
from atomr.types import Command, Done, Failed, Interrupt, Paused
from atomr.workflow import is_async_step

if TYPE_CHECKING:
    from atomr._run.actor import WorkflowActor

__all__ = ["KindDriving", "DRIVEN"]

DRIVEN = (Map, Loop, Subgraph)


class KindDriving(LoopBodies):
    """Mixin of :class:`~atomr._run.actor.WorkflowActor`: Map, Loop, Subgraph, any-join."""

    def _start_driver(self: WorkflowActor, step: str) -> None:
        kind = self.wf.dag.steps[step]
        if isinstance(kind, Map):
            d = drive.map_begin(step, kind.items, self.p)
            if isinstance(d, Settle):
                self._kind_failed(step, *d.error)
                return
            self.driven[step] = d
        else:
            self.driven[step] = Driven()
        self._pump(step)

    def _pump(self: WorkflowActor, step: str) -> None:
        """Move a driven step on: start what may start, or end it."""
        d = self.driven.get(step)
        if d is None:
            return
        kind = self.wf.dag.steps[step]
        if isinstance(kind, Map):
            self._pump_map(step, kind, d)
        elif isinstance(kind, Loop):
            self._pump_loop(step, kind, d)
        else:
            self._pump_subgraph(step, kind, d)

    def _settle(self: WorkflowActor, step: str, s: Settle) -> None:
        if s.how == "done":
            self._kind_done(step, s.writes)
        elif s.how == "failed":
            self._kind_failed(step, *s.error)
        else:
            del self.driven[step]  # it waits for answers to its interrupts

    def _kind_failed(self: WorkflowActor, step: str, etype: str, message: str, tb: str | None = None) -> None:
        """``tb``: a child run's traceback, carried to this run's Failed."""
        self.driven.pop(step, None)
        if tb is not None:
            self.tracebacks[step] = tb
        self.journal.emit(self.plan, self.p, ev.StepFailed(step, self.p.next_super_step, etype, message,
                                                           self.p.attempts.get(step, 1), True))
        self._event("failed", step, 0, (etype, message))

    def _kind_done(self: WorkflowActor, step: str, writes: list[tuple[str, Any]]) -> None:
        self.driven.pop(step, None)
        self.journal.emit(self.plan, self.p, ev.StepCompleted(step, self.p.next_super_step, writes))
        self._event("completed", step, 0, writes)

    # -- Map ---------------------------------------------------------------------

    def _pump_map(self: WorkflowActor, step: str, kind: Map, d: Driven) -> None:
        start = drive.map_take(d, kind.max_concurrency)
        if start:
            is_async = is_async_step(kind.fn)
            self._submit([self._unit_msg(step, f"{step}[{i}]", kind.fn, ITEM, i, d.items[i], is_async)
                          for i in start])
        s = drive.map_settle(d, self.p.items.get(step, {}), kind.into)
        if s is not None:
            self._settle(step, s)

    # -- Loop --------------------------------------------------------------------

    def _pump_loop(self: WorkflowActor, step: str, kind: Loop, d: Driven) -> None:
        if d.inflight:
            return
        if d.failed is not None:
            self._kind_failed(step, *d.failed)
            return
        p = self.p
        if drive.loop_held(step, p):
            del self.driven[step]
            return
        seen = p.loop_view(step)  # its own iterations; nobody else's, and nobody else sees them
        try:
            go = bool(kind.while_(self.wf.view(seen)))
        except BaseException as exc:  # noqa: BLE001 - a predicate bug fails this run only
            etype = type(exc).__name__ if isinstance(exc, Exception) else StepCrashed.__name__
            self._kind_failed(step, etype, f"while_ of loop {step!r} raised {type(exc).__name__}: {safe_text(exc)}")
            return
        nxt = drive.loop_next(step, p, go, kind.max_iterations)
        if isinstance(nxt, Settle):
            self._settle(step, nxt)
            return
        if isinstance(kind.body, DagBody):
            self._pump_loop_dag(step, kind, d, nxt, seen)
            return
        d.inflight.add(nxt)
        self._submit([self._unit_msg(step, f"{step}#{nxt}", kind.body, LOOP_BODY, nxt,
                                     is_async=is_async_step(kind.body), state=seen)])

    # -- a Map element or Loop iteration finished ----------------------------------

    def _record_part(self: WorkflowActor, d: StepDone, a: Attempt) -> None:
        step, unit, ss = d.step, d.part, self.p.next_super_step
        assert unit is not None
        if d.kind == OK:
            self.journal.emit(self.plan, self.p, d.event, d.record)
            self._event("completed", unit, d.attempt, d.writes if d.writes is not None else d.result)
        elif d.kind == INTERRUPT:
            iid = interrupt_id(unit, ss, d.index)
            self.journal.emit(self.plan, self.p, ev.Interrupted(step, ss, iid, d.payload, d.index))
            self._event("interrupted", unit, d.attempt, Interrupt(iid, step, d.payload))
        else:
            if self._step_error(a, unit, d.error_type, d.message, d.retryable, part=True, tb=d.traceback):
                return  # a retry is scheduled: the unit stays in flight
            self._part_failed(a, (d.error_type, d.message))
            return
        dr = self.driven.get(step)
        if dr is not None:
            dr.inflight.discard(a.index)
            self._pump(step)

    def _part_failed(self: WorkflowActor, a: Attempt, error: tuple[str, str]) -> None:
        dr = self.driven.get(a.step)
        if dr is not None:
            if dr.failed is None:
                dr.failed = error
            dr.inflight.discard(a.index)
            self._pump(a.step)

    def _part_again(self: WorkflowActor, a: Attempt) -> None:
        """A Map element's / Loop iteration's retry is due."""
        dr = self.driven.get(a.step)
        if dr is not None:
            dr.inflight.discard(a.index)
            if isinstance(self.wf.dag.steps[a.step], Map):
                dr.todo.appendleft(a.index)
            self._pump(a.step)

    # -- Subgraph ------------------------------------------------------------------

    def _pump_subgraph(self: WorkflowActor, step: str, kind: Subgraph, d: Driven, retry: bool = False) -> None:
        if d.inflight:
            return
        child = self.core.workflows.get(kind.workflow_id)
        if child is None:
            self._kind_failed(step, "WorkflowNotFound", (
                f"Subgraph step {step!r}: workflow {kind.workflow_id!r} is not registered; "
                "register it (or pass the Workflow object to Subgraph)"))
            return
        child_run = drive.child_run_of(self.p, step)
        got = self._child_request(step, step, (f"Subgraph step {step!r}", "this step"), child, child_run,
                                  lambda: {k: self.p.layer_values.get(k) for k in kind.inputs})
        if got is None:
            return
        status, msg = got
        if status == "done":
            cp = load_progress(self.core.store, child.plan, child.id, child_run)
            values = cp.values if cp is not None else {}
            self._kind_done(step, [(k, values.get(k)) for k in kind.outputs])
            return
        if msg is None:  # cancelled: asked again, its refusal fails the step
            msg = Resume(Command(), self.actor_ref)
        d.inflight.add(0)
        d.retried = retry
        if _trace.enabled:
            _trace.subgraph(self, step, (child.id, child_run))
        self.core.supervisor.route(child, child_run, msg)

    def _on_child(self: WorkflowActor, m: Any) -> None:
        """An outcome (or refusal) from a Subgraph's child run."""
        step = self.children.get((m.workflow_id, m.run_id))
        d = self.driven.get(step) if step is not None else None
        if step is None or d is None or type(m) is Accepted:
            return
        kind = self.wf.dag.steps[step]
        if isinstance(kind, Loop):
            self._on_loop_child(step, kind, d, m)
            self._advance()
            return
        d.inflight.clear()
        ss = self.p.next_super_step
        t = type(m)
        if _trace.enabled and (t is not Rejected or d.retried):
            _trace.subgraph_done(self, step, m)
        if t is Done:
            self._kind_done(step, [(k, m.state.get(k)) for k in kind.outputs])
        elif t is Paused:
            self._child_paused(step, step, ss, m)
        elif t is Failed:
            self._kind_failed(step, m.error_type, m.message, m.traceback)
        elif t is Rejected:
            if d.retried:
                self._kind_failed(step, type(m.error).__name__, safe_text(m.error))
            else:  # the child moved on meanwhile: look again
                self._pump_subgraph(step, kind, d, retry=True)
        self._advance()

    # -- any-join --------------------------------------------------------------------

    def _cancel_losers(self: WorkflowActor, winner: str) -> None:
        """``winner`` finished first among the predecessors of an any-join: cancel the rest."""
        ss = self.p.next_super_step
        for other in drive.any_join_losers(self.plan, self.p, winner):
            for unit in self.inflight.units_of(other):
                a = self.inflight.pop(unit)
                assert a is not None
                if a.timer is not None:
                    self.core.scheduler.cancel(a.timer)
                if a.token is not None:
                    self.core.executor.abandon(a.token)
            self.driven.pop(other, None)
            self.journal.emit(self.plan, self.p, ev.StepCancelled(other, ss, f"{winner!r} finished first (any-join)"))
            self._event("cancelled", other, 0)
