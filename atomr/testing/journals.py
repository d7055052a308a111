"""A small real workflow plan, a realistic journal for it, and the reference fold.

The store conformance suite is built from these; they are also handy for a
test of anything that reads a journal (see :func:`check_rehydration`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from atomr import events as ev
from atomr._load import load_progress
from atomr.graph.dag import Dag
from atomr.graph.reducers import AppendList, LastWriteWins, MergeMap
from atomr.graph.schema import StateSchema
from atomr.graph.superstep import Plan, RunProgress, from_snapshot, replay, to_snapshot
from atomr.store import format as fmt
from atomr.store.base import AppendBatch, Store

__all__ = [
    "demo_plan",
    "demo_events",
    "filler_events",
    "encode_batch",
    "fold",
    "full_replay",
    "check_rehydration",
    "snapshot_points",
]


def _never(state: Any, ctx: Any) -> None:  # pragma: no cover - the suite never runs steps
    raise AssertionError("the conformance suite folds journals; it does not execute steps")


def demo_plan() -> Plan:
    """``a -> (b, c) -> d`` over channels log (AppendList), n (LastWriteWins), m (MergeMap)."""
    dag = (
        Dag.builder("a")
        .step("a", _never).step("b", _never).step("c", _never).step("d", _never)
        .edge("a", "b").edge("a", "c").edge("b", "d").edge("c", "d")
        .build()
    )
    schema = StateSchema({"log": (AppendList(), []), "n": (LastWriteWins(), 0), "m": (MergeMap(), {})})
    return Plan(dag, schema, interrupt_before=["d"])


_TZ = dt.timezone(dt.timedelta(hours=2))


def demo_events(wf: str = "demo", run: str = "r1") -> list[Any]:
    """One full run of :func:`demo_plan`: an interrupt answered, a breakpoint with an
    update, a failed attempt retried, then completion (22 events)."""
    key = f"{wf}/{run}"
    return [
        ev.RunStarted({"n": 1}, {"owner": "suite"}, 1_000),
        ev.StepStarted("a", 1, 1, f"{key}/1/a"),
        ev.StepCompleted("a", 1, [("log", ["a"]), ("n", 2)]),
        ev.SuperStepCommitted(1, 0, 1_001),
        ev.StepStarted("b", 2, 1, f"{key}/2/b"),
        ev.StepStarted("c", 2, 1, f"{key}/2/c"),
        ev.StepCompleted("c", 2, [("log", ["c"]), ("m", {"c": (1, 2), 7: dt.datetime(2024, 5, 1, 12, 0, tzinfo=_TZ)})]),
        ev.Interrupted("b", 2, "b:2:0", {"ask": "ok?"}, 0),
        ev.Paused("interrupt", ["b"], 1, 1_002),
        ev.Resumed({"b:2:0": "yes"}, None, 1_003),
        ev.StepStarted("b", 2, 2, f"{key}/2/b"),
        ev.StepCompleted("b", 2, [("log", ["b", "yes"])]),
        ev.SuperStepCommitted(2, 1, 1_004),
        ev.Paused("before", ["d"], 2, 1_005),
        ev.StateUpdated([("n", 10)], "command", 1_006),
        ev.Resumed({}, None, 1_006),
        ev.StepStarted("d", 3, 1, f"{key}/3/d"),
        ev.StepFailed("d", 3, "ValueError", "boom", 1, False),
        ev.StepStarted("d", 3, 2, f"{key}/3/d"),
        ev.StepCompleted("d", 3, [("log", ["d"]), ("m", {"d": b"\x00\xff"})]),
        ev.SuperStepCommitted(3, 2, 1_007),
        ev.RunCompleted(3, 1_008),
    ]


def filler_events(n: int, start: int = 1, tag: str = "s") -> list[Any]:
    """``n`` distinct, cheap events (their content identifies their position)."""
    return [ev.StepStarted(f"{tag}{i}", i, 1, f"{tag}/{i}") for i in range(start, start + n)]


def encode_batch(
    wf: str, run: str, first_seq: int, events: Sequence[Any], *, status: str | None = None,
    super_step: int | None = None, snapshot: Any = None, meta: dict[str, Any] | None = None,
) -> AppendBatch:
    """An AppendBatch of ``events`` numbered from ``first_seq``; ``snapshot`` is a
    RunProgress (or an already encoded record, or None)."""
    if isinstance(snapshot, RunProgress):
        snapshot = fmt.encode_obj(to_snapshot(snapshot))
    return AppendBatch(wf, run, first_seq, [fmt.encode_event(e) for e in events], status=status,
                       super_step=super_step, snapshot=snapshot, meta=meta)


def fold(plan: Plan, wf: str, run: str, events: Sequence[Any], upto: int | None = None) -> RunProgress:
    """The reference: fold the in-memory events 1..upto (never touched by a store)."""
    evs = events if upto is None else events[:upto]
    return replay(plan, wf, run, enumerate(evs, 1))


def full_replay(store: Store, plan: Plan, wf: str, run: str) -> RunProgress:
    """Fold a run's whole journal from event 1, ignoring every snapshot."""
    return replay(plan, wf, run, store.journal(wf, run, 1))


def check_rehydration(store: Store, plan: Plan, wf: str, run: str) -> RunProgress:
    """Assert that rehydration (latest snapshot + tail), every stored snapshot plus
    its tail, and a full replay from event 1 agree; return the progress.

    Requires the run's journal to start at event 1 (not pruned).
    """
    summary = store.summary(wf, run)
    assert summary is not None, f"run {wf}/{run} is not in the store"
    assert summary.first_seq == 1, "check_rehydration needs an unpruned journal"
    full = full_replay(store, plan, wf, run)
    assert full.seq == summary.last_seq
    loaded = load_progress(store, plan, wf, run)
    assert loaded == full, f"rehydrated run {wf}/{run} differs from its full replay"
    for seq, snap in store.snapshots(wf, run):
        start = from_snapshot(wf, run, snap)
        assert start.seq == seq, f"snapshot at {seq} describes event {start.seq}"
        assert start == replay(plan, wf, run, store.journal(wf, run, 1, seq)), (
            f"snapshot {seq} of {wf}/{run} differs from the fold of events 1..{seq}"
        )
        assert replay(plan, wf, run, store.journal(wf, run, seq + 1), start) == full
    return full


def snapshot_points(n: int, every: int) -> list[int]:
    """The last event of each batch when ``n`` events are written ``every`` at a time."""
    return sorted({*range(every, n + 1, every), n})
