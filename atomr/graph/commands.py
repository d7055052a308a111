"""How a :class:`~atomr.Command` changes a paused or failed run: its events.

Pure: no threads, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atomr import events as ev
from atomr.errors import (
    AmbiguousResumeError,
    InterruptError,
    RunNotPaused,
    UnknownInterruptError,
    UnknownStepError,
)
from atomr.graph.plan import Plan
from atomr.graph.progress import RunProgress, looks_like_interrupt_id
from atomr.graph.state import apply_writes

__all__ = ["command_events"]


def command_events(plan: Plan, p: RunProgress, command: Any, now_ms: int = 0) -> list[Any]:
    """Validate ``command`` against ``p``; return the events that apply it.

    Raises without side effects: RunNotPaused, UnknownStepError,
    UnknownInterruptError, AmbiguousResumeError, InterruptError,
    UnknownChannelError / ReducerError for a bad update.
    """
    if p.status == "cancelled":
        raise RunNotPaused(p.workflow_id, p.run_id, "cancelled")
    if p.status not in ("paused", "failed", "sleeping", "queued"):
        status = "unknown" if p.status == "new" else p.status
        raise RunNotPaused(p.workflow_id, p.run_id, status)
    out: list[Any] = []
    update = command.update
    if update:
        edits = list(update.items()) if isinstance(update, Mapping) else list(update)
        apply_writes(plan.schema, p.values, edits)  # validate; raises on bad channel/reducer
        out.append(ev.StateUpdated(edits, "command", now_ms))
    goto = command.goto
    if goto is not None and goto not in plan.layer_of:
        raise UnknownStepError(goto, plan.layer_of, where="Command(goto=...)")
    answers: dict[str, Any] = {}
    if command.resume is not None:
        pending = {i.id: i for i in p.interrupts}
        r = command.resume
        if isinstance(r, Mapping) and r and all(looks_like_interrupt_id(k) for k in r):
            unknown = [k for k in r if k not in pending]
            if unknown:
                raise UnknownInterruptError(unknown, pending)
            answers = dict(r)
        elif not pending:
            raise InterruptError(
                f"run {p.workflow_id}/{p.run_id} has no pending interrupt to answer "
                f"(it is {p.status}{' before ' + ', '.join(p.pause_steps) if p.pause_reason == 'before' else ''}); "
                "resume it with Command() or Command(update=...)"
            )
        elif len(pending) > 1:
            raise AmbiguousResumeError(pending)
        else:
            answers = {next(iter(pending)): r}
        for iid, value in answers.items():
            step = pending[iid].step_id
            kind = plan.dag.steps.get(step)
            check = getattr(kind, "check_answer", None)
            if check is not None:
                check(step, value)
    out.append(ev.Resumed(answers, goto, now_ms))
    return out

