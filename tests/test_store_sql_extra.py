"""What the SQL stores add, checked against what LMDB does.

* values and run ids (NUL bytes, emoji, 480-character ids, 5 MB strings, NaN,
  u64, bytes) round-trip through a Runtime on every store, and what LMDB
  refuses is refused on the others with the same named error;
* several processes write one SQLite file / Postgres schema (workers); one
  worker id is one live worker (WorkerIdInUse); read-only opens read while a
  writer runs, and write nothing;
* a store of a newer format is refused (FormatVersionError), a damaged format
  row is a StoreError; a hostile Postgres schema name is a StoreUrlError
  before any SQL runs;
* a Postgres writer whose connection the server ends reconnects and commits
  again, losing and repeating nothing; a commit whose answer was lost is not
  refused when it is tried again;
* a damaged SQLite file is CorruptStore, a full one StoreFull (and recover()
  carries the run on once it may grow).

Every id-, value- and record-level case that applies to every backend is in
the StoreConformance suite (atomr/testing/_ids_tests.py).
"""

from __future__ import annotations

import math
import os
import random
import re
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from atomr import (AppendList, Dag, Done, Failed, LastWriteWins, PostgresStore, Runtime, SqliteStore, StateSchema,
                   Workflow, open_store)
from atomr import events as ev
from atomr.store.sql.schema import SQL_FORMAT_VERSION
from atomr.errors import (AtomrError, CodecError, CorruptRecord, CorruptStore, FormatVersionError, StoreClosed,
                          StoreError, StoreFull, StoreLocked, StoreUrlError,
                          WorkerIdInUse)
from atomr.store import format as fmt
from atomr.testing import encode_batch, filler_events
from conftest import PG_DSN
from workflows import ALL_STORES, PERSISTENT, CrashTarget, Reopener, chain, crash_targets, reopeners

T = 60.0
ROOT = str(Path(__file__).resolve().parents[1])

any_store = reopeners(*ALL_STORES)
sql_target = crash_targets("sqlite-full", "postgres")


# --- values and ids through a Runtime, the same as on LMDB -------------------------------------------

S = StateSchema({"v": LastWriteWins(), "w": LastWriteWins(), "seen": AppendList()})


def _echo() -> Workflow:
    """a copies the input ``v`` to ``w``; b appends it to ``seen`` (two layers: two commits)."""
    dag = (Dag.builder("a").step("a", lambda s, c: {"w": s["v"]}).step("b", lambda s, c: {"seen": [s["w"]]})
           .edge("a", "b").build())
    return Workflow("echo", dag, S)


IDS = {"nul": "a\x00b", "lead-nul": "\x00run", "emoji": "run-\U0001f680-é", "480": "r" * 480, "mark": "\x01abc",
       "sql": "'; DROP TABLE runs; --"}
VALUES = {"nul": "x\x00y", "emoji": "\U0001f680", "5mb": "z" * (5 << 20), "nan": math.nan, "inf": math.inf,
          "u64": 2**64 - 1, "i64": -(2**63), "bytes": b"\x00\xff" * 64, "nested": {"\x00k": [b"\x00", 2**64 - 1]}}
