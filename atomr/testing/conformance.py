"""A conformance suite every Store backend must pass (in the spirit of a journal spec).

Subclass :class:`StoreConformance` in a test module and say how to open a
fresh store; pytest then runs every ``test_*`` method against it::

    from atomr import MemoryStore
    from atomr.testing import StoreConformance

    class TestMemory(StoreConformance):
        def make_store(self, tmp_path):
            return MemoryStore(snapshot_every=2)

A backend that keeps data across processes also implements
:meth:`StoreConformance.reopen_store` (close, then open the same data again);
the reopen tests are skipped for one that does not.

The suite talks to the store only through the :class:`~atomr.store.base.Store`
protocol, plus the ``_corrupt(workflow_id, run_id, seq, data)`` test hook that
overwrites one journal record in place (the corruption tests are skipped for a
backend without it). Run state is rebuilt with the same pure fold the runtime
uses (:mod:`atomr.graph.superstep`) over a small real workflow plan.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from atomr import events as ev
from atomr._load import iter_checkpoints, load_progress, load_progress_at
from atomr.errors import CorruptRecord, StoreError
from atomr.graph.dag import Dag
from atomr.graph.reducers import AppendList, LastWriteWins, MergeMap
from atomr.graph.schema import StateSchema
from atomr.graph.superstep import (
    Plan,
    RunProgress,
    apply_event,
    from_snapshot,
    replay,
    to_snapshot,
)
from atomr.store import format as fmt
from atomr.store.base import AppendBatch, Store

__all__ = [
    "StoreConformance",
    "demo_plan",
    "demo_events",
    "filler_events",
    "encode_batch",
    "fold",
    "full_replay",
    "check_rehydration",
]


# --- a small real workflow and a realistic journal for it ------------------------


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


def _snapshot_points(n: int, every: int) -> list[int]:
    return sorted({*range(every, n + 1, every), n})


# --- the suite ----------------------------------------------------------------------


class StoreConformance:
    """Behaviour every Store backend shares. Subclass it and implement :meth:`make_store`."""

    WF = "wf"

    # -- hooks for backends ---------------------------------------------------------

    def make_store(self, tmp_path: Path) -> Store:
        """A new, empty store (``tmp_path`` is a fresh directory for this test)."""
        raise NotImplementedError("subclass StoreConformance and implement make_store(tmp_path)")

    def reopen_store(self, store: Store, tmp_path: Path) -> Store | None:
        """Close ``store`` and open the same data again; None: not supported (skip)."""
        return None

    # -- fixtures / helpers -----------------------------------------------------------

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        self._opened: list[Store] = []
        s = self.make_store(tmp_path)
        self._opened.append(s)
        try:
            yield s
        finally:
            for x in reversed(self._opened):
                x.close()

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        new = self.reopen_store(store, tmp_path)
        if new is None:
            pytest.skip(f"{type(store).__name__} keeps no data across close(): nothing to reopen")
        self._opened.append(new)
        return new

    @staticmethod
    def write_ok(store: Store, *batches: AppendBatch) -> None:
        results = store.write(list(batches))
        assert results == [None] * len(batches), results

    @staticmethod
    def events_of(store: Store, wf: str, run: str, from_seq: int = 1, to_seq: int | None = None) -> list[tuple[int, Any]]:
        return list(store.journal(wf, run, from_seq, to_seq))

    def write_demo(self, store: Store, run: str = "r1", every: int = 3, wf: str | None = None) -> tuple[Plan, list[Any]]:
        """Write :func:`demo_events` in batches of ``every`` events, each with a snapshot
        of the reference fold; statuses follow the run. Returns (plan, events)."""
        wf = wf or self.WF
        plan = demo_plan()
        events = demo_events(wf, run)
        p = RunProgress(wf, run)
        first = 1
        for last in _snapshot_points(len(events), every):
            chunk = events[first - 1 : last]
            for i, e in enumerate(chunk, first):
                apply_event(plan, p, e, i)
            self.write_ok(store, encode_batch(wf, run, first, chunk, status=p.status if p.status != "new" else "running",
                                              super_step=p.super_step, snapshot=p))
            first = last + 1
        return plan, events

    # -- an empty store ------------------------------------------------------------------

    def test_empty_store(self, store: Store) -> None:
        assert store.runs() == []
        assert store.summary(self.WF, "nope") is None
        assert self.events_of(store, self.WF, "nope") == []
        assert store.snapshots(self.WF, "nope") == []
        assert store.latest_snapshot(self.WF, "nope") is None
        assert store.write([]) == []

    def test_unknown_run_maintenance_is_a_no_op(self, store: Store) -> None:
        assert store.delete_run(self.WF, "nope") is False
        assert store.truncate(self.WF, "nope", 3, fmt.encode_obj({})) == 0
        assert store.runs() == []

    # -- ordering ---------------------------------------------------------------------

    def test_events_come_back_in_order_and_equal(self, store: Store) -> None:
        evs = filler_events(25)
        self.write_ok(store, encode_batch(self.WF, "r", 1, evs[:1]))
        self.write_ok(store, encode_batch(self.WF, "r", 2, evs[1:10]))
        self.write_ok(store, encode_batch(self.WF, "r", 11, evs[10:]))
        got = self.events_of(store, self.WF, "r")
        assert got == list(enumerate(evs, 1))
        s = store.summary(self.WF, "r")
        assert s is not None and (s.last_seq, s.first_seq) == (25, 1)

    def test_order_survives_seq_numbers_of_every_width(self, store: Store) -> None:
        # 300 events: seq keys cross the one-byte boundary (255 -> 256)
        evs = filler_events(300)
        for i in range(0, 300, 50):
            self.write_ok(store, encode_batch(self.WF, "r", i + 1, evs[i : i + 50]))
        assert [s for s, _ in store.journal(self.WF, "r")] == list(range(1, 301))
        assert self.events_of(store, self.WF, "r", 250, 260) == list(enumerate(evs, 1))[249:260]

    def test_every_event_type_round_trips(self, store: Store) -> None:
        evs = demo_events(self.WF, "r") + [
            ev.HumanApproved("h", "ann"), ev.BranchTaken("a", ["x"]),
            ev.RunFailed(None, "StepTimeout", "slow", 3, 9),
            ev.Forked(from_workflow=self.WF, from_run="r0", from_super_step=2, values={"n": 1}, layer=1,
                      branches={"a": ["x"]}, meta={"k": 1}, at_ms=5),
            ev.StepCancelled("b", 2, "timeout"), ev.ItemCompleted("mp", 2, 4, {"x": (1,)}),
            ev.LoopIterated("lp", 2, 3, [("n", 1)], 7),
        ]
        missing = set(fmt.EVENT_CODES) - {type(e) for e in evs}
        assert not missing, f"add a sample of {sorted(c.__name__ for c in missing)} to this test"
        self.write_ok(store, encode_batch(self.WF, "r", 1, evs))
        assert self.events_of(store, self.WF, "r") == list(enumerate(evs, 1))

    def test_ids_sharing_a_prefix_do_not_mix(self, store: Store) -> None:
        runs = [("w", "r"), ("w", "r1"), ("w", "r10"), ("w1", "r"), ("ww", ""), ("w", "r\u00e9\u4e2d"),
                ("w" * 100, "x" * 100)]
        for i, (wf, run) in enumerate(runs):
            self.write_ok(store, encode_batch(wf, run, 1, filler_events(i + 1, tag=f"{i}-")))
        for i, (wf, run) in enumerate(runs):
            got = self.events_of(store, wf, run)
            assert [e.step for _, e in got] == [f"{i}-{j}" for j in range(1, i + 2)], (wf, run)
            s = store.summary(wf, run)
            assert s is not None and (s.workflow_id, s.run_id, s.last_seq) == (wf, run, i + 1)
        assert sorted((s.workflow_id, s.run_id) for s in store.runs()) == sorted(runs)
        assert store.delete_run("w", "r") is True
        assert self.events_of(store, "w", "r") == []
        assert len(self.events_of(store, "w", "r1")) == 2
        assert len(self.events_of(store, "w", "r10")) == 3

    # -- gap-free ---------------------------------------------------------------------------

    def test_first_batch_must_start_at_one(self, store: Store) -> None:
        (err,) = store.write([encode_batch(self.WF, "r", 2, filler_events(2), status="running")])
        assert isinstance(err, StoreError) and "gap" in str(err)
        assert f"{self.WF}/r" in str(err)
        assert store.summary(self.WF, "r") is None
        assert self.events_of(store, self.WF, "r") == []
        assert store.runs() == []

    def test_batch_with_a_gap_is_refused_and_nothing_is_written(self, store: Store) -> None:
        evs = filler_events(10)
        self.write_ok(store, encode_batch(self.WF, "r", 1, evs[:3], status="running", super_step=1))
        before = store.summary(self.WF, "r")
        snap = fmt.encode_obj({"bogus": True})
        for first in (5, 3, 2, 1, 100):  # a hole, an overlap, a rewrite from the start
            (err,) = store.write([encode_batch(self.WF, "r", first, evs[first - 1 : first + 2],
                                               status="done", super_step=9, snapshot=snap, meta={"x": 1})])
            assert isinstance(err, StoreError), first
            assert "gap" in str(err) or "already" in str(err)
            assert store.summary(self.WF, "r") == before
            assert self.events_of(store, self.WF, "r") == list(enumerate(evs[:3], 1))
            assert store.snapshots(self.WF, "r") == []
        # the right continuation is still accepted
        self.write_ok(store, encode_batch(self.WF, "r", 4, evs[3:], status="done"))
        assert self.events_of(store, self.WF, "r") == list(enumerate(evs, 1))

    def test_gap_inside_one_group_for_the_same_run(self, store: Store) -> None:
        evs = filler_events(6)
        results = store.write([
            encode_batch(self.WF, "r", 1, evs[:2]),
            encode_batch(self.WF, "r", 4, evs[3:]),  # skips 3
        ])
        assert results[0] is None and isinstance(results[1], StoreError)
        assert self.events_of(store, self.WF, "r") == list(enumerate(evs[:2], 1))
        assert store.summary(self.WF, "r").last_seq == 2  # type: ignore[union-attr]

    def test_empty_batch_updates_status_only(self, store: Store) -> None:
        self.write_ok(store, encode_batch(self.WF, "r", 1, filler_events(2), status="running", super_step=1))
        self.write_ok(store, encode_batch(self.WF, "r", 3, [], status="paused", super_step=2))
        s = store.summary(self.WF, "r")
        assert s is not None and (s.status, s.super_step, s.last_seq) == ("paused", 2, 2)
        assert len(self.events_of(store, self.WF, "r")) == 2

    # -- replay from any point ------------------------------------------------------------------

    def test_replay_from_any_point(self, store: Store) -> None:
        evs = filler_events(12)
        for i in range(0, 12, 4):
            self.write_ok(store, encode_batch(self.WF, "r", i + 1, evs[i : i + 4]))
        numbered = list(enumerate(evs, 1))
        for a in range(0, 14):
            assert self.events_of(store, self.WF, "r", a) == numbered[max(a, 1) - 1 :], a
            for b in range(a, 14):
                assert self.events_of(store, self.WF, "r", a, b) == numbered[max(a, 1) - 1 : b], (a, b)
        assert self.events_of(store, self.WF, "r", 5, 4) == []
        assert self.events_of(store, self.WF, "r", 13) == []

    def test_journal_is_a_stable_snapshot_while_writing(self, store: Store) -> None:
        evs = filler_events(8)
        self.write_ok(store, encode_batch(self.WF, "r", 1, evs[:4]))
        it = store.journal(self.WF, "r")
        first = next(it)
        self.write_ok(store, encode_batch(self.WF, "r", 5, evs[4:]))
        rest = list(it)
        got = [first, *rest]
        # a reader sees a gap-free prefix, never a torn batch
        assert [s for s, _ in got] == list(range(1, len(got) + 1))
        assert len(got) in (4, 8)

    # -- summaries / run index -------------------------------------------------------------------

    def test_summary_follows_the_batches(self, store: Store) -> None:
        evs = filler_events(6)
        self.write_ok(store, encode_batch(self.WF, "r", 1, evs[:2], status="running", super_step=0,
                                          meta={"who": "me", "n": 1}))
        s1 = store.summary(self.WF, "r")
        assert s1 is not None
        assert (s1.workflow_id, s1.run_id, s1.status, s1.super_step, s1.last_seq, s1.first_seq, s1.snapshot_seq) == (
            self.WF, "r", "running", 0, 2, 1, 0)
        assert s1.meta == {"who": "me", "n": 1}
        assert s1.created_ms > 0 and s1.updated_ms >= s1.created_ms
        self.write_ok(store, encode_batch(self.WF, "r", 3, evs[2:5], super_step=2, snapshot=fmt.encode_obj({}),
                                          meta={"n": 2}))
        s2 = store.summary(self.WF, "r")
        assert s2 is not None
        assert (s2.status, s2.super_step, s2.last_seq, s2.snapshot_seq) == ("running", 2, 5, 5)
        assert s2.meta == {"who": "me", "n": 2}
        assert s2.created_ms == s1.created_ms and s2.updated_ms >= s1.updated_ms
        self.write_ok(store, encode_batch(self.WF, "r", 6, evs[5:], status="done"))
        s3 = store.summary(self.WF, "r")
        assert s3 is not None
        assert (s3.status, s3.super_step, s3.last_seq, s3.snapshot_seq) == ("done", 2, 6, 5)

    def test_runs_index_with_status_filter(self, store: Store) -> None:
        layout = [("a", "r1", "running"), ("a", "r2", "paused"), ("b", "r1", "done"),
                  ("b", "r2", "failed"), ("a", "r3", "done"), ("b", "r3", "running")]
        for wf, run, status in layout:
            self.write_ok(store, encode_batch(wf, run, 1, filler_events(1), status=status))
        everything = store.runs()
        assert sorted((s.workflow_id, s.run_id, s.status) for s in everything) == sorted(layout)
        assert [(s.created_ms, s.workflow_id, s.run_id) for s in everything] == sorted(
            (s.created_ms, s.workflow_id, s.run_id) for s in everything)
        for status in ("running", "paused", "done", "failed"):
            want = sorted((w, r) for w, r, st in layout if st == status)
            assert sorted((s.workflow_id, s.run_id) for s in store.runs(status=status)) == want
        assert sorted(s.run_id for s in store.runs(workflow_id="a")) == ["r1", "r2", "r3"]
        assert [(s.workflow_id, s.run_id) for s in store.runs(status="done", workflow_id="b")] == [("b", "r1")]
        assert store.runs(workflow_id="zzz") == []
        with pytest.raises(StoreError, match="unknown status"):
            store.runs(status="sleeping")
        # a status change moves the run between filters
        self.write_ok(store, encode_batch("a", "r1", 2, filler_events(1, 2), status="paused"))
        assert sorted(s.run_id for s in store.runs(status="paused", workflow_id="a")) == ["r1", "r2"]
        assert [s.workflow_id + "/" + s.run_id for s in store.runs(status="running")] == ["b/r3"]

    # -- snapshots + replay equality ---------------------------------------------------------------

    @pytest.mark.parametrize("every", [1, 2, 5, 22])
    def test_snapshots_and_replay_agree(self, store: Store, every: int) -> None:
        plan, events = self.write_demo(store, "r1", every)
        reference = fold(plan, self.WF, "r1", events)
        assert reference.status == "done" and reference.values["log"] == ["a", "b", "yes", "c", "d"]
        assert reference.values["n"] == 10
        snaps = store.snapshots(self.WF, "r1")
        assert [s for s, _ in snaps] == _snapshot_points(len(events), every)
        for seq, snap in snaps:
            assert from_snapshot(self.WF, "r1", snap) == fold(plan, self.WF, "r1", events, seq), seq
        assert check_rehydration(store, plan, self.WF, "r1") == reference
        assert load_progress(store, plan, self.WF, "r1") == reference
        # the state after any event, from the nearest snapshot at or before it
        for seq in range(1, len(events) + 1):
            assert load_progress_at(store, plan, self.WF, "r1", seq) == fold(plan, self.WF, "r1", events, seq), seq
            best = store.latest_snapshot(self.WF, "r1", max_seq=seq)
            below = [s for s, _ in snaps if s <= seq]
            assert (best[0] if best else None) == (below[-1] if below else None)
        summary = store.summary(self.WF, "r1")
        assert summary is not None and (summary.status, summary.super_step, summary.snapshot_seq) == (
            "done", 3, len(events))

    def test_rehydration_without_any_snapshot(self, store: Store) -> None:
        plan = demo_plan()
        events = demo_events(self.WF, "r")
        self.write_ok(store, encode_batch(self.WF, "r", 1, events[:9], status="paused"))
        assert store.latest_snapshot(self.WF, "r") is None
        assert load_progress(store, plan, self.WF, "r") == fold(plan, self.WF, "r", events, 9)
        assert load_progress(store, plan, self.WF, "r").status == "paused"  # type: ignore[union-attr]

    # -- truncate / prune -------------------------------------------------------------------------

    @pytest.mark.parametrize("cut", [1, 9, 13, 21, 22])
    def test_truncate_keeps_a_base_snapshot_and_the_tail(self, store: Store, cut: int) -> None:
        plan, events = self.write_demo(store, "r1", every=5)
        self.write_demo(store, "other", every=5)
        n = len(events)
        reference = fold(plan, self.WF, "r1", events)
        old_snaps = [s for s, _ in store.snapshots(self.WF, "r1")]
        base = fold(plan, self.WF, "r1", events, cut)
        removed = store.truncate(self.WF, "r1", cut, fmt.encode_obj(to_snapshot(base)))
        assert removed == cut + len([s for s in old_snaps if s < cut])
        assert self.events_of(store, self.WF, "r1") == list(enumerate(events, 1))[cut:]
        assert self.events_of(store, self.WF, "r1", cut + 1, cut + 1) == list(enumerate(events, 1))[cut : cut + 1]
        snaps = store.snapshots(self.WF, "r1")
        assert [s for s, _ in snaps] == sorted({cut, *(s for s in old_snaps if s >= cut)})
        assert from_snapshot(self.WF, "r1", snaps[0][1]) == base
        s = store.summary(self.WF, "r1")
        assert s is not None and (s.first_seq, s.last_seq, s.status) == (cut + 1, n, "done")
        assert s.snapshot_seq == max(old_snaps[-1], cut)
        # the latest state is intact, and history starts at the base
        assert load_progress(store, plan, self.WF, "r1") == reference
        points = list(iter_checkpoints(store, plan, self.WF, "r1"))
        assert points[0][0].label == "base" and points[0][0].seq == cut
        assert points[-1][1].values == reference.values
        # the other run is untouched
        assert check_rehydration(store, plan, self.WF, "other") == fold(plan, self.WF, "other", demo_events(self.WF, "other"))

    def test_truncate_then_keep_writing(self, store: Store) -> None:
        plan = demo_plan()
        events = demo_events(self.WF, "r")
        self.write_ok(store, encode_batch(self.WF, "r", 1, events[:13], status="running"))
        base = fold(plan, self.WF, "r", events, 10)
        store.truncate(self.WF, "r", 10, fmt.encode_obj(to_snapshot(base)))
        (err,) = store.write([encode_batch(self.WF, "r", 15, events[14:])])
        assert isinstance(err, StoreError)
        self.write_ok(store, encode_batch(self.WF, "r", 14, events[13:], status="done",
                                          snapshot=fold(plan, self.WF, "r", events)))
        assert [s for s, _ in store.journal(self.WF, "r")] == list(range(11, 23))
        assert load_progress(store, plan, self.WF, "r") == fold(plan, self.WF, "r", events)
        # a second, later cut
        base2 = fold(plan, self.WF, "r", events, 16)
        store.truncate(self.WF, "r", 16, fmt.encode_obj(to_snapshot(base2)))
        assert [s for s, _ in store.snapshots(self.WF, "r")] == [16, 22]
        assert store.summary(self.WF, "r").first_seq == 17  # type: ignore[union-attr]
        assert load_progress(store, plan, self.WF, "r") == fold(plan, self.WF, "r", events)
        assert replay(plan, self.WF, "r", store.journal(self.WF, "r", 17), base2) == fold(plan, self.WF, "r", events)

    # -- delete -----------------------------------------------------------------------------------

    def test_delete_run(self, store: Store) -> None:
        plan, events = self.write_demo(store, "gone", every=4)
        self.write_demo(store, "kept", every=4)
        assert store.delete_run(self.WF, "gone") is True
        assert store.summary(self.WF, "gone") is None
        assert self.events_of(store, self.WF, "gone") == []
        assert store.snapshots(self.WF, "gone") == []
        assert [s.run_id for s in store.runs()] == ["kept"]
        assert store.delete_run(self.WF, "gone") is False
        assert check_rehydration(store, plan, self.WF, "kept").status == "done"
        # the id is free again: a new run starts at event 1
        (err,) = store.write([encode_batch(self.WF, "gone", 5, filler_events(1))])
        assert isinstance(err, StoreError)
        self.write_ok(store, encode_batch(self.WF, "gone", 1, filler_events(2), status="running"))
        assert [s for s, _ in store.journal(self.WF, "gone")] == [1, 2]
        assert store.latest_snapshot(self.WF, "gone") is None

    # -- concurrent runs ----------------------------------------------------------------------------

    def test_interleaved_runs_in_one_write(self, store: Store) -> None:
        a, b, c = filler_events(6, tag="a"), filler_events(6, tag="b"), filler_events(6, tag="c")
        self.write_ok(
            store,
            encode_batch(self.WF, "A", 1, a[:2], status="running"),
            encode_batch(self.WF, "B", 1, b[:1], status="running"),
            encode_batch("other", "C", 1, c[:3], status="running"),
            encode_batch(self.WF, "A", 3, a[2:4], status="paused", snapshot=fmt.encode_obj({"at": 4})),
            encode_batch(self.WF, "B", 2, b[1:6], status="done"),
            encode_batch(self.WF, "A", 5, a[4:], status="running"),
            encode_batch("other", "C", 4, c[3:], status="failed"),
        )
        assert self.events_of(store, self.WF, "A") == list(enumerate(a, 1))
        assert self.events_of(store, self.WF, "B") == list(enumerate(b, 1))
        assert self.events_of(store, "other", "C") == list(enumerate(c, 1))
        assert store.snapshots(self.WF, "A") == [(4, {"at": 4})]
        statuses = {(s.workflow_id, s.run_id): (s.status, s.last_seq) for s in store.runs()}
        assert statuses == {(self.WF, "A"): ("running", 6), (self.WF, "B"): ("done", 6), ("other", "C"): ("failed", 6)}

    def test_one_bad_batch_does_not_refuse_the_others(self, store: Store) -> None:
        self.write_ok(store, encode_batch(self.WF, "bad", 1, filler_events(2), status="running"))
        good1, good2 = filler_events(3, tag="g"), filler_events(2, tag="h")
        results = store.write([
            encode_batch(self.WF, "g", 1, good1[:2], status="running"),
            encode_batch(self.WF, "bad", 7, filler_events(1, 7), status="done"),  # gap
            encode_batch(self.WF, "h", 1, good2, status="done"),
            encode_batch(self.WF, "g", 3, good1[2:], status="paused"),
        ])
        assert results[0] is None and results[2] is None and results[3] is None, results
        assert isinstance(results[1], StoreError) and f"{self.WF}/bad" in str(results[1])
        assert self.events_of(store, self.WF, "g") == list(enumerate(good1, 1))
        assert self.events_of(store, self.WF, "h") == list(enumerate(good2, 1))
        bad = store.summary(self.WF, "bad")
        assert bad is not None and (bad.status, bad.last_seq) == ("running", 2)
        assert len(self.events_of(store, self.WF, "bad")) == 2
        assert store.summary(self.WF, "g").status == "paused"  # type: ignore[union-attr]

    def test_reads_from_other_threads_see_gap_free_prefixes(self, store: Store) -> None:
        evs = filler_events(200)
        seen: list[int] = []
        problems: list[str] = []
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                try:
                    got = [s for s, _ in store.journal(self.WF, "r")]
                    summary = store.summary(self.WF, "r")
                except Exception as exc:  # noqa: BLE001 - reported below
                    problems.append(repr(exc))
                    return
                if got != list(range(1, len(got) + 1)):
                    problems.append(f"not a gap-free prefix: {got[:5]}..{got[-5:]}")
                if len(got) % 5:
                    problems.append(f"torn batch: {len(got)} events")
                if summary is not None and summary.last_seq < 5:
                    problems.append(f"summary at {summary.last_seq}")
                seen.append(len(got))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            for i in range(0, 200, 5):
                self.write_ok(store, encode_batch(self.WF, "r", i + 1, evs[i : i + 5], status="running"))
        finally:
            done.set()
            t.join(timeout=60)
        assert not t.is_alive()
        assert problems == []
        assert self.events_of(store, self.WF, "r") == list(enumerate(evs, 1))

    # -- reopen (persistent backends) -----------------------------------------------------------

    def test_reopen_after_close_keeps_everything(self, store: Store, tmp_path: Path) -> None:
        plan, events = self.write_demo(store, "done-run", every=4)
        self.write_ok(store, encode_batch(self.WF, "open-run", 1, events[:9], status="paused", super_step=1,
                                          snapshot=fold(plan, self.WF, "open-run", events, 9), meta={"m": 1}))
        store.truncate(self.WF, "done-run", 8, fmt.encode_obj(to_snapshot(fold(plan, self.WF, "done-run", events, 8))))
        before = {
            "runs": store.runs(),
            "journal": {r: self.events_of(store, self.WF, r) for r in ("done-run", "open-run")},
            "snaps": {r: store.snapshots(self.WF, r) for r in ("done-run", "open-run")},
        }
        store = self.reopen(store, tmp_path)
        assert store.runs() == before["runs"]
        for r in ("done-run", "open-run"):
            assert self.events_of(store, self.WF, r) == before["journal"][r]
            assert store.snapshots(self.WF, r) == before["snaps"][r]
        assert load_progress(store, plan, self.WF, "done-run") == fold(plan, self.WF, "done-run", events)
        # the journal carries on gap-free after the reopen
        (err,) = store.write([encode_batch(self.WF, "open-run", 11, events[10:])])
        assert isinstance(err, StoreError)
        self.write_ok(store, encode_batch(self.WF, "open-run", 10, events[9:], status="done",
                                          snapshot=fold(plan, self.WF, "open-run", events)))
        assert check_rehydration(store, plan, self.WF, "open-run") == fold(plan, self.WF, "open-run", events)
        s = store.summary(self.WF, "open-run")
        assert s is not None and (s.status, s.meta, s.last_seq) == ("done", {"m": 1}, 22)
        # and once more
        store = self.reopen(store, tmp_path)
        assert check_rehydration(store, plan, self.WF, "open-run").status == "done"

    def test_reopen_after_delete(self, store: Store, tmp_path: Path) -> None:
        self.write_demo(store, "x", every=3)
        self.write_demo(store, "y", every=3)
        assert store.delete_run(self.WF, "x")
        store = self.reopen(store, tmp_path)
        assert [s.run_id for s in store.runs()] == ["y"]
        assert store.summary(self.WF, "x") is None
        self.write_ok(store, encode_batch(self.WF, "x", 1, filler_events(1)))

    # -- corruption ---------------------------------------------------------------------------------

    def _corrupt(self, store: Store, wf: str, run: str, seq: int, data: bytes) -> None:
        hook = getattr(store, "_corrupt", None)
        if hook is None:
            pytest.skip(f"{type(store).__name__} has no _corrupt test hook")
        hook(wf, run, seq, data)

    @pytest.mark.parametrize("damage", ["flipped-bit", "truncated", "empty", "newer-version", "garbage"])
    def test_corrupt_record_names_run_and_seq(self, store: Store, damage: str) -> None:
        plan, events = self.write_demo(store, "sick", every=30)
        self.write_demo(store, "healthy", every=30)
        raw = dict(store._journal_raw(self.WF, "sick", 5, 5))[5]
        bad = {
            "flipped-bit": bytes(raw[:-1]) + bytes([raw[-1] ^ 0x01]),
            "truncated": bytes(raw[:3]),
            "empty": b"",
            "newer-version": bytes([raw[0] + 1]) + bytes(raw[1:]),
            "garbage": fmt.frame(b"\xc1\xc1\xc1"),
        }[damage]
        self._corrupt(store, self.WF, "sick", 5, bad)
        with pytest.raises(CorruptRecord) as info:
            list(store.journal(self.WF, "sick"))
        err = info.value
        assert (err.workflow_id, err.run_id, err.seq) == (self.WF, "sick", 5)
        assert f"{self.WF}/sick" in str(err) and "record 5" in str(err)
        if damage == "newer-version":
            assert "upgrade" in str(err)
        # the records around it are fine
        assert self.events_of(store, self.WF, "sick", 1, 4) == list(enumerate(events, 1))[:4]
        assert self.events_of(store, self.WF, "sick", 6) == list(enumerate(events, 1))[5:]
        with pytest.raises(CorruptRecord):
            load_progress_at(store, plan, self.WF, "sick", 10)
        # other runs and the run index stay readable
        assert check_rehydration(store, plan, self.WF, "healthy").status == "done"
        assert sorted(s.run_id for s in store.runs(status="done")) == ["healthy", "sick"]
        # rehydration from the final snapshot does not need the damaged record
        assert load_progress(store, plan, self.WF, "sick") == fold(plan, self.WF, "sick", events)

    # -- limits ---------------------------------------------------------------------------------

    def test_truncate_past_the_end_cuts_at_the_last_event(self, store: Store) -> None:
        plan = demo_plan()
        events = demo_events(self.WF, "r")
        self.write_ok(store, encode_batch(self.WF, "r", 1, events[:9], status="paused"))
        base = fold(plan, self.WF, "r", events, 9)
        assert store.truncate(self.WF, "r", 50, fmt.encode_obj(to_snapshot(base))) == 9
        assert [s for s, _ in store.snapshots(self.WF, "r")] == [9]
        s = store.summary(self.WF, "r")
        assert s is not None and (s.first_seq, s.last_seq, s.snapshot_seq) == (10, 9, 9)
        assert load_progress(store, plan, self.WF, "r") == base
        self.write_ok(store, encode_batch(self.WF, "r", 10, events[9:], status="done"))
        assert load_progress(store, plan, self.WF, "r") == fold(plan, self.WF, "r", events)

    def test_ids_too_long_for_a_key_are_refused_cleanly(self, store: Store) -> None:
        long_run = "r" * (fmt.MAX_KEY_BYTES - 12 - len(self.WF.encode()) + 1)
        ok_run = long_run[:-1]
        results = store.write([
            encode_batch(self.WF, long_run, 1, filler_events(1), status="running"),
            encode_batch(self.WF, ok_run, 1, filler_events(2), status="running"),
        ])
        assert isinstance(results[0], StoreError) and "too long" in str(results[0])
        assert results[1] is None
        assert store.summary(self.WF, long_run) is None
        assert [s.run_id for s in store.runs()] == [ok_run]
        assert [s for s, _ in store.journal(self.WF, ok_run)] == [1, 2]
