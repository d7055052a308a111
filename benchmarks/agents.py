"""Workload 7: "agents": many concurrent I/O-bound runs, durable (sync); runs/s and threads.

Each run is a chain of 3 ``async def`` steps, each awaiting
``asyncio.sleep(0.1)`` (a stand-in for a model or tool call) and then adding
1 to ``n``, so a run waits 0.3 s and does almost no work: the figure is how
many such runs an engine keeps in flight per second, and what it costs.

* atomr: one Runtime on one LmdbStore (default fsync), durability "sync";
  ``runs`` runs started with one ``rt.start_many(...)``, then
  ``h.result(...)`` for each (:func:`atomr_start_and_wait`, the one place
  that touches the API). A monitor thread samples ``threading.active_count()``
  every 10 ms during the timed section: the peak is reported against the
  limit of 32 threads (and the peak of ``/proc/self/task`` in the details);
* LangGraph: a ``StateGraph`` of the same 3 async nodes on an
  ``AsyncSqliteSaver`` (aiosqlite; WAL, synchronous=FULL), ``asyncio.gather``
  of ``ainvoke(..., durability="sync")`` for ``lg_runs`` runs (fewer than
  atomr's, to keep the harness short: the figure is a rate).

Every run must end Done with ``n == 3``. Metric: runs / seconds of the timed
section (start of the first run to the last outcome, plus atomr's flush).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks._common import (
    LIMITS,
    RESULT_TIMEOUT,
    TARGETS,
    Ctx,
    ThreadPeak,
    check,
    make_row,
    sample_loop,
    timed,
)

NAME = "agents"
STEPS = 3
IO_SECONDS = 0.1
WF = "agent"


def params(ctx: Ctx) -> dict[str, Any]:
    return {
        "runs": 200 if ctx.quick else 10_000,
        "lg_runs": 100 if ctx.quick else 2_000,
        "steps": STEPS,
        "io_seconds": IO_SECONDS,
        "durability": "sync",
        "atomr_api": "start_many + result",
        "lg_api": "asyncio.gather(ainvoke) on AsyncSqliteSaver",
    }


def samples_count(ctx: Ctx) -> int:
    return ctx.reps * len(ctx.systems())


def atomr_start_and_wait(rt: Any, workflow_id: str, inputs: list[dict[str, Any]],
                         run_ids: list[str]) -> list[Any]:
    """Start every run and await its outcome through atomr's asyncio API, as an
    async web app would: ``asyncio.gather`` of ``await rt.astart(...)``, then
    of ``await handle`` (the peer's side: ``asyncio.gather`` of ``ainvoke``)."""

    async def go() -> list[Any]:
        handles = await asyncio.gather(*(rt.astart(workflow_id, data, rid, timeout=RESULT_TIMEOUT)
                                         for data, rid in zip(inputs, run_ids)))
        return list(await asyncio.gather(*(h.aresult(timeout=RESULT_TIMEOUT) for h in handles)))

    return asyncio.run(go())


def atomr_sample(ctx: Ctx, runs: int, details: list[dict[str, Any]]) -> float:
    from atomr import Done, LmdbStore, Runtime

    from benchmarks._graphs import atomr_agent_chain

    wf = atomr_agent_chain(WF, STEPS, IO_SECONDS)
    with ctx.tmpdir("atomr-agents") as d, Runtime(store=LmdbStore(d), durability="sync") as rt:
        rt.register(wf)
        warm = rt.start(WF, {"n": 0}, run_id="warm").result(timeout=RESULT_TIMEOUT)
        check(isinstance(warm, Done) and warm.state["n"] == STEPS, f"warm-up run ended {warm!r}")
        inputs = [{"n": 0} for _ in range(runs)]
        ids = [f"r{i}" for i in range(runs)]

        def go() -> list[Any]:
            outs = atomr_start_and_wait(rt, WF, inputs, ids)
            rt.flush()
            return outs

        with ThreadPeak() as peak:
            secs, outs = timed(go)
        bad = [o for o in outs if not (isinstance(o, Done) and o.state["n"] == STEPS)]
        check(len(outs) == runs and not bad, f"{len(bad)} atomr runs ended wrong, e.g. {bad[:1]!r}")
        done = sum(1 for s in rt.runs(status="done", workflow_id=WF))
        check(done == runs + 1, f"atomr store holds {done} done runs, expected {runs + 1}")
    details.append({"system": "atomr", "runs": runs, "seconds": secs, "peak_threads": peak.peak,
                    "peak_os_threads": peak.peak_os})
    return runs / secs


def lg_sample(ctx: Ctx, runs: int, details: list[dict[str, Any]]) -> float:
    from benchmarks import _lg

    async def main(d: str) -> tuple[float, list[Any], str]:
        async with _lg.async_sqlite_saver(d) as (saver, level):
            graph = _lg.agent_chain(STEPS, IO_SECONDS).compile(checkpointer=saver)
            warm = await graph.ainvoke({"n": 0}, _lg.config("warm"), durability="sync")
            check(warm["n"] == STEPS, f"langgraph warm-up run ended {warm!r}")
            t0 = time.perf_counter()
            outs = await asyncio.gather(*[
                graph.ainvoke({"n": 0}, _lg.config(f"r{i}"), durability="sync") for i in range(runs)])
            return time.perf_counter() - t0, outs, level

    with ctx.tmpdir("lg-agents") as d, ThreadPeak() as peak:
        secs, outs, level = asyncio.run(main(d))
    bad = [o for o in outs if o["n"] != STEPS]
    check(len(outs) == runs and not bad, f"{len(bad)} langgraph runs ended wrong, e.g. {bad[:1]!r}")
    details.append({"system": "langgraph", "runs": runs, "seconds": secs, "peak_threads": peak.peak,
                    "peak_os_threads": peak.peak_os, "sqlite_synchronous": level})
    return runs / secs


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    details: list[dict[str, Any]] = []
    fns = {"atomr": lambda: atomr_sample(ctx, p["runs"], details)}
    if ctx.lg:
        fns["langgraph"] = lambda: lg_sample(ctx, p["lg_runs"], details)
    samples = sample_loop(ctx, "agents", fns)
    threads = {s: [float(x["peak_threads"]) for x in details if x["system"] == s] for s in samples}
    quick = "" if p["runs"] == 10_000 else "quick size; the targets are for 10,000 atomr runs (2,000 LangGraph)"
    what = (f"{p['runs']:,} runs (LangGraph {p['lg_runs']:,}) of {STEPS} async steps awaiting "
            f"{IO_SECONDS * 1000:.0f} ms, LmdbStore vs AsyncSqliteSaver, sync")
    rows = [
        make_row("agents", what, "runs/s", "higher", samples, target=TARGETS["agents"], note=quick),
        make_row("agents.peak_threads", f"{what}: peak threading.active_count() (10 ms samples)",
                 "threads", "lower", threads, stat="max", limit=LIMITS["agents_threads"], note=quick),
    ]
    return {"params": p, "rows": rows, "detail": details}
