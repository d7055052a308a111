"""A run actor's commits and endings: Committed, store refusals, pause / done /
failed, release, and what happens when the actor itself breaks.

Mixin of :class:`~atomr._run.actor.WorkflowActor`; runs in its turn.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from atomr import _trace
from atomr import events as ev
from atomr._hooks import logger
from atomr.graph import drive
from atomr.kinds import DagBody, Loop, Subgraph
from atomr._run.journal import FLUSH_TICK, FlushTick, now_ms
from atomr._run.subscribers import tell
from atomr.actors.step import safe_text
from atomr.errors import OwnershipLost, RunNotContinuable, RunOwnedElsewhere, RuntimeClosed, StartRefused
from atomr.messages import Accepted, Cancel, Committed, Rejected, StreamEnd, StreamLost
from atomr.types import Cancelled, Failed, Interrupt, Paused

if TYPE_CHECKING:
    from atomr._run.actor import WorkflowActor

__all__ = ["Endings"]

log = logger("atomr.run")
#: what the run does once the commit it waits for is durable
GO, LAUNCH, REPORT = "go", "launch", "report"


class RunDeadline:
    """Timer message: the run's ``run_timeout_s`` of executing time is up."""

    __slots__ = ()


RUN_DEADLINE = RunDeadline()


class Endings:
    # -- commits ---------------------------------------------------------------

    def _schedule_tick(self: WorkflowActor, delay: float) -> None:
        self.core.scheduler.tell_later(delay, self.actor_ref, FLUSH_TICK)

    def _on_tick(self: WorkflowActor, msg: FlushTick) -> None:
        self.durability.tick = False
        j = self.journal
        if j.outbox and j.ack_token is None and not self.released and self.p.status == "running":
            j.send(self.p, wait=False)

    def _on_committed(self: WorkflowActor, msg: Committed) -> None:
        if self.released:
            return  # a late answer to a batch sent before the run stopped
        if msg.error is not None:
            self._store_failed(msg.error, msg.token == self.journal.first_token)
            return
        if not self.journal.committed(msg.token):
            return
        then, self._after_commit = self._after_commit, None
        if then is None:
            return
        if then[0] == GO:
            self._accepted_go()
        elif then[0] == LAUNCH:
            self._launch(then[1], then[2])
            self._advance()
        else:
            self._report(then[1])

    def _store_failed(self: WorkflowActor, err: BaseException, first: bool = False) -> None:
        """The store refused our events: the stored run stays at its last durable point."""
        moved = isinstance(err, (OwnershipLost, RunOwnedElsewhere))  # another process wrote the run first
        if moved and self.accepted:
            self._handed_over(f"taken over by worker {err.owner!r}" if err.owner else "carried on elsewhere")
            return
        if not moved and not self.accepted and self.request_seq:
            s = self.core.store.summary(*self.key)  # a client's request another process's got ahead of
            moved = s is not None and s.last_seq > self.request_seq
        if moved:  # a request (a resume, a turn, a sleep's wake) another process carried out first: refused
            if self.turning:
                err = RunNotContinuable(*self.key, "running")
            log.info("run %s/%s: %s", *self.key, err)
            self.journal.ack_token = None
            self._after_commit = None
            reply_to, listeners = self.subs.take()
            for target in {id(t): t for t in reply_to + listeners}.values():
                tell(target, Rejected(self.key[0], self.key[1], err))
            self._release_and_stop()  # its streams subscribe again: to whoever runs it now
            return
        if isinstance(err, StartRefused):  # a start_many refused whole: the caller hears why
            log.info("run %s/%s: not started: %s", *self.key, err)
        else:
            log.error("run %s/%s: store write failed: %s", *self.key, err)
        self.journal.ack_token = None
        self._after_commit = None
        if first and not self.accepted:
            # nothing of this run reached the store: the request is refused, the run does not exist
            reply_to, listeners = self.subs.take()
            r = Rejected(self.key[0], self.key[1], err)
            for target in {id(t): t for t in reply_to + listeners}.values():
                tell(target, r)
            self._release_and_stop()
            return
        if first:  # accepted without waiting for it (durability async / exit)
            text = f"{safe_text(err)} (nothing of this run was stored: it does not exist; start it again)"
        else:
            text = f"{safe_text(err)} (the run is kept as last committed: fix the store, then call rt.recover())"
        self._report(Failed(self.key[0], self.key[1], None, self.p.super_step, type(err).__name__, text))

    # -- endings -----------------------------------------------------------------

    def _pause(self: WorkflowActor, reason: str, steps: list[str]) -> None:
        p = self.p
        self.journal.emit(self.plan, p, ev.Paused(reason, list(steps), p.super_step, now_ms()))
        interrupts = [Interrupt(i.id, i.step_id, i.payload) for i in p.interrupts]
        self._finish(Paused(self.key[0], self.key[1], p.super_step, reason, interrupts, list(steps)))

    def _on_deadline(self: WorkflowActor, msg: RunDeadline) -> None:
        """The run's deadline passed (its flag is set already): end it Failed."""
        if not self.released and self._cancellable() and self.cancel_flag.fail is not None:
            self._cancel_run(self.cancel_flag.reason, self.cancel_flag.fail)

    def _cancel_run(self: WorkflowActor, reason: str, fail: tuple[str, str] | None = None) -> None:
        """End the run now: in-flight steps abandoned (an ``async def`` step gets
        CancelledError; a plain one sees ``ctx.cancelled``), child runs cancelled,
        the super-step in flight not committed. ``fail``: end Failed with
        (error_type, message) instead of Cancelled (a run deadline)."""
        self.cancelling = True
        self.cancel_flag.set()
        tokens = []
        for unit in self.inflight.units():
            a = self.inflight.pop(unit)
            if a is None:
                continue
            if a.timer is not None:
                self.core.scheduler.cancel(a.timer)
            if a.token is not None:
                tokens.append(a.token)
        abandon_many = getattr(self.core.executor, "abandon_many", None)
        if abandon_many is not None:
            abandon_many(tokens)  # the queued ones first: none starts after the cancel
        else:
            for token in tokens:
                self.core.executor.abandon(token)
        self._cancel_children(reason)
        self.driven.clear()
        self._after_commit = None
        p = self.p
        if fail is not None:
            self._fail(None, *fail)
            return
        self.journal.emit(self.plan, p, ev.RunCancelled(reason, p.super_step, now_ms()))
        self._finish(Cancelled(self.key[0], self.key[1], p.super_step, reason))

    def _cancel_children(self: WorkflowActor, reason: str) -> None:
        """Cancel the child runs of this layer's Subgraph steps and Dag-body Loops, running or paused."""
        p = self.p
        if p.layer >= self.plan.n_layers:
            return
        why = f"parent {self.key[0]}/{self.key[1]}: {reason}"
        for step in self.plan.layers[p.layer]:
            kind = self.wf.dag.steps[step]
            if isinstance(kind, Loop) and isinstance(kind.body, DagBody):
                child, child_run = self._loop_child(step, kind, p.iterations.get(step, 0))
                self.core.relays.pop((child.id, child_run), None)
            elif isinstance(kind, Subgraph):
                child = self.core.workflows.get(kind.workflow_id)
                if child is None:
                    continue
                child_run = drive.child_run_of(self.p, step)
            else:
                continue
            s = self.core.store.summary(child.id, child_run)
            if s is None or s.status in ("done", "cancelled"):
                continue
            flag = self.core.cancel_flags.get((child.id, child_run))
            if flag is not None:  # its step sees ctx.cancelled at once, even mid-step
                flag.reason = why
                flag.set()
            self.core.supervisor.route(child, child_run, Cancel(why))

    def _fail(self: WorkflowActor, step: str | None, etype: str, message: str) -> None:
        p = self.p
        tb = self.tracebacks.get(step) if step is not None else None  # kept by _step_error
        self.tracebacks.clear()
        self.journal.emit(self.plan, p, ev.RunFailed(step, etype, message, p.super_step, now_ms(), tb))
        self._finish(Failed(self.key[0], self.key[1], step, p.super_step, etype, message, tb))

    def _finish(self: WorkflowActor, outcome: Any) -> None:
        """Make everything durable (with a snapshot), then report ``outcome``."""
        if self.durability.finish(self.journal, self.p):
            self._report(outcome)
        else:
            self._after_commit = (REPORT, outcome)

    def _report(self: WorkflowActor, outcome: Any) -> None:
        """Release the run, then tell the outcome: whoever sees it finds the
        run settled (a request sent now gets a fresh actor)."""
        if _trace.enabled:
            _trace.outcome(self, outcome)
        obs = self.core.observer
        if obs is not None:
            obs.run(self.key[0], type(outcome).__name__.lower(), time.perf_counter() - self.t0)
        self._release_and_stop()
        if self.turning and not self.accepted and type(outcome) is Paused:  # a queued turn: its handle
            self.subs.to_listeners(Accepted(*self.key, self.request_seq))  # streams from the turn on
        self.subs.report(outcome, self.p.super_step)
        if self.journal.taps:
            self.journal.tap(StreamEnd(outcome))
            self.journal.taps.clear()

    def _handed_over(self: WorkflowActor, why: str) -> None:
        """Another worker executes the run now (this one was fenced), or this
        runtime is a client that handed it to the workers: whoever waits here
        follows it through the store; nothing more is written from here."""
        if why:
            log.warning("run %s/%s was %s; this worker dropped it", *self.key, why)
        self.journal.outbox = []
        self.journal.ack_token = None
        self._after_commit = None
        reply_to, listeners = self.subs.take()
        follow = self.core.follow
        for target in {id(t): t for t in reply_to + listeners}.values():
            if follow is not None:
                follow.watch(self.key, target)
        j = self.journal
        if j.taps:
            j.tap(StreamLost())  # its streams subscribe again: to the follower
            j.taps.clear()
        self._release_and_stop()

    def _release_and_stop(self: WorkflowActor) -> None:
        if self.released:
            return
        self.released = True
        for a in self.inflight:
            if a.timer is not None:
                self.core.scheduler.cancel(a.timer)
        if self.core.cancel_flags.get(self.key) is self.cancel_flag:
            del self.core.cancel_flags[self.key]
        self.core.supervisor.release(self.key, self.actor_ref)
        self.stop()
        if self.wf.max_concurrent_runs is not None and self.p.status != "queued":
            self.core.admission.leave(self.wf, self.key[1])  # a slot may be free: admit the next
        self._pass_on()

    def _pass_on(self: WorkflowActor) -> None:
        """Requests held while the outcome was committed go to the run's next actor."""
        held, self.deferred = self.deferred, []
        for msg in held:
            try:
                self.core.supervisor.route(self.wf, self.key[1], msg)
            except RuntimeClosed:
                return  # closing: a request's caller hears RuntimeClosed; a queued run waits for a restart

    def _crash(self: WorkflowActor, exc: BaseException) -> None:
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
        if j.taps:
            j.tap(StreamLost())
            j.taps.clear()
        sup.crashed(self.wf, self.key[1], self.actor_ref, exc, self.subs.take())
        self.stop()
        self._pass_on()

    def _event(self: WorkflowActor, kind: str, step: str | None, attempt: int, data: Any = None) -> None:
        if self.subs.watchers:
            ss = self.p.super_step + (0 if kind in ("committed", "outcome") else 1)
            self.subs.event(kind, ss, step, attempt, data)
