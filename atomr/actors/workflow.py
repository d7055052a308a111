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
  shared with every other run committing at the same moment);
* ``async`` — events are sent to the checkpointer as they happen, the run does
  not wait; a kill -9 can lose the last super-steps (they are re-run);
* ``exit``  — events stay in the actor until the run pauses, ends or fails; a
  kill -9 loses the whole execution since the last pause (it is re-run).

In every mode an outcome is reported only once it is durable.
"""

from __future__ import annotations

import itertools
import logging
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pykka

from atomr import events as ev
from atomr.errors import AtomrError, ReducerError, RunExists, RunNotFound, RunNotPaused
from atomr.graph import superstep as algo
from atomr.actors.step import execute_sync
from atomr.graph.state import apply_writes, check_channels
from atomr.messages import (
    ERROR,
    INTERRUPT,
    OK,
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
from atomr.types import Done, Failed, Interrupt, Paused, StepEvent

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["WorkflowActor"]

log = logging.getLogger("atomr.run")


def _now() -> int:
    return int(time.time() * 1000)


class WorkflowActor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, core: Core, wf: Workflow, run_id: str, progress: algo.RunProgress | None) -> None:
        super().__init__()
        self.core = core
        self.wf = wf
        self.plan = wf.plan
        self.key = (wf.id, run_id)
        self.p = progress if progress is not None else algo.RunProgress(wf.id, run_id)
        self._running: dict[str, list[Any]] = {}  # step -> [token|None, attempt, timer|None]
        self._outbox: list[bytes] = []
        self._first_seq = self.p.seq + 1
        self._reply_to: list[Any] = []
        self._listeners: list[Any] = []
        self._tokens = itertools.count(1)
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
        try:
            handler = _HANDLERS.get(type(message))
            if handler is not None:
                handler(self, message)
        except BaseException as exc:  # noqa: BLE001 - never let pykka stop all actors
            self._crash(exc)
        return None

    def on_stop(self) -> None:
        # messages that slipped in after we released ourselves go to a fresh actor
        while not self.actor_inbox.empty():
            env = self.actor_inbox.get_nowait()
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
        except AtomrError as exc:
            self._reject(msg, exc)
            return
        self._subscribe(msg)
        self._meta_new = meta
        self._emit(ev.RunStarted(data, meta, _now()), record)
        self._accept_and_go()

    def _on_resume(self, msg: Resume) -> None:
        if self._released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p = self.p
        if p.status == "new":
            self._reject(msg, RunNotFound(*self.key))
            return
        if self._running or p.status == "running":
            self._reject(msg, RunNotPaused(*self.key, "running"))
            return
        try:
            events = algo.command_events(self.plan, p, msg.command, _now())
            records = [fmt.encode_event(e) for e in events]
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
        if self.p.status != "running" or self._running:
            self._reject(msg, RunNotPaused(*self.key, self.p.status if self.p.status != "new" else "unknown"))
            return
        self._subscribe(msg)
        self._notify_accepted()
        self._advance()

    def _subscribe(self, msg: Any) -> None:
        if msg.reply_to is not None:
            self._reply_to.append(msg.reply_to)
        if msg.listener is not None:
            self._listeners.append(msg.listener)

    def _reject(self, msg: Any, exc: BaseException) -> None:
        r = Rejected(self.key[0], self.key[1], exc)
        for target in {id(t): t for t in (msg.reply_to, msg.listener) if t is not None}.values():
            _tell(target, r)
        if not self._running and self.p.status != "running" and self._ack_token is None:
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
        self._notify_accepted()
        self._advance()

    def _notify_accepted(self) -> None:
        a = Accepted(*self.key)
        for target in self._listeners:
            _tell(target, a)

    # -- the loop ------------------------------------------------------------

    def _advance(self) -> None:
        plan = self.plan
        p = self.p
        while True:
            if p.status != "running" or self._ack_token is not None:
                return
            act = algo.next_action(plan, p, self._running)
            t = type(act)
            if t is algo.Dispatch:
                done = self._dispatch(act.steps)
                if done is None:
                    return
                self._record(done)  # ran inline: go on without a hop
                continue
            if t is algo.Wait:
                if self._outbox and not self._exit:
                    self._flush(wait=False)
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

    def _dispatch(self, steps: list[str]) -> StepDone | None:
        """Journal StepStarted and send the steps out; returns the StepDone of a
        step run inline (a layer of one sync step runs in this thread, no hop)."""
        p = self.p
        wf = self.wf
        ss = p.super_step + 1
        state = MappingProxyType(p.values)
        wid, rid = self.key
        msgs = []
        for s in steps:
            attempt = p.attempts.get(s, 0) + 1
            key = algo.idempotency_key(wid, rid, ss, s)
            self._emit(ev.StepStarted(s, ss, attempt, key))
            token = next(self._tokens)
            self._running[s] = [token, attempt, None]
            msgs.append(Execute(
                token, s, wf.dag.steps[s], state, wid, rid, ss, attempt, key,
                algo.resume_values(p, s), wf.channels, self.actor_ref, wf.retry.retry_on,
                wf.is_async[s],
            ))
        if self._boundary:
            self._boundary = False
            snap, self._snap_due = self._snap_due, False
            if not self._flush(wait=True, snapshot=snap):
                self._then = lambda: self._submit_then_advance(msgs)
                return None
        return self._submit(msgs)

    def _submit_then_advance(self, msgs: list[Execute]) -> None:
        done = self._submit(msgs)
        if done is not None:
            self._record(done)
        self._advance()

    def _submit(self, msgs: list[Execute]) -> StepDone | None:
        if len(msgs) == 1 and self.core.inline:
            m = msgs[0]
            if not m.is_async and self.wf.step_timeout_s is None:
                if self._listeners:
                    self._event("started", m.step, m.attempt)
                return execute_sync(m)
        timeout = self.wf.step_timeout_s
        submit = self.core.executor.submit
        listeners = self._listeners
        for m in msgs:
            if timeout is not None:
                self._running[m.step][2] = self.core.scheduler.tell_later(
                    timeout, self.actor_ref, StepTimedOut(m.step, m.token, timeout))
            if listeners:
                self._event("started", m.step, m.attempt)
            submit(m)
        return None

    # -- step results ----------------------------------------------------------

    def _on_step_done(self, d: StepDone) -> None:
        if self._record(d):
            self._advance()

    def _record(self, d: StepDone) -> bool:
        """Journal a step's result; False when it is stale."""
        r = self._running.get(d.step)
        if r is None or r[0] != d.token:
            return False  # a late answer from an attempt that timed out or was cancelled
        del self._running[d.step]
        if r[2] is not None:
            self.core.scheduler.cancel(r[2])
        ss = self.p.super_step + 1
        kind = d.kind
        if kind == OK:
            self._emit(ev.StepCompleted(d.step, ss, d.writes), d.record)
            if self._listeners:
                self._event("completed", d.step, d.attempt, d.writes)
        elif kind == INTERRUPT:
            iid = algo.interrupt_id(d.step, ss, d.index)
            self._emit(ev.Interrupted(d.step, ss, iid, d.payload, d.index))
            if self._listeners:
                self._event("interrupted", d.step, d.attempt, Interrupt(iid, d.step, d.payload))
        else:
            self._step_error(d.step, d.attempt, d.error_type, d.message, d.retryable)
        return True

    def _step_error(self, step: str, attempt: int, etype: str, message: str, retryable: bool) -> None:
        policy = self.wf.retry
        final = not (retryable and attempt < policy.max_attempts)
        self._emit(ev.StepFailed(step, self.p.super_step + 1, etype, message, attempt, final))
        if not final:
            timer = self.core.scheduler.tell_later(
                policy.delay(attempt), self.actor_ref, RetryStep(step, attempt + 1))
            self._running[step] = [None, attempt, timer]
        if self._listeners:
            self._event("failed" if final else "retrying", step, attempt, (etype, message))

    def _on_retry(self, msg: RetryStep) -> None:
        r = self._running.get(msg.step)
        if r is None or r[0] is not None:
            return
        del self._running[msg.step]
        self._advance()

    def _on_timeout(self, msg: StepTimedOut) -> None:
        r = self._running.get(msg.step)
        if r is None or r[0] != msg.token:
            return
        del self._running[msg.step]
        self.core.executor.abandon(msg.token)
        self._step_error(
            msg.step, r[1], "StepTimeout",
            f"step {msg.step!r} did not finish within {msg.timeout_s:g}s (attempt {r[1]}); "
            "raise step_timeout_s or make the step faster", True,
        )
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
        log.error("run %s/%s: internal error", *self.key, exc_info=exc)
        if self._released:
            return
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
}
