"""Schedules on disk: format versions (an old store is read as it is, and brought to the
current format when opened for writing), the verifier knows schedule records, read-only
stores list them."""

from __future__ import annotations

import lmdb
import pytest

from atomr import LmdbStore
from atomr.errors import FormatVersionError
from atomr.store import format as fmt
from atomr.store.schedules import ScheduleRecord
from atomr.testing import encode_batch, filler_events

REC = ScheduleRecord("nightly", "wf", "0 2 * * *", None, {"n": 1}, created_ms=1)


def _format_version(path: str) -> int:
    env = lmdb.open(path, max_dbs=8, readonly=True, lock=False)
    try:
        with env.begin(db=env.open_db(fmt.DB_META, create=False)) as txn:
            return fmt.read_u32(txn.get(b"format_version"))
    finally:
        env.close()


def _set_format_version(path: str, version: int) -> None:
    env = lmdb.open(path, max_dbs=8)
    try:
        with env.begin(write=True, db=env.open_db(fmt.DB_META)) as txn:
            txn.put(b"format_version", fmt.u32(version))
    finally:
        env.close()


def test_a_store_of_format_1_is_read_as_it_is_and_migrated_when_opened_for_writing(tmp_store_path):
    with LmdbStore(tmp_store_path) as s:
        assert s.write([encode_batch("wf", "r", 1, filler_events(2))]) == [None]
    _set_format_version(tmp_store_path, 1)  # as written by an atomr without schedules
    with LmdbStore(tmp_store_path, readonly=True) as s:
        assert [r.run_id for r in s.runs()] == ["r"] and s.list_schedules() == []
    assert _format_version(tmp_store_path) == 1  # reading leaves it as it was
    with LmdbStore(tmp_store_path) as s:  # opened for writing: brought to the current format
        assert [r.run_id for r in s.runs()] == ["r"] and s.run_counts()["running"] == 1
        s.put_schedule(REC)
    assert _format_version(tmp_store_path) == fmt.FORMAT_VERSION
    with LmdbStore(tmp_store_path, readonly=True) as s:  # read-only: no lock, lists the schedules
        assert s.list_schedules() == [REC]


def test_new_stores_are_at_the_current_format_and_a_newer_one_is_refused(tmp_store_path):
    LmdbStore(tmp_store_path).close()
    assert _format_version(tmp_store_path) == fmt.FORMAT_VERSION == 3
    _set_format_version(tmp_store_path, 4)
    with pytest.raises(FormatVersionError, match="upgrade atomr"):
        LmdbStore(tmp_store_path)


def test_the_verifier_checks_schedule_records(tmp_store_path):
    with LmdbStore(tmp_store_path) as s:
        s.write([encode_batch("wf", "r", 1, filler_events(2))])
        s.put_schedule(REC)
        report = s.verify(deep=True)
        assert report.ok, report.lines()
        s._put_schedule_raw(fmt.schedule_key("bad"), REC.to_record()[:-1])  # a damaged record
        report = s.verify(deep=True)
    assert not report.ok
    [problem] = report.problems
    assert problem.database == "meta" and "checksum" in problem.what
    assert str(problem).startswith("meta: schedule 'bad': checksum")
    with LmdbStore(tmp_store_path, verify=True) as s:  # the B-tree is sound: it opens
        assert [r.schedule_id for r in s.list_schedules()] == ["nightly"]
