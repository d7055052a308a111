"""copy_store / atomr copy: every run (journal, snapshots, index) and schedule moves
between backends byte for byte and is verified; a paused run resumes in the copy;
a non-empty destination is refused and left unchanged; import_run's contract."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from atomr import (AppendList, Command, Dag, Done, LastWriteWins, LmdbStore, MemoryStore, Paused, PostgresStore,
                   Runtime, SqliteStore, StateSchema, Workflow)
from atomr.cli import main
from atomr.errors import CopyError, StoreError, StoreNotEmpty
from atomr.store.base import RunSummary, Store
from atomr.store.copy import copy_store, run_digest
from conftest import PG_DSN

pytestmark = pytest.mark.timeout(300)
T = 30.0


def _count(state: Any, ctx: Any) -> dict[str, Any]:
    return {"n": state["n"] + 1, "log": [f"step {state['n']}"]}


def _ask(state: Any, ctx: Any) -> dict[str, Any]:
    answer = ctx.interrupt({"question": "ship?"})
    return {"log": [f"answer {answer}"]}


def _boom(state: Any, ctx: Any) -> dict[str, Any]:
    raise ValueError("boom")


SCHEMA = StateSchema({"n": (LastWriteWins(), 0), "log": AppendList()})
chain = Workflow("chain", Dag.builder("a").step("a", _count).step("b", _count).step("c", _count)
                 .edge("a", "b").edge("b", "c").build(), SCHEMA)
asking = Workflow("asking", Dag.builder("a").step("a", _count).step("ask", _ask).edge("a", "ask").build(), SCHEMA)
failing = Workflow("failing", Dag.builder("boom").step("boom", _boom).build(), SCHEMA)
tick = Workflow("tick", Dag.builder("a").step("a", _count).build(), SCHEMA)


def fill(store: Store) -> None:
    """Runs of every kind: done, paused at an interrupt, failed, pruned, started by a schedule."""
    with Runtime(store=store) as rt:
        for wf in (chain, asking, failing, tick):
            rt.register(wf)
        assert isinstance(rt.start("chain", {"n": 1}, run_id="done-1").result(timeout=T), Done)
        assert isinstance(rt.start("asking", {"n": 1}, run_id="paused-1").result(timeout=T), Paused)
        rt.start("failing", {}, run_id="failed-1").result(timeout=T)
        assert isinstance(rt.start("chain", {"n": 5}, run_id="pruned-1").result(timeout=T), Done)
        assert rt.prune("chain", "pruned-1", keep_last=2) > 0
        rt.schedule("nightly", "tick", every_s=0.2, input={"n": 7})
        deadline = time.monotonic() + T
        while not rt.schedules()[0].fired:
            assert time.monotonic() < deadline, "the schedule did not fire"
            time.sleep(0.05)
        rt.schedule("nightly", "tick", every_s=86400, input={"n": 7})  # no more firings
        for s in rt.runs(workflow_id="tick"):
            rt.handle("tick", s.run_id).result(timeout=T)
        pruned = store.summary("chain", "pruned-1")
        assert 1 < pruned.first_seq <= pruned.last_seq  # a journal cut short, but not empty


def contents(store: Store) -> dict[str, Any]:
    """Everything a copy must carry, as bytes."""
    runs = {}
    for s in store.runs():
        journal = [(q, bytes(r)) for q, r in store._journal_raw(s.workflow_id, s.run_id, 1, None)]
        snaps = [(q, bytes(r)) for q, r in store._snapshots_raw(s.workflow_id, s.run_id)]
        runs[(s.workflow_id, s.run_id)] = (s, run_digest(journal, snaps), len(journal), len(snaps))
    return {"runs": runs, "schedules": store._schedules_raw()}


def test_lmdb_to_sqlite_to_postgres_to_lmdb_and_the_paused_run_resumes(tmp_path, pg_schema):
    fill(LmdbStore(tmp_path / "a"))
    with LmdbStore(tmp_path / "a", readonly=True) as a:
        want = contents(a)
    kinds = {s.status for s, *_ in want["runs"].values()}
    assert {"done", "paused", "failed"} <= kinds and len(want["schedules"]) == 1
    assert any(run.startswith("nightly@") for _, run in want["runs"])

    hops = [lambda: LmdbStore(tmp_path / "a"), lambda: SqliteStore(tmp_path / "b.db"),
            lambda: PostgresStore(PG_DSN, schema=pg_schema), lambda: LmdbStore(tmp_path / "d")]
    for make_src, make_dst in zip(hops, hops[1:]):
        src, dst = make_src(), make_dst()
        try:
            seen = []
            report = copy_store(src, dst, progress=seen.append)
            assert contents(dst) == want
        finally:
            src.close()
            dst.close()
        assert len(report.runs) == len(want["runs"]) == len(seen) and report.schedules == 1
        assert report.events == sum(n for *_, n, _ in want["runs"].values())
        assert {(r.workflow_id, r.run_id): r.sha256 for r in report.runs} == {
            k: v[1] for k, v in want["runs"].items()}

    with Runtime(store=LmdbStore(tmp_path / "d")) as rt:
        rt.register(asking)
        rt.register(chain)
        out = rt.resume("asking", "paused-1", Command(resume="yes")).result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["step 1", "answer yes"]
        assert [s.schedule_id for s in rt.schedules()] == ["nightly"]
        assert rt.get_state("chain", "pruned-1").values["n"] == 8


def test_a_destination_with_runs_is_refused_and_left_unchanged(tmp_path):
    fill(LmdbStore(tmp_path / "a"))
    dst = MemoryStore()
    with Runtime(store=dst) as rt:
        rt.register(chain)
        rt.start("chain", {"n": 1}, run_id="mine").result(timeout=T)
    before = contents(dst)
    with LmdbStore(tmp_path / "a") as src:
        with pytest.raises(StoreNotEmpty, match="already holds 1 run"):
            copy_store(src, dst)
    assert contents(dst) == before


def test_a_destination_with_only_a_schedule_is_refused(tmp_path):
    dst = SqliteStore(tmp_path / "d.db")
    with Runtime(store=dst) as rt:
        rt.schedule("s", "tick", every_s=3600)
    dst = SqliteStore(tmp_path / "d.db")
    try:
        with pytest.raises(StoreNotEmpty, match="0 run.*1 schedule"):
            copy_store(MemoryStore(), dst)
    finally:
        dst.close()


def test_cli_copy_refuses_a_non_empty_destination_and_leaves_it_unchanged(tmp_path, capsys):
    fill(LmdbStore(tmp_path / "a"))
    with LmdbStore(tmp_path / "a", readonly=True) as a:
        n = len(a.runs())
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert main(["copy", str(tmp_path / "a"), url]) == 0
    out = capsys.readouterr().out
    assert f"copied {n} run(s)" in out and "1 schedule(s)" in out and "matches SRC" in out
    assert out.count("  ok\n") == n
    assert main(["--store", url, "runs", "--json"]) == 0
    before = capsys.readouterr().out
    assert main(["copy", str(tmp_path / "a"), url]) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "left unchanged" in err
    assert main(["--store", url, "runs", "--json"]) == 0
    assert capsys.readouterr().out == before
    assert main(["copy", url, str(tmp_path / "c"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["runs"]) == len(json.loads(before)) and doc["schedules"] == 1


class _Flipping(MemoryStore):
    """Imports each run with one byte of its last event changed (still well framed in shape)."""

    def import_run(self, summary: RunSummary, journal: Any, snapshots: Any) -> None:
        journal = list(journal)
        seq, rec = journal[-1]
        journal[-1] = (seq, rec[:-1] + bytes([rec[-1] ^ 1]))
        super().import_run(summary, journal, snapshots)


def test_a_copy_that_reads_back_different_is_undone(tmp_path):
    fill(LmdbStore(tmp_path / "a"))
    dst = _Flipping()
    with LmdbStore(tmp_path / "a", readonly=True) as src:
        with pytest.raises(CopyError, match="reads back .* different.*SHA-256.*destination is empty"):
            copy_store(src, dst)
    assert dst.runs() == [] and dst._schedules_raw() == []


def test_a_damaged_source_record_stops_the_copy_and_nothing_is_left(tmp_path):
    src = MemoryStore()
    fill(src)
    s = src.summary("chain", "pruned-1")
    src._corrupt("chain", "pruned-1", s.last_seq, b"\x01garbage")
    dst = SqliteStore(tmp_path / "d.db")
    try:
        with pytest.raises(CopyError, match="pruned-1 .* is damaged"):
            copy_store(src, dst)
        assert dst.runs() == [] and dst._schedules_raw() == []
    finally:
        dst.close()


def test_the_destination_must_not_be_owned_by_a_runtime(tmp_path):
    with Runtime(store=MemoryStore()) as rt:
        with pytest.raises(CopyError, match="open Runtime"):
            copy_store(MemoryStore(), rt.store)


# -- import_run: one contract for every backend ---------------------------------------------


@pytest.fixture(params=["lmdb", "memory", "sqlite", "postgres"])
def empty_store(request: Any, tmp_path: Path) -> Any:
    kind = request.param
    if kind == "lmdb":
        store: Store = LmdbStore(tmp_path / "s")
    elif kind == "memory":
        store = MemoryStore()
    elif kind == "sqlite":
        store = SqliteStore(tmp_path / "s.db")
    else:
        store = PostgresStore(PG_DSN, schema=request.getfixturevalue("pg_schema"))
    yield kind, store
    store.close()


def test_import_run_stores_a_whole_run_and_refuses_an_existing_one(empty_store):
    kind, dst = empty_store
    src = MemoryStore()
    fill(src)
    for s in src.runs():
        journal = list(src._journal_raw(s.workflow_id, s.run_id, 1, None))
        snaps = src._snapshots_raw(s.workflow_id, s.run_id)
        dst.import_run(s, journal, snaps)
    assert contents(dst)["runs"] == contents(src)["runs"]
    s = src.summary("asking", "paused-1")
    before = contents(dst)
    with pytest.raises(StoreError, match="already exists"):
        dst.import_run(s, list(src._journal_raw("asking", "paused-1", 1, None)),
                       src._snapshots_raw("asking", "paused-1"))
    assert contents(dst) == before


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
def test_import_run_refuses_a_journal_with_a_gap_and_writes_nothing(kind, tmp_path):
    src = MemoryStore()
    fill(src)
    dst: Store = LmdbStore(tmp_path / "s") if kind == "lmdb" else MemoryStore()
    s = src.summary("chain", "done-1")
    journal = list(src._journal_raw("chain", "done-1", 1, None))
    del journal[3]
    with pytest.raises(StoreError, match="without a gap"):
        dst.import_run(s, journal, src._snapshots_raw("chain", "done-1"))
    assert dst.runs() == [] and dst.summary("chain", "done-1") is None
    dst.close()
