"""Snapshots: a :class:`~atomr.graph.progress.RunProgress` as the plain dict a
snapshot record stores, and back. Pure: no threads, no I/O.

Keys are short (they are stored for every snapshot); keys added later are
read with a default, so older snapshots stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atomr.graph.progress import PendingInterrupt, RunProgress

__all__ = ["to_snapshot", "from_snapshot"]


def to_snapshot(p: RunProgress) -> dict[str, Any]:
    """A plain dict of ``p`` (what a snapshot stores)."""
    return {
        "v": p.values,
        "ss": p.super_step,
        "l": p.layer,
        "st": p.status,
        "seq": p.seq,
        "pw": {k: [[c, v] for c, v in w] for k, w in p.pending.items()},
        "ask": [[i.id, i.step_id, i.payload, i.index] for i in p.asked.values()],
        "ans": p.answers,
        "att": p.attempts,
        "pr": p.pause_reason,
        "ps": p.pause_steps,
        "f": list(p.failure) if p.failure else None,
        "bp": p.bp_cleared,
        "sk": sorted(p.skipped),
        "m": p.meta,
        "it": {k: [[i, r] for i, r in d.items()] for k, d in p.items.items()},
        "li": p.iterations,
        "fl": {k: list(v) for k, v in p.failed.items()},
        "bt": p.branches,
        "tr": p.to_route,
        "ho": sorted(p.holds),
        "u": p.updated_ms,
        "lb": p.layer_base,
        "lv": p.loop_values,
        "cr": p.cancel_reason,
        "xm": p.exec_ms,
        "xf": p.exec_from_ms,
        "tb": p.traceback,
        "tn": p.turn,
    }


def from_snapshot(workflow_id: str, run_id: str, d: Mapping[str, Any]) -> RunProgress:
    p = RunProgress(workflow_id, run_id)
    p.values = dict(d["v"])
    p.super_step = d["ss"]
    p.layer = d["l"]
    p.status = d["st"]
    p.seq = d["seq"]
    p.pending = {k: [(c, v) for c, v in w] for k, w in d["pw"].items()}
    p.asked = {a[0]: PendingInterrupt(*a) for a in d["ask"]}
    p.answers = dict(d["ans"])
    p.attempts = dict(d["att"])
    p.pause_reason = d["pr"]
    p.pause_steps = list(d["ps"])
    p.failure = tuple(d["f"]) if d["f"] else None  # type: ignore[assignment]
    p.bp_cleared = d["bp"]
    p.skipped = set(d["sk"])
    p.meta = dict(d["m"])
    p.items = {k: {i: r for i, r in rows} for k, rows in d["it"].items()}
    p.iterations = dict(d["li"])
    p.failed = {k: (v[0], v[1]) for k, v in d["fl"].items()}
    p.branches = {k: list(v) for k, v in d["bt"].items()}
    p.to_route = list(d["tr"])
    p.holds = set(d["ho"])
    p.updated_ms = d["u"]
    lb = d.get("lb")
    p.layer_base = dict(lb) if lb is not None else None
    p.loop_values = {k: dict(v) for k, v in d.get("lv", {}).items()}
    p.cancel_reason = d.get("cr")
    p.exec_ms = d.get("xm", 0)
    p.exec_from_ms = d.get("xf")
    p.traceback = d.get("tb")
    p.turn = d.get("tn", 0)
    return p
