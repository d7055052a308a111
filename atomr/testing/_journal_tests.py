"""Conformance: an append-only, gap-free, ordered journal per run, and the run index."""

from __future__ import annotations

import pytest

from atomr import events as ev
from atomr.errors import StoreError
from atomr.store import format as fmt
from atomr.store.base import STATUSES, Store
from atomr.testing._base import SuiteBase
from atomr.testing.journals import demo_events, encode_batch, filler_events

__all__ = ["JournalTests"]


class JournalTests(SuiteBase):
    """Conformance: an append-only, gap-free, ordered journal per run, and the run index."""

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
            ev.LoopIterated("lp", 2, 3, [("n", 1)], 7), ev.RunCancelled("enough", 3, 11),
            ev.TurnStarted(2, {"n": 4, "log": ["more"]}, 13),
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
            ((s.created_ms, s.workflow_id, s.run_id) for s in everything), reverse=True)  # newest first
        first = store.runs(limit=4)
        assert first == everything[:4] and store.runs(limit=4, before=first[-1].cursor) == everything[4:]
        assert store.run_counts() == {st: sum(s.status == st for s in everything) for st in STATUSES}
        for status in ("running", "paused", "done", "failed"):
            want = sorted((w, r) for w, r, st in layout if st == status)
            assert sorted((s.workflow_id, s.run_id) for s in store.runs(status=status)) == want
        assert sorted(s.run_id for s in store.runs(workflow_id="a")) == ["r1", "r2", "r3"]
        assert [(s.workflow_id, s.run_id) for s in store.runs(status="done", workflow_id="b")] == [("b", "r1")]
        assert store.runs(workflow_id="zzz") == []
        with pytest.raises(StoreError, match="unknown status"):
            store.runs(status="snoozing")
        # a status change moves the run between filters
        self.write_ok(store, encode_batch("a", "r1", 2, filler_events(1, 2), status="paused"))
        assert sorted(s.run_id for s in store.runs(status="paused", workflow_id="a")) == ["r1", "r2"]
        assert [s.workflow_id + "/" + s.run_id for s in store.runs(status="running")] == ["b/r3"]
