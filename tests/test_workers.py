"""Workers on a shared store, in one process (fast): ownership, fencing, takeover,
clients, following a run across runtimes, the format migration, misuse.

Real processes and real kills are in tests/test_workers_processes.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest

from atomr import Cancelled, Command, Done, LmdbStore, MemoryStore, Paused, Runtime, SqliteStore
from atomr import events as ev
from atomr.errors import AtomrError, OwnershipLost, RunOwnedElsewhere, StoreLocked, WorkerIdInUse
from atomr.store import format as fmt
from atomr.testing.journals import encode_batch, filler_events
from workflows import CrashTarget, build, chain, crash_targets

T = 20.0
sql_target = crash_targets("sqlite-full", "postgres")


def _expire(store: Any, worker_id: str) -> None:
    """Make ``worker_id``'s lease look expired (as if it hung past it)."""
    q = store.dialect.sql
    with store._wlock, store._writing() as cur:  # noqa: SLF001
        cur.execute(q("UPDATE {t}workers SET heartbeat_ms = 0 WHERE worker_id = ?"), (worker_id,))


# --- the store: claims and fencing -----------------------------------------------------------------------


def test_a_fenced_worker_cannot_write_and_the_new_owner_can(sql_target: CrashTarget) -> None:
    a, b = sql_target.open(), sql_target.open()
    try:
        a.join("A", 5.0)
        b.join("B", 5.0)
        assert a.write([encode_batch("wf", "r", 1, filler_events(2), status="running")]) == [None]
        assert a.owner_of("wf", "r")[:2] == ("A", 1)
        # a live owner's run is not B's to write, nor to claim
        err = b.write([encode_batch("wf", "r", 3, filler_events(1, 3), status="running")])[0]
        assert isinstance(err, RunOwnedElsewhere) and err.owner == "A"
        assert b.claimable(["wf"], 10) == []
        # A hangs past its lease: B takes the run over, which fences A
        _expire(b, "A")
        assert b.claimable(["wf"], 10) == [("wf", "r", 1)]
        assert b.claim("wf", "r", 1) is True
        assert b.claim("wf", "r", 1) is False  # one claim per epoch
        err = a.write([encode_batch("wf", "r", 3, filler_events(1, 3), status="running")])[0]
        assert isinstance(err, OwnershipLost) and err.owner == "B"
        assert b.write([encode_batch("wf", "r", 3, filler_events(2, 3), status="done")]) == [None]
        assert [seq for seq, _ in b.journal("wf", "r")] == [1, 2, 3, 4]
        assert b.owner_of("wf", "r")[:2] == (None, 2)  # ended: owned by nobody
        # A woke up: a healthy worker again, it may start new runs
        a.heartbeat()
        assert a.write([encode_batch("wf", "r2", 1, filler_events(1), status="running")]) == [None]
    finally:
        a.close()
        b.close()


def test_a_dead_workers_runs_are_reaped_and_claimable_at_once(sql_target: CrashTarget) -> None:
    a, b = sql_target.open(), sql_target.open()
    try:
        a.join("A", 60.0)
        b.join("B", 60.0)
        a.write([encode_batch("wf", "r", 1, filler_events(1), status="running")])
        assert b.reap() == [] and b.claimable(["wf"], 5) == []
        if sql_target.kind == "postgres":
            a._writer.close()  # noqa: SLF001 - the session ends: the server drops its lock
            deadline = time.monotonic() + 5
            while not b.reap() and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            import os

            os.close(a._lock_fd)  # noqa: SLF001 - as when the process dies: the kernel drops the flock
            a._lock_fd = -1  # noqa: SLF001
            assert b.reap() == ["A"]
        assert [w.worker_id for w in b.workers()] == ["B"]
        assert b.claimable(["wf"], 5) == [("wf", "r", 1)] and b.claim("wf", "r", 1)
    finally:
        a.close()
        b.close()


def test_a_worker_id_is_one_live_worker_and_leaving_frees_it(sql_target: CrashTarget) -> None:
    a, b = sql_target.open(), sql_target.open()
    try:
        a.join("same", 5.0)
        with pytest.raises(WorkerIdInUse, match="same"):
            b.join("same", 5.0)
        a.write([encode_batch("wf", "r", 1, filler_events(1), status="running")])
        assert a.leave() == 1  # its run is given up at once
        assert b.owner_of("wf", "r")[0] is None
        b.join("same", 5.0)
        assert b.claimable(["wf"], 5) == [("wf", "r", 1)]
    finally:
        a.close()
        b.close()


