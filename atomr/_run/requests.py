"""A run actor's requests: Run, Resume, Recover, Subscribe — accepted or refused.

Mixin of :class:`~atomr._run.actor.WorkflowActor`; runs in its turn. A
refused request writes nothing; an accepted one is durable (per the
durability strategy) before ``Accepted`` is told and the run advances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atomr import events as ev
from atomr._run.attempts import Deadline
from atomr._run.endings import GO, REPORT, RUN_DEADLINE
from atomr._run.journal import now_ms
from atomr._run.subscribers import targets_of, tell
from atomr.actors.admission import QUEUE_KEY
from atomr.actors.step import safe_text
from atomr.errors import (AtomrError, RunExists, RunNotContinuable, RunNotFound, RunNotPaused, RunOver,
                          VersionMismatch)
from atomr.graph import superstep as algo
from atomr.graph.drive import outcome_of
from atomr.graph.state import apply_writes, check_channels
from atomr.messages import Accepted, Admit, Cancel, Custom, Recover, Rejected, Resume, Run, Subscribe, Subscribed
from atomr.store import format as fmt
from atomr.types import Command, Paused

if TYPE_CHECKING:
    from atomr._run.actor import WorkflowActor

__all__ = ["Requests"]



def _bad_request(exc: Exception) -> AtomrError:
    if isinstance(exc, AtomrError):
        return exc
    return AtomrError(f"invalid request: {type(exc).__name__}: {safe_text(exc)}; nothing was written")


class Requests:
    def _on_run(self: WorkflowActor, msg: Run) -> None:
        if self._held_for_report(msg):
            return
        if self.released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        if self.p.status != "new":
            if not msg.turn:
                self._refuse_start(msg, RunExists(*self.key))
            elif self.p.status == "done" and self._idle() and not self.driving:
                self._on_turn(msg)
            else:  # a run that reports "done" before it is durable is still running
                status = self.p.status
                self._refuse_start(msg, RunNotContinuable(*self.key, "running" if status == "done" else status))
            return
        if msg.found:  # a continue of a run deleted (purged) since the caller found it done
            self._refuse_start(msg, RunNotContinuable(*self.key, "deleted"))
            return
        try:
            data = dict(msg.input or {})
            check_channels(self.plan.schema, data.items())
            apply_writes(self.plan.schema, self.plan.schema.initial_values(), list(data.items()))
            meta = dict(msg.meta or {})
            record = fmt.encode_event(ev.RunStarted(data, meta, now_ms()))
            # fold what the journal holds, not the caller's objects
            started = fmt.decode_event(record)
        except Exception as exc:  # noqa: BLE001 - a refusal, nothing written
            self._refuse_start(msg, _bad_request(exc))
            return
        self.subs.add(msg)
        self.request_seq = 0
        self.journal.meta_new = meta
        self.journal.group = msg.group
        self.journal.emit(self.plan, self.p, started, record)
        # max_concurrent_runs: wait in line (a child run counts but never waits)
        if not self.core.admission.enter(self.wf, self.key[1], child="parent" in meta, meta=meta):
            self.journal.emit(self.plan, self.p, ev.Paused("queued", [], 0, now_ms()))
            self._finish(Paused(self.key[0], self.key[1], 0, "queued", [], []))
            return
        self._accept()

    def _on_turn(self: WorkflowActor, msg: Run) -> None:
        """A done run takes another turn: journal TurnStarted (the input merged
        through the reducers, the graph from its roots), then go on as a start."""
        if not self._version_ok(msg, self._refuse_start):  # a start_many's other runs are refused too
            return
        p = self.p
        try:
            data = dict(msg.input or {})
            check_channels(self.plan.schema, data.items())
            apply_writes(self.plan.schema, p.values, list(data.items()))  # a reducer may refuse it
            record = fmt.encode_event(ev.TurnStarted(p.turn + 1, data, now_ms()))
            turn = fmt.decode_event(record)  # fold what the journal holds, not the caller's objects
        except Exception as exc:  # noqa: BLE001 - a refusal, nothing written
            self._refuse_start(msg, _bad_request(exc))
            return
        self.subs.add(msg)
        self.journal.group = msg.group
        queued = (msg.meta or {}).get(QUEUE_KEY)
        if queued is not None:  # the turn waits in line by its own priority and time, not the first start's
            self.journal.meta_new = {**(self.journal.meta_new or {}), QUEUE_KEY: queued}
        self.turning = True
        self.request_seq = p.seq  # the handle streams from its own turn
        self.journal.emit(self.plan, p, turn, record)
        # max_concurrent_runs: wait in line
        if not self.core.admission.enter(self.wf, self.key[1], meta={**p.meta, **(self.journal.meta_new or {})}):
            self.journal.emit(self.plan, p, ev.Paused("queued", [], p.super_step, now_ms()))
            self._finish(Paused(self.key[0], self.key[1], p.super_step, "queued", [], []))
            return
        # on a shared store the turn is durable before it runs, whatever the durability: of two
        # continues of one run from two processes, the one whose write loses is refused, not run
        self._accept(claim=self.core.follow is not None)

    def _refuse_start(self: WorkflowActor, msg: Run, exc: BaseException) -> None:
        """Refuse a start; the other runs of its start_many are refused with it (none
        of them is written), unless it was only found started (``if_exists="attach"``)."""
        if msg.group is not None:
            if isinstance(exc, RunExists) and getattr(msg.reply_to, "attach", False):
                msg.group.withdraw(self.core, self.key[1])
            else:
                exc = msg.group.refuse(self.key[1], exc)
        self._reject(msg, exc)

    def _held_for_report(self: WorkflowActor, msg: Any) -> bool:
        """The run settled (paused, queued, ended) and the store may show it, but this actor
        has not heard the commit: the request waits, and a fresh actor takes it after the
        report (endings._pass_on), so the finishing actor never carries it out and then stops."""
        after = self._after_commit
        if after is None or after[0] != REPORT:
            return False
        self.deferred.append(msg)
        return True

    def _on_admit(self: WorkflowActor, msg: Admit) -> None:
        if self._held_for_report(msg):
            return
        if self.released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p = self.p
        if p.status != "queued":  # cancelled meanwhile, or admitted twice: give the slot back
            self.core.admission.leave(self.wf, self.key[1])
            if self._idle() and not self.driving:
                self._release_and_stop()
            return
        self.request_seq = p.seq
        for e in algo.command_events(self.plan, p, Command(), now_ms()):
            self.journal.emit(self.plan, p, e)
        self._accept()

    def _on_resume(self: WorkflowActor, msg: Resume) -> None:
        if self._held_for_report(msg):
            return
        if self._elsewhere(msg):
            return
        p = self.p
        if self.inflight or self.driven or p.status in ("running", "queued"):
            self._reject(msg, RunNotPaused(*self.key, "running" if p.status != "queued" else "queued"))
            return
        if not self._version_ok(msg):
            return
        try:
            records = [fmt.encode_event(e) for e in algo.command_events(self.plan, p, msg.command, now_ms())]
            events = [fmt.decode_event(r) for r in records]  # copies: not the caller's objects
        except Exception as exc:  # noqa: BLE001 - a refusal, nothing written
            self._reject(msg, _bad_request(exc))
            return
        self.subs.add(msg)
        self.request_seq = p.seq
        for e, r in zip(events, records):
            self.journal.emit(self.plan, p, e, r)
        if not self.core.admission.enter(self.wf, self.key[1], child="parent" in p.meta, meta=p.meta):  # as a start
            self.journal.emit(self.plan, p, ev.Paused("queued", [], p.super_step, now_ms()))
            self._finish(Paused(self.key[0], self.key[1], p.super_step, "queued", [], []))
            return
        self._accept()

    def _on_recover(self: WorkflowActor, msg: Recover) -> None:
        if self._elsewhere(msg):
            return
        if not self.driving and self._idle() and not self.journal.outbox and self.core.follow is not None:
            self._reload()  # held only to be watched: another worker may have written since it loaded
        p = self.p
        if not self._version_ok(msg):
            return
        if p.status != "running":
            if self.journal.ack_token is not None and self._after_commit is not None:
                # its outcome waits for its last commit: msg's targets hear it once it is durable
                for target in targets_of(msg):
                    tell(target, Accepted(*self.key, p.seq))
                    self.subs.reply_to.append(target)
                return
            # it settled meanwhile (e.g. another recover() got there first)
            for target in targets_of(msg):
                tell(target, Accepted(*self.key, p.seq))
                tell(target, outcome_of(p))
            if self._idle():
                self._release_and_stop()
            return
        self.subs.add(msg)
        self.accepted = True
        self.request_seq = p.seq
        if not self.driving:
            self._mark_driving()
            self.subs.to_listeners(Accepted(*self.key, p.seq))
            self._advance()
        else:
            self.subs.to_listeners(Accepted(*self.key, p.seq))

    def _on_cancel(self: WorkflowActor, msg: Cancel) -> None:
        if self._elsewhere(msg):
            return
        status = self.p.status
        if status == "done":
            self._reject(msg, RunOver(f"run {self.key[0]}/{self.key[1]} is done: there is nothing to "
                                      "cancel; fork it (rt.fork) to run it again"))
            return
        if status == "cancelled":  # cancelling twice is cancelling once
            if not self.released and self._after_commit is not None:
                self.subs.add(msg)  # the cancel is not durable yet: answer once it is
                return
            for target in targets_of(msg):
                tell(target, outcome_of(self.p))
            if self._idle():
                self._release_and_stop()
            return
        self.subs.add(msg)
        self._cancel_run(msg.reason or self.cancel_flag.reason, self.cancel_flag.fail)

    def _version_ok(self: WorkflowActor, msg: Any, refuse: Any = None) -> bool:
        """A run carries on only under the version that started it, or one
        compatible with it; else the request is refused (VersionMismatch), by
        ``refuse(msg, error)`` when given."""
        theirs = self.p.meta.get("workflow_version")
        if self.wf.runs_version(theirs):
            return True
        (refuse or self._reject)(msg, VersionMismatch(self.key[0], self.key[1], theirs, self.wf.version))
        return False

    def _elsewhere(self: WorkflowActor, msg: Any) -> bool:
        """True when this actor does not answer ``msg``: it was released (the
        message goes on to the run's next actor) or the run does not exist."""
        if self.released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return True
        if self.p.status == "new":
            self._reject(msg, RunNotFound(*self.key))
            return True
        return False

    def _cancellable(self: WorkflowActor) -> bool:
        return not self.released and not self.cancelling \
            and self.p.status in ("running", "paused", "failed", "sleeping", "queued")

    def _on_subscribe(self: WorkflowActor, msg: Subscribe) -> None:
        if self.released:
            self.core.supervisor.route(self.wf, self.key[1], msg)
            return
        p, j = self.p, self.journal
        msg.sink.tell(Subscribed(p.seq, p.status, j.first_seq, list(j.outbox)))
        if p.status in ("running", "sleeping", "queued") or not self._idle():
            if getattr(msg.sink, "closed", False):
                return  # its stream stopped while it was opening
            j.taps[:] = [s for s in j.taps if not getattr(s, "closed", False)]  # those that stopped since
            j.taps.append(msg.sink)  # a sleeping run's watchers wait here for its wake
        elif not self.driving:
            self._release_and_stop()  # settled (or unknown): nothing will follow

    def _emit_custom(self: WorkflowActor, step: str, payload: Any) -> None:
        """``ctx.emit(payload)`` (the step's thread): straight to the live streams (on
        Postgres, also to those of other processes: a NOTIFY, atomr.store.sql._pgnotify)."""
        taps = self.journal.taps
        if taps:
            c = Custom(step, payload, self.p.seq)
            for sink in list(taps):
                tell(sink, c)
        emitter = getattr(self.core.store, "emitter", None)
        if emitter is not None:
            emitter.emit(self.key[0], self.key[1], step, payload, self.p.seq)
        relay = self.core.relays.get(self.key)
        if relay is not None:  # a Loop's Dag body: its parent streams it too
            relay(step, payload)

    def _reject(self: WorkflowActor, msg: Any, exc: BaseException) -> None:
        r = Rejected(self.key[0], self.key[1], exc)
        for target in targets_of(msg):
            tell(target, r)
        # an actor not driving its run must not stay live: rt.recover() skips live ones
        if self._idle() and (self.p.status != "running" or not self.driving):
            self._release_and_stop()

    def _idle(self: WorkflowActor) -> bool:
        return not self.inflight and not self.driven and self.journal.ack_token is None

    def _accept(self: WorkflowActor, claim: bool = False) -> None:
        """``claim``: the request's events are durable before it goes on (any
        durability); so are a start_many's, with the other runs of the call."""
        if claim or self.journal.group is not None:
            self._after_commit = None if self.journal.send(self.p, wait=True) else (GO,)
            if self._after_commit is None:
                self._accepted_go()
            return
        if self.durability.on_accept(self.journal, self.p):
            self._accepted_go()
        else:
            self._after_commit = (GO,)

    def _accepted_go(self: WorkflowActor) -> None:
        self.accepted = True
        if not self.core.execute:  # a client: the request is durable, a worker executes the run
            self.subs.to_listeners(Accepted(*self.key, self.request_seq))
            self._handed_over("")
            return
        self._mark_driving()  # before Accepted: a racing resume must see it
        self.subs.to_listeners(Accepted(*self.key, self.request_seq))
        self._advance()

    def _mark_driving(self: WorkflowActor) -> None:
        if not self.driving:
            self.driving = True
            self.core.supervisor.mark_driving(self.key)
            limit = self.wf.run_timeout_s
            if limit is not None:  # the run's deadline, in executing time
                left = limit - algo.executed_ms(self.p, now_ms()) / 1000
                text = (f"run {self.key[0]}/{self.key[1]} executed beyond run_timeout_s={limit:g}; raise "
                        "run_timeout_s (a resume counts from the time already spent)")
                self.core.scheduler.tell_later(max(0.0, left), Deadline(self.cancel_flag, self.actor_ref, text),
                                               RUN_DEADLINE)
