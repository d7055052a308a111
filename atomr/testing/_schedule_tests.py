"""Conformance: schedule records (kept beside the runs, never among them)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from atomr.errors import StoreError
from atomr.store import format as fmt
from atomr.store.base import Store
from atomr.store.schedules import ScheduleRecord
from atomr.testing._base import SuiteBase
from atomr.testing.journals import encode_batch, filler_events

__all__ = ["ScheduleTests"]


def _record(sid: str, **kw: object) -> ScheduleRecord:
    return replace(ScheduleRecord(sid, "wf", None, 60_000, {"n": 1, "deep": {"a": [1, 2]}},
                                  meta={"module": "m:wf"}, created_ms=1_700_000_000_000), **kw)


class ScheduleTests(SuiteBase):
    """Conformance: schedule records."""

    def test_schedules_round_trip_replace_and_delete(self, store: Store) -> None:
        assert store.list_schedules() == [] and store.get_schedule("b") is None
        b = _record("b", cron="0 2 * * *", every_ms=None, overlap="allow", catch_up="one")
        a = _record("a", last_due_ms=1_700_000_060_000, last_run_id="a@x", fired=3, last_error="E: e")
        store.put_schedule(b)
        store.put_schedule(a)
        assert store.get_schedule("b") == b and store.list_schedules() == [a, b]  # by id
        a2 = replace(a, version=2, every_ms=30_000)
        store.put_schedule(a2)
        assert store.list_schedules() == [a2, b]
        assert store.delete_schedule("a") is True and store.delete_schedule("a") is False
        assert store.list_schedules() == [b] and store.get_schedule("a") is None

    def test_schedules_are_not_runs(self, store: Store) -> None:
        store.put_schedule(_record("s"))
        self.write_ok(store, encode_batch(self.WF, "r1", 1, filler_events(2), status="running"))
        assert [s.run_id for s in store.runs()] == ["r1"]
        assert store.delete_run(self.WF, "r1") and store.list_schedules() == [_record("s")]

    def test_schedules_survive_reopen(self, store: Store, tmp_path: Path) -> None:
        rec = _record("nightly", cron="*/5 * * * *", every_ms=None)
        store.put_schedule(rec)
        again = self.reopen(store, tmp_path)
        assert again.list_schedules() == [rec]

    def test_bad_schedule_ids_are_refused(self, store: Store) -> None:
        for sid in ("", "x" * (fmt.MAX_SCHEDULE_ID_BYTES + 1)):
            with pytest.raises(StoreError):
                store.put_schedule(_record(sid))
        assert store.list_schedules() == []

    def test_a_damaged_schedule_record_is_skipped_and_named(self, store: Store) -> None:
        put_raw = getattr(store, "_put_schedule_raw", None)
        if put_raw is None:
            pytest.skip(f"{type(store).__name__} has no raw schedule writes")
        store.put_schedule(_record("good"))
        put_raw(fmt.schedule_key("bad"), _record("bad").to_record()[:-2])
        assert [r.schedule_id for r in store.list_schedules()] == ["good"]
        with pytest.raises(StoreError, match="schedule 'bad'"):
            store.get_schedule("bad")
        assert store.delete_schedule("bad")