#: refused on every store alike (LMDB's behaviour)
BAD_IDS = {"480-emoji": "\U0001f680" * 480, "empty": "", "surrogate": "a\udc80"}
BAD_VALUES = {"2**64": 2**64, "-2**63-1": -(2**63) - 1, "object": object()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _outcome(fn: Any) -> tuple[str, str]:
    try:
        fn()
    except AtomrError as exc:
        return type(exc).__name__, re.sub(r"0x[0-9a-f]+", "0x…", str(exc))
    return "accepted", ""


def test_run_ids_and_values_round_trip_through_a_runtime(any_store: Reopener) -> None:
    rt = Runtime(store=any_store())
    try:
        rt.register(_echo())
        for name, rid in IDS.items():
            out = rt.start("echo", {"v": name}, run_id=rid).result(timeout=T)
            assert isinstance(out, Done) and out.run_id == rid, (name, out)
        for name, v in VALUES.items():
            out = rt.start("echo", {"v": v}, run_id=f"v-{name}").result(timeout=T)
            assert isinstance(out, Done), (name, out)
            assert _same(out.state["w"], v) and _same(out.state["seen"][0], v), name
        if any_store.kind in PERSISTENT:
            wfs = [_echo()]
            rt.close()
            rt = Runtime(store=any_store())
            for wf in wfs:
                rt.register(wf)
        assert sorted(s.run_id for s in rt.runs()) == sorted([*IDS.values(), *(f"v-{n}" for n in VALUES)])
        for name, rid in IDS.items():
            view = rt.get_state("echo", rid)
            assert view.status == "done" and view.values["seen"] == [name], name
            assert [c.label for c in rt.history("echo", rid)][-1] == "done"
            assert rt.fork("echo", rid, 1, new_run_id=rid + "-fork") == rid + "-fork"
            assert rt.get_state("echo", rid + "-fork").values["w"] == name
        for name, v in VALUES.items():
            values = rt.get_state("echo", f"v-{name}").values
            assert _same(values["v"], v) and _same(values["w"], v) and _same(values["seen"][0], v), name
            checkpoint = rt.history("echo", f"v-{name}")[1]
            assert _same(checkpoint.values["w"], v), name
    finally:
        rt.close()


def test_what_lmdb_refuses_every_store_refuses_with_the_same_error(any_store: Reopener, tmp_path: Path) -> None:
    lmdb = Reopener("lmdb", tmp_path / "reference")
    got: dict[str, list[tuple[str, str]]] = {}
    for opener in (lmdb, any_store):
        with Runtime(store=opener()) as rt:
            rt.register(_echo())
            seen = got.setdefault(opener.kind, [])
            for rid in BAD_IDS.values():
                seen.append(_outcome(lambda: rt.start("echo", {"v": 1}, run_id=rid).result(timeout=T)))
                seen.append(_outcome(lambda: rt.get_state("echo", rid)))
            for v in BAD_VALUES.values():
                seen.append(_outcome(lambda: rt.start("echo", {"v": v}, run_id="bad").result(timeout=T)))
            assert rt.runs() == []
    assert got[any_store.kind] == got["lmdb"]
    assert {name for name, _ in got["lmdb"]} <= {"AtomrError", "CodecError", "RunNotFound"}
    assert "accepted" not in {name for name, _ in got["lmdb"]}


def test_a_value_a_step_cannot_store_fails_the_run_alike(any_store: Reopener, tmp_path: Path) -> None:
    wf = Workflow("w", Dag.builder("a").step("a", lambda s, c: {"w": 2**64}).build(), S)
    outs = []
    for opener in (Reopener("lmdb", tmp_path / "reference"), any_store):
        with Runtime(store=opener()) as rt:
            rt.register(wf)
            out = rt.start("w", {}, run_id="r").result(timeout=T)
            assert isinstance(out, Failed) and rt.get_state("w", "r").status == "failed"
            outs.append((out.error_type, out.message))
    assert outs[0] == outs[1] and outs[0][0] == CodecError.__name__


# --- one writer per store; read-only opens ------------------------------------------------------------

OPEN_IN_CHILD = textwrap.dedent("""
    import sys
    from atomr import open_store
    from atomr.errors import AtomrError
    try:
        s = open_store(sys.argv[1], readonly=sys.argv[2] == "ro")
    except AtomrError as exc:
        print(type(exc).__name__, exc, sep="|", flush=True)
        sys.exit(3)
    print("opened", len(s.runs()), sep="|", flush=True)
    s.close()
""")


def _child_open(url: str, readonly: bool = False) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-c", OPEN_IN_CHILD, url, "ro" if readonly else "rw"],
                       capture_output=True, text=True, timeout=T, cwd=ROOT)
    name, _, rest = p.stdout.strip().partition("|")
    return p.returncode, name, rest + p.stderr[-2000:]


WORKER_IN_CHILD = textwrap.dedent("""
    import sys
    from atomr import Runtime, open_store
    from atomr.errors import AtomrError
    try:
        rt = Runtime(open_store(sys.argv[1]), worker_id=sys.argv[2])
    except AtomrError as exc:
        print(type(exc).__name__, exc, sep="|", flush=True)
        sys.exit(3)
    print("opened", len(rt.runs()), sep="|", flush=True)
    rt.close()
""")


