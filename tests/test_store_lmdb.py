"""LmdbStore specifics: locking, file modes, map growth and limits, format
version, damaged files, and what survives a close (or a killed process)."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest

from atomr import (
    AppendList,
    Command,
    Dag,
    Done,
    LastWriteWins,
    LmdbStore,
    Paused,
    Runtime,
    StateSchema,
    Workflow,
)
from atomr._load import load_progress
from atomr.errors import (
    FormatVersionError,
    StoreClosed,
    StoreError,
    StoreFull,
    StoreLocked,
)
from atomr.store import format as fmt
from atomr.testing import check_rehydration, encode_batch, filler_events

ROOT = str(Path(__file__).resolve().parents[1])
TIMEOUT = 60.0


# --- helpers -------------------------------------------------------------------------


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _read_line(proc: subprocess.Popen[str], timeout: float = TIMEOUT) -> str:
    """The child's next stdout line, failing (not hanging) if it never comes."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"child printed nothing in {timeout}s; stderr: {proc.communicate()[1]}")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"child exited early: {proc.wait(timeout)}; stderr: {proc.communicate()[1]}")
    return line.strip()


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = _child(code, *args)
    out, err = proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _fill(store: LmdbStore, run: str, batches: int, per_batch: int = 10, size: int = 1000) -> int:
    """Write ``batches`` batches of big events; returns the last seq."""
    payload = "x" * size
    seq = store.summary("wf", run).last_seq if store.summary("wf", run) else 0  # type: ignore[union-attr]
    for _ in range(batches):
        evs = [ev_with(payload, seq + i) for i in range(1, per_batch + 1)]
        assert store.write([encode_batch("wf", run, seq + 1, evs, status="running")]) == [None]
        seq += per_batch
    return seq


def ev_with(payload: str, i: int):  # noqa: ANN201
    from atomr import events as ev

    return ev.StepStarted(f"s{i}", i, 1, payload)


# --- locking ---------------------------------------------------------------------------

HOLD = """
import sys
from atomr import LmdbStore
s = LmdbStore(sys.argv[1], map_size=1 << 20)
print("locked", flush=True)
sys.stdin.read()
s.close()
print("released", flush=True)
"""


def test_second_process_gets_store_locked_naming_path_and_pid(tmp_store_path: str) -> None:
    LmdbStore(tmp_store_path, map_size=1 << 20).close()
    holder = _child(HOLD, tmp_store_path)
    try:
        assert _read_line(holder) == "locked"
        with pytest.raises(StoreLocked) as info:
            LmdbStore(tmp_store_path, map_size=1 << 20)
        err = info.value
        assert err.path == tmp_store_path and err.pid == holder.pid
        assert tmp_store_path in str(err) and f"process {holder.pid}" in str(err)
        assert "stop that process" in str(err)
        # and the refusal did not take the lock away from the holder
        with pytest.raises(StoreLocked):
            LmdbStore(tmp_store_path, map_size=1 << 20)
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        assert _read_line(holder) == "released"
        assert holder.wait(TIMEOUT) == 0
    # released: we may open it now
    LmdbStore(tmp_store_path, map_size=1 << 20).close()


def test_lock_of_a_killed_process_is_released(tmp_store_path: str) -> None:
    holder = _child(HOLD, tmp_store_path)
    try:
        assert _read_line(holder) == "locked"
    finally:
        holder.kill()
        holder.wait(TIMEOUT)
        holder.stdin.close()  # type: ignore[union-attr]
        holder.stdout.close()  # type: ignore[union-attr]
        holder.stderr.close()  # type: ignore[union-attr]
    # the lock file still holds the dead pid, but the kernel dropped the flock
    s = LmdbStore(tmp_store_path, map_size=1 << 20)
    try:
        assert Path(tmp_store_path, "atomr.lock").read_text() == str(os.getpid())
    finally:
        s.close()


def test_same_process_second_open_is_refused_too(tmp_store_path: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=1 << 20)
    try:
        with pytest.raises(StoreLocked) as info:
            LmdbStore(tmp_store_path, map_size=1 << 20)
        assert info.value.pid == os.getpid()
    finally:
        s.close()
    LmdbStore(tmp_store_path, map_size=1 << 20).close()


# --- files -----------------------------------------------------------------------------