# --- runtimes: clients, takeover, following ------------------------------------------------------------------


def _slow_chain(wid: str, n: int, gate: threading.Event | None = None) -> Any:
    def step(name: str) -> Any:
        def f(state: Any, ctx: Any) -> Any:
            if gate is not None:
                gate.wait(T)
            return {"log": [name], "n": state["n"] + 1}
        return f
    names = [f"s{i}" for i in range(n)]
    return build(wid, {s: step(s) for s in names}, zip(names, names[1:]))


def test_a_client_starts_a_worker_executes_and_the_client_follows(sql_target: CrashTarget) -> None:
    with Runtime(sql_target.open(), worker_id="w") as worker, \
            Runtime(sql_target.open(), execute=False) as client:
        worker.register(chain("c", 4))
        client.register(chain("c", 4))
        assert client.worker_id is None and worker.worker_id == "w"
        h = client.start("c", {}, run_id="r1")
        out = h.result(timeout=T)
        assert isinstance(out, Done) and out.state["n"] == 4
        assert client.live_runs() == 0  # the client executed nothing
        kinds = [e.kind for e in client.handle("c", "r1").events(timeout=T)]
        assert kinds.count("committed") == 4 and kinds[-1] == "outcome"
        items = list(client.start("c", {}, run_id="r2").stream("values", timeout=T))
        assert items[-1].mode == "outcome" and items[-1].data.state["n"] == 4
        assert [w.worker_id for w in client.workers()] == ["w"]


def test_a_client_resumes_a_paused_run_and_a_worker_carries_it_on(sql_target: CrashTarget) -> None:
    def ask(state: Any, ctx: Any) -> Any:
        return {"log": [str(ctx.interrupt("ok?"))]}

    wf = build("ask", {"a": ask})
    with Runtime(sql_target.open()) as worker, Runtime(sql_target.open(), execute=False) as client:
        worker.register(wf)
        client.register(build("ask", {"a": ask}))
        assert isinstance(client.start("ask", {}, run_id="r").result(timeout=T), Paused)
        out = client.resume("ask", "r", Command(resume="yes")).result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["yes"]


def test_a_client_cancels_a_run_another_worker_executes(sql_target: CrashTarget) -> None:
    gate = threading.Event()
    with Runtime(sql_target.open()) as worker, Runtime(sql_target.open(), execute=False) as client:
        worker.register(_slow_chain("slow", 3, gate))
        client.register(_slow_chain("slow", 3))
        h = client.start("slow", {}, run_id="r")
        deadline = time.monotonic() + T
        while worker.live_runs() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(RunOwnedElsewhere):
            client.ref("slow", "r")  # noqa: F841 - not a client's to hold
        threading.Timer(0.3, gate.set).start()
        out = client.cancel("slow", "r", "enough", timeout=T)
        assert isinstance(out, Cancelled) and out.reason == "enough"
        assert isinstance(h.result(timeout=T), Cancelled)


def test_a_run_of_a_hung_worker_is_taken_over_and_the_hung_one_is_fenced(sql_target: CrashTarget) -> None:
    gate = threading.Event()
    a = Runtime(sql_target.open(), worker_id="A", lease_s=30)
    b = Runtime(sql_target.open(), worker_id="B", lease_s=30)
    try:
        a.register(_slow_chain("slow", 3, gate))
        h = a.start("slow", {}, run_id="r")  # A runs s0, waiting on the gate
        deadline = time.monotonic() + T
        while a._core.stepping == set() and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.01)
        _expire(b.store, "A")  # A "hangs" past its lease
        b.register(_slow_chain("slow", 3))  # B takes the run over at once and runs it to the end
        out = b.handle("slow", "r").result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["s0", "s1", "s2"]
        gate.set()  # A wakes: its late s0 is refused (fenced); its handle follows the run to B's end
        assert isinstance(h.result(timeout=T), Done)
        committed = [e.layer for _, e in b.store.journal("slow", "r") if isinstance(e, ev.SuperStepCommitted)]
        assert committed == [0, 1, 2]  # every layer exactly once
    finally:
        gate.set()
        a.close()
        b.close()


