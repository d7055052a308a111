"""A run's ids and what they key: interrupt ids, idempotency keys, sleeps.

Pure: no threads, no I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atomr.graph.progress import RunProgress

__all__ = ["SLEEP_KEY", "sleep_until", "pending_sleeps", "interrupt_id", "looks_like_interrupt_id",
           "idempotency_key", "resume_values"]


#: the payload key of an interrupt that the clock answers (``ctx.sleep``)
SLEEP_KEY = "atomr.sleep_until"


def sleep_until(payload: Any) -> float | None:
    """The wake time (epoch seconds) of a sleep's interrupt payload, else None."""
    if isinstance(payload, dict) and len(payload) == 1:
        t = payload.get(SLEEP_KEY)
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return float(t)
    return None


def pending_sleeps(p: RunProgress) -> dict[str, float]:
    """Unanswered sleeps of a run: interrupt id -> wake time (epoch seconds)."""
    out = {}
    for i in p.interrupts:
        t = sleep_until(i.payload)
        if t is not None:
            out[i.id] = t
    return out

_ID_RE = re.compile(r"^.+:\d+:\d+$")


def interrupt_id(step: str, super_step: int, index: int) -> str:
    """Deterministic, readable: the same until answered, across crashes and resumes."""
    return f"{step}:{super_step}:{index}"


def looks_like_interrupt_id(key: object) -> bool:
    return isinstance(key, str) and bool(_ID_RE.match(key))


def idempotency_key(workflow_id: str, run_id: str, super_step: int, step: str) -> str:
    """Stable for one step of one super-step of one run, across retries/crashes/resumes."""
    return f"{workflow_id}/{run_id}/{super_step}/{step}"


def resume_values(progress: RunProgress, step: str) -> list[Any]:
    """Answers to ``step``'s interrupts in this super-step, in call order."""
    ss = progress.next_super_step
    out: list[Any] = []
    answers = progress.answers
    if not answers:
        return out
    i = 0
    while True:
        iid = interrupt_id(step, ss, i)
        if iid not in answers:
            return out
        out.append(answers[iid])
        i += 1