def _umask() -> int:
    """The process umask, read without changing it (other threads may create files)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022  # pragma: no cover - /proc without the field


def test_files_are_private(tmp_store_path: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=1 << 20)
    try:
        assert s.write([encode_batch("wf", "r", 1, filler_events(3))]) == [None]
        mask = _umask()
        assert stat.S_IMODE(os.stat(tmp_store_path).st_mode) == 0o700 & ~mask
        for name in ("data.mdb", "lock.mdb", "atomr.lock"):
            mode = stat.S_IMODE(os.stat(os.path.join(tmp_store_path, name)).st_mode)
            assert mode == 0o600 & ~mask, f"{name} has mode {oct(mode)}"
            assert mode & 0o077 == 0
    finally:
        s.close()


def test_reads_and_writes_after_close_raise_store_closed(tmp_store_path: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=1 << 20)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreClosed, match="closed"):
        s.summary("wf", "r")
    with pytest.raises(StoreClosed):
        list(s.journal("wf", "r"))
    (err,) = s.write([encode_batch("wf", "r", 1, filler_events(1))])
    assert isinstance(err, StoreClosed)


def test_bad_options_are_refused(tmp_store_path: str) -> None:
    with pytest.raises(StoreError, match="map_size"):
        LmdbStore(tmp_store_path, map_size=1000)
    with pytest.raises(StoreError, match="snapshot_every"):
        LmdbStore(tmp_store_path, snapshot_every=0)
    LmdbStore(tmp_store_path, map_size=1 << 20).close()  # the refusals left no lock behind


# --- map size ---------------------------------------------------------------------------


def test_map_grows_when_full(tmp_store_path: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=64 * 1024, max_map_size=64 << 20, fsync="none")
    try:
        assert s.map_size == 64 * 1024
        last = _fill(s, "r", batches=40)  # ~400 KB of events
        assert s.map_size > 64 * 1024
        assert [seq for seq, _ in s.journal("wf", "r")] == list(range(1, last + 1))
        # a group larger than the whole map at once
        big = [ev_with("y" * 4000, i) for i in range(last + 1, last + 301)]
        size_before = s.map_size
        assert s.write([encode_batch("wf", "r", last + 1, big)]) == [None]
        assert s.map_size > size_before
        assert s.summary("wf", "r").last_seq == last + 300  # type: ignore[union-attr]
    finally:
        s.close()
    s = LmdbStore(tmp_store_path, map_size=64 * 1024, fsync="none")
    try:
        assert s.summary("wf", "r").last_seq == last + 300  # type: ignore[union-attr]
        assert len(list(s.journal("wf", "r"))) == last + 300
    finally:
        s.close()


def test_truncate_and_delete_grow_the_map_too(tmp_store_path: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=64 * 1024, max_map_size=64 << 20, fsync="none")
    try:
        last = _fill(s, "r", batches=3)
        size = s.map_size
        huge_snapshot = fmt.encode_obj({"blob": b"z" * (2 * size)})
        assert s.truncate("wf", "r", last - 5, huge_snapshot) == last - 5
        assert s.map_size > size
        assert s.snapshots("wf", "r")[0] == (last - 5, {"blob": b"z" * (2 * size)})
        assert s.delete_run("wf", "r") is True
    finally:
        s.close()


def test_store_full_says_how_to_grow_and_loses_nothing(tmp_store_path: str) -> None:
    limit = 256 * 1024
    s = LmdbStore(tmp_store_path, map_size=limit, max_map_size=limit, fsync="none")
    try:
        small = [ev_with("k", i) for i in range(1, 4)]
        assert s.write([encode_batch("wf", "keep", 1, small, status="paused", super_step=1)]) == [None]
        seq, err = 0, None
        for _ in range(200):
            evs = [ev_with("x" * 1000, seq + i) for i in range(1, 11)]
            (err,) = s.write([encode_batch("wf", "big", seq + 1, evs, status="running", super_step=seq)])
            if err is not None:
                break
            seq += 10
        assert isinstance(err, StoreFull), err
        assert seq > 0
        msg = str(err)
        assert tmp_store_path in msg and f"map_size={2 * limit}" in msg and "max_map_size" in msg
        assert err.map_size == limit
        # the refused batch left no trace; everything committed before is readable
        summary = s.summary("wf", "big")
        assert summary is not None and summary.last_seq == seq and summary.super_step == seq - 10
        assert [q for q, _ in s.journal("wf", "big")] == list(range(1, seq + 1))
        assert list(s.journal("wf", "big", seq + 1)) == []
        assert [e.idempotency_key for _, e in s.journal("wf", "keep")] == ["k"] * 3
        assert s.map_size == limit
        # a group holding the batch that does not fit: the small batch still commits
        results = s.write([
            encode_batch("wf", "big", seq + 1, evs, status="running"),
            encode_batch("wf", "keep", 4, [ev_with("k", 4)], status="done"),
        ])
        assert isinstance(results[0], StoreFull) and results[1] is None
        assert s.summary("wf", "keep").status == "done"  # type: ignore[union-attr]
    finally:
        s.close()
    # do as the message says: a bigger map takes the refused batch
    s = LmdbStore(tmp_store_path, map_size=2 * limit, max_map_size=2 * limit, fsync="none")
    try:
        assert s.write([encode_batch("wf", "big", seq + 1, evs, status="running")]) == [None]
        assert s.summary("wf", "big").last_seq == seq + 10  # type: ignore[union-attr]
    finally:
        s.close()


# --- format version / damaged files -----------------------------------------------------------


def test_newer_format_is_refused_on_open(tmp_store_path: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=1 << 20)
    assert s.write([encode_batch("wf", "r", 1, filler_events(2))]) == [None]
    s.close()
    env = lmdb.open(tmp_store_path, max_dbs=8, map_size=1 << 20)
    try:
        meta = env.open_db(fmt.DB_META)
        with env.begin(write=True, db=meta) as txn:
            assert fmt.read_u32(txn.get(b"format_version")) == fmt.FORMAT_VERSION
            txn.put(b"format_version", fmt.u32(fmt.FORMAT_VERSION + 1))
    finally:
        env.close()
    for _ in range(2):  # the refusal releases the lock: the second try says the same
        with pytest.raises(FormatVersionError) as info:
            LmdbStore(tmp_store_path, map_size=1 << 20)
        msg = str(info.value)
        assert isinstance(info.value, StoreError)
        assert tmp_store_path in msg and f"format {fmt.FORMAT_VERSION + 1}" in msg and "upgrade" in msg


OPEN = """
import sys
from atomr import LmdbStore
from atomr.errors import StoreError
try:
    s = LmdbStore(sys.argv[1], map_size=1 << 20)
