"""The run index: pages newest first through the indexes every backend keeps,
counts of runs by status kept as runs change status, migration of older stores."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest

from atomr import LmdbStore, MemoryStore, SqliteStore
from atomr.errors import StoreError
from atomr.store import format as fmt
from atomr.store.base import STATUSES, AppendBatch, RunSummary

from conftest import PG_DSN, need_pg

pytestmark = pytest.mark.timeout(300)

BACKENDS = ["memory", "lmdb", "sqlite", "postgres"]


def open_backend(kind: str, where: Path, schema: list[str]) -> Any:
    if kind == "memory":
        return MemoryStore()
    if kind == "lmdb":
        return LmdbStore(str(where / "lmdb"))
    if kind == "sqlite":
        return SqliteStore(str(where / "runs.db"))
    need_pg()
    from atomr import PostgresStore

    return PostgresStore(PG_DSN, schema=schema[0])


@pytest.fixture(params=BACKENDS)
def backend(request: Any, tmp_path: Path) -> Any:
    schema: list[str] = []
    if request.param == "postgres":
        need_pg()
        import uuid

        schema.append("t_" + uuid.uuid4().hex[:16])
    stores: list[Any] = []

    def reopen() -> Any:
        if stores:
            stores[-1].close()
        stores.append(open_backend(request.param, tmp_path, schema))
        return stores[-1]

    reopen.kind = request.param  # type: ignore[attr-defined]
    yield reopen
    if stores:
        stores[-1].close()
    if schema:
        from conftest import drop_schema

        drop_schema(schema[0])


def put(store: Any, wf: str, run: str, status: str, seq: int = 1) -> None:
    (err,) = store.write([AppendBatch(wf, run, seq, [fmt.frame(b"x")], status=status)])
    assert err is None, err


def order(rows: list[RunSummary]) -> list[tuple[int, str, str]]:
    return [(s.created_ms, s.workflow_id, s.run_id) for s in rows]


def fill(store: Any) -> None:
    """21 runs over 3 workflows, 3 statuses, several per millisecond (ties ordered by ids)."""
    for i in range(21):
        put(store, f"wf{i % 3}", f"r{i:02d}", ("running", "paused", "done")[i % 3 if i % 2 else 0])
        if i % 4 == 0:
            time.sleep(0.003)


def all_pages(store: Any, limit: int, **filters: Any) -> list[RunSummary]:
    out: list[RunSummary] = []
    before = None
    while True:
        page = store.runs(limit=limit, before=before, **filters)
        assert len(page) <= limit
        out += page
        if len(page) < limit:
            return out
        before = page[-1].cursor


def test_pages_are_newest_first_and_continue_from_a_cursor(backend: Any) -> None:
    store = backend()
    fill(store)
    every = store.runs()
    assert len(every) == 21
    keys = order(every)
    assert keys == sorted(keys, reverse=True)  # newest first; ties by ids, descending
    assert every[0].run_id == "r20" and every[-1].run_id == "r00"
    for limit in (1, 4, 7, 21, 50):
        assert order(all_pages(store, limit)) == keys
    for filters in ({"status": "paused"}, {"workflow_id": "wf1"}, {"status": "running", "workflow_id": "wf0"},
                    {"status": "cancelled"}, {"workflow_id": "nope"}):
        want = [k for k, s in zip(keys, every)
                if s.status == filters.get("status", s.status) and s.workflow_id == filters.get("workflow_id",
                                                                                                 s.workflow_id)]
        assert order(store.runs(**filters)) == want, filters
        assert order(all_pages(store, 2, **filters)) == want, filters
    # a cursor from one listing continues another: the runs after that run, in order
    mid = every[10]
    assert order(store.runs(status="paused", before=mid.cursor)) == [
        k for k, s in zip(keys[11:], every[11:]) if s.status == "paused"]
    assert order(store.runs(workflow_id="wf2", before=mid.cursor)) == [
        k for k, s in zip(keys[11:], every[11:]) if s.workflow_id == "wf2"]


def test_a_run_moves_between_status_pages_and_counts(backend: Any) -> None:
    store = backend()
    fill(store)
    counts = store.run_counts()
    assert set(counts) == set(STATUSES)
    assert counts == {st: sum(s.status == st for s in store.runs()) for st in STATUSES}
    s = store.runs(status="running")[0]
    put(store, s.workflow_id, s.run_id, "paused", seq=2)
    assert s.run_id in [x.run_id for x in store.runs(status="paused")]
    assert s.run_id not in [x.run_id for x in store.runs(status="running")]
    assert store.runs(limit=1, before=None)[0].run_id == "r20"  # created_ms did not move
    after = store.run_counts()
    assert after["running"] == counts["running"] - 1 and after["paused"] == counts["paused"] + 1
    assert store.delete_run(s.workflow_id, s.run_id)
    assert store.run_counts()["paused"] == counts["paused"]
    assert s.run_id not in [x.run_id for x in store.runs()]
    if backend.kind != "memory":  # kept by the store: right after a restart
        store = backend()
        assert store.run_counts() == {**counts, "running": counts["running"] - 1}
        assert len(store.runs()) == 20


def test_bad_page_arguments_are_refused_by_name(backend: Any) -> None:
    store = backend()
    put(store, "wf", "r", "running")
    for bad in ({"status": "nope"}, {"limit": 0}, {"limit": -1}, {"limit": "5"}, {"before": "!!"},
                {"before": "W10"}, {"before": ""}):
        with pytest.raises(StoreError, match="status|limit|cursor"):
            store.runs(**bad)


def test_group_commits_and_imports_keep_the_counts(backend: Any) -> None:
    store = backend()
    batches = [AppendBatch("wf", f"g{i}", 1, [fmt.frame(b"x")], status="queued") for i in range(6)]
    batches.append(AppendBatch("wf", "g0", 2, [fmt.frame(b"y")], status="running"))
    assert store.write(batches) == [None] * 7
    assert store.run_counts()["queued"] == 5 and store.run_counts()["running"] == 1
    store.import_run(RunSummary("wf", "imp", "failed", 0, 1, created_ms=5, updated_ms=5), [(1, fmt.frame(b"z"))], [])
    assert store.run_counts()["failed"] == 1
    assert store.runs()[-1].run_id == "imp"  # created long ago: the last page
    assert [s.run_id for s in store.runs(status="failed")] == ["imp"]


# -- migration of stores made before the index ----------------------------------------


def _lmdb_to_format_2(path: str) -> None:
    """Make the store what atomr wrote at format 2: no index keys, no counts."""
    env = lmdb.open(path, max_dbs=8, subdir=True)
    meta = env.open_db(fmt.DB_META)
    with env.begin(write=True, db=meta) as txn:
        cur = txn.cursor()
        keys = [bytes(k) for k, _ in cur if bytes(k).startswith((fmt.INDEX_PREFIX, fmt.COUNT_PREFIX))]
        for k in keys:
            txn.delete(k)
        txn.put(b"format_version", fmt.u32(2))
    env.close()


def test_an_lmdb_store_of_format_2_is_migrated_on_open(tmp_path: Path) -> None:
    path = str(tmp_path / "old")
    with LmdbStore(path) as store:
        fill(store)
        want = order(store.runs())
        counts = store.run_counts()
    _lmdb_to_format_2(path)
    with LmdbStore(path, readonly=True) as ro:  # read-only: not migrated, read by a scan
        assert order(ro.runs()) == want and ro.run_counts() == counts
        assert order(all_pages(ro, 4, status="paused")) == [k for k, s in zip(want, ro.runs())
                                                           if s.status == "paused"]
    with LmdbStore(path) as store:
        assert order(store.runs()) == want
        assert store.run_counts() == counts
        reads = store.index_reads
        assert order(all_pages(store, 5)) == want
        assert store.index_reads - reads == 21  # through the index: one entry per run listed
    env = lmdb.open(path, max_dbs=8, subdir=True, readonly=True, lock=False)
    with env.begin(db=env.open_db(fmt.DB_META, create=False)) as txn:
        assert fmt.read_u32(txn.get(b"format_version")) == 3
    env.close()
    with LmdbStore(path) as store:
        report = store.verify(deep=True)
        assert not [p for p in report.problems if p.database == "meta"], report.problems


def _sql_to_format_2(conn: Any, t: str, idx: str) -> None:
    conn.execute(f"DROP TABLE {t}run_counts")
    for name in ("runs_page", "runs_status_page", "runs_wf_page", "runs_wf_status_page"):
        conn.execute(f"DROP INDEX {t}{name}")
    conn.execute(f"CREATE INDEX {idx}runs_status ON {t}runs (status, created_ms)")
    conn.execute(f"CREATE INDEX {idx}runs_created ON {t}runs (created_ms)")
    conn.execute(f"UPDATE {t}meta SET value = '2' WHERE key = 'format_version'")


def test_an_sqlite_store_of_format_2_is_migrated_on_open(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    with SqliteStore(path) as store:
        fill(store)
        want = order(store.runs())
        counts = store.run_counts()
    conn = sqlite3.connect(path, isolation_level=None)
    _sql_to_format_2(conn, "atomr_", "atomr_")
    conn.close()
    with SqliteStore(path) as store:
        assert store.run_counts() == counts
        assert order(all_pages(store, 4)) == want
        put(store, "wf0", "new", "paused")
        assert store.run_counts()["paused"] == counts["paused"] + 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM atomr_meta WHERE key = 'format_version'").fetchone()[0] == "3"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "atomr_runs_status_page" in names and "atomr_runs_status" not in names
    conn.close()


def test_a_postgres_store_of_format_2_is_migrated_on_open(pg_schema: str) -> None:
    from atomr import PostgresStore
    import psycopg

    with PostgresStore(PG_DSN, schema=pg_schema) as store:
        fill(store)
        want = order(store.runs())
        counts = store.run_counts()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        _sql_to_format_2(conn, f'"{pg_schema}".', "")
    with PostgresStore(PG_DSN, schema=pg_schema) as store:
        assert store.run_counts() == counts
        assert order(all_pages(store, 4)) == want


def test_sql_pages_are_one_index_range() -> None:
    """Each page query of SQLite is a search of one paging index, never a sort of the table."""
    import tempfile

    path = tempfile.mkdtemp() + "/plan.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO atomr_runs (workflow_id, run_id, status, super_step, first_seq, last_seq, "
                     "snapshot_seq, created_ms, updated_ms, meta) VALUES (?, ?, ?, 0, 1, 1, 0, ?, ?, x'')",
                     [(f"wf{i % 5}", f"r{i}", STATUSES[i % 7], i, i) for i in range(5000)])
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    with SqliteStore(path) as store:
        plans: list[str] = []
        real = store._select_runs

        def explain(where: str, args: tuple[Any, ...]) -> list[RunSummary]:
            with store._reading(consistent=False) as cur:
                cur.execute(f"EXPLAIN QUERY PLAN SELECT * FROM atomr_runs{where}", args)
                plans.append(" ".join(str(r[-1]) for r in cur.fetchall()))
            return real(where, args)

        store._select_runs = explain  # type: ignore[method-assign]
        cursor = RunSummary("wf1", "r2500", "running", 0, 1, created_ms=2500).cursor
        for filters in ({}, {"status": "paused"}, {"workflow_id": "wf1"}, {"workflow_id": "wf1", "status": "done"}):
            store.runs(limit=10, **filters)
            store.runs(limit=10, before=cursor, **filters)
    assert len(plans) == 8
    for plan in plans:
        assert "USING INDEX atomr_runs_" in plan and "TEMP B-TREE" not in plan, plan


def test_sql_counts_of_many_writers_fold_into_one_row_per_status_on_open(backend: Any, monkeypatch: Any) -> None:
    if backend.kind not in ("sqlite", "postgres"):
        pytest.skip("per-writer rows are the SQL stores'")
    from atomr.store.sql.base import SqlStore

    monkeypatch.setattr(SqlStore, "fold_counts_at", 3)  # past 3 rows (64 by default)
    for i in range(3):  # three processes in turn, each a writer of its own
        store = backend()
        put(store, "wf", f"w{i}", "running")
        put(store, "wf", f"w{i}", "done", seq=2)
    store = backend()
    assert store.run_counts() == {**dict.fromkeys(STATUSES, 0), "done": 3}
    with store._reading(consistent=False) as cur:
        cur.execute(store.dialect.sql("SELECT writer, status, n FROM {t}run_counts WHERE n <> 0"))
        rows = sorted(tuple(r) for r in cur.fetchall())
    assert rows == [("", "done", 3)]
