"""Workload 9: 96 concurrent durable chains of 25 steps on SQL stores; total super-steps/s.

Mirrors ``concurrent``'s "one_by_one" case on the SQL stores, like for like
(durability "sync"; fresh store / schema per sample, after a warm-up run):

* atomr: one Runtime on one store, each run started with ``rt.start(...)``
  one at a time (each start returns once it is durable, while the runs
  started before it execute), then every outcome awaited and the store flushed;
* LangGraph on SQLite: one compiled graph on one shared ``SqliteSaver`` (WAL,
  synchronous=FULL), each run an ``invoke`` on a ThreadPoolExecutor with a
  thread per run (all in flight at once, as in ``concurrent``);
* LangGraph on Postgres: see :data:`LG_PG_MODE`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks import _sql
from benchmarks._common import RESULT_TIMEOUT, Ctx, check, timed

NAME = "sql_concurrent"
RUNS, STEPS, QUICK_RUNS = 96, 25, 16
#: How LangGraph runs concurrent chains on Postgres, the way a LangGraph user would:
#: "async" = ``asyncio.gather`` of ``ainvoke`` over one ``AsyncPostgresSaver`` on a psycopg
#: ``AsyncConnectionPool``; "threads" = a thread per run calling ``invoke`` over one
#: ``PostgresSaver`` on a ``ConnectionPool``. Both savers hold one lock around every
#: database call, so the pool size hardly matters. "async" with a pool of 4 was the
#: fastest here, if only just: 96 x 25 steps, medians of 10 samples on the 2-core VM
#: (load average 2-3), 2026-12-07: async 308 super-steps/s (pool 4) and 270 (pool 16),
#: threads 297 (pool 16) and 273 (pool 4); every sample in 110..470.
LG_PG_MODE = "async"
LG_PG_POOL = 4
CASES = {
    "sqlite": ("SqliteStore(synchronous='full') vs SqliteSaver (WAL, synchronous=FULL; a thread per run)",
               "sql_concurrent_sqlite"),
    "postgres": ("PostgresStore vs " + ("AsyncPostgresSaver on an AsyncConnectionPool (asyncio.gather)"
                                        if LG_PG_MODE == "async" else
                                        "PostgresSaver on a ConnectionPool (a thread per run)")
                 + f" of {LG_PG_POOL}", "sql_concurrent_postgres"),
}


def params(ctx: Ctx) -> dict[str, Any]:
    return {"runs": QUICK_RUNS if ctx.quick else RUNS, "steps": STEPS, "durability": "sync",
            "atomr_start": "start", "lg_postgres": LG_PG_MODE, "lg_pg_pool": LG_PG_POOL,
            "pg_dsn": _sql.masked_dsn()}


def samples_count(ctx: Ctx) -> int:
    return _sql.samples_count(ctx, CASES)


def atomr_sample(ctx: Ctx, backend: str, runs: int, steps: int) -> float:
    from atomr import Done, Runtime

    from benchmarks._graphs import atomr_chain

    wf = atomr_chain("chain", steps)
    with ctx.tmpdir(f"atomr-sqlconc-{backend}") as d, _sql.atomr_store(backend, d) as store:
        with Runtime(store=store, durability="sync") as rt:
            rt.register(wf)
            warm = rt.start("chain", {"n": 0}, run_id="warm").result(timeout=RESULT_TIMEOUT)
            check(isinstance(warm, Done), f"warm-up run ended {warm!r}")

            def go() -> list[Any]:
                handles = [rt.start("chain", {"n": 0}, run_id=f"r{i}", timeout=RESULT_TIMEOUT)
                           for i in range(runs)]
                outs = [h.result(timeout=RESULT_TIMEOUT) for h in handles]
                rt.flush()
                return outs

            _sql.mark("begin")
            secs, outs = timed(go)
            _sql.mark("end")
            bad = [o for o in outs if not (isinstance(o, Done) and o.state["n"] == steps)]
            check(not bad, f"{len(bad)} atomr runs ended wrong, e.g. {bad[:1]!r}")
    return runs * steps / secs


def _lg_threads(saver: Any, runs: int, steps: int) -> float:
    """A thread per run, each an ``invoke`` on one compiled graph over ``saver``."""
    from benchmarks import _lg

    graph = _lg.chain(steps).compile(checkpointer=saver)
    graph.invoke({"n": 0}, _lg.config("warm"), durability="sync")
    with ThreadPoolExecutor(max_workers=runs) as pool:

        def go() -> list[Any]:
            futs = [pool.submit(graph.invoke, {"n": 0}, _lg.config(f"r{i}"), durability="sync")
                    for i in range(runs)]
            return [f.result(timeout=RESULT_TIMEOUT) for f in futs]

        _sql.mark("begin")
        secs, outs = timed(go)
        _sql.mark("end")
    bad = [o for o in outs if o["n"] != steps]
    check(not bad, f"{len(bad)} langgraph runs ended wrong, e.g. {bad[:1]!r}")
    return runs * steps / secs


async def _lg_async_pg(schema: str, runs: int, steps: int) -> float:
    """``asyncio.gather`` of an ``ainvoke`` per run over an AsyncPostgresSaver."""
    import time

    from benchmarks import _lg

    async with _sql.lg_async_postgres_pool_saver(schema, LG_PG_POOL) as saver:
        graph = _lg.chain(steps).compile(checkpointer=saver)
        await graph.ainvoke({"n": 0}, _lg.config("warm"), durability="sync")
        _sql.mark("begin")
        t0 = time.perf_counter()
        outs = await asyncio.wait_for(
            asyncio.gather(*(graph.ainvoke({"n": 0}, _lg.config(f"r{i}"), durability="sync")
                             for i in range(runs))),
            RESULT_TIMEOUT)
        secs = time.perf_counter() - t0
        _sql.mark("end")
    bad = [o for o in outs if o["n"] != steps]
    check(not bad, f"{len(bad)} langgraph runs ended wrong, e.g. {bad[:1]!r}")
    return runs * steps / secs


def lg_sample(ctx: Ctx, backend: str, runs: int, steps: int, mode: str = LG_PG_MODE) -> float:
    if backend == "sqlite":
        with ctx.tmpdir("lg-sqlconc") as d, _sql.lg_sqlite_full(d) as saver:
            return _lg_threads(saver, runs, steps)
    with _sql.fresh_schema(create=True) as schema:
        if mode == "async":
            return asyncio.run(_lg_async_pg(schema, runs, steps))
        with _sql.lg_postgres_pool_saver(schema, LG_PG_POOL) as saver:
            return _lg_threads(saver, runs, steps)


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    runs = p["runs"]
    return _sql.run_cases(
        ctx, NAME, CASES, lambda b: atomr_sample(ctx, b, runs, STEPS), lambda b: lg_sample(ctx, b, runs, STEPS),
        lambda what: f"{runs} concurrent runs x {STEPS} steps (rt.start one by one), {what}, sync",
        extra_notes=() if runs == RUNS else (f"quick size; the target is for {RUNS} runs",), params=p)
