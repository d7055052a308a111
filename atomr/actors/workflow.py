"""WorkflowActor: one per executing run; drives its super-steps.

Threads: one pykka thread per *executing* run. A run that pauses, finishes or
fails reports its outcome, releases itself from the supervisor and stops, so a
paused run holds no actor and no thread; the next Resume rehydrates it.

Every change of the run goes through :meth:`WorkflowActor._emit`: encode the
event, fold it into the in-memory progress with the pure
:func:`~atomr.graph.superstep.apply_event`, queue it for the checkpointer.
The actor never blocks on a step, a timer or a commit: it tells and waits for
messages (StepDone, RetryStep, StepTimedOut, Committed).

Durability (``core.durability``):

* ``sync``  — a super-step's events are durable before the next super-step's
  steps are sent and before any outcome is reported (one commit per super-step,
  shared with every other run committing at the same moment); a completed
  step's writes are committed within ``PENDING_FLUSH_S`` (20 ms) even while
  its siblings still run;
* ``async`` — events are sent to the checkpointer as they happen, the run does
  not wait; a kill -9 can lose the last super-steps (they are re-run);
* ``exit``  — events stay in the actor until the run pauses, ends or fails; a
  kill -9 loses the whole execution since the last pause (it is re-run).

In every mode an outcome is reported only once it is durable.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pykka

from atomr import events as ev
from atomr._load import load_progress
from atomr.errors import (
    AtomrError,
    BranchError,
    LoopLimitError,
    ReducerError,
    RunExists,
    RunNotFound,
    RunNotPaused,
    StepCrashed,
)
from atomr.kinds import Human, Loop, Map, Subgraph
from atomr.graph import superstep as algo
from atomr.actors.step import execute_sync
from atomr.graph.state import apply_writes, check_channels
from atomr.messages import (
    INTERRUPT,
    ITEM,
    LOOP_BODY,
    OK,
    STEP,
    Accepted,
    Append,
    Committed,
    Execute,
    Recover,
    Rejected,
    Resume,
    RetryStep,
    Run,
    StepDone,
    StepTimedOut,
)
from atomr.store import format as fmt
from atomr.store.base import AppendBatch
from atomr.types import Command, Done, Failed, Interrupt, Paused, StepEvent
from atomr.workflow import is_async_step

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["WorkflowActor"]

log = logging.getLogger("atomr.run")

#: step and commit tokens, shared by every run actor of the process
_TOKENS = itertools.count(1)


def _now() -> int:
    return int(time.time() * 1000)


_EMPTY: frozenset[str] = frozenset()
#: with durability="sync", the longest a completed step's writes wait in the run
#: actor while its siblings still run
PENDING_FLUSH_S = 0.02


class _FlushTick:
    __slots__ = ()


_FLUSH_TICK = _FlushTick()
_DRIVEN = (Map, Loop, Subgraph)


class _Driver:
    """In-memory progress of a driven step (Map, Loop, Subgraph) of the current layer."""

    __slots__ = ("items", "inflight", "failed", "retried")

    def __init__(self, items: list[Any] | None = None) -> None:
        self.items = items or []
        self.inflight: set[int] = set()
        self.failed: tuple[str, str] | None = None
        self.retried = False


class WorkflowActor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, core: Core, wf: Workflow, run_id: str,
                 progress: algo.RunProgress | None = None, load: bool = True) -> None:
        """``load``: rehydrate the run from the store in the actor's own thread
        (on_start), so many runs rehydrate at once instead of one by one in
        the caller's thread."""
        super().__init__()
        self._load = load and progress is None
        self._load_error: BaseException | None = None
        self.core = core
        self.wf = wf
        self.plan = wf.plan
        self.key = (wf.id, run_id)
        self.p = progress if progress is not None else algo.RunProgress(wf.id, run_id)
        #: unit (step, "step[i]" or "step#n") -> [token|None, attempt, timer|None, step, index]
        self._running: dict[str, list[Any]] = {}
        self._drivers: dict[str, _Driver] = {}
        self._children: dict[tuple[str, str], str] = {}
        self._driving = False
        self._tick = False
        self._outbox: list[bytes] = []
        self._first_seq = self.p.seq + 1
        self._reply_to: list[Any] = []
        self._listeners: list[Any] = []
        self._tokens = _TOKENS  # unique across runs: the executor keys steps by token
        self._ack_token: int | None = None
        self._then: Any = None
        self._boundary = False  # a super-step committed and not yet flushed (sync)
        self._snap_due = False
        self._meta_new: dict[str, Any] | None = None
        self._released = False
        self._sync = core.durability == "sync"
        self._exit = core.durability == "exit"
        self._direct = core.checkpointer is None

    # -- message loop ------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if self._load_error is not None:
            if type(message) in (Run, Resume, Recover):
                self._reject(message, self._load_error)
            return None
        try:
            handler = _HANDLERS.get(type(message))
            if handler is not None:
                handler(self, message)
        except BaseException as exc:  # noqa: BLE001 - never let pykka stop all actors
            self._crash(exc)
        return None

    def on_start(self) -> None:
        if not self._load:
            return
        try:
            p = load_progress(self.core.store, self.plan, *self.key)
        except BaseException as exc:  # noqa: BLE001 - every request gets it as a refusal
            self._load_error = exc
            return
        if p is not None:
            self.p = p
            self._first_seq = p.seq + 1

    def on_stop(self) -> None:
        # messages that slipped in after we released ourselves go to a fresh actor
        while not self.actor_inbox.empty():
            env = self.actor_inbox.get_nowait()  # type: ignore[attr-defined]  # a queue.Queue
            if type(env.message) in (Run, Resume, Recover):
                self.core.supervisor.route(self.wf, self.key[1], env.message)

    # -- requests ------------------------------------------------------------

    def _on_run(self, msg: Run) -> None:
        if self._released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p = self.p
        if p.status != "new":
            self._reject(msg, RunExists(*self.key))
            return
        data = dict(msg.input or {})
        try:
            check_channels(self.plan.schema, data.items())
            apply_writes(self.plan.schema, self.plan.schema.initial_values(), list(data.items()))
            meta = dict(msg.meta or {})
            record = fmt.encode_event(ev.RunStarted(data, meta, _now()))
            # fold what the journal holds, not the caller's objects (which the
            # caller may change after start() returns)
            started = fmt.decode_event(record)
        except AtomrError as exc:
            self._reject(msg, exc)
            return
        self._subscribe(msg)
        self._meta_new = meta
        self._emit(started, record)
        self._accept_and_go()

    def _on_resume(self, msg: Resume) -> None:
        if self._released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p = self.p
        if p.status == "new":
            self._reject(msg, RunNotFound(*self.key))
            return
        if self._running or self._drivers or p.status == "running":
            self._reject(msg, RunNotPaused(*self.key, "running"))
            return
        try:
            records = [fmt.encode_event(e) for e in algo.command_events(self.plan, p, msg.command, _now())]
            events = [fmt.decode_event(r) for r in records]  # copies: not the caller's objects
        except AtomrError as exc:
            self._reject(msg, exc)
            return
        self._subscribe(msg)
        for e, r in zip(events, records):
            self._emit(e, r)
        self._accept_and_go()

    def _on_recover(self, msg: Recover) -> None:
        if self._released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p = self.p
        if p.status == "new":
            self._reject(msg, RunNotFound(*self.key))
            return
        if p.status != "running":
            # it settled meanwhile (e.g. another recover() got there first):
            # the caller wants its outcome, which the journal holds
            for target in {id(t): t for t in (msg.reply_to, msg.listener) if t is not None}.values():
                _tell(target, Accepted(*self.key))
                _tell(target, self._settled_outcome())
            if not self._running and not self._drivers and self._ack_token is None:
                self._release_and_stop()
            return
        self._subscribe(msg)
        if self._driving:
            self._notify_accepted()
            return
        self._mark_driving()
        self._notify_accepted()
        self._advance()

    def _settled_outcome(self) -> Any:
        """The outcome of a run that is paused, done or failed, from its fold."""
        p = self.p
        wid, rid = self.key
        if p.status == "done":
            return Done(wid, rid, p.values)
        if p.status == "paused":
            return Paused(wid, rid, p.super_step, p.pause_reason or "",
                          [Interrupt(i.id, i.step_id, i.payload) for i in p.interrupts], list(p.pause_steps))
        step, etype, message = p.failure if p.failure else (None, "RunError", "")
        return Failed(wid, rid, step, p.super_step, etype, message)

    def _subscribe(self, msg: Any) -> None:
        if msg.reply_to is not None:
            self._reply_to.append(msg.reply_to)
        if msg.listener is not None:
            self._listeners.append(msg.listener)

    def _reject(self, msg: Any, exc: BaseException) -> None:
        r = Rejected(self.key[0], self.key[1], exc)
        for target in {id(t): t for t in (msg.reply_to, msg.listener) if t is not None}.values():
            _tell(target, r)
        # an actor that is not driving its run (paused, ended, or rehydrated from
        # a "running" journal that nobody recovered yet) must not stay live: a
        # live actor is skipped by rt.recover()
        if not self._running and not self._drivers and self._ack_token is None \
                and (self.p.status != "running" or not self._driving):
            self._release_and_stop()

    def _accept_and_go(self) -> None:
        if self._sync:
            if not self._flush(wait=True):
                self._then = self._accepted_go
                return
        elif not self._exit:
            self._flush(wait=False)
        self._accepted_go()

    def _accepted_go(self) -> None:
        self._mark_driving()  # before Accepted: a racing resume must see it
        self._notify_accepted()
        self._advance()

    def _mark_driving(self) -> None:
        if not self._driving:
            self._driving = True
            self.core.supervisor.mark_driving(self.key)

    def _notify_accepted(self) -> None:
        a = Accepted(*self.key)
        for target in self._listeners:
            _tell(target, a)

    # -- the loop ------------------------------------------------------------

    def _busy(self) -> set[str] | frozenset[str]:
        """DAG steps with work in flight (units executing, retries waiting, drivers)."""
        if not self._running and not self._drivers:
            return _EMPTY
        busy = {r[3] for r in self._running.values()}
        busy.update(self._drivers)
        return busy

    def _advance(self) -> None:
        plan = self.plan
        p = self.p
        self._mark_driving()
        while True:
            if p.status != "running" or self._ack_token is not None or self._released \
                    or self.core.supervisor.closed:
                return
            act = algo.next_action(plan, p, self._busy())
            t = type(act)
            if t is algo.Dispatch:
                done = self._dispatch(act.steps)
                if done is None:
                    if self._ack_token is None and any(s in p.pending or s in p.failed for s in act.steps):
                        continue  # a step kind settled at once (empty Map, Loop with no iteration)
                    return
                self._record(done)  # ran inline: go on without a hop
                continue
            if t is algo.Wait:
                self._wait()
                return
            if t is algo.CommitLayer:
                try:
                    values = algo.commit_values(plan, p)
                except ReducerError as exc:
                    self._fail(exc.step, type(exc).__name__, str(exc))
                    return
                layer = p.layer
                self._emit(ev.SuperStepCommitted(p.super_step + 1, layer, _now()), values=values)
                if self._listeners:
                    self._event("committed", None, 0)
                after = algo.after_breakpoint(plan, layer, p.skipped)
                if after:
                    self._pause("after", after)
                    return
                snap = p.super_step % self.core.store.snapshot_every == 0
                if self._sync:
                    self._boundary = True
                    self._snap_due = self._snap_due or snap
                elif not self._exit:
                    self._flush(wait=False, snapshot=snap)
                continue
            if t is algo.Route:
                if not self._route(act.step):
                    return
                continue
            if t is algo.Complete:
                self._emit(ev.RunCompleted(p.super_step, _now()))
                self._finish_durably(Done(self.key[0], self.key[1], p.values))
                return
            if t is algo.PauseBefore:
                self._pause("before", act.steps)
                return
            if t is algo.PauseInterrupt:
                self._pause("interrupt", act.steps)
                return
            if t is algo.FailRun:
                self._fail(act.step, act.error_type, act.message)
                return
            raise AssertionError(f"unknown action {act!r}")

    def _route(self, step: str) -> bool:
        """Ask a branch's router (in this thread) and journal its decision."""
        spec = self.plan.dag.branches[step]
        try:
            picked = spec.router(MappingProxyType(self.p.values))
            # one label, or an iterable of labels (read once: it may be a generator)
            labels = [picked] if isinstance(picked, str) or not isinstance(picked, Iterable) else list(picked)
            if not labels:
                raise BranchError(
                    f"router of step {step!r} picked no label; return one of "
                    f"{', '.join(repr(k) for k in spec.targets)} (or a list of them)")
            spec.resolve(labels)
        except BranchError as exc:
            self._fail(step, "BranchError", str(exc))
            return False
        except BaseException as exc:  # noqa: BLE001 - a router bug fails this run only
            etype = type(exc).__name__ if isinstance(exc, Exception) else StepCrashed.__name__
            self._fail(step, etype, f"router of branch step {step!r} raised {type(exc).__name__}: {exc}")
            return False
        self._emit(ev.BranchTaken(step, labels))
        return True

    def _unit_msg(self, step: str, unit: str, fn: Any, mode: int = STEP, index: int = 0,
                  item: Any = None, is_async: bool | None = None) -> Execute:
        """Journal StepStarted for ``unit`` and build its Execute message."""
        p = self.p
        wid, rid = self.key
        ss = p.super_step + 1
        attempt = p.attempts.get(unit, 0) + 1
        key = algo.idempotency_key(wid, rid, ss, unit)
        self._emit(ev.StepStarted(unit, ss, attempt, key))
        token = next(self._tokens)
        self._running[unit] = [token, attempt, None, step, index]
        if is_async is None:
            is_async = is_async_step(fn)
        return Execute(
            token, step, fn, MappingProxyType(p.values), wid, rid, ss, attempt, key,
            algo.resume_values(p, unit), self.wf.channels, self.actor_ref, self.wf.retry.retry_on,
            is_async, None if unit == step else unit, mode, index, item,
        )

    def _dispatch(self, steps: list[str]) -> StepDone | None:
        """Journal StepStarted and send the steps out; returns the StepDone of a
        step run inline (a layer of one sync step runs in this thread, no hop)."""
        wf = self.wf
        fns = wf.dag.steps
        msgs = []
        kinds = []
        for s in steps:
            fn = fns[s]
            if isinstance(fn, _DRIVEN):
                attempt = self.p.attempts.get(s, 0) + 1
                self._emit(ev.StepStarted(s, self.p.super_step + 1, attempt,
                                          algo.idempotency_key(*self.key, self.p.super_step + 1, s)))
                kinds.append(s)
            else:
                msgs.append(self._unit_msg(s, s, fn, is_async=wf.is_async[s]))
        if self._boundary:
            self._boundary = False
            snap, self._snap_due = self._snap_due, False
            if not self._flush(wait=True, snapshot=snap):
                self._then = lambda: self._launch_then_advance(msgs, kinds)
                return None
        return self._launch(msgs, kinds)

    def _launch_then_advance(self, msgs: list[Execute], kinds: list[str]) -> None:
        done = self._launch(msgs, kinds)
        if done is not None:
            self._record(done)
        self._advance()

    def _launch(self, msgs: list[Execute], kinds: list[str]) -> StepDone | None:
        for s in kinds:
            self._start_driver(s)
        # inline only when nothing else of the run is running: a busy run actor
        # could not flush the writes of siblings that finish meanwhile
        if len(msgs) == 1 and not kinds and self.core.inline and len(self._running) == 1 \
                and not self._drivers:
            m = msgs[0]
            if not m.is_async and self.wf.step_timeout_s is None:
                if self._outbox and self.p.pending and not self._exit:
                    # finished siblings (e.g. around a retry) must not wait for
                    # this step to return before they reach the journal
                    self._flush(wait=False)
                if self._listeners:
                    self._event("started", m.step, m.attempt)
                return execute_sync(m)
        self._submit(msgs)
        return None

    def _submit(self, msgs: list[Execute]) -> None:
        timeout = self.wf.step_timeout_s
        submit = self.core.executor.submit
        listeners = self._listeners
        for m in msgs:
            unit = m.part or m.step
            if timeout is not None:
                self._running[unit][2] = self.core.scheduler.tell_later(
                    timeout, self.actor_ref, StepTimedOut(unit, m.token, timeout))
            if listeners:
                self._event("started", unit, m.attempt)
            submit(m)

    # -- step kinds: Map, Loop, Subgraph are driven from here ---------------------

    def _start_driver(self, step: str) -> None:
        kind = self.wf.dag.steps[step]
        if isinstance(kind, Map):
            items = self.p.values.get(kind.items)
            if not isinstance(items, (list, tuple)):
                self._kind_failed(step, "MapError", (
                    f"Map step {step!r} needs a list in channel {kind.items!r}, got "
                    f"{type(items).__name__}; write a list there before this step runs"))
                return
            self._drivers[step] = _Driver(list(items))
        elif isinstance(kind, Loop):
            self._drivers[step] = _Driver()
        else:
            self._drivers[step] = _Driver()
        self._pump(step)

    def _kind_failed(self, step: str, etype: str, message: str) -> None:
        self._drivers.pop(step, None)
        self._emit(ev.StepFailed(step, self.p.super_step + 1, etype, message,
                                 self.p.attempts.get(step, 1), True))
        if self._listeners:
            self._event("failed", step, 0, (etype, message))

    def _kind_done(self, step: str, writes: list[tuple[str, Any]]) -> None:
        self._drivers.pop(step, None)
        self._emit(ev.StepCompleted(step, self.p.super_step + 1, writes))
        if self._listeners:
            self._event("completed", step, 0, writes)

    def _blocked_units(self, step: str) -> set[str]:
        p = self.p
        return {i.id.rsplit(":", 2)[0] for i in p.asked.values()
                if i.step_id == step and i.id not in p.answers}

    def _pump(self, step: str) -> None:
        """Move a driven step on: start what may start, or finish it."""
        drv = self._drivers.get(step)
        if drv is None:
            return
        kind = self.wf.dag.steps[step]
        if isinstance(kind, Map):
            self._pump_map(step, kind, drv)
        elif isinstance(kind, Loop):
            self._pump_loop(step, kind, drv)
        else:
            self._pump_subgraph(step, kind, drv)

    def _pump_map(self, step: str, kind: Map, drv: _Driver) -> None:
        p = self.p
        done = p.items.get(step, {})
        n = len(drv.items)
        if drv.failed is None:
            blocked = self._blocked_units(step) if p.asked else _EMPTY
            msgs = []
            is_async = is_async_step(kind.fn)
            for i in range(n):
                if len(drv.inflight) >= kind.max_concurrency:
                    break
                unit = f"{step}[{i}]"
                if i in done or i in drv.inflight or unit in blocked:
                    continue
                drv.inflight.add(i)
                msgs.append(self._unit_msg(step, unit, kind.fn, ITEM, i, drv.items[i], is_async))
            self._submit(msgs)
        if drv.inflight:
            return
        if drv.failed is not None:
            self._kind_failed(step, *drv.failed)
        elif len(done) == n:
            self._kind_done(step, [(kind.into, [done[i] for i in range(n)])])
        else:
            del self._drivers[step]  # the rest wait for answers to their interrupts

    def _pump_loop(self, step: str, kind: Loop, drv: _Driver) -> None:
        if drv.inflight:
            return
        if drv.failed is not None:
            self._kind_failed(step, *drv.failed)
            return
        p = self.p
        it = p.iterations.get(step, 0)
        unit = f"{step}#{it}"
        if p.asked and unit in self._blocked_units(step):
            del self._drivers[step]
            return
        try:
            go = bool(kind.while_(MappingProxyType(p.values)))
        except BaseException as exc:  # noqa: BLE001 - a predicate bug fails this run only
            etype = type(exc).__name__ if isinstance(exc, Exception) else StepCrashed.__name__
            self._kind_failed(step, etype, f"while_ of loop {step!r} raised {type(exc).__name__}: {exc}")
            return
        if not go:
            self._kind_done(step, [])
            return
        if it >= kind.max_iterations:
            self._kind_failed(step, LoopLimitError.__name__, (
                f"loop {step!r} still wants to run after max_iterations={kind.max_iterations} "
                "iterations; raise max_iterations or make while_ become false"))
            return
        drv.inflight.add(it)
        self._submit([self._unit_msg(step, unit, kind.body, LOOP_BODY, it)])

    def _pump_subgraph(self, step: str, kind: Subgraph, drv: _Driver, retry: bool = False) -> None:
        if drv.inflight:
            return
        child = self.core.workflows.get(kind.workflow_id)
        if child is None:
            self._kind_failed(step, "WorkflowNotFound", (
                f"Subgraph step {step!r}: workflow {kind.workflow_id!r} is not registered; "
                "register it (or pass the Workflow object to Subgraph)"))
            return
        child_run = f"{self.key[0]}/{self.key[1]}/{step}"
        self._children[(child.id, child_run)] = step
        store = self.core.store
        summary = store.summary(child.id, child_run)
        status = summary.status if summary is not None else "new"
        me = self.actor_ref
        if status == "done":
            cp = load_progress(store, child.plan, child.id, child_run)
            values = cp.values if cp is not None else {}
            self._kind_done(step, [(k, values.get(k)) for k in kind.outputs])
            return
        if status == "new":
            data = {k: self.p.values.get(k) for k in kind.inputs}
            msg: Any = Run(data, me, None, {"parent": [self.key[0], self.key[1], step]})
        elif status == "running":
            msg = Recover(me)
        elif status == "paused":
            cp = load_progress(store, child.plan, child.id, child_run)
            pending = {i.id for i in cp.interrupts} if cp is not None else set()
            prefix = step + "/"
            answers = {iid[len(prefix):]: v for iid, v in self.p.answers.items()
                       if iid.startswith(prefix) and iid[len(prefix):] in pending}
            msg = Resume(Command(resume=answers or None), me)
        else:  # failed: the parent was resumed, so retry the child
            msg = Resume(Command(), me)
        drv.inflight.add(0)
        drv.retried = retry
        self.core.supervisor.route(child, child_run, msg)

    def _on_child(self, m: Any) -> None:
        """An outcome (or refusal) from a Subgraph's child run."""
        step = self._children.get((m.workflow_id, m.run_id))
        drv = self._drivers.get(step) if step is not None else None
        if step is None or drv is None or type(m) is Accepted:
            return
        kind = self.wf.dag.steps[step]
        drv.inflight.clear()
        ss = self.p.super_step + 1
        t = type(m)
        if t is Done:
            self._kind_done(step, [(k, m.state.get(k)) for k in kind.outputs])
        elif t is Paused:
            del self._drivers[step]
            if m.interrupts:
                for idx, i in enumerate(m.interrupts):
                    iid = f"{step}/{i.id}"
                    if iid not in self.p.asked:
                        self._emit(ev.Interrupted(step, ss, iid, i.payload, idx))
            else:
                self._emit(ev.Interrupted(step, ss, f"{step}:{ss}:hold",
                                          {"child_paused": m.reason, "steps": m.steps}, -1))
        elif t is Failed:
            self._kind_failed(step, m.error_type, m.message)
        elif t is Rejected:
            if drv.retried:
                self._kind_failed(step, type(m.error).__name__, str(m.error))
            else:  # the child moved on meanwhile: look again
                self._pump_subgraph(step, kind, drv, retry=True)
        self._advance()

    def _cancel_for_any_join(self, step: str) -> None:
        """``step`` finished first among the predecessors of an any-join: cancel the rest."""
        p = self.p
        layer = self.plan.layers[p.layer]
        ss = p.super_step + 1
        for other in self.plan.cancel_on_done[step]:
            if other not in layer or other in p.pending or other in p.skipped:
                continue
            for unit, r in list(self._running.items()):
                if r[3] == other:
                    del self._running[unit]
                    if r[2] is not None:
                        self.core.scheduler.cancel(r[2])
                    if r[0] is not None:
                        self.core.executor.abandon(r[0])
            self._drivers.pop(other, None)
            self._emit(ev.StepCancelled(other, ss, f"{step!r} finished first (any-join)"))
            if self._listeners:
                self._event("cancelled", other, 0)

    # -- step results ----------------------------------------------------------

    def _on_step_done(self, d: StepDone) -> None:
        if self._record(d):
            if d.kind == OK and d.part is None and self._running and not self._drivers \
                    and self.p.status == "running" and self._ack_token is None:
                # a sibling finished while others still run: nothing new can start
                # in this layer, so skip working that out again
                self._wait()
                return
            self._advance()

    def _wait(self) -> None:
        """Steps are running: make the finished ones' writes durable meanwhile."""
        if self._outbox and not self._exit:
            if not self._sync:
                self._flush(wait=False)
            elif not self._tick:
                # completed siblings' writes reach the journal within
                # PENDING_FLUSH_S even while a slow sibling runs; a fast
                # layer commits them with its boundary instead
                self._tick = True
                self.core.scheduler.tell_later(PENDING_FLUSH_S, self.actor_ref, _FLUSH_TICK)

    def _record(self, d: StepDone) -> bool:
        """Journal a step's result; False when it is stale."""
        unit = d.part or d.step
        r = self._running.get(unit)
        if r is None or r[0] != d.token:
            return False  # a late answer from an attempt that timed out or was cancelled
        del self._running[unit]
        if r[2] is not None:
            self.core.scheduler.cancel(r[2])
        step = d.step
        p = self.p
        ss = p.super_step + 1
        kind = d.kind
        if d.part is not None:
            self._record_part(d, r, ss)
            return True
        if kind == OK:
            fn = self.wf.dag.steps[step]
            if isinstance(fn, Human):
                answer = algo.resume_values(p, step)
                if answer and isinstance(answer[0], Mapping) and answer[0].get("approved"):
                    self._emit(ev.HumanApproved(step, answer[0].get("by")))
            self._emit(ev.StepCompleted(step, ss, d.writes), d.record)  # type: ignore[arg-type]
            if self._listeners:
                self._event("completed", step, d.attempt, d.writes)
            if step in self.plan.cancel_on_done:
                self._cancel_for_any_join(step)
        elif kind == INTERRUPT:
            iid = algo.interrupt_id(step, ss, d.index)
            self._emit(ev.Interrupted(step, ss, iid, d.payload, d.index))
            if self._listeners:
                self._event("interrupted", step, d.attempt, Interrupt(iid, step, d.payload))
        else:
            self._step_error(step, step, d.attempt, d.error_type, d.message, d.retryable, r[4])
        return True

    def _record_part(self, d: StepDone, r: list[Any], ss: int) -> None:
        step, unit = d.step, d.part
        assert unit is not None
        drv = self._drivers.get(step)
        if d.kind == OK:
            if isinstance(self.wf.dag.steps[step], Map):
                self._emit(ev.ItemCompleted(step, ss, r[4], d.result), d.record)
            else:  # a Loop iteration
                self._emit(ev.LoopIterated(step, ss, r[4] + 1, d.writes), d.record)  # type: ignore[arg-type]
            if self._listeners:
                self._event("completed", unit, d.attempt, d.writes if d.writes is not None else d.result)
        elif d.kind == INTERRUPT:
            iid = algo.interrupt_id(unit, ss, d.index)
            self._emit(ev.Interrupted(step, ss, iid, d.payload, d.index))
            if self._listeners:
                self._event("interrupted", unit, d.attempt, Interrupt(iid, step, d.payload))
        else:
            if self._step_error(step, unit, d.attempt, d.error_type, d.message, d.retryable, r[4], part=True):
                return  # a retry is scheduled: the unit stays in flight
            if drv is not None and drv.failed is None:
                drv.failed = (d.error_type, d.message)
        if drv is not None:
            drv.inflight.discard(r[4])
            self._pump(step)

    def _step_error(self, step: str, unit: str, attempt: int, etype: str, message: str,
                    retryable: bool, index: int = 0, part: bool = False) -> bool:
        """Journal a failed attempt; schedule a retry if the policy allows.
        Returns True when a retry was scheduled."""
        policy = self.wf.retry
        final = not (retryable and attempt < policy.max_attempts)
        # a part's failure is final for its step only through the driver
        self._emit(ev.StepFailed(unit, self.p.super_step + 1, etype, message, attempt, final and not part))
        if not final:
            timer = self.core.scheduler.tell_later(
                policy.delay(attempt), self.actor_ref, RetryStep(unit, attempt + 1))
            self._running[unit] = [None, attempt, timer, step, index]
        if self._listeners:
            self._event("failed" if final else "retrying", unit, attempt, (etype, message))
        return not final

    def _on_retry(self, msg: RetryStep) -> None:
        r = self._running.get(msg.step)
        if r is None or r[0] is not None:
            return
        del self._running[msg.step]
        step = r[3]
        drv = self._drivers.get(step)
        if drv is not None and msg.step != step:
            drv.inflight.discard(r[4])
            self._pump(step)
        self._advance()

    def _on_timeout(self, msg: StepTimedOut) -> None:
        r = self._running.get(msg.step)
        if r is None or r[0] != msg.token:
            return
        del self._running[msg.step]
        self.core.executor.abandon(msg.token)
        step = r[3]
        text = (f"step {msg.step!r} did not finish within {msg.timeout_s:g}s (attempt {r[1]}); "
                "raise step_timeout_s or make the step faster")
        if msg.step != step:
            if not self._step_error(step, msg.step, r[1], "StepTimeout", text, True, r[4], part=True):
                drv = self._drivers.get(step)
                if drv is not None:
                    if drv.failed is None:
                        drv.failed = ("StepTimeout", text)
                    drv.inflight.discard(r[4])
                    self._pump(step)
        else:
            self._step_error(step, step, r[1], "StepTimeout", text, True, r[4])
        self._advance()

    # -- commits ---------------------------------------------------------------

    def _emit(self, e: Any, record: bytes | None = None, values: dict[str, Any] | None = None) -> None:
        if record is None:
            record = fmt.encode_event(e)
        p = self.p
        algo.apply_event(self.plan, p, e, p.seq + 1, values)
        self._outbox.append(record)

    def _flush(self, wait: bool, snapshot: bool = False) -> bool:
        """Send queued events; True when the caller may go on at once."""
        p = self.p
        batch = AppendBatch(
            self.key[0], self.key[1], self._first_seq, self._outbox,
            status="running" if p.status == "new" else p.status, super_step=p.super_step,
            snapshot=fmt.encode_obj(algo.to_snapshot(p)) if snapshot else None,
            meta=self._meta_new,
        )
        self._meta_new = None
        self._outbox = []
        self._first_seq = p.seq + 1
        if self._direct:
            err = self.core.store.write([batch])[0]
            if err is not None:
                self._store_failed(err)
                return False
            return True
        token = next(self._tokens)
        self.core.checkpointer.tell(Append(batch, self.actor_ref, token, wait))  # type: ignore[union-attr]
        if wait:
            self._ack_token = token
            return False
        return True

    def _on_tick(self, msg: _FlushTick) -> None:
        self._tick = False
        if self._outbox and self._ack_token is None and not self._released and self.p.status == "running":
            self._flush(wait=False)

    def _on_committed(self, msg: Committed) -> None:
        if msg.error is not None:
            self._store_failed(msg.error)
            return
        if msg.token == self._ack_token:
            then, self._then, self._ack_token = self._then, None, None
            if then is not None:
                then()

    def _store_failed(self, err: BaseException) -> None:
        """The journal refused our events: report it; the stored run stays at its
        last durable point (``recover()`` carries it on once the store is fixed)."""
        log.error("run %s/%s: store write failed: %s", *self.key, err)
        self._ack_token = None
        self._then = None
        self._report(Failed(self.key[0], self.key[1], None, self.p.super_step,
                            type(err).__name__, str(err)))

    # -- endings -----------------------------------------------------------------

    def _pause(self, reason: str, steps: list[str]) -> None:
        p = self.p
        self._emit(ev.Paused(reason, list(steps), p.super_step, _now()))
        interrupts = [Interrupt(i.id, i.step_id, i.payload) for i in p.interrupts]
        self._finish_durably(Paused(self.key[0], self.key[1], p.super_step, reason, interrupts, list(steps)))

    def _fail(self, step: str | None, etype: str, message: str) -> None:
        p = self.p
        self._emit(ev.RunFailed(step, etype, message, p.super_step, _now()))
        self._finish_durably(Failed(self.key[0], self.key[1], step, p.super_step, etype, message))

    def _finish_durably(self, outcome: Any) -> None:
        self._boundary = False
        self._snap_due = False
        if self._flush(wait=True, snapshot=True):
            self._report(outcome)
        elif self._ack_token is not None:
            self._then = lambda: self._report(outcome)

    def _report(self, outcome: Any) -> None:
        for target in self._reply_to:
            _tell(target, outcome)
        if self._listeners:
            self._event("outcome", None, 0, outcome)
        self._reply_to = []
        self._listeners = []
        self._release_and_stop()

    def _release_and_stop(self) -> None:
        if self._released:
            return
        self._released = True
        for r in self._running.values():
            if r[2] is not None:
                self.core.scheduler.cancel(r[2])
        self.core.supervisor.release(self.key, self.actor_ref)
        self.stop()

    def _crash(self, exc: BaseException) -> None:
        if self.core.supervisor.closed:  # e.g. the checkpointer is gone: stop quietly
            log.debug("run %s/%s stopped by close: %r", *self.key, exc)
        else:
            log.error("run %s/%s: internal error", *self.key, exc_info=exc)
        if self._released:
            return
        if self._outbox and self._ack_token is None and not self.core.supervisor.closed:
            try:  # the queued events are consistent: keep them for the restart
                self._flush(wait=False)
            except Exception:  # noqa: BLE001
                log.exception("run %s/%s: could not save queued events", *self.key)
        self._released = True
        subscribers = (self._reply_to, self._listeners)
        self._reply_to, self._listeners = [], []
        self.core.supervisor.crashed(self.wf, self.key[1], self.actor_ref, exc, subscribers)
        self.stop()

    def _event(self, kind: str, step: str | None, attempt: int, data: Any = None) -> None:
        e = StepEvent(kind, self.key[0], self.key[1], self.p.super_step + (0 if kind in ("committed", "outcome") else 1),
                      step, attempt, data)
        for target in self._listeners:
            _tell(target, e)


def _tell(target: Any, message: Any) -> None:
    try:
        target.tell(message)
    except pykka.ActorDeadError:
        pass
    except Exception:  # noqa: BLE001 - a broken reply target must not break the run
        log.exception("could not deliver %s", type(message).__name__)


_HANDLERS: dict[type, Any] = {
    StepDone: WorkflowActor._on_step_done,
    Committed: WorkflowActor._on_committed,
    Run: WorkflowActor._on_run,
    Resume: WorkflowActor._on_resume,
    Recover: WorkflowActor._on_recover,
    RetryStep: WorkflowActor._on_retry,
    StepTimedOut: WorkflowActor._on_timeout,
    _FlushTick: WorkflowActor._on_tick,
    Done: WorkflowActor._on_child,
    Paused: WorkflowActor._on_child,
    Failed: WorkflowActor._on_child,
    Rejected: WorkflowActor._on_child,
    Accepted: WorkflowActor._on_child,
}
