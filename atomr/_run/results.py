"""A run actor's step results: completions, failed attempts, retries, timeouts.

Mixin of :class:`~atomr._run.actor.WorkflowActor`; runs in its turn.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from atomr import _trace
from atomr import events as ev
from atomr._run.attempts import Attempt
from atomr.graph import superstep as algo
from atomr.kinds import Human
from atomr.messages import INTERRUPT, OK, RetryStep, StepDone, StepTimedOut
from atomr.types import Interrupt

if TYPE_CHECKING:
    from atomr._run.actor import WorkflowActor

__all__ = ["StepResults"]


class StepResults:
    # -- step results ----------------------------------------------------------

    def _on_step_done(self: WorkflowActor, d: StepDone) -> None:
        if not self._record(d):
            return
        if d.kind == OK and d.part is None and self.inflight and not self.driven \
                and self.p.status == "running" and self.journal.ack_token is None:
            # a sibling finished while others still run: nothing new can start
            self.durability.while_waiting(self.journal, self.p, self._schedule_tick)
            return
        self._advance()

    def _record(self: WorkflowActor, d: StepDone) -> bool:
        """Journal a step's result; False when it is stale."""
        if _trace.enabled:
            _trace.step_done(self, d)
        unit = d.part or d.step
        a = self.inflight.get(unit)
        if a is None or a.token != d.token or self.cancel_flag.is_set():
            return False  # a late answer (timed out, cancelled), or the run is being cancelled
        self.inflight.pop(unit)
        obs = self.core.observer
        if obs is not None and a.sent:
            outcome = "completed" if d.kind == OK else "interrupted" if d.kind == INTERRUPT else "failed"
            obs.step(self.key[0], d.step, outcome, time.perf_counter() - a.sent)
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
            self._step_error(a, step, d.error_type, d.message, d.retryable, tb=d.traceback)
        return True

    def _step_error(self: WorkflowActor, a: Attempt, unit: str, etype: str, message: str, retryable: bool,
                    part: bool = False, tb: str | None = None) -> bool:
        """Journal a failed attempt; schedule a retry if the policy allows.
        Returns True when a retry was scheduled (the unit stays in flight)."""
        policy = self.wf.step_retry[a.step]
        final = not (retryable and a.attempt < policy.max_attempts)
        # a part's failure is final for its step only through the driver
        self.journal.emit(self.plan, self.p, ev.StepFailed(unit, self.p.next_super_step, etype, message,
                                                           a.attempt, final and not part))
        if final and tb and (not part or getattr(self.driven.get(a.step), "failed", 0) is None):
            self.tracebacks[a.step] = tb  # the run's Failed carries it (a Map's: its first failed element's)
        if not final:
            timer = self.core.scheduler.tell_later(
                policy.delay(a.attempt), self.actor_ref, RetryStep(unit, a.attempt + 1))
            self.inflight.add(unit, Attempt(None, a.attempt, timer, a.step, a.index))
        self._event("failed" if final else "retrying", unit, a.attempt, (etype, message))
        return not final

    def _on_retry(self: WorkflowActor, msg: RetryStep) -> None:
        a = self.inflight.get(msg.step)
        if a is None or a.token is not None:
            return
        self.inflight.pop(msg.step)
        if msg.step != a.step:
            self._part_again(a)
        self._advance()

    def _on_timeout(self: WorkflowActor, msg: StepTimedOut) -> None:
        a = self.inflight.get(msg.step)
        if a is None or a.token != msg.token:
            return
        self.inflight.pop(msg.step)
        self.core.executor.abandon(msg.token)
        if self.core.observer is not None and a.sent:
            self.core.observer.step(self.key[0], a.step, "timed_out", time.perf_counter() - a.sent)
        text = (f"step {msg.step!r} did not finish within {msg.timeout_s:g}s (attempt {a.attempt}); "
                "raise its timeout_s (or the workflow's step_timeout_s) or make the step faster")
        if msg.step != a.step:
            if not self._step_error(a, msg.step, "StepTimeout", text, True, part=True):
                self._part_failed(a, ("StepTimeout", text))
        else:
            self._step_error(a, a.step, "StepTimeout", text, True)
        self._advance()
