"""WorkflowActor: one per executing run; drives its super-steps.

Threads: none of its own. A run actor is a :class:`~atomr.actors.dispatcher.DispatchedActor`:
its turns run on the runtime's dispatcher threads, a few for every run of the
process. A run that pauses, finishes or fails reports its outcome, releases
itself from the supervisor and stops, so a paused run holds nothing; the next
Resume rehydrates it.

One super-step, top-down (:meth:`WorkflowActor._advance`): ask the pure
:func:`~atomr.graph.actions.next_action` what to do; *Dispatch* journals
StepStarted and sends the steps out (a layer of one sync step runs in this
turn, no hop, when the dispatcher can lend the thread); each ``StepDone``
journals the step's writes; *CommitLayer* merges them through the reducers
and journals SuperStepCommitted; the durability strategy decides when the
journal is sent and whether the run waits for it. The actor never blocks on
a step, a timer or a commit: it waits for messages (StepDone, RetryStep,
StepTimedOut, Committed, a child run's outcome).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from atomr import events as ev
from atomr._load import load_progress
from atomr._run.attempts import Attempt, InFlight, next_token
from atomr._run.journal import FLUSH_TICK, FlushTick, Journal, durability_of
from atomr._run.kinds import DRIVEN, KindDriving
from atomr._run.subscribers import Subscribers, targets_of, tell
from atomr.actors.dispatcher import DispatchedActor
from atomr.actors.step import execute_sync, safe_text
from atomr.errors import AtomrError, BranchError, ReducerError, RunExists, RunNotFound, RunNotPaused, StepCrashed
from atomr.graph import superstep as algo
from atomr.graph.drive import Driven, outcome_of
from atomr.graph.state import apply_writes, check_channels
from atomr.kinds import Human
from atomr.messages import (
    INTERRUPT,
    OK,
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
)
from atomr.store import format as fmt
from atomr.types import Done, Failed, Interrupt, Paused

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["WorkflowActor"]

log = logging.getLogger("atomr.run")

_EMPTY: frozenset[str] = frozenset()
#: what the run does once the commit it waits for is durable
_GO, _LAUNCH, _REPORT = "go", "launch", "report"


def _now() -> int:
    return int(time.time() * 1000)


def _bad_request(exc: Exception) -> AtomrError:
    if isinstance(exc, AtomrError):
        return exc
    return AtomrError(f"invalid request: {type(exc).__name__}: {safe_text(exc)}; nothing was written")


class WorkflowActor(KindDriving, DispatchedActor):
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
        self.driven: dict[str, Driven] = {}
        self.children: dict[tuple[str, str], str] = {}
        self.journal = Journal(core, self.actor_ref, self.p.seq + 1)
        self.durability = durability_of(core.durability)
        self.subs = Subscribers(self.key)
        self.driving = False
        self.released = False
        self.accepted = False
        self._after_commit: tuple[Any, ...] | None = None

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

    def on_stop(self) -> None:
        # requests that slipped in after we released ourselves go to a fresh actor
        while not self.actor_inbox.empty():
            env = self.actor_inbox.get_nowait()  # type: ignore[attr-defined]
            if type(env.message) in (Run, Resume, Recover):
                self.core.supervisor.route(self.wf, self.key[1], env.message)

    # -- requests ------------------------------------------------------------

    def _on_run(self, msg: Run) -> None:
        if self.released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        if self.p.status != "new":
            self._reject(msg, RunExists(*self.key))
            return
        try:
            data = dict(msg.input or {})
            check_channels(self.plan.schema, data.items())
            apply_writes(self.plan.schema, self.plan.schema.initial_values(), list(data.items()))
            meta = dict(msg.meta or {})
            record = fmt.encode_event(ev.RunStarted(data, meta, _now()))
            # fold what the journal holds, not the caller's objects
            started = fmt.decode_event(record)
        except Exception as exc:  # noqa: BLE001 - a refusal, nothing written
            self._reject(msg, _bad_request(exc))
            return
        self.subs.add(msg)
        self.journal.meta_new = meta
        self.journal.emit(self.plan, self.p, started, record)
        self._accept()

    def _on_resume(self, msg: Resume) -> None:
        if self.released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p = self.p
        if p.status == "new":
            self._reject(msg, RunNotFound(*self.key))
            return
        if self.inflight or self.driven or p.status == "running":
            self._reject(msg, RunNotPaused(*self.key, "running"))
            return
        try:
            records = [fmt.encode_event(e) for e in algo.command_events(self.plan, p, msg.command, _now())]
            events = [fmt.decode_event(r) for r in records]  # copies: not the caller's objects
        except Exception as exc:  # noqa: BLE001 - a refusal, nothing written
            self._reject(msg, _bad_request(exc))
            return
        self.subs.add(msg)
        for e, r in zip(events, records):
            self.journal.emit(self.plan, p, e, r)
        self._accept()

    def _on_recover(self, msg: Recover) -> None:
        if self.released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p = self.p
        if p.status == "new":
            self._reject(msg, RunNotFound(*self.key))
            return
        if p.status != "running":
            # it settled meanwhile (e.g. another recover() got there first)
            for target in targets_of(msg):
                tell(target, Accepted(*self.key))
                tell(target, outcome_of(p))
            if self._idle():
                self._release_and_stop()
            return
        self.subs.add(msg)
        self.accepted = True
        if not self.driving:
            self._mark_driving()
            self.subs.to_listeners(Accepted(*self.key))
            self._advance()
        else:
            self.subs.to_listeners(Accepted(*self.key))

    def _reject(self, msg: Any, exc: BaseException) -> None:
        r = Rejected(self.key[0], self.key[1], exc)
        for target in targets_of(msg):
            tell(target, r)
        # an actor not driving its run must not stay live: rt.recover() skips live ones
        if self._idle() and (self.p.status != "running" or not self.driving):
            self._release_and_stop()

    def _idle(self) -> bool:
        return not self.inflight and not self.driven and self.journal.ack_token is None

    def _accept(self) -> None:
        if self.durability.on_accept(self.journal, self.p):
            self._accepted_go()
        else:
            self._after_commit = (_GO,)

    def _accepted_go(self) -> None:
        self.accepted = True
        self._mark_driving()  # before Accepted: a racing resume must see it
        self.subs.to_listeners(Accepted(*self.key))
        self._advance()

    def _mark_driving(self) -> None:
        if not self.driving:
            self.driving = True
            self.core.supervisor.mark_driving(self.key)

    # -- the loop: one super-step, top-down --------------------------------------

    def _advance(self) -> None:
        plan, p = self.plan, self.p
        self._mark_driving()
        while p.status == "running" and self.journal.ack_token is None and not self.released \
                and not self.core.supervisor.closed:
            act = algo.next_action(plan, p, self.inflight.steps() | self.driven.keys()
                                   if self.inflight or self.driven else _EMPTY)
            t = type(act)
            if t is algo.Dispatch:
                done = self._dispatch(act.steps)
                if done is not None:
                    self._record(done)  # ran in this turn: go on without a hop
                    continue
                if self.journal.ack_token is None and any(s in p.pending or s in p.failed for s in act.steps):
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
                self.journal.emit(plan, p, ev.RunCompleted(p.super_step, _now()))
                self._finish(Done(self.key[0], self.key[1], p.values))
            elif t is algo.PauseBefore:
                self._pause("before", act.steps)
            elif t is algo.PauseInterrupt:
                self._pause("interrupt", act.steps)
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
        self.journal.emit(self.plan, p, ev.SuperStepCommitted(p.next_super_step, layer, _now()), values=values)
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
        self.inflight.add(unit, Attempt(token, attempt, None, step, index))
        return Execute(
            token, step, fn, MappingProxyType(p.layer_values if state is None else state), wid, rid, ss, attempt, key,
            algo.resume_values(p, unit), self.wf.channels, self.actor_ref, self.wf.retry.retry_on,
            is_async, None if unit == step else unit, mode, index, item,
        )

    def _dispatch(self, steps: list[str]) -> StepDone | None:
        """Journal StepStarted and send the steps out; returns the StepDone of a
        step that ran in this turn."""
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
            self._after_commit = (_LAUNCH, msgs, kinds)
            return None
        return self._launch(msgs, kinds)

    def _launch(self, msgs: list[Execute], kinds: list[str]) -> StepDone | None:
        for s in kinds:
            self._start_driver(s)
        # in this turn only when nothing else of the run runs (a busy turn could
        # not journal siblings finishing meanwhile) and the dispatcher can lend
        # its thread (one is always left for other actors)
        if len(msgs) == 1 and not kinds and len(self.inflight) == 1 and not self.driven \
                and self.core.inline and not msgs[0].is_async and self.wf.step_timeout_s is None:
            dispatcher = self.core.dispatcher
            if dispatcher.try_block():
                m = msgs[0]
                try:
                    self.durability.before_inline(self.journal, self.p)
                    self._event("started", m.step, m.attempt)
                    return execute_sync(m)
                finally:
                    dispatcher.unblock()
        self._submit(msgs)
        return None

    def _submit(self, msgs: list[Execute]) -> None:
        timeout = self.wf.step_timeout_s
        submit = self.core.executor.submit
        for m in msgs:
            unit = m.part or m.step
            if timeout is not None:
                a = self.inflight.get(unit)
                if a is not None:
                    a.timer = self.core.scheduler.tell_later(timeout, self.actor_ref,
                                                             StepTimedOut(unit, m.token, timeout))
            self._event("started", unit, m.attempt)
            submit(m)

    # -- step results ----------------------------------------------------------

    def _on_step_done(self, d: StepDone) -> None:
        if not self._record(d):
            return
        if d.kind == OK and d.part is None and self.inflight and not self.driven \
                and self.p.status == "running" and self.journal.ack_token is None:
            # a sibling finished while others still run: nothing new can start
            self.durability.while_waiting(self.journal, self.p, self._schedule_tick)
            return
        self._advance()

    def _record(self, d: StepDone) -> bool:
        """Journal a step's result; False when it is stale."""
        unit = d.part or d.step
        a = self.inflight.get(unit)
        if a is None or a.token != d.token:
            return False  # a late answer from an attempt that timed out or was cancelled
        self.inflight.pop(unit)
        if a.timer is not None:
            self.core.scheduler.cancel(a.timer)
        if d.part is not None:
            self._record_part(d, a)
            return True
        step, p, ss = d.step, self.p, self.p.next_super_step
        if d.kind == OK:
            if isinstance(self.wf.dag.steps[step], Human):
                answer = algo.resume_values(p, step)
                if answer and isinstance(answer[0], Mapping) and answer[0].get("approved"):
                    self.journal.emit(self.plan, p, ev.HumanApproved(step, answer[0].get("by")))
            self.journal.emit(self.plan, p, d.event, d.record)
            self._event("completed", step, d.attempt, d.writes)
            if step in self.plan.cancel_on_done:
                self._cancel_losers(step)
        elif d.kind == INTERRUPT:
            iid = algo.interrupt_id(step, ss, d.index)
            self.journal.emit(self.plan, p, ev.Interrupted(step, ss, iid, d.payload, d.index))
            self._event("interrupted", step, d.attempt, Interrupt(iid, step, d.payload))
        else:
            self._step_error(a, step, d.error_type, d.message, d.retryable)
        return True

    def _step_error(self, a: Attempt, unit: str, etype: str, message: str, retryable: bool,
                    part: bool = False) -> bool:
        """Journal a failed attempt; schedule a retry if the policy allows.
        Returns True when a retry was scheduled (the unit stays in flight)."""
        policy = self.wf.retry
        final = not (retryable and a.attempt < policy.max_attempts)
        # a part's failure is final for its step only through the driver
        self.journal.emit(self.plan, self.p, ev.StepFailed(unit, self.p.next_super_step, etype, message,
                                                           a.attempt, final and not part))
        if not final:
            timer = self.core.scheduler.tell_later(
                policy.delay(a.attempt), self.actor_ref, RetryStep(unit, a.attempt + 1))
            self.inflight.add(unit, Attempt(None, a.attempt, timer, a.step, a.index))
        self._event("failed" if final else "retrying", unit, a.attempt, (etype, message))
        return not final

    def _on_retry(self, msg: RetryStep) -> None:
        a = self.inflight.get(msg.step)
        if a is None or a.token is not None:
            return
        self.inflight.pop(msg.step)
        if msg.step != a.step:
            self._part_again(a)
        self._advance()

    def _on_timeout(self, msg: StepTimedOut) -> None:
        a = self.inflight.get(msg.step)
        if a is None or a.token != msg.token:
            return
        self.inflight.pop(msg.step)
        self.core.executor.abandon(msg.token)
        text = (f"step {msg.step!r} did not finish within {msg.timeout_s:g}s (attempt {a.attempt}); "
                "raise step_timeout_s or make the step faster")
        if msg.step != a.step:
            if not self._step_error(a, msg.step, "StepTimeout", text, True, part=True):
                self._part_failed(a, ("StepTimeout", text))
        else:
            self._step_error(a, a.step, "StepTimeout", text, True)
        self._advance()

    # -- commits ---------------------------------------------------------------

    def _schedule_tick(self, delay: float) -> None:
        self.core.scheduler.tell_later(delay, self.actor_ref, FLUSH_TICK)

    def _on_tick(self, msg: FlushTick) -> None:
        self.durability.tick = False
        j = self.journal
        if j.outbox and j.ack_token is None and not self.released and self.p.status == "running":
            j.send(self.p, wait=False)

    def _on_committed(self, msg: Committed) -> None:
        if msg.error is not None:
            self._store_failed(msg.error)
            return
        if not self.journal.committed(msg.token):
            return
        then, self._after_commit = self._after_commit, None
        if then is None:
            return
        if then[0] == _GO:
            self._accepted_go()
        elif then[0] == _LAUNCH:
            done = self._launch(then[1], then[2])
            if done is not None:
                self._record(done)
            self._advance()
        else:
            self._report(then[1])

    def _store_failed(self, err: BaseException) -> None:
        """The store refused our events: the stored run stays at its last durable point."""
        log.error("run %s/%s: store write failed: %s", *self.key, err)
        self.journal.ack_token = None
        self._after_commit = None
        if not self.accepted and not self.journal.ever_committed:
            # nothing of this run reached the store: the request is refused, the run does not exist
            reply_to, listeners = self.subs.take()
            r = Rejected(self.key[0], self.key[1], err)
            for target in {id(t): t for t in reply_to + listeners}.values():
                tell(target, r)
            self._release_and_stop()
            return
        self._report(Failed(self.key[0], self.key[1], None, self.p.super_step, type(err).__name__,
                            f"{safe_text(err)} (the run is kept as last committed: fix the store, "
                            "then call rt.recover())"))

    # -- endings -----------------------------------------------------------------

    def _pause(self, reason: str, steps: list[str]) -> None:
        p = self.p
        self.journal.emit(self.plan, p, ev.Paused(reason, list(steps), p.super_step, _now()))
        interrupts = [Interrupt(i.id, i.step_id, i.payload) for i in p.interrupts]
        self._finish(Paused(self.key[0], self.key[1], p.super_step, reason, interrupts, list(steps)))

    def _fail(self, step: str | None, etype: str, message: str) -> None:
        p = self.p
        self.journal.emit(self.plan, p, ev.RunFailed(step, etype, message, p.super_step, _now()))
        self._finish(Failed(self.key[0], self.key[1], step, p.super_step, etype, message))

    def _finish(self, outcome: Any) -> None:
        """Make everything durable (with a snapshot), then report ``outcome``."""
        if self.durability.finish(self.journal, self.p):
            self._report(outcome)
        else:
            self._after_commit = (_REPORT, outcome)

    def _report(self, outcome: Any) -> None:
        self.subs.report(outcome, self.p.super_step)
        self._release_and_stop()

    def _release_and_stop(self) -> None:
        if self.released:
            return
        self.released = True
        for a in self.inflight:
            if a.timer is not None:
                self.core.scheduler.cancel(a.timer)
        self.core.supervisor.release(self.key, self.actor_ref)
        self.stop()

    def _crash(self, exc: BaseException) -> None:
        sup = self.core.supervisor
        if sup.closed:  # e.g. the checkpointer is gone: stop quietly
            log.debug("run %s/%s stopped by close: %r", *self.key, exc)
        else:
            log.error("run %s/%s: internal error", *self.key, exc_info=exc)
        if self.released:
            return
        j = self.journal
        if j.outbox and j.ack_token is None and not sup.closed:
            try:  # the queued events are consistent: keep them for the restart
                j.send(self.p, wait=False)
            except Exception:  # noqa: BLE001
                log.exception("run %s/%s: could not save queued events", *self.key)
        self.released = True
        sup.crashed(self.wf, self.key[1], self.actor_ref, exc, self.subs.take())
        self.stop()

    def _event(self, kind: str, step: str | None, attempt: int, data: Any = None) -> None:
        if self.subs.listeners:
            ss = self.p.super_step + (0 if kind in ("committed", "outcome") else 1)
            self.subs.event(kind, ss, step, attempt, data)


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
}