def test_a_second_process_opens_the_store_as_another_worker_and_the_first_keeps_working(
        sql_target: CrashTarget) -> None:
    with Runtime(store=sql_target.open(), worker_id="first") as rt:
        rt.register(chain("c", 3))
        assert isinstance(rt.start("c", {}, run_id="before").result(timeout=T), Done)
        code, name, count = _child_open(sql_target.url)  # several processes share an SQL store
        assert (code, name, count.split("\n")[0]) == (0, "opened", "1"), count
        # ... but one worker id is one live worker
        p = subprocess.run([sys.executable, "-c", WORKER_IN_CHILD, sql_target.url, "first"],
                           capture_output=True, text=True, timeout=T, cwd=ROOT)
        name, _, message = p.stdout.strip().partition("|")
        assert (p.returncode, name) == (3, "WorkerIdInUse"), message + p.stderr[-2000:]
        assert "'first'" in message and "another id" in message
        code, name, count = _child_open(sql_target.url, readonly=True)
        assert (code, name, count.split("\n")[0]) == (0, "opened", "1"), count
        assert isinstance(rt.start("c", {}, run_id="after").result(timeout=T), Done)
        assert [s.status for s in rt.runs()] == ["done", "done"]
    # once it has closed, its id is free at once
    p = subprocess.run([sys.executable, "-c", WORKER_IN_CHILD, sql_target.url, "first"],
                       capture_output=True, text=True, timeout=T, cwd=ROOT)
    assert p.stdout.startswith("opened|2"), p.stdout + p.stderr[-2000:]


def test_a_second_store_object_in_one_process_is_another_worker(sql_target: CrashTarget) -> None:
    store = sql_target.open()
    other = sql_target.open()
    try:
        store.write([encode_batch("wf", "r", 1, filler_events(2), status="done")])
        assert [s.run_id for s in other.runs()] == ["r"]
        store.join("w1", 5.0)
        t0 = time.monotonic()
        with pytest.raises(WorkerIdInUse, match="w1"):
            other.join("w1", 5.0)
        assert time.monotonic() - t0 < 4
        other.join("w2", 5.0)
        assert sorted(w.worker_id for w in store.workers()) == ["w1", "w2"]
    finally:
        store.close()
        other.close()
    sql_target.open().close()


def test_readonly_opens_read_consistent_runs_while_a_writer_runs(sql_target: CrashTarget) -> None:
    stop = threading.Event()
    problems: list[str] = []
    with Runtime(store=sql_target.open(), durability="async") as rt:
        rt.register(chain("c", 12))
        reader = open_store(sql_target.url, readonly=True)
        try:
            def starter() -> None:
                i = 0
                while not stop.is_set():
                    rt.start("c", {}, run_id=f"r{i}").result(timeout=T)
                    i += 1

            t = threading.Thread(target=starter, daemon=True)
            t.start()
            deadline = time.monotonic() + 1.5
            reads = 0
            while time.monotonic() < deadline or reads < 20:
                for s in reader.runs():
                    seqs = [q for q, _ in reader.journal(s.workflow_id, s.run_id)]
                    if seqs[:1] != [1] or seqs != list(range(1, len(seqs) + 1)) or len(seqs) < s.last_seq:
                        problems.append(f"{s.run_id}: {seqs[:3]}..{seqs[-3:]} (index says {s.last_seq})")
                    reads += 1
            stop.set()
            t.join(T)
            assert not t.is_alive()
            assert problems == []
            # it writes nothing
            (err,) = reader.write([encode_batch("c", "ro", 1, filler_events(1))])
            assert isinstance(err, StoreError) and "read-only" in str(err)
            for refused in (lambda: reader.delete_run("c", "r0"), lambda: reader.truncate("c", "r0", 1, b""),
                            lambda: reader.delete_schedule("x")):
                with pytest.raises(StoreError, match="read-only"):
                    refused()
            assert reader.summary("c", "ro") is None and reader.summary("c", "r0") is not None
        finally:
            stop.set()
            reader.close()


def test_a_readonly_open_creates_nothing(tmp_path: Path, sql_target: CrashTarget) -> None:
    if sql_target.kind == "postgres":
        url = f"{PG_DSN}?schema={sql_target.schema}"
    else:
        url = f"sqlite:///{tmp_path / 'missing.db'}"
    with pytest.raises(StoreError, match="creates nothing"):
        open_store(url, readonly=True)
    assert not (tmp_path / "missing.db").exists()


