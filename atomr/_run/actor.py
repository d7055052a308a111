"""WorkflowActor: one per executing run; drives its super-steps.

Threads: none of its own. A run actor is a :class:`~atomr.actors.dispatcher.DispatchedActor`:
its turns run on the runtime's dispatcher threads, a few for every run of the
process. A run that pauses, finishes or fails reports its outcome, releases
itself from the supervisor and stops, so a paused run holds nothing; the next
Resume rehydrates it.

One super-step, top-down (:meth:`WorkflowActor._advance`): ask the pure
:func:`~atomr.graph.actions.next_action` what to do; *Dispatch* journals
StepStarted and sends the steps out (a layer of one sync step is lent a
dispatcher thread: it runs on this turn's thread right after the turn, no
hand-off, while the run's mailbox stays open); each ``StepDone``
journals the step's writes; *CommitLayer* merges them through the reducers
and journals SuperStepCommitted; the durability strategy decides when the
journal is sent and whether the run waits for it. The actor never blocks on
a step, a timer or a commit: it waits for messages (StepDone, RetryStep,
StepTimedOut, Committed, a child run's outcome).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from atomr import _trace
from atomr import events as ev
from atomr._load import load_progress
from atomr._run.attempts import Attempt, CancelFlag, InFlight, next_token
from atomr._run.journal import FlushTick, Journal, durability_of, now_ms
from atomr._run.endings import LAUNCH, Endings, RunDeadline
from atomr._run.kinds import DRIVEN, KindDriving
from atomr._run.requests import Requests
from atomr._run.results import StepResults
from atomr._run.subscribers import Subscribers, tell
from atomr.actors.dispatcher import DispatchedActor
from atomr.actors.step import LentStep, safe_text
from atomr.errors import BranchError, ReducerError, StepCrashed
from atomr.graph import superstep as algo
from atomr.graph.drive import Driven
from atomr.messages import (
    Admit,
    Cancel,
    STEP,
    Accepted,
    Committed,
    Execute,
    Recover,
    Rejected,
    Resume,
    RetryStep,
    Run,
    StepDone,
    StepTimedOut,
    StreamLost,
    Subscribe,
)
from atomr.types import Done, Failed, Paused

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["WorkflowActor"]


_EMPTY: frozenset[str] = frozenset()


class WorkflowActor(Requests, StepResults, Endings, KindDriving, DispatchedActor):
    def __init__(self, core: Core, wf: Workflow, run_id: str,
                 progress: algo.RunProgress | None = None, load: bool = True) -> None:
        """``load``: rehydrate the run from the store in the actor's first turn
        (on_start), so many runs rehydrate at once, not one by one in the caller."""
        super().__init__()
        self.use_dispatcher(core.dispatcher)
        self._load = load and progress is None
        self._load_error: BaseException | None = None
        self.core = core
        self.wf = wf
        self.plan = wf.plan
        self.key = (wf.id, run_id)
        self.p = progress if progress is not None else algo.RunProgress(wf.id, run_id)
        self.inflight = InFlight()
        self.inflight.release = core.limiter.done if core.limiter is not None else None
        self.driven: dict[str, Driven] = {}
        self.tracebacks: dict[str, str] = {}  # step -> traceback of its final failed attempt
        self.children: dict[tuple[str, str], str] = {}
        self.journal = Journal(core, self.actor_ref, self.p.seq + 1)
        self.durability = durability_of(core.durability)
        self.subs = Subscribers(self.key)
        self.driving = False
        self.released = False
        self.accepted = False
        #: this actor is ending the run by a cancel or a deadline (once)
        self.cancelling = False
        #: the journal seq the accepted request's events follow
        self.request_seq = 0
        #: the request is a new turn of a done run
        self.turning = False
        self._after_commit: tuple[Any, ...] | None = None
        #: requests that came while the run's outcome waited for its commit (endings._pass_on)
        self.deferred: list[Any] = []
        self.cancel_flag = core.cancel_flags.setdefault(self.key, CancelFlag())
        self.t0 = time.perf_counter()  # this execution's start (rt.stats().run_seconds)

    # -- message loop ------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if self._load_error is not None:
            if type(message) in (Run, Resume, Recover):
                self._reject(message, self._load_error)
            elif type(message) is Subscribe:  # a stream hears why, rather than waiting for ever
                tell(message.sink, Rejected(*self.key, self._load_error))
                if self._idle():
                    self._release_and_stop()
            return None
        try:
            if self.cancel_flag.is_set() and type(message) is not Cancel and self._cancellable():
                self._cancel_run(self.cancel_flag.reason, self.cancel_flag.fail)  # rt.cancel or a deadline
            handler = _HANDLERS.get(type(message))
            if handler is not None:
                handler(self, message)
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into the dispatcher
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
            self.journal = Journal(self.core, self.actor_ref, p.seq + 1)

    def _reload(self) -> None:
        """Read the run again from the store (it was taken over here from another worker)."""
        p = load_progress(self.core.store, self.plan, *self.key)
        if p is not None and p.seq != self.p.seq:
            self.p = p
            old = self.journal
            if old.taps:
                old.tap(StreamLost())  # its streams subscribe again, replaying what they missed
            self.journal = Journal(self.core, self.actor_ref, p.seq + 1)

    def on_stop(self) -> None:
        j = self.journal
        if j.taps:
            j.tap(StreamLost())  # stopped without an outcome (close): streams subscribe again
            j.taps.clear()
        if j.outbox and not self.released and j.ack_token is None:
            j.send(self.p, wait=False)  # stopped by close(): finished steps' writes are kept
        # requests held for the outcome's commit, or that slipped in after we released
        # ourselves, go to a fresh actor
        self._pass_on()
        while not self.actor_inbox.empty():
            env = self.actor_inbox.get_nowait()  # type: ignore[attr-defined]
            if type(env.message) in (Run, Resume, Recover, Admit):
                self.core.supervisor.route(self.wf, self.key[1], env.message)

    # -- the loop: one super-step, top-down --------------------------------------

    def _advance(self) -> None:
        if _trace.enabled:
            _trace.advance(self)
        plan, p = self.plan, self.p
        self._mark_driving()
        while p.status == "running" and self.journal.ack_token is None and not self.released \
                and not self.core.supervisor.closed:
            if self.cancel_flag.is_set() and not self.cancelling:
                self._cancel_run(self.cancel_flag.reason, self.cancel_flag.fail)
                return
            act = algo.next_action(plan, p, self.inflight.steps() | self.driven.keys()
                                   if self.inflight or self.driven else _EMPTY)
            t = type(act)
            if t is algo.Dispatch:
                steps = act.steps
                self._dispatch(steps)
                if self.journal.ack_token is None \
                        and not (len(steps) == 1 and steps[0] in self.inflight.steps()) \
                        and any(s in p.pending or s in p.failed for s in steps):
                    continue  # a step kind settled at once (empty Map, Loop with no iteration)
                return
            if t is algo.Wait:
                self.durability.while_waiting(self.journal, p, self._schedule_tick)
                return
            if t is algo.CommitLayer:
                if not self._commit_layer():
                    return
                continue
            if t is algo.Route:
                if not self._route(act.step):
                    return
                continue
            if t is algo.Complete:
                self.journal.emit(plan, p, ev.RunCompleted(p.super_step, now_ms()))
                self._finish(Done(self.key[0], self.key[1], p.values))
            elif t is algo.PauseBefore:
                self._pause("before", act.steps)
            elif t is algo.PauseInterrupt:
                sleeps = algo.pending_sleeps(p)
                self._pause("sleeping" if sleeps and len(sleeps) == len(p.interrupts) else "interrupt",
                            act.steps)
                if sleeps and self.core.sleeper is not None:
                    self.core.sleeper.arm(self.wf, self.key[1], sleeps)
            elif t is algo.FailRun:
                self._fail(act.step, act.error_type, act.message)
            else:
                raise AssertionError(f"unknown action {act!r}")
            return

    def _commit_layer(self) -> bool:
        """Merge the layer's writes; False when the run stopped advancing (pause, failure)."""
        p = self.p
        try:
            values = algo.commit_values(self.plan, p)
        except ReducerError as exc:
            self._fail(exc.step, type(exc).__name__, str(exc))
            return False
        layer = p.layer
        self.journal.emit(self.plan, p, ev.SuperStepCommitted(p.next_super_step, layer, now_ms()), values=values)
        self._event("committed", None, 0)
        after = algo.after_breakpoint(self.plan, layer, p.skipped)
        if after:
            self._pause("after", after)
            return False
        self.durability.on_layer_committed(self.journal, p, p.super_step % self.core.store.snapshot_every == 0)
        return True

    def _route(self, step: str) -> bool:
        """Ask a branch's router (in this turn) and journal its decision."""
        spec = self.plan.dag.branches[step]
        try:
            picked = spec.router(self.wf.view(self.p.values))
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
            self._fail(step, etype, f"router of branch step {step!r} raised {type(exc).__name__}: {safe_text(exc)}")
            return False
        self.journal.emit(self.plan, self.p, ev.BranchTaken(step, labels))
        return True

    def _unit_msg(self, step: str, unit: str, fn: Any, mode: int = STEP, index: int = 0,
                  item: Any = None, is_async: bool = False, state: Mapping[str, Any] | None = None) -> Execute:
        """Journal StepStarted for ``unit`` and build its Execute message."""
        p = self.p
        wid, rid = self.key
        ss = p.next_super_step
        attempt = p.attempts.get(unit, 0) + 1
        key = algo.idempotency_key(wid, rid, ss, unit)
        self.journal.emit(self.plan, p, ev.StepStarted(unit, ss, attempt, key))
        token = next_token()
        self.inflight.add(unit, Attempt(token, attempt, None, step, index, time.perf_counter()))
        return Execute(
            token, step, fn, self.wf.view(p.layer_values if state is None else state), wid, rid, ss, attempt, key,
            algo.resume_values(p, unit), self.wf.channels, self.actor_ref, self.wf.step_retry[step].retry_on,
            is_async, None if unit == step else unit, mode, index, item, self._emit_custom, self.cancel_flag,
        )

    def _dispatch(self, steps: list[str]) -> None:
        """Journal StepStarted and send the steps out (now, or once the
        durability strategy's commit is done)."""
        fns = self.wf.dag.steps
        msgs, kinds = [], []
        for s in steps:
            fn = fns[s]
            if isinstance(fn, DRIVEN):
                ss = self.p.next_super_step
                self.journal.emit(self.plan, self.p, ev.StepStarted(
                    s, ss, self.p.attempts.get(s, 0) + 1, algo.idempotency_key(*self.key, ss, s)))
                kinds.append(s)
            else:
                msgs.append(self._unit_msg(s, s, fn, is_async=self.wf.is_async[s]))
        if not self.durability.before_dispatch(self.journal, self.p):
            self._after_commit = (LAUNCH, msgs, kinds)
            return
        self._launch(msgs, kinds)

    def _launch(self, msgs: list[Execute], kinds: list[str]) -> None:
        """Send the steps out. Never runs a step in this turn: a lone sync step
        (nothing else of the run in flight, no timeout, no limit) is lent a
        dispatcher thread when one may be lent — it runs on this very thread
        once the turn ends, no hand-off — else it goes to the pool like any."""
        if _trace.enabled:
            _trace.launch(self, msgs)
        for s in kinds:
            self._start_driver(s)
        if len(msgs) == 1 and not kinds and len(self.inflight) == 1 and not self.driven \
                and self.core.inline and not msgs[0].is_async and self.wf.step_timeouts[msgs[0].step] is None \
                and msgs[0].step not in self.wf.step_limits:
            m = msgs[0]
            if self.core.dispatcher.lend(LentStep(m, self.core.stepping, self.key)):
                self.durability.before_inline(self.journal, self.p)
                self._event("started", m.step, m.attempt)
                return
        self._submit(msgs)

    def _submit(self, msgs: list[Execute]) -> None:
        if _trace.enabled:
            _trace.launch(self, msgs)
        timeouts = self.wf.step_timeouts
        submit = self.core.executor.submit
        limits = self.wf.step_limits
        for m in msgs:
            unit = m.part or m.step
            timeout = timeouts[m.step]
            if timeout is not None:
                a = self.inflight.get(unit)
                if a is not None:
                    a.timer = self.core.scheduler.tell_later(timeout, self.actor_ref,
                                                             StepTimedOut(unit, m.token, timeout))
            self._event("started", unit, m.attempt)
            limit = limits.get(m.step) if limits else None
            if limit is None:
                submit(m)
            else:  # waits for a slot, holding no thread
                self.inflight.limited.add(m.token)
                self.core.limiter.submit((self.wf.id, m.step), limit, m)

_HANDLERS: dict[type, Any] = {
    StepDone: WorkflowActor._on_step_done,
    Committed: WorkflowActor._on_committed,
    Run: WorkflowActor._on_run,
    Resume: WorkflowActor._on_resume,
    Recover: WorkflowActor._on_recover,
    RetryStep: WorkflowActor._on_retry,
    StepTimedOut: WorkflowActor._on_timeout,
    FlushTick: WorkflowActor._on_tick,
    Done: WorkflowActor._on_child,
    Paused: WorkflowActor._on_child,
    Failed: WorkflowActor._on_child,
    Rejected: WorkflowActor._on_child,
    Accepted: WorkflowActor._on_child,
    Subscribe: WorkflowActor._on_subscribe,
    Cancel: WorkflowActor._on_cancel,
    Admit: WorkflowActor._on_admit,
    RunDeadline: WorkflowActor._on_deadline,
}
