"""Loops whose body is a Dag: one child run per iteration.

Mixin of :class:`~atomr._run.actor.WorkflowActor`; runs in its turn. Iteration
``n`` of Loop ``step`` in super-step ``ss`` is the child run
``"<workflow>/<run>/<step>#<n>@<ss>"`` of the body's workflow
``"<workflow>:<step>"`` (:meth:`atomr.kinds.DagBody.workflow_for`), started from
the state the loop sees. The child journals, retries, times out and streams
each body step like any run's step, so a crash mid-iteration re-runs only the
body steps that were in flight: the parent, recovering, finds the child
"running" and sends it ``Recover``. When the child is done, the parent reads
its journal, folds it into the list of writes it merged
(:func:`atomr.graph.drive.run_writes`, pure) and journals them as the
iteration's ``LoopIterated``, exactly as a function body's iteration is
journaled: stores written before Dag bodies ran as child runs replay as they
are. A body step's interrupt is the parent's interrupt
``"<step>#<n>/<child interrupt id>"``; its answer is passed down on resume.
A body step's ``ctx.emit`` reaches the parent's streams as step
``"<step>#<n>/<body step>"`` (``core.relays``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from atomr import _trace
from atomr import events as ev
from atomr._load import load_progress
from atomr._run.journal import now_ms
from atomr.actors.step import safe_text
from atomr.graph import drive
from atomr.graph.drive import Driven
from atomr.errors import RunNotPaused
from atomr.kinds import DagBody, Loop
from atomr.messages import Recover, Rejected, Resume, Run
from atomr.types import Command, Done, Failed, Paused

if TYPE_CHECKING:
    from atomr._run.actor import WorkflowActor
    from atomr.workflow import Workflow

__all__ = ["LoopBodies"]


class LoopBodies:
    """Mixin of :class:`~atomr._run.actor.WorkflowActor`: Loops with a Dag body."""

    def _loop_child(self: WorkflowActor, step: str, kind: Loop, n: int) -> tuple[Workflow, str]:
        assert isinstance(kind.body, DagBody)
        child = kind.body.workflow_for(self.wf, step)
        return child, drive.loop_child_run(self.key[0], self.key[1], step, n, self.p.next_super_step)

    def _child_paused(self: WorkflowActor, step: str, unit: str, ss: int, m: Paused) -> None:
        """A child run of ``step`` (``unit``: the parent's name for it) paused: its
        interrupts become this run's (ids prefixed with ``unit``), or, paused
        otherwise, one hold interrupt of ``step``; this run pauses on them."""
        del self.driven[step]
        if m.interrupts:
            for idx, i in enumerate(m.interrupts):
                iid = f"{unit}/{i.id}"
                if iid not in self.p.asked:
                    self.journal.emit(self.plan, self.p, ev.Interrupted(step, ss, iid, i.payload, idx))
        else:
            self.journal.emit(self.plan, self.p, ev.Interrupted(
                step, ss, f"{step}:{ss}:hold", {"child_paused": m.reason, "steps": m.steps}, -1))

    def _child_request(self: WorkflowActor, step: str, unit: str, names: tuple[str, str], child: Any,
                       child_run: str, data: Callable[[], dict[str, Any]]) -> tuple[str, Any] | None:
        """The status of child run ``child_run`` of ``step`` (a Subgraph's, a Loop
        iteration's; ``unit``: the parent's name for it) and the request that carries
        it on: a Run with ``data()`` when new, Recover when running, Resume with the
        answers meant for it when paused or sleeping, Resume when failed; None for
        a done or cancelled one. None whole when another run holds the id (the step
        failed). ``names``: how the step and its owner are named in that error."""
        self.children[(child.id, child_run)] = step
        summary = self.core.store.summary(child.id, child_run)
        parent = [self.key[0], self.key[1], unit]
        if summary is not None and list(summary.meta.get("parent") or ()) != parent:
            self._kind_failed(step, "RunExists", (
                f"{names[0]}: run {child.id}/{child_run} exists and was not started by {names[1]}; "
                "delete or rename that run, then resume this one"))
            return None
        status = summary.status if summary is not None else "new"
        me = self.actor_ref
        if status == "new":
            meta: dict[str, Any] = {"parent": parent}
            if child.version is not None:
                meta["workflow_version"] = child.version
            return status, Run(data(), me, None, meta)
        if status in ("running", "queued"):  # queued: a store of before children skipped the line
            return status, Recover(me)
        if status in ("paused", "sleeping"):  # a sleep's wake reaches the child through its parent too
            cp = load_progress(self.core.store, child.plan, child.id, child_run)
            pending = [i.id for i in cp.interrupts] if cp is not None else []
            answers = drive.child_answers(unit, self.p.answers, pending)
            return status, Resume(Command(resume=answers or None), me)
        if status == "failed":  # the parent was resumed: retry the child's failed step
            return status, Resume(Command(), me)
        return status, None

    def _pump_loop_dag(self: WorkflowActor, step: str, kind: Loop, d: Driven, n: int,
                       seen: Mapping[str, Any], retry: bool = False) -> None:
        """Start (or carry on) iteration ``n``: its child run."""
        child, child_run = self._loop_child(step, kind, n)
        unit = f"{step}#{n}"
        got = self._child_request(step, unit, (f"loop {step!r}", "this loop"), child, child_run,
                                  lambda: drive.body_input(self.wf.schema, seen))
        if got is None:
            return
        status, msg = got
        if status == "done":
            if self._loop_iterated(step, n, child, child_run):
                self._pump(step)
            return
        if msg is None:
            self._kind_failed(step, "LoopError", (
                f"loop {step!r}: iteration {n} (run {child.id}/{child_run}) is {status}; "
                "fork this run from an earlier checkpoint to run the loop again"))
            return
        d.inflight.add(n)
        d.retried = retry
        emit = self._emit_custom

        def relay(body_step: str, payload: Any) -> None:  # a body step's thread
            emit(f"{unit}/{body_step}", payload)

        self.core.relays[(child.id, child_run)] = relay
        if _trace.enabled:  # the iteration's span, as a Subgraph step's: the child's execution links to it
            _trace.subgraph(self, unit, (child.id, child_run))
        self.core.supervisor.route(child, child_run, msg)

    def _loop_iterated(self: WorkflowActor, step: str, n: int, child: Workflow, child_run: str) -> bool:
        """Iteration ``n``'s child run is done: journal its writes as the
        iteration. False when the loop failed instead."""
        store = self.core.store
        try:
            summary = store.summary(child.id, child_run)
            if summary is None or summary.status != "done" or summary.first_seq > 1:
                raise LookupError(f"run {child.id}/{child_run} is not stored as done with its whole journal")
            writes = drive.run_writes(child.plan, store.journal(child.id, child_run))
        except Exception as exc:  # noqa: BLE001 - a bad child journal fails this loop only
            self._kind_failed(step, type(exc).__name__, (
                f"loop {step!r}: could not read the writes of iteration {n}: {safe_text(exc)}; "
                "fork this run from an earlier checkpoint to run the iteration again"))
            return False
        self.journal.emit(self.plan, self.p, ev.LoopIterated(step, self.p.next_super_step, n + 1, writes, now_ms()))
        self._event("completed", f"{step}#{n}", 1, writes)
        return True

    def _on_loop_child(self: WorkflowActor, step: str, kind: Loop, d: Driven, m: Any) -> None:
        """An outcome (or refusal) of the child run of the loop's current iteration."""
        n = self.p.iterations.get(step, 0)
        child, child_run = self._loop_child(step, kind, n)
        if (m.workflow_id, m.run_id) != (child.id, child_run):
            return  # not the current iteration's (a late answer)
        d.inflight.clear()
        t = type(m)
        if t is not Rejected:
            self.core.relays.pop((child.id, child_run), None)
        unit = f"{step}#{n}"
        if _trace.enabled and (t is not Rejected or d.retried):
            _trace.subgraph_done(self, unit, m)
        ss = self.p.next_super_step
        if t is Done:
            summary = self.core.store.summary(child.id, child_run)
            if summary is not None and summary.status != "done" and not d.retried:
                # told before its last commit was durable: hear the outcome again once it is
                d.inflight.add(n)
                d.retried = True
                self.core.supervisor.route(child, child_run, Recover(self.actor_ref))
                return
            if self._loop_iterated(step, n, child, child_run):
                self._pump(step)
        elif t is Paused:
            self._child_paused(step, unit, ss, m)
        elif t is Failed:
            self._kind_failed(step, m.error_type, m.message, m.traceback)
        elif t is Rejected:
            if isinstance(m.error, RunNotPaused) and not d.retried:
                # it runs already (its own sleeper woke it, or a worker took it up): hear its outcome
                d.inflight.add(n)
                d.retried = True
                self.core.supervisor.route(child, child_run, Recover(self.actor_ref))
            elif d.retried:
                self._kind_failed(step, type(m.error).__name__, safe_text(m.error))
            else:  # the child moved on meanwhile: look again
                self._pump_loop_dag(step, kind, d, n, self.p.loop_view(step), retry=True)