# --- format versions -----------------------------------------------------------------------------------


def _set_format(target: CrashTarget, value: str) -> None:
    if target.kind == "postgres":
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as c:
            c.execute(f'UPDATE "{target.schema}".meta SET value = %s WHERE key = %s', (value, "format_version"))
    else:
        path = target.url.split("///", 1)[1].split("?", 1)[0]
        with sqlite3.connect(path) as c:
            c.execute("UPDATE atomr_meta SET value = ? WHERE key = 'format_version'", (value,))
        c.close()


def _dump(target: CrashTarget) -> Any:
    store = open_store(target.url, readonly=True)
    try:
        return [(s, list(store._journal_raw(s.workflow_id, s.run_id, 1, None)),  # noqa: SLF001
                 store._snapshots_raw(s.workflow_id, s.run_id)) for s in store.runs()]  # noqa: SLF001
    finally:
        store.close()


def test_a_store_of_a_newer_format_is_refused(sql_target: CrashTarget) -> None:
    with Runtime(store=sql_target.open()) as rt:
        rt.register(chain("c", 2))
        assert isinstance(rt.start("c", {}, run_id="r").result(timeout=T), Done)
    before = _dump(sql_target)
    _set_format(sql_target, str(SQL_FORMAT_VERSION + 1))
    for readonly in (False, True):
        with pytest.raises(FormatVersionError, match="upgrade atomr"):
            open_store(sql_target.url, readonly=readonly)
    code, name, message = _child_open(sql_target.url)  # the refusal released the lock
    assert (code, name) == (3, "FormatVersionError"), message
    _set_format(sql_target, str(SQL_FORMAT_VERSION))
    assert _dump(sql_target) == before  # untouched
    _set_format(sql_target, "one")
    with pytest.raises(StoreError, match="damaged format version"):
        sql_target.open()


# --- hostile schema names --------------------------------------------------------------------------------

HOSTILE = ['x"; drop table y; --', "x; drop table y", "Atomr", "a-b", "a b", "", "x" * 64, "pg_catalog", "pg_x",
           "é", "1abc", 'x"', "x.y", "\x00", "x\n"]
NOWHERE = "postgresql://nobody:s3cret@127.0.0.1:1/none"  # connecting there would fail: nothing connects


@pytest.mark.parametrize("name", HOSTILE + [None, 123], ids=[repr(n) for n in HOSTILE + [None, 123]])
def test_a_hostile_schema_name_is_refused_before_any_sql(name: Any) -> None:
    with pytest.raises(StoreUrlError) as info:
        PostgresStore(NOWHERE, schema=name)
    assert "s3cret" not in str(info.value)
    if isinstance(name, str):
        with pytest.raises(StoreUrlError):
            open_store(f"{NOWHERE}?schema={quote(name)}")


