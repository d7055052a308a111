"""Determinism check: re-run a recorded run's steps against its journal.

Like Temporal's replayer: before deploying a changed workflow, replay stored
runs through it; the first step whose writes differ from what the journal
recorded is reported. Runs in the caller's thread, reads the store only.

Replaying *executes your step functions again* (with the recorded state,
attempt and resume values): stub side effects in tests, or pass ``steps=``
overrides.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from atomr import events as ev
from atomr.actors.step import StepContext, _InterruptSignal
from atomr.errors import RunNotFound
from atomr.graph import superstep as algo
from atomr.graph.dag import StepKind
from atomr.graph.state import normalize_writes
from atomr.kinds import Human, Loop, Map
from atomr.store.base import Store
from atomr.workflow import Workflow

__all__ = ["Mismatch", "ReplayResult", "replay"]


@dataclass(frozen=True)
class Mismatch:
    """The first step that did not reproduce its recorded writes."""

    step: str
    super_step: int
    seq: int
    expected: Any
    actual: Any
    detail: str

    def __str__(self) -> str:
        return (f"step {self.step!r} of super-step {self.super_step} (event {self.seq}) {self.detail}: "
                f"recorded {self.expected!r}, replay gave {self.actual!r}")


@dataclass
class ReplayResult:
    workflow_id: str
    run_id: str
    checked: int = 0
    mismatch: Mismatch | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    def raise_for_mismatch(self) -> None:
        if self.mismatch is not None:
            raise AssertionError(f"replay of {self.workflow_id}/{self.run_id} diverged: {self.mismatch}")


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    if inspect.isawaitable(out):
        async def _wait() -> Any:
            return await out
        out = asyncio.run(_wait())
    return out


def replay(workflow: Workflow, store: Store, run_id: str,
           steps: Mapping[str, Callable[..., Any]] | None = None) -> ReplayResult:
    """Re-execute every recorded step completion of ``run_id`` with ``workflow``.

    Checks plain steps (StepCompleted), Map elements (ItemCompleted) and Loop
    iterations (LoopIterated). Returns a :class:`ReplayResult`; ``.ok`` is False
    and ``.mismatch`` names the first divergence when the code no longer fits
    the history.
    """
    plan = workflow.plan
    if store.summary(workflow.id, run_id) is None:
        raise RunNotFound(workflow.id, run_id)
    overrides = dict(steps or {})
    result = ReplayResult(workflow.id, run_id)
    p = algo.RunProgress(workflow.id, run_id)
    summary = store.summary(workflow.id, run_id)
    start = 1
    if summary is not None and summary.first_seq > 1:
        snap = store.latest_snapshot(workflow.id, run_id, max_seq=summary.first_seq - 1)
        if snap is not None:
            p = algo.from_snapshot(workflow.id, run_id, snap[1])
            start = snap[0] + 1
    for seq, e in store.journal(workflow.id, run_id, start):
        t = type(e)
        if t in (ev.StepCompleted, ev.ItemCompleted, ev.LoopIterated):
            mismatch = _check(workflow, p, e, seq, overrides, result)
            if mismatch is not None:
                result.mismatch = mismatch
                return result
        algo.apply_event(plan, p, e, seq)
    return result


def _check(wf: Workflow, p: algo.RunProgress, e: Any, seq: int,
           overrides: Mapping[str, Callable[..., Any]], result: ReplayResult) -> Mismatch | None:
    step = e.step
    kind = wf.dag.steps.get(step)
    if kind is None:
        return Mismatch(step, e.super_step, seq, "a step", None, "is no longer in the DAG")
    ss = e.super_step
    t = type(e)
    if t is ev.StepCompleted:
        if isinstance(kind, StepKind) and not isinstance(kind, Human):
            return None  # Map/Loop/Subgraph completions are checked through their parts
        unit, fn, args_of = step, overrides.get(step, kind), "state"
    elif t is ev.ItemCompleted:
        if not isinstance(kind, Map):
            return Mismatch(step, ss, seq, "a Map step", type(kind).__name__, "changed kind")
        unit, fn, args_of = f"{step}[{e.index}]", overrides.get(step, kind.fn), "item"
    else:
        if not isinstance(kind, Loop):
            return Mismatch(step, ss, seq, "a Loop step", type(kind).__name__, "changed kind")
        unit, fn, args_of = f"{step}#{e.iteration - 1}", overrides.get(step, kind.body), "state"
    ctx = StepContext(wf.id, p.run_id, step, ss, p.attempts.get(unit, 1),
                      algo.idempotency_key(wf.id, p.run_id, ss, unit), algo.resume_values(p, unit),
                      e.index if t is ev.ItemCompleted else None)
    try:
        if args_of == "item":
            items = p.values.get(wf.dag.steps[step].items) or []
            out = _call(fn, items[e.index], ctx)
        else:
            out = _call(fn, wf.view(p.values), ctx)
    except _InterruptSignal as sig:
        return Mismatch(step, ss, seq, "completion", f"interrupt #{sig.index}", "now interrupts")
    except Exception as exc:  # noqa: BLE001 - a divergence, reported
        return Mismatch(step, ss, seq, "completion", f"{type(exc).__name__}: {exc}", "now raises")
    result.checked += 1
    if t is ev.ItemCompleted:
        expected, actual = e.result, out
    else:
        expected = [tuple(w) for w in e.writes]
        try:
            actual = normalize_writes(step, out)
        except Exception as exc:  # noqa: BLE001
            return Mismatch(step, ss, seq, expected, out, f"returns an invalid result ({exc})")
    if expected != actual:
        return Mismatch(step, ss, seq, expected, actual, "wrote something else")
    return None
