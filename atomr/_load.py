"""Reading runs back: rehydration and history, by folding the journal.

Runs in the caller's thread; reads only (LMDB read transactions are fine in any
thread). The same pure fold as the live run actor is used, so the result is
the live state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from atomr import events as ev
from atomr.graph.superstep import Plan, RunProgress, apply_event, from_snapshot, replay
from atomr.store.base import Store
from atomr.types import Checkpoint

__all__ = ["load_progress", "load_progress_at", "iter_checkpoints", "fork_point"]


def load_progress(store: Store, plan: Plan, workflow_id: str, run_id: str) -> RunProgress | None:
    """Latest snapshot + replay of the later events; None for an unknown run."""
    summary = store.summary(workflow_id, run_id)
    if summary is None:
        return None
    snap = store.latest_snapshot(workflow_id, run_id)
    start = None
    from_seq = summary.first_seq
    if snap is not None:
        start = from_snapshot(workflow_id, run_id, snap[1])
        from_seq = snap[0] + 1
    return replay(plan, workflow_id, run_id, store.journal(workflow_id, run_id, from_seq), start)


def load_progress_at(store: Store, plan: Plan, workflow_id: str, run_id: str, seq: int) -> RunProgress:
    """The run as it was right after event ``seq``."""
    snap = store.latest_snapshot(workflow_id, run_id, max_seq=seq)
    start = None
    from_seq = 1
    if snap is not None:
        start = from_snapshot(workflow_id, run_id, snap[1])
        from_seq = snap[0] + 1
    return replay(plan, workflow_id, run_id, store.journal(workflow_id, run_id, from_seq, seq), start)


def _label(e: Any) -> str | None:
    t = type(e)
    if t is ev.SuperStepCommitted:
        return f"layer:{e.layer + 1}"
    if t is ev.RunStarted:
        return "input"
    if t is ev.TurnStarted:
        return f"turn:{e.turn}"
    if t is ev.Paused:
        return f"{e.reason}:{','.join(e.steps)}" if e.steps else e.reason
    if t is ev.StateUpdated:
        return "update" if e.by == "command" else f"update:{e.by}"
    if t is ev.LoopIterated:
        return f"loop:{e.step}:{e.iteration}"
    if t is ev.RunCompleted:
        return "done"
    if t is ev.RunCancelled:
        return "cancelled"
    if t is ev.RunFailed:
        return f"failed:{e.step}" if e.step else "failed"
    if t is ev.Forked:
        return f"fork-of:{e.from_run}@{e.from_super_step}"
    return None


def iter_checkpoints(
    store: Store, plan: Plan, workflow_id: str, run_id: str, events: bool = False
) -> Iterator[Any]:
    """Every checkpoint of a run, oldest first, with a copy of the progress there:
    ``(checkpoint, progress)``. ``events``: ``(checkpoint or None, progress, event)``
    for every event instead (the live progress: copy what you keep).

    After a prune, history starts at the oldest kept snapshot (label "base").
    """
    summary = store.summary(workflow_id, run_id)
    if summary is None:
        return
    p = RunProgress(workflow_id, run_id)
    from_seq = 1
    if summary.first_seq > 1:
        snap = store.latest_snapshot(workflow_id, run_id, max_seq=summary.first_seq - 1)
        if snap is not None:
            p = from_snapshot(workflow_id, run_id, snap[1])
            from_seq = snap[0] + 1
            c = _checkpoint(plan, p, "base", p.updated_ms)
            yield (c, p, None) if events else (c, _copy(p))
    for seq, e in store.journal(workflow_id, run_id, from_seq):
        apply_event(plan, p, e, seq)
        label = _label(e)
        if events:
            yield (_checkpoint(plan, p, label, getattr(e, "at_ms", 0) or p.updated_ms) if label is not None
                   else None), p, e
        elif label is not None:
            yield _checkpoint(plan, p, label, getattr(e, "at_ms", 0) or p.updated_ms), _copy(p)


#: events that carry the in-flight layer's results: a fork at a checkpoint inside a
#: layer copies them, so the fork holds exactly what the run held there
_LAYER_RESULTS = (ev.StepCompleted, ev.ItemCompleted, ev.LoopIterated, ev.StepCancelled, ev.StateUpdated)


def _mid_layer(p: RunProgress) -> bool:
    return bool(p.pending or p.items or p.iterations) or p.layer_base is not None


def fork_point(store: Store, plan: Plan, workflow_id: str, run_id: str,
               seq: int) -> tuple[Checkpoint, RunProgress, list[Any]] | None:
    """The checkpoint of event ``seq`` (None: no checkpoint there), the run as
    it was when the layer in flight there began (``base``), and the results
    journaled in that layer up to ``seq`` (empty between layers). After a
    prune that cut a layer, base is the checkpoint itself and nothing is copied."""
    found: Checkpoint | None = None
    base: RunProgress | None = None
    tail: list[Any] = []
    points = iter_checkpoints(store, plan, workflow_id, run_id, events=True)
    for c, p, e in points:  # type: ignore[misc]
        if c is not None and c.seq > seq:
            break
        if not _mid_layer(p):
            base, tail = _copy(p), []
        elif type(e) in _LAYER_RESULTS:
            tail.append(e)
        if c is not None and c.seq == seq:
            found = c
            break
    if found is None:
        return None
    if base is None:  # pruned mid-layer: the checkpoint's values, its layer from the start
        base, tail = _copy(p), []
        base.values = found.values
    return found, base, tail


def _checkpoint(plan: Plan, p: RunProgress, label: str, at_ms: int) -> Checkpoint:
    return Checkpoint(p.super_step, label, p.values, at_ms, p.seq, p.next_steps(plan))


def _copy(p: RunProgress) -> RunProgress:
    q = RunProgress(p.workflow_id, p.run_id)
    q.values = p.values  # values dicts are replaced, never mutated: sharing is safe
    q.super_step, q.layer, q.status, q.seq = p.super_step, p.layer, p.status, p.seq
    q.skipped = set(p.skipped)
    q.branches = {k: list(v) for k, v in p.branches.items()}
    q.meta = dict(p.meta)
    q.turn = p.turn
    return q