def test_hostile_schema_names_leave_the_database_alone(pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{pg_schema}"')
        c.execute(f'CREATE TABLE "{pg_schema}".y (n int)')
        before = {r[0] for r in c.execute("SELECT nspname FROM pg_namespace")}
    for name in HOSTILE:
        with pytest.raises(StoreUrlError):
            PostgresStore(PG_DSN, schema=name.replace("y", f'"{pg_schema}".y'))
        with pytest.raises(StoreUrlError):
            open_store(f"{PG_DSN}?schema={quote(name)}")
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        assert c.execute("SELECT to_regclass(%s)", (f'"{pg_schema}".y',)).fetchone()[0] is not None
        after = {r[0] for r in c.execute("SELECT nspname FROM pg_namespace")}
    assert not (after - before) & set(HOSTILE)


# --- Postgres: the server ends the writer's connection -------------------------------------------------


def _slow_chain(n: int) -> Workflow:
    names = [f"s{i:02d}" for i in range(n)]
    b = Dag.builder(names[0])
    for s in names:
        b.step(s, lambda st, ctx: (time.sleep(0.003), {"log": [ctx.step_id]})[1])
    for x, y in zip(names, names[1:]):
        b.edge(x, y)
    return Workflow("slow", b.build(), StateSchema({"log": AppendList()}))


def _pg_writer_waits_on_a_lock(c: Any, pid: int, timeout: float = T) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = c.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row is not None and row[0] == "Lock":
            return True
        time.sleep(0.005)
    return False


KILL_EVERY = {"now and then": (0.15, 0.3), "mid-statement": (0.1, 0.25), "storm": (0.01, 0.06)}


@pytest.mark.parametrize("durability", ["sync", "async"])
@pytest.mark.parametrize("when", list(KILL_EVERY))
def test_a_writer_connection_the_server_ends_reconnects_and_loses_nothing(pg_schema: str, durability: str,
                                                                          when: str) -> None:
    """The server ends the writer's session (pg_terminate_backend) now and then,
    or while a group's statement waits in the server (for a table lock another
    session holds): every run still ends Done. In a storm of kills (every few
    milliseconds: each new session may be ended before it commits) a run may
    end Failed with StoreUnavailable, kept as last committed, and recover()
    carries it on. Either way every journal is gap-free with each step
    completed once."""
    import psycopg

    # a storm must give up soon; otherwise a loaded machine gets time to reconnect
    store = PostgresStore(PG_DSN, schema=pg_schema, connect_timeout=2 if when == "storm" else 10)
    kills: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        rng = random.Random(7)
        with psycopg.connect(PG_DSN, autocommit=True) as c, psycopg.connect(PG_DSN) as locker:
            while not stop.wait(rng.uniform(*KILL_EVERY[when])):
                w = store._writer  # noqa: SLF001
                if w is None:
                    continue
                pid = w.info.backend_pid
                if when == "mid-statement":  # hold the runs table: the next group waits in the server
                    locker.execute(f'LOCK TABLE "{pg_schema}".runs IN ACCESS EXCLUSIVE MODE')
                    if not _pg_writer_waits_on_a_lock(c, pid, timeout=2):
                        locker.rollback()
                        continue
                if c.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]:
                    kills.append(pid)
                locker.rollback()

    want = [f"s{i:02d}" for i in range(15)]
    with Runtime(store=store, durability=durability) as rt:
        rt.register(_slow_chain(15))
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        handles, refused = [], []
        try:  # runs start in waves until the server has ended the writer's session 8 times
            deadline = time.monotonic() + 30
            while len(kills) < 8 and time.monotonic() < deadline:
                for _ in range(10):
                    rid = f"r{len(handles) + len(refused):03d}"
                    try:
                        handles.append(rt.start("slow", {}, run_id=rid))
                    except StoreError:  # its first commit refused: the run does not exist
                        assert when == "storm"
                        refused.append(rid)
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(T)
        outs = [h.result(timeout=T) for h in handles]
        assert len(kills) >= 8, kills
        failed = [o for o in outs if not isinstance(o, Done)]
        if when != "storm":
            assert failed == [] and refused == [], failed[:1]
        assert all(isinstance(o, Failed) and o.error_type == "StoreUnavailable" for o in failed), failed[:1]
        assert all(o.state["log"] == want for o in outs if isinstance(o, Done))
        for h in rt.recover():  # what a storm left running
            assert isinstance(h.result(timeout=T), Done)
        rt.flush()
        stored = {s.run_id for s in rt.runs()}
        assert stored <= {h.run_id for h in handles} and not stored & set(refused)
        for o in failed:  # not stored only when its very first commit failed
            assert o.run_id in stored or "does not exist" in o.message, o
        for s in rt.runs():
            assert s.status == "done"
            events = [e for _, e in rt.store.journal("slow", s.run_id)]  # gap-free, or CorruptRecord
            assert [e.step for e in events if type(e) is ev.StepCompleted] == want, s.run_id
            assert [e.super_step for e in events if type(e) is ev.SuperStepCommitted] == list(range(1, 16))