except StoreError as exc:
    print("StoreError:", exc, flush=True)
    sys.exit(3)
print("opened", len(list(s.journal("wf", "r"))), flush=True)
s.close()
"""


@pytest.mark.parametrize("keep", ["half", "one-page", "some-bytes"])
def test_truncated_data_file_is_refused_not_sigbus(tmp_store_path: str, keep: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=4 << 20, fsync="none")
    _fill(s, "r", batches=60, size=1500)  # ~1 MB
    s.close()
    data = os.path.join(tmp_store_path, "data.mdb")
    size = os.path.getsize(data)
    assert size > 512 * 1024
    new_size = {"half": size // 2, "one-page": 4096, "some-bytes": 100}[keep]
    os.truncate(data, new_size)
    res = _run(OPEN, tmp_store_path)
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)  # -7 would be SIGBUS
    assert res.returncode != -signal.SIGBUS
    assert res.stdout.startswith("StoreError:") and "truncated" in res.stdout
    assert data in res.stdout and "backup" in res.stdout
    # the failed open released the lock
    with pytest.raises(StoreError, match="truncated"):
        LmdbStore(tmp_store_path, map_size=1 << 20)


def test_intact_store_opens_in_a_child_process(tmp_store_path: str) -> None:
    s = LmdbStore(tmp_store_path, map_size=4 << 20, fsync="none")
    last = _fill(s, "r", batches=5)
    s.close()
    res = _run(OPEN, tmp_store_path)
    assert (res.returncode, res.stdout.strip()) == (0, f"opened {last}"), res.stderr


# --- through a runtime: survival, summaries, a killed process ------------------------------------


def _wf(block: bool = False) -> Workflow:
    def a(state, ctx):  # noqa: ANN001, ANN202
        return {"log": ["a"], "n": state["n"] + 1}

    def b(state, ctx):  # noqa: ANN001, ANN202
        answer = ctx.interrupt({"n": state["n"]})
        return {"log": ["b", answer]}

    def c(state, ctx):  # noqa: ANN001, ANN202
        if state["n"] < 0:
            raise ValueError("negative n")
        return {"log": ["c"]}

    dag = Dag.builder("a").step("a", a).step("b", b).step("c", c).edge("a", "b").edge("b", "c").build()
    return Workflow("w", dag, StateSchema({"log": (AppendList(), []), "n": (LastWriteWins(), 0)}))


def test_runs_survive_close_and_reopen(tmp_store_path: str) -> None:
    wf = _wf()
    with Runtime(store=LmdbStore(tmp_store_path, snapshot_every=1, fsync="none")) as rt:
        rt.register(wf)
        assert isinstance(rt.start("w", {"n": 1}, run_id="p").result(timeout=TIMEOUT), Paused)
        rt.start("w", {"n": 1}, run_id="d").result(timeout=TIMEOUT)
        out = rt.resume("w", "d", Command(resume="ok")).result(timeout=TIMEOUT)
        assert isinstance(out, Done)
        before = {r: (rt.get_state("w", r), rt.history("w", r)) for r in ("p", "d")}
        runs_before = rt.runs()
    with Runtime(store=LmdbStore(tmp_store_path, fsync="none")) as rt:
        rt.register(wf)
        assert rt.runs() == runs_before
        for r in ("p", "d"):
            assert (rt.get_state("w", r), rt.history("w", r)) == before[r]
            check_rehydration(rt.store, wf.plan, "w", r)
        out = rt.resume("w", "p", Command(resume="later")).result(timeout=TIMEOUT)
        assert isinstance(out, Done) and out.state["log"] == ["a", "b", "later", "c"]


def test_summary_status_follows_the_run(tmp_store_path: str) -> None:
    wf = _wf()
    with Runtime(store=LmdbStore(tmp_store_path, fsync="none")) as rt:
        rt.register(wf)
        rt.start("w", {"n": 1}, run_id="r", meta={"owner": "t"}).result(timeout=TIMEOUT)
        rt.start("w", {"n": -5}, run_id="bad").result(timeout=TIMEOUT)
        s = rt.store.summary("w", "r")
        assert s is not None and (s.status, s.super_step, s.meta) == ("paused", 1, {"owner": "t"})
        assert s.snapshot_seq == s.last_seq  # a pause always snapshots
        assert sorted(x.run_id for x in rt.runs(status="paused")) == ["bad", "r"]
        rt.resume("w", "r", Command(resume=1)).result(timeout=TIMEOUT)
        out = rt.resume("w", "bad", Command(resume=1)).result(timeout=TIMEOUT)
        assert out.status == "failed" and out.error_type == "ValueError"
        s = rt.store.summary("w", "r")
        assert s is not None and (s.status, s.super_step, s.snapshot_seq) == ("done", 3, s.last_seq)
        assert [x.run_id for x in rt.runs(status="done")] == ["r"]
        assert [x.run_id for x in rt.runs(status="failed")] == ["bad"]
        assert rt.runs(status="running") == []
        assert rt.store.summary("w", "bad").status == "failed"  # type: ignore[union-attr]


CRASH = """
import sys, time
from atomr import AppendList, Dag, LastWriteWins, LmdbStore, Runtime, StateSchema, Workflow

