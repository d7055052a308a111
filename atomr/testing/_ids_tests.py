"""Conformance: ids and values of every kind round-trip (NUL bytes, emoji, the
byte limit, SQL-looking text), records of any size and content."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from atomr.errors import StoreError
from atomr.store import format as fmt
from atomr.store.base import Store
from atomr.store.schedules import ScheduleRecord
from atomr.testing._base import SuiteBase
from atomr.testing.journals import encode_batch, filler_events

__all__ = ["IdsTests", "ODD_IDS"]

#: ids a store must keep exactly: NUL anywhere, the escape mark a backend may use,
#: text that looks like SQL or a LIKE pattern, emoji, combining marks, whitespace
ODD_IDS = ("a\x00b", "\x00", "\x00lead", "trail\x00", "\x01", "\x01abc", "\x01" + "YQ==", "run-\U0001f680-é",
           "e\u0301", "'; DROP TABLE runs; --", 'quo"te', "back\\slash", "100%_like", " ", "tab\tnew\nline",
           "\u2028", "\ufeffbom")


class IdsTests(SuiteBase):
    """Conformance: ids and values of every kind."""

    def test_odd_run_and_workflow_ids_round_trip(self, store: Store, tmp_path: Path) -> None:
        pairs = [(self.WF, rid) for rid in ODD_IDS] + [(wid, "r") for wid in ODD_IDS]
        for i, (wf, run) in enumerate(pairs):
            self.write_ok(store, encode_batch(wf, run, 1, filler_events(i % 3 + 1, tag=f"{i}-"), status="running",
                                              snapshot=fmt.encode_obj({"i": i})))
        for again in (False, True):
            if again:
                store = self.reopen_or_same(store, tmp_path)
            assert sorted((s.workflow_id, s.run_id) for s in store.runs()) == sorted(pairs)
            for i, (wf, run) in enumerate(pairs):
                s = store.summary(wf, run)
                assert s is not None and (s.workflow_id, s.run_id, s.last_seq) == (wf, run, i % 3 + 1), (wf, run)
                assert [e.step for _, e in store.journal(wf, run)] == [f"{i}-{j}" for j in range(1, i % 3 + 2)]
                assert store.snapshots(wf, run) == [(i % 3 + 1, {"i": i})]
            for wid in ODD_IDS:
                assert {s.run_id for s in store.runs(workflow_id=wid)} == {"r"} | ({*ODD_IDS} if wid == self.WF else set())
        # maintenance finds them too
        assert store.delete_run(self.WF, "a\x00b") is True and store.summary(self.WF, "a\x00b") is None
        assert store.summary(self.WF, "a") is None and store.summary(self.WF, "a\x00") is None
        assert store.truncate(self.WF, "\x01abc", 1, fmt.encode_obj({"cut": 1})) == 1  # event 1
        assert store.summary(self.WF, "\x01abc").first_seq == 2  # type: ignore[union-attr]
        assert [q for q, _ in store.journal(self.WF, "\x01abc")] == [2, 3]
        assert store.snapshots(self.WF, "\x01abc") == [(1, {"cut": 1}), (3, {"i": 5})]
        assert store.summary("\x01", "r") is not None and store.summary("\x01\x01", "r") is None

    def test_ids_up_to_the_byte_limit_in_any_script(self, store: Store) -> None:
        room = fmt.MAX_KEY_BYTES - 12 - len(self.WF.encode())  # bytes left for the run id
        fits = ["r" * room, "\U0001f680" * (room // 4) + "r" * (room % 4), "\x00" * room,
                "é" * (room // 2) + "\x00" * (room % 2)]
        over = [f + "x" for f in fits]
        for run in fits:
            assert len(run.encode()) == room
            self.write_ok(store, encode_batch(self.WF, run, 1, filler_events(2), status="done"))
            assert [q for q, _ in store.journal(self.WF, run)] == [1, 2]
        results = store.write([encode_batch(self.WF, run, 1, filler_events(1)) for run in over])
        assert all(isinstance(r, StoreError) and "too long" in str(r) for r in results), results
        assert sorted(s.run_id for s in store.runs()) == sorted(fits)

    def test_records_of_any_size_and_content_round_trip(self, store: Store, tmp_path: Path) -> None:
        big = "z" * (5 << 20)
        odd = {"nul": "x\x00y", "emoji": "\U0001f680", "nan": math.nan, "inf": -math.inf, "u64": 2**64 - 1,
               "i64": -(2**63), "bytes": bytes(range(256)), "big": big, "\x00key": 1, "nested": [{"\U0001f680": b"\x00"}]}
        self.write_ok(store, encode_batch(self.WF, "v", 1, filler_events(3), status="paused", meta=odd,
                                          snapshot=fmt.encode_obj(odd)))
        for again in (False, True):
            if again:
                store = self.reopen_or_same(store, tmp_path)
            s = store.summary(self.WF, "v")
            assert s is not None
            [(seq, snap)] = store.snapshots(self.WF, "v")
            for got in (s.meta, snap):
                assert math.isnan(got["nan"]) and got["inf"] == -math.inf
                rest = {k: v for k, v in got.items() if k != "nan"}
                assert rest == {k: v for k, v in odd.items() if k != "nan"}
                assert type(got["bytes"]) is bytes and type(got["u64"]) is int
            assert seq == 3 and [q for q, _ in store.journal(self.WF, "v")] == [1, 2, 3]

    def test_odd_schedule_ids_round_trip(self, store: Store, tmp_path: Path) -> None:
        longest = "\U0001f680" * (fmt.MAX_SCHEDULE_ID_BYTES // 4)
        ids = [i for i in ODD_IDS if i.strip()] + [longest]
        recs = [replace(ScheduleRecord(sid, "wf", None, 60_000, {"n": 1}), created_ms=1) for sid in ids]
        for rec in recs:
            store.put_schedule(rec)
        for again in (False, True):
            if again:
                store = self.reopen_or_same(store, tmp_path)
            assert store.list_schedules() == sorted(recs, key=lambda r: r.schedule_id)
            for rec in recs:
                assert store.get_schedule(rec.schedule_id) == rec
        assert store.delete_schedule("a\x00b") is True and store.get_schedule("a") is None
        with pytest.raises(StoreError):
            store.put_schedule(replace(recs[0], schedule_id=longest + "x"))

    def reopen_or_same(self, store: Store, tmp_path: Path) -> Store:
        """The store opened again (a backend that keeps data across close()), or itself."""
        new = self.reopen_store(store, tmp_path)
        if new is None:
            return store
        self._opened.append(new)
        return new