def test_reader_connections_the_server_ends_are_replaced_not_failed(pg_schema: str) -> None:
    import psycopg

    app = f"atomr-{pg_schema}"  # this test's sessions alone
    with Runtime(store=PostgresStore(PG_DSN, schema=pg_schema, pool_size=3, application_name=app)) as rt:
        rt.register(chain("c", 3))
        assert all(isinstance(rt.start("c", {}, run_id=f"a{i}").result(timeout=T), Done) for i in range(5))
        for _ in range(3):
            rt.get_state("c", "a0")
        writer = rt.store._writer.info.backend_pid  # noqa: SLF001
        with psycopg.connect(PG_DSN, autocommit=True) as c:
            readers = [p for (p,) in c.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> %s", (app, writer))]
            assert readers
            for pid in readers:
                c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        for i in range(5):  # each dead reader is replaced as it is taken: no read fails
            assert rt.get_state("c", f"a{i}").status == "done"
            assert len(rt.history("c", f"a{i}")) == 5
        assert isinstance(rt.start("c", {}, run_id="after").result(timeout=T), Done)


def test_a_commit_whose_answer_was_lost_is_not_refused_when_tried_again(pg_schema: str) -> None:
    import psycopg

    store = PostgresStore(PG_DSN, schema=pg_schema)
    try:
        store.write([encode_batch("wf", "a", 1, filler_events(2), status="running")])
        real = store._commit_group  # noqa: SLF001
        lost = []

        def commit_then_lose_the_connection(stage: Any) -> None:
            real(stage)
            if not lost:  # the server committed; the client never heard it
                lost.append(True)
                store._lose_writer(store._writer)  # noqa: SLF001
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        store._commit_group = commit_then_lose_the_connection  # type: ignore[method-assign]
        results = store.write([encode_batch("wf", "a", 3, filler_events(2, 3), status="done"),
                               encode_batch("wf", "b", 1, filler_events(1), status="running")])
        assert results == [None, None] and lost
        assert [q for q, _ in store.journal("wf", "a")] == [1, 2, 3, 4]
        assert [q for q, _ in store.journal("wf", "b")] == [1]
        assert store.summary("wf", "a").status == "done"  # type: ignore[union-attr]
        # a batch that really does not continue the journal is still refused
        (err,) = store.write([encode_batch("wf", "a", 3, filler_events(1, 3))])
        assert isinstance(err, StoreError)
    finally:
        store.close()


# --- SQLite: a damaged or full file ------------------------------------------------------------------------


def _filled(path: Path, runs: int = 60) -> None:
    with Runtime(store=SqliteStore(path)) as rt:
        rt.register(chain("c", 3))
        for i in range(runs):
            assert isinstance(rt.start("c", {"log": ["x" * 2000]}, run_id=f"r{i}").result(timeout=T), Done)


def test_a_damaged_sqlite_file_is_corrupt_store_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _filled(path)
    data = path.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "zeroed page": data[:8192] + bytes(4096) + data[12288:]}
    for name, damaged in cases.items():
        bad = tmp_path / f"{name}.db"
        bad.write_bytes(damaged)
        for readonly in (False, True):
            try:
                store = SqliteStore(bad, readonly=readonly)
            except CorruptStore as exc:
                assert "restore it from a backup" in str(exc).lower() and str(bad) in str(exc)
                continue
            try:
                with pytest.raises(CorruptStore, match="malformed"):
                    for s in store.runs():
                        list(store.journal(s.workflow_id, s.run_id))
            finally:
                store.close()
        assert bad.read_bytes()[: len(damaged)] == damaged  # nothing was "repaired" in place
    other = tmp_path / "notes.txt"
    other.write_text("not a database at all " * 50)
    with pytest.raises(StoreError, match="not an SQLite database"):
        SqliteStore(other)