def a(state, ctx):
    return {"log": ["a"], "n": state["n"] + 1}

def b(state, ctx):
    print("in-b", flush=True)
    time.sleep(3600)

def c(state, ctx):
    return {"log": ["c"]}

dag = Dag.builder("a").step("a", a).step("b", b).step("c", c).edge("a", "b").edge("b", "c").build()
wf = Workflow("w", dag, StateSchema({"log": (AppendList(), []), "n": (LastWriteWins(), 0)}))
rt = Runtime(store=LmdbStore(sys.argv[1]), durability="sync")
rt.register(wf)
rt.start("w", {"n": 1}, run_id="r1")
time.sleep(3600)
"""


def test_runs_running_when_the_process_died(tmp_store_path: str) -> None:
    child = _child(CRASH, tmp_store_path)
    try:
        assert _read_line(child) == "in-b"
    finally:
        child.kill()
        child.wait(TIMEOUT)
        for f in (child.stdin, child.stdout, child.stderr):
            f.close()  # type: ignore[union-attr]
    store = LmdbStore(tmp_store_path)
    try:
        (s,) = store.runs(status="running")
        assert (s.workflow_id, s.run_id, s.super_step) == ("w", "r1", 1)
        wf = _wf()
        p = load_progress(store, wf.plan, "w", "r1")
        assert p is not None and p.status == "running" and p.values == {"log": ["a"], "n": 2}
        assert check_rehydration(store, wf.plan, "w", "r1") == p
    finally:
        store.close()

    # a new process carries it on
    def b(state, ctx):  # noqa: ANN001, ANN202
        return {"log": ["b"]}

    dag = (Dag.builder("a").step("a", lambda s, c: None).step("b", b).step("c", lambda s, c: {"log": ["c"]})
           .edge("a", "b").edge("b", "c").build())
    wf2 = Workflow("w", dag, StateSchema({"log": (AppendList(), []), "n": (LastWriteWins(), 0)}))
    with Runtime(store=LmdbStore(tmp_store_path)) as rt:
        rt.register(wf2)
        (h,) = rt.recover()
        out = h.result(timeout=TIMEOUT)
        assert isinstance(out, Done) and out.state == {"log": ["a", "b", "c"], "n": 2}
        assert rt.runs(status="running") == []
        assert [s.run_id for s in rt.runs(status="done")] == ["r1"]


def test_data_survives_many_open_close_cycles(tmp_store_path: str) -> None:
    expected: list[int] = []
    for i in range(5):
        s = LmdbStore(tmp_store_path, map_size=64 * 1024, fsync="none")
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
    s = LmdbStore(tmp_store_path)
    try:
        assert [q for q, _ in s.journal("wf", "r")] == expected
        assert s.summary("wf", "r").first_seq == 11  # type: ignore[union-attr]
    finally:
        s.close()
