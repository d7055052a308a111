"""Conformance: concurrent runs and readers, reopening, corrupt records, limits."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from atomr._load import load_progress, load_progress_at
from atomr.errors import CorruptRecord, StoreError
from atomr.graph.superstep import to_snapshot
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
)

__all__ = ["RobustnessTests"]


class RobustnessTests(SuiteBase):
    """Conformance: concurrent runs and readers, reopening, corrupt records, limits."""

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