def test_a_full_sqlite_store_refuses_the_write_and_recover_carries_the_run_on(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    limit = 256 * 1024
    big = Workflow("big", Dag.builder("w").step("w", lambda s, c: {"w": "z" * 400_000}).build(), S)
    with Runtime(store=SqliteStore(path, max_size=limit)) as rt:
        rt.register(chain("c", 2))
        rt.register(big)
        assert isinstance(rt.start("c", {}, run_id="small").result(timeout=T), Done)
        out = rt.start("big", {}, run_id="huge").result(timeout=T)
        assert isinstance(out, Failed) and out.error_type == "StoreFull", out
        with pytest.raises(StoreFull) as info:
            out.raise_error()
        assert f"max_size={2 * limit}" in str(info.value) and "rt.recover()" in str(info.value)
        assert {s.run_id: s.status for s in rt.runs()} == {"small": "done", "huge": "running"}
        assert isinstance(rt.start("c", {}, run_id="still-ok").result(timeout=T), Done)
    with Runtime(store=SqliteStore(path, max_size=16 * limit)) as rt:
        rt.register(big)
        (h,) = rt.recover()
        done = h.result(timeout=T)
        assert isinstance(done, Done) and len(done.state["w"]) == 400_000


# --- the LMDB store's own checks, on the SQL stores ----------------------------------------------------

sql_store = reopeners("sqlite", "postgres")


def _damage_index(opener: Reopener, run_id: str) -> None:
    """Garbage in one run's meta column (the run index entry), as a bad disk would leave it."""
    if opener.kind == "postgres":
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as c:
            c.execute(f'UPDATE "{opener.schema}".runs SET meta = %s WHERE run_id = %s', (b"\x01junk", run_id))
    else:
        with sqlite3.connect(opener.path) as c:
            c.execute("UPDATE atomr_runs SET meta = ? WHERE run_id = ?", (b"\x01junk", run_id))
        c.close()


def test_a_damaged_run_index_entry_is_that_runs_error(sql_store: Reopener) -> None:
    s = sql_store()
    try:
        for r in ("alpha", "victim", "omega"):
            assert s.write([encode_batch("wf", r, 1, filler_events(3))]) == [None]
    finally:
        s.close()
    _damage_index(sql_store, "victim")
    s = sql_store()
    try:
        assert sorted(r.run_id for r in s.runs()) == ["alpha", "omega"]
        assert s.damaged_entries()[0][:2] == ("wf", "victim")
        with pytest.raises(CorruptRecord, match="run index entry is damaged"):
            s.summary("wf", "victim")
        # a write to the damaged run is refused with the same error, the others go on
        res = s.write([encode_batch("wf", "victim", 4, filler_events(1, 4)),
                       encode_batch("wf", "alpha", 4, filler_events(1, 4))])
        assert isinstance(res[0], CorruptRecord) and res[1] is None, res
        assert [q for q, _ in s.journal("wf", "alpha")] == [1, 2, 3, 4]
    finally:
        s.close()


def test_a_first_commit_that_does_not_fit_says_the_run_was_not_created(tmp_path: Path) -> None:
    limit = 256 * 1024
    s = SqliteStore(tmp_path / "runs.db", max_size=limit, synchronous="normal")
    try:
        assert s.write([encode_batch("wf", "small", 1, filler_events(2))]) == [None]
        batch = encode_batch("wf", "huge", 1, filler_events(1))
        batch.records = batch.records + [fmt.encode_obj({"blob": b"z" * (2 * limit)})]
        (err,) = s.write([batch])
        assert isinstance(err, StoreFull)
        msg = str(err)
        assert "huge" in msg and "was not started" in msg and "start it again" in msg
        assert "rt.recover()" not in msg and f"max_size={2 * limit}" in msg
        assert s.summary("wf", "huge") is None and list(s.journal("wf", "huge")) == []
        assert [r.run_id for r in s.runs()] == ["small"]
        more = encode_batch("wf", "small", 3, filler_events(1, 3))
        more.records = [fmt.encode_obj({"blob": b"z" * (2 * limit)})]
        (err,) = s.write([more])
        assert isinstance(err, StoreFull) and "rt.recover()" in str(err)
        assert [q for q, _ in s.journal("wf", "small")] == [1, 2]
    finally:
        s.close()


def test_data_survives_many_open_close_cycles(sql_store: Reopener) -> None:
    expected: list[int] = []
    for i in range(5):
        s = sql_store()
        try:
            assert [q for q, _ in s.journal("wf", "r")] == expected
            first = 7 * i + 1
            assert s.write([encode_batch("wf", "r", first, filler_events(7, first))]) == [None]
            expected += list(range(first, first + 7))
            if i == 2:
                s.truncate("wf", "r", 10, fmt.encode_obj({"cut": 10}))
                expected = [q for q in expected if q > 10]
        finally:
            s.close()
    s = sql_store()
    try:
        assert [q for q, _ in s.journal("wf", "r")] == expected
        assert s.summary("wf", "r").first_seq == 11  # type: ignore[union-attr]
    finally:
        s.close()


def test_a_closed_store_raises_store_closed(sql_store: Reopener) -> None:
    s = sql_store()
    s.write([encode_batch("wf", "r", 1, filler_events(2))])
    s.close()
    s.close()  # twice is fine
    for call in (lambda: s.summary("wf", "r"), lambda: s.runs(), lambda: list(s.journal("wf", "r")),
                 lambda: s.snapshots("wf", "r"), lambda: s.latest_snapshot("wf", "r"), lambda: s.delete_run("wf", "r"),
                 lambda: s.truncate("wf", "r", 1, b""), lambda: s.list_schedules(), lambda: s.stored_bytes(),
                 lambda: s.take_slot("lane", 1, 1, None), lambda: s.free_slot("lane", 1),
                 lambda: s.free_slots_except("lane", ())):
        with pytest.raises(StoreClosed):
            call()
    (err,) = s.write([encode_batch("wf", "r", 3, filler_events(1, 3))])
    assert isinstance(err, StoreClosed)


def test_sqlite_files_are_private_and_bad_paths_are_named_errors(tmp_path: Path) -> None:
    where = tmp_path / "new" / "dir"
    s = SqliteStore(where / "runs.db")
    s.write([encode_batch("wf", "r", 1, filler_events(2))])
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o700
    for name in os.listdir(where):  # the database, its WAL and shared memory, the lock
        assert stat.S_IMODE(os.stat(where / name).st_mode) == 0o600, name
    s.close()
    for path, words in [(where, "is a directory"), (str(where / "bad\x00name.db"), "NUL"), ("", "file path"),
                        ("/proc/no/such/dir/runs.db", "cannot create")]:
        with pytest.raises(StoreError, match=words) as info:
            SqliteStore(path)
        assert type(info.value) is StoreError and has_a_hint(str(info.value)), info.value
    SqliteStore(where / "runs.db").close()  # the refusals left nothing held


@pytest.mark.parametrize("kw", [{"synchronous": "sometimes"}, {"max_size": 10}, {"snapshot_every": 0},
                                {"readonly": "yes"}, {"readers": 0}],
                         ids=lambda kw: ",".join(kw))
def test_bad_sqlite_options_are_named_errors(tmp_path: Path, kw: dict[str, Any]) -> None:
    with pytest.raises(StoreError) as info:
        SqliteStore(tmp_path / "runs.db", **kw)
    assert type(info.value) is StoreError and next(iter(kw)) in str(info.value) and has_a_hint(str(info.value))
    assert not (tmp_path / "runs.db").exists()


@pytest.mark.parametrize("kw", [{"pool_size": 0}, {"connect_timeout": 0}, {"connect_timeout": math.nan},
                                {"snapshot_every": 0}, {"readonly": "yes"}, {"application_name": "x" * 64}],
                         ids=lambda kw: ",".join(kw))
def test_bad_postgres_options_are_named_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(StoreError) as info:
        PostgresStore(NOWHERE, schema="atomr", **kw)  # refused before connecting
    assert type(info.value) is StoreError and next(iter(kw)) in str(info.value)
    assert "s3cret" not in str(info.value)


def has_a_hint(message: str) -> bool:
    from test_bad_input import has_hint

    return has_hint(message)


def test_a_worker_starting_while_another_reaps_is_not_taken_for_dead(tmp_path: Any, monkeypatch: Any) -> None:
    """The reaper can lock and unlink a new worker's lock file between that worker's open and
    its lock: the worker must not go on holding a lock on a file nobody can find."""
    import fcntl

    from atomr.store.sql import sqlite as sq

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    starting, reaper = open_store(url), open_store(url)
    try:
        reaper.join("reaper", 5.0)
        real, raced = fcntl.flock, []

        def flock(fd: int, op: int) -> None:
            if not raced:  # the reaper gets in first: it finds the file unlocked, so "dead"
                raced.append(None)
                raced[0] = reaper._worker_dead(None, "w1")  # noqa: SLF001
            real(fd, op)

        monkeypatch.setattr(sq.fcntl, "flock", flock)
        starting.join("w1", 5.0)
        monkeypatch.setattr(sq.fcntl, "flock", real)
        assert raced == [True]
        assert reaper.reap() == []  # it holds the lock on the file a checker opens: alive
        assert [w.worker_id for w in reaper.workers()] == ["reaper", "w1"]
    finally:
        starting.close()
        reaper.close()
