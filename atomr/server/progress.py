"""A workflow's drawing (layers, edges, kinds) and each step's status in one run.

The web UI draws the DAG as rows of boxes, one row per layer (a super-step),
and colours each box by the step's status in the run:

``done``, ``running``, ``failed``, ``waiting`` (at an interrupt or a
breakpoint), ``cancelled``, ``skipped`` (a branch not taken, or a run that
ended without it) and ``pending`` (not reached yet).

The statuses come from the run's journal replayed as a stream of step events
(the last event of each step wins), then corrected by the run's state: its
pending interrupts, the step it failed at, the steps it waits before.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from atomr.errors import AtomrError
from atomr.graph.dag import StepKind
from atomr.server.encode import to_json

__all__ = ["graph_of", "step_statuses"]

_EVENT_STATUS = {"started": "running", "retrying": "running", "completed": "done", "failed": "failed",
                 "interrupted": "waiting", "cancelled": "cancelled"}
_UNIT = re.compile(r"^(.*?)(\[\d+\]|#\d+)$")
#: how long a request may spend replaying a busy run's events (seconds)
REPLAY_BUDGET_S = 1.0


def graph_of(wf: Any) -> dict[str, Any]:
    """``{"layers", "edges": [{"from", "to", "label"}], "kinds", "before", "after"}``."""
    dag = wf.dag
    edges = []
    for a in dag.topo_sort():
        spec = dag.branches.get(a)
        for b in dag.edges[a]:
            labels = [lbl for lbl, t in spec.targets.items() if t == b] if spec else []
            edges.append({"from": a, "to": b, "label": " / ".join(map(str, labels)) or None})
    kinds = {s: (type(fn).__name__ if isinstance(fn, StepKind) else "step") for s, fn in dag.steps.items()}
    return {"layers": [list(layer) for layer in dag.layers()], "edges": edges, "kinds": kinds,
            "before": sorted(getattr(wf, "interrupt_before", ())), "after": sorted(getattr(wf, "interrupt_after", ())),
            "joins": to_json(dict(dag.join_policy))}


async def _replay(rt: Any, wf_id: str, run_id: str) -> dict[str, str]:
    """Each step's last event kind, from the run's journal (and live events for at
    most :data:`REPLAY_BUDGET_S` while it runs)."""
    seen: dict[str, str] = {}
    h = await asyncio.to_thread(rt.handle, wf_id, run_id)

    async def read() -> None:
        async for item in h.astream("events", after=0, timeout=REPLAY_BUDGET_S):
            if item.mode != "events" or not item.data.step:
                continue
            kind, step = item.data.kind, item.data.step
            unit = _UNIT.match(step)
            if unit:  # a Map element or a Loop iteration: its step is running
                if seen.get(unit.group(1)) not in ("done", "failed"):
                    seen[unit.group(1)] = "running"
                continue
            if kind in _EVENT_STATUS:
                seen[step] = _EVENT_STATUS[kind]

    try:
        await asyncio.wait_for(read(), REPLAY_BUDGET_S)
    except (asyncio.TimeoutError, AtomrError):
        pass
    return seen


def _fork_point(meta: Any) -> int:
    origin = str((meta or {}).get("forked_from") or "")
    _, _, at = origin.rpartition("@")
    return int(at) if at.isdigit() else -1


async def step_statuses(rt: Any, wf_id: str, run_id: str) -> dict[str, Any]:
    """``{"status", "super_step", "steps": {step: status}}`` for one run."""
    wf = rt.workflow(wf_id)
    view = await rt.aget_state(wf_id, run_id)
    try:
        seen = await _replay(rt, wf_id, run_id)
    except AtomrError:
        seen = {}
    plan_layer = {s: i for i, layer in enumerate(wf.dag.layers()) for s in layer}
    steps: dict[str, str] = {s: seen.get(s, "") for s in wf.dag.topo_sort()}
    settled = view.status != "running"
    nexts = set(view.next)
    for s, st in steps.items():
        if st == "running" and settled:
            steps[s] = "waiting" if view.status == "paused" and s in nexts else "pending"
    for i in view.interrupts:
        if i.step_id in steps:
            steps[i.step_id] = "waiting"
    if view.status == "paused" and view.pause_reason in ("before", "fork"):
        for s in nexts & steps.keys():
            if steps[s] not in ("done",):
                steps[s] = "waiting"
    if view.status == "failed" and view.error and view.error[0] in steps:
        steps[view.error[0]] = "failed"
    fork_at = _fork_point(view.meta)
    reached = max((plan_layer[s] for s, st in steps.items() if st in ("done", "failed", "waiting")),
                  default=-1)
    for s, st in steps.items():
        if st:
            continue
        if plan_layer[s] < fork_at:
            steps[s] = "done"  # before the fork point: done in the run it was forked from
        elif view.status in ("done", "cancelled") or plan_layer[s] < reached:
            steps[s] = "skipped"
        else:
            steps[s] = "pending"
    return {"workflow_id": wf.id, "run_id": run_id, "status": view.status, "super_step": view.super_step,
            "steps": steps}
