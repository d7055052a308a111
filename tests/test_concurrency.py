"""Concurrency at the public edge: many client threads resuming (and starting)
runs at once. No outcome is lost or doubled: every accepted request shows up
exactly once in its run's journal, every refused one is refused with the named
error and leaves no trace.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

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
from atomr import events as ev
from atomr.errors import RunExists, RunNotPaused
from workflows import ALL_STORES, PERSISTENT, Reopener, reopeners

T = 60.0
N_RUNS = 50  # resumed by share, one thread each
N_CLIENTS = 8
N_RACED = 12  # resumed by two threads at the same moment
RACERS = 2


def _workflow() -> Workflow:
    def before(state: Any, ctx: Any) -> Any:
        return {"log": ["before"]}

    def ask(state: Any, ctx: Any) -> Any:
        return {"answer": ctx.interrupt({"run": ctx.run_id}), "log": ["ask"]}

    def after(state: Any, ctx: Any) -> Any:
        return {"log": ["after"], "n": state["n"] + 1}

    dag = (Dag.builder("before").step("before", before).step("ask", ask).step("after", after)
           .edge("before", "ask").edge("ask", "after").build())
    schema = StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0), "answer": LastWriteWins()})
    return Workflow("conc", dag, schema)


#: many threads against one runtime, on every store (the SQL stores' group commit and readers too)
any_store = reopeners(*ALL_STORES)
reopen_store = reopeners(*PERSISTENT)


@pytest.fixture
def rt(any_store: Reopener) -> Any:
    r = Runtime(store=any_store(), durability="sync")
    r.register(_workflow())
    yield r
    r.close()


def _threads(targets: list[Any]) -> None:
    ts = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in ts:
        t.start()
    for t in ts:
        t.join(T)
        assert not t.is_alive(), "a client thread is stuck"


def _journal(rt: Runtime, run_id: str) -> list[Any]:
    return [e for _, e in rt.store.journal("conc", run_id)]


def test_many_runs_resumed_at_once_from_many_threads(rt: Runtime) -> None:
    ids = [f"r{i:03d}" for i in range(N_RUNS)]
    raced = [f"x{i:03d}" for i in range(N_RACED)]
    for h in rt.start_many("conc", [{}] * (N_RUNS + N_RACED), ids + raced):
        out = h.result(timeout=T)
        assert isinstance(out, Paused) and out.interrupts[0].id == "ask:2:0", out
    assert rt.live_runs() == 0

    lock = threading.Lock()
    won: dict[str, list[tuple[str, Any]]] = collections.defaultdict(list)  # run -> [(answer, handle)]
    refused: dict[str, list[BaseException]] = collections.defaultdict(list)
    errors: list[BaseException] = []
    go = threading.Barrier(N_CLIENTS + N_RACED * RACERS, timeout=T)

    def resume(run_id: str, answer: str) -> None:
        try:
            h = rt.resume("conc", run_id, Command(resume=answer), timeout=T)
        except RunNotPaused as exc:
            with lock:
                refused[run_id].append(exc)
            return
        with lock:
            won[run_id].append((answer, h))

    def client(k: int) -> None:
        try:
            go.wait()
            for rid in ids[k::N_CLIENTS]:
                resume(rid, f"client{k}:{rid}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def racer(rid: str, k: int) -> Any:
        def run() -> None:
            try:
                go.wait()
                resume(rid, f"racer{k}:{rid}")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        return run

    stop = threading.Event()
    seen_status: collections.Counter[str] = collections.Counter()

    def reader(k: int) -> None:
        """Reads go on while the runs are resumed: they never fail or see a torn run."""
        try:
            i = k
            while not stop.is_set():
                rid = (ids + raced)[i % (N_RUNS + N_RACED)]
                view = rt.get_state("conc", rid)
                assert view.status in ("paused", "running", "done"), view
                if view.status == "done":
                    assert view.values["log"] == ["before", "ask", "after"]
                with lock:
                    seen_status[view.status] += 1
                rt.runs(status="paused")
                i += 7
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(2)]
    for t in readers:
        t.start()
    try:
        _threads([lambda k=k: client(k) for k in range(N_CLIENTS)]
                 + [racer(rid, k) for rid in raced for k in range(RACERS)])
    finally:
        stop.set()
        for t in readers:
            t.join(T)
    assert errors == []
    assert sum(seen_status.values()) > 0

    # every run resumed by exactly one caller; each raced run refused exactly the others
    for rid in ids:
        assert len(won[rid]) == 1 and rid not in refused, (rid, won[rid], refused[rid])
    for rid in raced:
        assert len(won[rid]) == 1, (rid, won[rid], refused[rid])
        assert len(refused[rid]) == RACERS - 1, (rid, refused[rid])
        for exc in refused[rid]:
            assert exc.status in ("running", "done"), exc  # type: ignore[attr-defined]
            assert "cannot resume" in str(exc)

    # no lost or doubled outcome: each winner gets Done with its own answer, once
    for rid in ids + raced:
        ((answer, h),) = won[rid]
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state == {"log": ["before", "ask", "after"], "n": 1, "answer": answer}
        events = _journal(rt, rid)
        resumed = [e for e in events if type(e) is ev.Resumed]
        assert [e.answers for e in resumed] == [{"ask:2:0": answer}]
        assert sum(type(e) is ev.RunCompleted for e in events) == 1
        assert sum(type(e) is ev.StepCompleted and e.step == "after" for e in events) == 1
        seqs = [q for q, _ in rt.store.journal("conc", rid)]
        assert seqs == list(range(1, len(seqs) + 1))
    assert len(rt.runs(status="done")) == N_RUNS + N_RACED
    assert rt.live_runs() == 0 or _wait_idle(rt)


def _wait_idle(rt: Runtime) -> bool:
    import time

    deadline = time.monotonic() + T
    while rt.live_runs():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _race(threads: int, call: Any, refused: type[BaseException]) -> tuple[int, Any]:
    """Run ``call(k)`` from ``threads`` threads released at once; exactly one
    must succeed and every other one raise ``refused``. Returns (k, result)."""
    go = threading.Barrier(threads, timeout=T)
    got: list[Any] = []

    def one(k: int) -> None:
        go.wait()
        try:
            got.append(("won", k, call(k)))
        except refused as exc:
            got.append(("refused", k, exc))

    _threads([lambda k=k: one(k) for k in range(threads)])
    winners = [g for g in got if g[0] == "won"]
    assert len(got) == threads and len(winners) == 1, got
    _, k, result = winners[0]
    return k, result


def test_same_run_resumed_by_many_threads_at_once(rt: Runtime) -> None:
    """Eight threads resume one paused run at the same moment, over and over."""
    rounds = 10
    threads = 8
    for r in range(rounds):
        rid = f"same{r}"
        assert isinstance(rt.start("conc", {}, run_id=rid).result(timeout=T), Paused)
        k, h = _race(threads, lambda k, rid=rid: rt.resume("conc", rid, Command(resume=k), timeout=T),
                     RunNotPaused)
        out = h.result(timeout=T)
        assert isinstance(out, Done) and out.state["answer"] == k
        resumed = [e for e in _journal(rt, rid) if type(e) is ev.Resumed]
        assert [e.answers for e in resumed] == [{"ask:2:0": k}]


def test_same_run_id_started_by_many_threads_at_once(rt: Runtime) -> None:
    """Only one start of a run id is accepted; the others get RunExists."""
    threads = 8
    for r in range(10):
        rid = f"start{r}"
        k, h = _race(threads, lambda k, rid=rid: rt.start("conc", {"n": k}, run_id=rid, timeout=T),
                     RunExists)
        out = h.result(timeout=T)
        assert isinstance(out, Paused), out
        events = _journal(rt, rid)
        starts = [e for e in events if type(e) is ev.RunStarted]
        assert len(starts) == 1 and starts[0].input == {"n": k}
        assert rt.get_state("conc", rid).values["n"] == k


def test_recover_called_from_many_threads_at_once(reopen_store: Reopener) -> None:
    """Runs left "running" by a runtime that went away are carried on once,
    however many threads call recover() at the same moment."""
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def slow(state: Any, ctx: Any) -> Any:
        entered.release()
        gate.wait(T)
        return {"log": [ctx.step_id]}

    def fast(state: Any, ctx: Any) -> Any:
        return {"log": [ctx.step_id]}

    def wf(first: Any) -> Workflow:
        # a two-step layer: its steps run on step actors, not in the run's thread
        dag = (Dag.builder("a").step("a", fast).step("b", first).step("c", fast).step("d", fast)
               .edge("a", "b").edge("a", "c").edge("b", "d").edge("c", "d").build())
        return Workflow("rec", dag, StateSchema({"log": AppendList()}))

    n = 6
    old = Runtime(store=reopen_store(), durability="sync", step_workers=n)
    try:
        old.register(wf(slow))
        old.start_many("rec", [{}] * n, [f"r{i}" for i in range(n)])
        for _ in range(n):
            assert entered.acquire(timeout=T)
    finally:
        old.close(timeout=2)  # runs stay "running" in the store
        gate.set()

    with Runtime(store=reopen_store(), durability="sync") as rt:
        rt.register(wf(fast))
        # on a shared store (SQLite, Postgres) this worker may take the runs up by itself at
        # register(): recover() then hands out only those it has not finished yet
        assert {s.run_id for s in rt.runs()} == {f"r{i}" for i in range(n)}
        go = threading.Barrier(4, timeout=T)
        got: list[Any] = []

        def one() -> None:
            go.wait()
            got.append(rt.recover())

        _threads([one] * 4)
        recovered = collections.Counter(h.run_id for hs in got for h in hs)
        assert set(recovered) <= {f"r{i}" for i in range(n)}
        if not rt.store.shared:
            assert set(recovered) == {f"r{i}" for i in range(n)}
        for hs in [*got, [rt.handle("rec", f"r{i}") for i in range(n)]]:
            for h in hs:
                out = h.result(timeout=T)
                assert isinstance(out, Done), out
                assert sorted(out.state["log"]) == ["a", "b", "c", "d"]
        for i in range(n):
            events = _journal_of(rt, "rec", f"r{i}")
            done = collections.Counter(e.step for e in events if type(e) is ev.StepCompleted)
            assert done == {"a": 1, "b": 1, "c": 1, "d": 1}, done
            assert sum(type(e) is ev.RunCompleted for e in events) == 1
        assert rt.runs(status="running") == []


def _journal_of(rt: Runtime, wid: str, run_id: str) -> list[Any]:
    return [e for _, e in rt.store.journal(wid, run_id)]


def test_resume_of_a_run_executing_under_exit_durability_is_refused_at_once(tmp_path):
    """Under "exit" the store still says "paused" while the run executes again:
    the runtime knows better and refuses a second resume without waiting."""
    import threading

    gate = threading.Event()

    def ask(s, c):
        return {"n": c.interrupt("go?")}

    def slow(s, c):
        gate.wait(30)
        return {"n": 2}

    wf = Workflow("w", Dag.builder("a").step("a", ask).step("b", slow).edge("a", "b").build(),
                  StateSchema({"n": LastWriteWins()}))
    with Runtime(store=LmdbStore(tmp_path / "s"), durability="exit") as rt:
        rt.register(wf)
        assert isinstance(rt.start("w", {}, run_id="r").result(timeout=30), Paused)
        h = rt.resume("w", "r", Command(resume=1))
        try:
            with pytest.raises(RunNotPaused, match="running"):
                rt.resume("w", "r", Command(resume=1), timeout=30)
        finally:
            gate.set()
        assert isinstance(h.result(timeout=30), Done)