# --- format, misuse ----------------------------------------------------------------------------------------------


def test_a_format_1_sqlite_store_is_migrated_and_its_runs_carry_on(tmp_path: Any) -> None:
    path = str(tmp_path / "old.db")
    with Runtime(SqliteStore(path)) as rt:
        rt.register(chain("c", 2))
        rt.start("c", {}, run_id="r").result(timeout=T)
    db = sqlite3.connect(path)  # back to format 1: no workers table, no owner/epoch/cancel columns
    db.executescript("DROP TABLE atomr_workers; ALTER TABLE atomr_runs DROP COLUMN owner; "
                     "ALTER TABLE atomr_runs DROP COLUMN epoch; ALTER TABLE atomr_runs DROP COLUMN cancel; "
                     "UPDATE atomr_meta SET value = '1' WHERE key = 'format_version';")
    db.commit()
    db.close()
    with Runtime(SqliteStore(path)) as rt:
        rt.register(chain("c", 2))
        assert [s.status for s in rt.runs()] == ["done"]
        assert isinstance(rt.start("c", {}, run_id="r2").result(timeout=T), Done)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM atomr_meta WHERE key = 'format_version'").fetchone() == ("3",)
    db.close()
    with SqliteStore(path, readonly=True) as store:  # the counts were rebuilt from the runs
        assert store.run_counts()["done"] == 2


def test_worker_arguments_are_checked(tmp_path: Any) -> None:
    with pytest.raises(AtomrError, match="execute=False"):
        Runtime(MemoryStore(), execute=False)
    for bad in ({"worker_id": ""}, {"worker_id": 3}, {"lease_s": 0}, {"execute": "no"}, {"concurrency": 0}):
        with pytest.raises(AtomrError):
            Runtime(SqliteStore(str(tmp_path / f"{len(str(bad))}.db")), **bad)
    with Runtime(MemoryStore()) as rt:
        assert rt.workers() == [] and rt.worker_id is None


def test_the_lmdb_lock_message_says_how_to_run_several_processes(tmp_path: Any) -> None:
    from atomr.errors import StoreLocked as SL

    err = SL(str(tmp_path), 123)
    assert "SqliteStore or a PostgresStore" in str(err) and isinstance(err, StoreLocked)
    assert LmdbStore is not None and fmt is not None


# --- run control across workers: sleeps, schedules, drain, metrics --------------------------------------------------


def _napper(calls: list[int]) -> Any:
    def nap(state: Any, ctx: Any) -> Any:
        calls.append(1)  # once before the sleep, once after the wake
        ctx.sleep(0.6)
        return {"log": ["woke"]}
    return build("nap", {"nap": nap})


def test_a_durable_sleep_is_woken_by_exactly_one_of_two_workers(sql_target: CrashTarget) -> None:
    calls: list[int] = []
    with Runtime(sql_target.open(), worker_id="A") as a, Runtime(sql_target.open(), worker_id="B") as b:
        a.register(_napper(calls))
        h = a.start("nap", {}, run_id="r")
        deadline = time.monotonic() + T
        while a.store.summary("nap", "r").status != "sleeping" and time.monotonic() < deadline:
            time.sleep(0.02)
        b.register(_napper(calls))  # B arms the same sleep: both timers fire, one wake wins
        out = h.result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["woke"]
        time.sleep(0.5)  # the losing wake has had its chance
        woke = [e for _, e in a.store.journal("nap", "r") if isinstance(e, ev.Resumed)]
        assert len(woke) == 1 and len(calls) == 2, (woke, calls)
        assert [e.layer for _, e in a.store.journal("nap", "r") if isinstance(e, ev.SuperStepCommitted)] == [0]


def test_a_schedule_starts_each_due_run_once_across_two_workers(sql_target: CrashTarget) -> None:
    with Runtime(sql_target.open(), worker_id="A") as a, Runtime(sql_target.open(), worker_id="B") as b:
        a.register(chain("tick", 1))
        b.register(chain("tick", 1))
        a.schedule("every", "tick", every_s=0.5)
        b._arm_schedules(b.workflow("tick"))  # noqa: SLF001 - B sees it as a process that registered later would
        time.sleep(2.2)
        a.unschedule("every")
        a.flush()
        runs = [s for s in a.runs() if s.workflow_id == "tick"]
        dues = [s.meta.get("due") for s in runs]
        assert 3 <= len(runs) <= 6 and len(set(dues)) == len(dues), dues  # one run per due time


