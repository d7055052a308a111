"""A workflow's drawing (layers, edges, kinds) and each step's status in one run.

The web UI draws the DAG as rows of boxes, one row per layer (a super-step),
and colours each box by the step's status in the run:

``done``, ``running``, ``failed``, ``waiting`` (at an interrupt or a
breakpoint), ``cancelled``, ``skipped`` (a branch not taken, or a run that
ended without it) and ``pending`` (not reached yet).

The statuses come from the run's journal folded into step statuses (the last
event of each step wins), then corrected by the run's state: its pending
interrupts, the step it failed at, the steps it waits before. The fold is
incremental (:class:`Folds`): the server keeps each run's fold and its journal
cursor, and a refresh of the run page reads only the entries committed since.
"""

from __future__ import annotations

import asyncio
import collections
import re
import threading
from typing import Any

from atomr import events as ev
from atomr.errors import AtomrError
from atomr.graph.dag import StepKind
from atomr.server.encode import to_json

__all__ = ["Folds", "fold_event", "graph_of", "step_statuses"]

_UNIT = re.compile(r"^(.*?)(\[\d+\]|#\d+)$")


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


class _Fold:
    """One run's step statuses as of journal seq ``cursor`` (``lock``: one fold at a time)."""

    __slots__ = ("created_ms", "cursor", "lock", "seen")

    def __init__(self, created_ms: int) -> None:
        self.created_ms, self.cursor = created_ms, 0
        self.seen: dict[str, str] = {}
        self.lock = threading.Lock()


def fold_event(seen: dict[str, str], e: Any) -> None:
    """Fold one journal event into ``seen`` (step -> status; the last event of a step wins)."""
    t = type(e)
    if t is ev.StepStarted:
        step, status = e.step, "running"
    elif t is ev.StepCompleted:
        step, status = e.step, "done"
    elif t is ev.ItemCompleted:
        step, status = f"{e.step}[{e.index}]", "running"
    elif t is ev.LoopIterated:
        step, status = f"{e.step}#{e.iteration - 1}", "running"
    elif t is ev.StepFailed:
        step, status = e.step, "failed" if e.final else "running"
    elif t is ev.Interrupted and e.index >= 0:
        step, status = e.step, "waiting"
    elif t is ev.StepCancelled:
        step, status = e.step, "cancelled"
    else:
        return
    if not step:
        return
    unit = _UNIT.match(step)
    if unit:  # a Map element or a Loop iteration: its step is running
        if seen.get(unit.group(1)) not in ("done", "failed"):
            seen[unit.group(1)] = "running"
    else:
        seen[step] = status


class Folds:
    """The step statuses of the runs a server was asked about, each folded
    incrementally: a request reads only the journal entries after the last one
    it folded. At most ``max_runs`` runs are kept (least recently asked go).

    Threads: :meth:`fold` runs in a worker thread (store reads), any number at once.
    """

    def __init__(self, max_runs: int = 4096) -> None:
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._runs: collections.OrderedDict[tuple[str, str], _Fold] = collections.OrderedDict()

    def cursor(self, wf_id: str, run_id: str) -> int | None:
        """The journal seq folded so far for the run (None: not folded)."""
        with self._lock:
            f = self._runs.get((wf_id, run_id))
            return None if f is None else f.cursor

    def fold(self, store: Any, wf_id: str, run_id: str) -> dict[str, str]:
        """Each step's status from the run's journal, as of its last committed entry."""
        summary = store.summary(wf_id, run_id)
        if summary is None:
            return {}
        key = (wf_id, run_id)
        with self._lock:
            f = self._runs.get(key)
            if f is None or f.created_ms != summary.created_ms or f.cursor > summary.last_seq:
                f = self._runs[key] = _Fold(summary.created_ms)  # new, or a run deleted and made again
            self._runs.move_to_end(key)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        with f.lock:
            if f.cursor < summary.last_seq:
                for seq, e in store.journal(wf_id, run_id, f.cursor + 1, summary.last_seq):
                    fold_event(f.seen, e)
                    f.cursor = seq
                f.cursor = max(f.cursor, summary.last_seq)
            return dict(f.seen)


def _fork_point(meta: Any) -> int:
    origin = str((meta or {}).get("forked_from") or "")
    _, _, at = origin.rpartition("@")
    return int(at) if at.isdigit() else -1


async def step_statuses(rt: Any, wf_id: str, run_id: str, folds: Folds | None = None) -> dict[str, Any]:
    """``{"status", "super_step", "steps": {step: status}}`` for one run; ``folds``
    keeps the journal folded so far between calls (None: fold it all now)."""
    wf = rt.workflow(wf_id)
    view = await rt.aget_state(wf_id, run_id)  # then the journal: it holds at least what the view saw
    try:
        seen = await asyncio.to_thread((folds or Folds(1)).fold, rt.store, wf.id, run_id)
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
