"""Conformance: snapshots agree with the fold; truncate (prune) and delete."""

from __future__ import annotations

import pytest

from atomr._load import iter_checkpoints, load_progress, load_progress_at
from atomr.errors import StoreError
from atomr.graph.superstep import from_snapshot, replay, to_snapshot
from atomr.store import format as fmt
from atomr.store.base import Store
from atomr.testing._base import SuiteBase
from atomr.testing.journals import (
    check_rehydration,
    demo_events,
    demo_plan,
    encode_batch,
    filler_events,
    fold,
    snapshot_points,
)

__all__ = ["HistoryTests"]


class HistoryTests(SuiteBase):
    """Conformance: snapshots agree with the fold; truncate (prune) and delete."""

    # -- snapshots + replay equality ---------------------------------------------------------------

    @pytest.mark.parametrize("every", [1, 2, 5, 22])
    def test_snapshots_and_replay_agree(self, store: Store, every: int) -> None:
        plan, events = self.write_demo(store, "r1", every)
        reference = fold(plan, self.WF, "r1", events)
        assert reference.status == "done" and reference.values["log"] == ["a", "b", "yes", "c", "d"]
        assert reference.values["n"] == 10
        snaps = store.snapshots(self.WF, "r1")
        assert [s for s, _ in snaps] == snapshot_points(len(events), every)
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
