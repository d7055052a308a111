"""Soak and load: many runs through one runtime leave no threads, no actors and
no memory behind; many paused runs hold no thread and all resume.

Bounded by default (1,000 runs on a MemoryStore, 300 on LMDB, SQLite and
Postgres each, 300 paused runs on each of those three); ``ATOMR_FULL=1`` runs
10,000 / 10,000 / 1,000.

Memory is traced with tracemalloc after each batch (once the batch's actors
are gone and a gc ran). "Flat" means: the mean of the last tenth of samples is
within a small allowance of the mean of the first tenth, and the least-squares
slope over everything after the first tenth is below a few bytes per run. On
the MemoryStore the finished runs are deleted as they finish (the store itself
would otherwise grow by design); on LMDB they stay on disk (outside Python's
heap; the same for SQLite and Postgres).
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pykka
import pytest

from atomr import (
    AppendList,
    Command,
    Dag,
    Done,
    LastWriteWins,
    Paused,
    Runtime,
    StateSchema,
    Workflow,
)
from atomr.actors.checkpointer import Checkpointer
from atomr.actors.pool import StepActor
from atomr._run.actor import WorkflowActor
from workflows import PERSISTENT, Reopener, reopeners

pytestmark = pytest.mark.slow

FULL = os.environ.get("ATOMR_FULL") == "1"
N_MEMORY = 10_000 if FULL else 1_000
N_LMDB = 10_000 if FULL else 300  # each durable store: LMDB, SQLite, Postgres
N_PAUSED = 1_000 if FULL else 300
WARMUP = 100  # runs before the first sample
WORKERS = 4
T = 60.0

#: memory allowance between the first and the last tenth, and per-run slope bound
ALLOWANCE = 96 * 1024
SLOPE_MAX = 64.0  # bytes per run (a warm-up of the first batches shows up as ~15)


def _report(request: Any, line: str) -> None:
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print("\n" + line, flush=True)


def wait_until(pred: Callable[[], Any], timeout: float = T) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _schema() -> StateSchema:
    return StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0), "answer": LastWriteWins()})


def _diamond() -> Workflow:
    def a(state: Any, ctx: Any) -> Any:
        return {"n": state["n"] + 1, "log": ["a"]}

    def b(state: Any, ctx: Any) -> Any:
        return {"log": ["b"]}

    def c(state: Any, ctx: Any) -> Any:
        return {"log": ["c"]}

    def d(state: Any, ctx: Any) -> Any:
        return {"n": state["n"] + 1, "log": ["d"]}

    dag = (Dag.builder("a").step("a", a).step("b", b).step("c", c).step("d", d)
           .edge("a", "b").edge("a", "c").edge("b", "d").edge("c", "d").build())
    return Workflow("soak", dag, _schema())


def _asking() -> Workflow:
    def first(state: Any, ctx: Any) -> Any:
        return {"log": ["first"]}

    def ask(state: Any, ctx: Any) -> Any:
        return {"answer": ctx.interrupt({"run": ctx.run_id}), "log": ["ask"]}

    dag = Dag.builder("first").step("first", first).step("ask", ask).edge("first", "ask").build()
    return Workflow("asking", dag, _schema())


def _actor_counts() -> dict[type, int]:
    out: dict[type, int] = {WorkflowActor: 0, StepActor: 0, Checkpointer: 0}
    for ref in pykka.ActorRegistry.get_all():
        if ref.actor_class in out:
            out[ref.actor_class] += 1
    return out


def _slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def soak(rt: Runtime, n: int, batch: int, delete: bool, warmup: int = 0) -> dict[str, Any]:
    """``n`` runs in batches started together; a sample after each batch (the
    first ``warmup`` runs are not sampled)."""
    samples: list[tuple[int, int, int]] = []  # (runs done, threads, traced bytes)
    fixed_threads = None
    done = -warmup
    while done < n:
        k = min(batch, n - done if done >= 0 else -done)
        prefix, base = ("r", done) if done >= 0 else ("w", done + warmup)
        ids = [f"{prefix}{base + i:06d}" for i in range(k)]
        handles = rt.start_many("soak", [{"n": i} for i in range(k)], ids)
        for h in handles:
            out = h.result(timeout=T)
            assert isinstance(out, Done) and out.state["n"] == int(h.run_id[1:]) - base + 2, out
        assert wait_until(lambda: rt.live_runs() == 0), rt.live_runs()
        if delete:
            for rid in ids:
                assert rt.delete("soak", rid)
        done += k
        if done <= 0:
            continue
        if fixed_threads is None:
            fixed_threads = threading.active_count()  # the runtime's own threads, all started
        # actor threads end just after their run reports: give them a moment
        wait_until(lambda: threading.active_count() <= fixed_threads, timeout=5)
        gc.collect()
        samples.append((done, threading.active_count(), tracemalloc.get_traced_memory()[0]))
    tenth = max(1, len(samples) // 10)
    first, last = samples[:tenth], samples[-tenth:]
    rest = samples[tenth:]
    return {
        "samples": samples,
        "threads_first": max(s[1] for s in first),
        "threads_last": max(s[1] for s in last),
        "mem_first": sum(s[2] for s in first) / len(first),
        "mem_last": sum(s[2] for s in last) / len(last),
        "slope": _slope([float(s[0]) for s in rest], [float(s[2]) for s in rest]) if len(rest) > 2 else 0.0,
    }


@pytest.fixture
def traced() -> Any:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()


any_store = reopeners("memory", *PERSISTENT)
durable_store = reopeners(*PERSISTENT)


def test_soak_many_runs(any_store: Reopener, traced: Any, request: Any) -> None:
    kind = any_store.kind
    base_threads = threading.active_count()
    base_actors = _actor_counts()
    n = N_MEMORY if kind == "memory" else N_LMDB
    store = any_store(map_size=1 << 30)
    rt = Runtime(store=store, durability="sync", step_workers=WORKERS)
    try:
        rt.register(_diamond())
        # a lone worker of a shared store takes nothing from others: its polls (allocations at
        # times unrelated to the runs) would only blur the per-run slope measured here
        rt.drain()
        # a warm-up first: reader pools, prepared statements and caches fill up
        r = soak(rt, n, batch=max(10, n // 100), delete=kind == "memory", warmup=WARMUP)
        # threads: flat, and only the runtime's own
        assert r["threads_last"] <= r["threads_first"], r["samples"]
        # memory: flat
        growth = r["mem_last"] - r["mem_first"]
        assert growth < ALLOWANCE, (growth, r["samples"])
        assert r["slope"] < SLOPE_MAX, (r["slope"], r["samples"])
        # no run actor left; the runtime's fixed actors only
        assert rt.live_runs() == 0
        assert wait_until(lambda: _actor_counts()[WorkflowActor] == base_actors[WorkflowActor])
        counts = _actor_counts()
        assert counts[StepActor] - base_actors[StepActor] == WORKERS
        assert counts[Checkpointer] - base_actors[Checkpointer] == (0 if kind == "memory" else 1)
        if kind != "memory":
            assert len(rt.runs(status="done")) == n + WARMUP
        else:
            assert rt.runs() == []
        _report(request, (
            f"soak[{kind}]: {n} runs; threads {base_threads} before the runtime, "
            f"{r['threads_first']} in the first tenth, {r['threads_last']} in the last; traced memory "
            f"{r['mem_first'] / 1024:.0f} KiB -> {r['mem_last'] / 1024:.0f} KiB "
            f"({growth / 1024:+.1f} KiB, slope {r['slope']:+.1f} B/run); run actors left: 0"))
    finally:
        rt.close()
    assert wait_until(lambda: threading.active_count() <= base_threads, timeout=10)


def test_paused_runs_hold_no_thread_and_all_resume(durable_store: Reopener, request: Any) -> None:
    base_threads = threading.active_count()
    base_actors = _actor_counts()[WorkflowActor]
    ids = [f"p{i:05d}" for i in range(N_PAUSED)]
    with Runtime(store=durable_store(map_size=1 << 30), durability="sync",
                 step_workers=WORKERS) as rt:
        rt.register(_asking())
        fixed = threading.active_count()
        for i in range(0, N_PAUSED, 100):
            chunk = ids[i:i + 100]
            for h in rt.start_many("asking", [{}] * len(chunk), chunk):
                out = h.result(timeout=T)
                assert isinstance(out, Paused) and out.interrupts[0].payload == {"run": h.run_id}, out
        assert wait_until(lambda: rt.live_runs() == 0)
        # no thread, no actor per paused run
        assert wait_until(lambda: threading.active_count() <= fixed), threading.active_count()
        paused_threads = threading.active_count()
        assert wait_until(lambda: _actor_counts()[WorkflowActor] == base_actors)
        assert len(rt.runs(status="paused")) == N_PAUSED
    # on disk: a new runtime resumes every one of them
    with Runtime(store=durable_store(map_size=1 << 30), durability="sync",
                 step_workers=WORKERS) as rt:
        rt.register(_asking())
        assert rt.recover() == []
        assert len(rt.runs(status="paused")) == N_PAUSED
        assert threading.active_count() <= fixed
        handles = [rt.resume("asking", rid, Command(resume=f"ok-{rid}")) for rid in ids]
        for h in handles:
            out = h.result(timeout=T)
            assert isinstance(out, Done) and out.state["answer"] == f"ok-{h.run_id}", out
            assert out.state["log"] == ["first", "ask"]
        assert len(rt.runs(status="done")) == N_PAUSED
        assert wait_until(lambda: rt.live_runs() == 0)
        assert wait_until(lambda: _actor_counts()[WorkflowActor] == base_actors)
    assert wait_until(lambda: threading.active_count() <= base_threads, timeout=10)
    _report(request, (
        f"soak[paused, {durable_store.kind}]: {N_PAUSED} paused runs in the store; threads {base_threads} before, {fixed} with "
        f"the runtime, {paused_threads} with every run paused; all {N_PAUSED} resumed to Done"))
