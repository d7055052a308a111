"""Workload 6: latency percentiles of single operations.

* one super-step end to end: start a 1-step workflow and wait for its outcome
  (atomr ``rt.start(...).result()`` vs ``graph.invoke``), in memory and durable (sync);
* reading a run's state: ``rt.get_state`` vs ``graph.get_state`` of a finished
  20-step run, in memory and durable.

Each repetition sets up a fresh store, warms up, then times every call on its
own; the percentiles are over all calls of all repetitions (milliseconds).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._common import RESULT_TIMEOUT, Ctx, check, make_row, sample_loop

NAME = "latency"
WARMUP = 5
CASES = (
    ("run_memory", "one super-step (1-step run end to end), MemoryStore vs InMemorySaver"),
    ("run_durable", "one super-step (1-step run end to end), LmdbStore vs SqliteSaver, sync"),
    ("get_state_memory", "get_state of a finished 20-step run, MemoryStore vs InMemorySaver"),
    ("get_state_durable", "get_state of a finished 20-step run, LmdbStore vs SqliteSaver"),
)


def params(ctx: Ctx) -> dict[str, Any]:
    return {"calls_per_rep": 20 if ctx.quick else 200, "get_state_run_steps": 20, "durability": "sync"}


def samples_count(ctx: Ctx) -> int:
    return len(CASES) * ctx.reps * len(ctx.systems())


def atomr_sample(ctx: Ctx, case: str, calls: int) -> list[float]:
    from atomr import Done, LmdbStore, MemoryStore, Runtime

    from benchmarks._graphs import atomr_chain

    out: list[float] = []
    with ctx.tmpdir("atomr-lat") as d:
        store = MemoryStore() if case.endswith("memory") else LmdbStore(d)
        with Runtime(store=store, durability="sync") as rt:
            if case.startswith("run"):
                rt.register(atomr_chain("one", 1))
                for i in range(WARMUP + calls):
                    t0 = time.perf_counter()
                    res = rt.start("one", {"n": 0}, run_id=f"r{i}").result(timeout=RESULT_TIMEOUT)
                    dt = time.perf_counter() - t0
                    check(isinstance(res, Done) and res.state["n"] == 1, f"atomr 1-step run ended {res!r}")
                    if i >= WARMUP:
                        out.append(dt * 1000)
            else:
                steps = params(ctx)["get_state_run_steps"]
                rt.register(atomr_chain("chain", steps))
                res = rt.start("chain", {"n": 0}, run_id="r").result(timeout=RESULT_TIMEOUT)
                check(isinstance(res, Done), f"atomr run ended {res!r}")
                rt.flush()
                for i in range(WARMUP + calls):
                    t0 = time.perf_counter()
                    view = rt.get_state("chain", "r")
                    dt = time.perf_counter() - t0
                    check(view.values["n"] == steps, f"atomr get_state gave {view!r}")
                    if i >= WARMUP:
                        out.append(dt * 1000)
    return out


def lg_sample(ctx: Ctx, case: str, calls: int) -> list[float]:
    from benchmarks import _lg

    out: list[float] = []
    with ctx.tmpdir("lg-lat") as d:
        saver = _lg.memory_saver() if case.endswith("memory") else _lg.sqlite_saver(d)
        try:
            if case.startswith("run"):
                graph = _lg.chain(1).compile(checkpointer=saver)
                for i in range(WARMUP + calls):
                    t0 = time.perf_counter()
                    res = graph.invoke({"n": 0}, _lg.config(f"r{i}"), durability="sync")
                    dt = time.perf_counter() - t0
                    check(res["n"] == 1, f"langgraph 1-step run ended {res!r}")
                    if i >= WARMUP:
                        out.append(dt * 1000)
            else:
                steps = params(ctx)["get_state_run_steps"]
                graph = _lg.chain(steps).compile(checkpointer=saver)
                graph.invoke({"n": 0}, _lg.config("r"), durability="sync")
                cfg = _lg.config("r")
                for i in range(WARMUP + calls):
                    t0 = time.perf_counter()
                    snap = graph.get_state(cfg)
                    dt = time.perf_counter() - t0
                    check(snap.values["n"] == steps, f"langgraph get_state gave {snap!r}")
                    if i >= WARMUP:
                        out.append(dt * 1000)
        finally:
            conn = getattr(saver, "conn", None)
            if conn is not None:
                conn.close()
    return out


def run(ctx: Ctx) -> dict[str, Any]:
    calls = params(ctx)["calls_per_rep"]
    rows = []
    for case, what in CASES:
        fns = {"atomr": lambda c=case: atomr_sample(ctx, c, calls)}
        if ctx.lg:
            fns["langgraph"] = lambda c=case: lg_sample(ctx, c, calls)
        samples = sample_loop(ctx, f"latency {case}", fns)
        for stat in ("p50", "p99"):
            rows.append(make_row(f"latency.{case}.{stat}", f"{what} - {stat}", "ms", "lower", samples, stat=stat))
    return {"params": params(ctx), "rows": rows}