def test_drain_stops_taking_runs_and_workers_show_in_metrics(sql_target: CrashTarget) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from atomr.server.metrics import _RuntimeCollector as RuntimeCollector

    with Runtime(sql_target.open(), worker_id="W") as w, Runtime(sql_target.open(), execute=False) as c:
        w.register(chain("c", 2))
        c.register(chain("c", 2))
        assert isinstance(c.start("c", {}).result(timeout=T), Done)
        w.drain()
        h = c.start("c", {}, run_id="waits")
        time.sleep(0.5)
        assert c.store.summary("c", "waits").status == "running" and w.live_runs() == 0  # nobody took it
        reg = CollectorRegistry()
        reg.register(RuntimeCollector(c))
        text = generate_latest(reg).decode()
        assert 'atomr_worker_runs{host=' in text and 'worker_id="W"' in text and "atomr_workers 1.0" in text
        with Runtime(sql_target.open(), worker_id="X") as x:  # another worker takes it
            x.register(chain("c", 2))
            assert isinstance(h.result(timeout=T), Done)


def test_max_concurrent_runs_counts_the_runs_of_every_worker(sql_target: CrashTarget) -> None:
    gate = threading.Event()
    peak: list[int] = []
    active = [0]
    lock = threading.Lock()

    def step(state: Any, ctx: Any) -> Any:
        with lock:
            active[0] += 1
            peak.append(active[0])
        gate.wait(T)
        with lock:
            active[0] -= 1
        return {"log": ["x"]}

    def wf() -> Any:
        return build("lim", {"a": step}, max_concurrent_runs=2)

    with Runtime(sql_target.open(), worker_id="A") as a, Runtime(sql_target.open(), worker_id="B") as b:
        a.register(wf())
        b.register(wf())
        hs = [a.start("lim", {}, run_id=f"a{i}") for i in range(2)]
        deadline = time.monotonic() + T
        while active[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        hs += [b.start("lim", {}, run_id=f"b{i}") for i in range(2)]  # B counts A's two: its own wait
        time.sleep(0.5)
        assert active[0] == 2 and b.store.summary("lim", "b0").status == "queued"
        gate.set()
        for h in hs:
            assert isinstance(h.result(timeout=T), Done)
        assert max(peak) == 2


def _take_when_given_back(store: Any, lane: str) -> None:
    """Take the lane's one slot as token 99 once the last execution's slot is given back
    (just after its run ended: the limits thread frees it)."""
    deadline = time.monotonic() + T
    while not store.take_slot(lane, 99, 1, None):
        assert time.monotonic() < deadline, f"a slot of {lane!r} is still held"
        time.sleep(0.02)


def _global_lanes_state(*rts: Runtime) -> str:
    """What a stalled global-limit test needs to be understood: the slot rows, the runs,
    the workers, each runtime's waiting executions, and every thread's stack."""
    import faulthandler
    import tempfile

    st: Any = rts[0].store
    out = []
    with st._reading(consistent=False) as cur:  # noqa: SLF001
        for table, cols in (("slots", "*"), ("runs", "workflow_id, run_id, status, owner, epoch, last_seq"),
                            ("workers", "*")):
            cur.execute(st.dialect.sql(f"SELECT {cols} FROM {{t}}{table}"))
            out.append(f"{table}={cur.fetchall()}")
    for rt in rts:
        g = rt._core.limiter._global  # noqa: SLF001
        if g is not None:
            out.append(f"{rt.store.worker_id}: queued={ {k: [m.token for m in q] for k, q in g._queues.items()} } "
                       f"held={g._held} tokens={g.tokens} forgotten={g._forgotten} to_free={g._to_free} "
                       f"thread_alive={g._thread is not None and g._thread.is_alive()}")
    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        out.append(f.read())
    return "\n".join(out)


def test_a_global_step_limit_holds_across_workers(sql_target: CrashTarget) -> None:
    from atomr import Limit

    active, peak, lock = [0], [0], threading.Lock()

    def call(state: Any, ctx: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return {"log": ["x"]}

    def wf() -> Any:
        return build("api", {"a": call, "b": lambda state, ctx: {"log": ["b"]}}, [("a", "b")],
                     step_limits={"a": Limit(concurrency=1, scope="global")})

    with Runtime(sql_target.open(), worker_id="A") as a, Runtime(sql_target.open(), worker_id="B") as b:
        a.register(wf())
        b.register(wf())
        hs = [rt.start("api", {}) for rt in (a, b) for _ in range(4)]
        for h in hs:
            try:
                assert isinstance(h.result(timeout=T), Done)
            except TimeoutError:
                raise AssertionError(f"run {h.run_id} waits: {_global_lanes_state(a, b)}") from None
        assert peak[0] == 1  # one call at a time over both workers
        _take_when_given_back(b.store, "api\x1fa")  # every slot was given back
        b.store.free_slot("api\x1fa", 99)


def test_a_slot_row_no_execution_holds_is_given_back(sql_target: CrashTarget, caplog: Any) -> None:
    """A slot row of this worker that no execution here holds (left by a crash of the
    bookkeeping) would hold the lane for ever: the waiting executions give it back."""
    from atomr import Limit

    def wf() -> Any:
        return build("api", {"a": lambda state, ctx: {"log": ["x"]}},
                     step_limits={"a": Limit(concurrency=1, scope="global")})

    with Runtime(sql_target.open(), worker_id="A") as a, Runtime(sql_target.open(), worker_id="B") as b:
        a.register(wf())
        b.register(wf())
        assert a.store.take_slot("api\x1fa", 424242, 1, None)  # a leftover of A's
        hs = [rt.start("api", {}) for rt in (a, b) for _ in range(2)]
        for h in hs:
            assert isinstance(h.result(timeout=T), Done)
        assert "held by no execution of this worker" in caplog.text
        _take_when_given_back(b.store, "api\x1fa")  # nothing is left behind
        b.store.free_slot("api\x1fa", 99)
        threads = [rt._core.limiter._global._thread for rt in (a, b)]  # noqa: SLF001
    for t in threads:  # closing the runtimes ended their limits threads
        t.join(T)
        assert not t.is_alive()


def test_a_global_rate_limit_spaces_starts_across_workers(sql_target: CrashTarget) -> None:
    from atomr import Limit

    starts: list[float] = []

    def call(state: Any, ctx: Any) -> Any:
        starts.append(time.monotonic())
        return {"log": ["x"]}

    def wf() -> Any:
        return build("rate", {"a": call}, step_limits={"a": Limit(per_second=10, scope="global")})

    with Runtime(sql_target.open(), worker_id="A") as a, Runtime(sql_target.open(), worker_id="B") as b:
        a.register(wf())
        b.register(wf())
        hs = [rt.start("rate", {}) for rt in (a, b) for _ in range(3)]
        assert all(isinstance(h.result(timeout=T), Done) for h in hs)
    starts.sort()
    assert starts[-1] - starts[0] >= 0.4  # 6 starts at 10/s over both workers: at least 5 gaps of ~0.1 s


def test_a_global_limit_needs_a_shared_store() -> None:
    from atomr import Limit

    with Runtime(MemoryStore()) as rt:
        with pytest.raises(AtomrError, match="scope='global'"):
            rt.register(build("g", {"a": lambda s, c: {}}, step_limits={"a": Limit(concurrency=1, scope="global")}))


pg_target = crash_targets("postgres")  # SQLite: ctx.emit items stay in the executing process (documented)


def test_custom_items_reach_a_client_in_another_process_on_postgres(pg_target: CrashTarget) -> None:
    sql_target = pg_target
    gate = threading.Event()

    def talk(state: Any, ctx: Any) -> Any:
        i = 0
        while not gate.wait(0.05):
            ctx.emit({"token": i})
            i += 1
        return {"log": ["said"]}

    with Runtime(sql_target.open(), worker_id="W") as w, Runtime(sql_target.open(), execute=False) as c:
        w.register(build("talk", {"a": talk}))
        c.register(build("talk", {"a": talk}))
        h = c.start("talk", {}, run_id="r")
        got: list[Any] = []
        for item in h.stream(["custom"], timeout=T):
            if item.mode == "custom":
                got.append(item.data["payload"]["token"])
                if len(got) == 3:
                    gate.set()  # the step is still running: the items came live, from the other runtime
            elif item.mode == "outcome":
                break
        assert len(got) >= 3 and got == sorted(got), got
        assert isinstance(h.result(timeout=T), Done)
