"""Workload 3: many concurrent runs of a chain, durable (sync); total super-steps/s.

atomr: one Runtime on one LmdbStore; start every run (``rt.start_many`` when
the Runtime has it, so the starts share commits; else ``rt.start`` in a
loop), then wait for all.
LangGraph: one compiled graph on one shared SqliteSaver, each run an
``invoke`` in a ThreadPoolExecutor.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks._common import RESULT_TIMEOUT, TARGETS, Ctx, check, make_row, sample_loop, timed

NAME = "concurrent"


def params(ctx: Ctx) -> dict[str, Any]:
    from atomr import Runtime

    return {"runs": 20 if ctx.quick else 100, "steps": 20, "durability": "sync", "lg_threads": 16,
            "atomr_start": "start_many" if hasattr(Runtime, "start_many") else "start"}


def samples_count(ctx: Ctx) -> int:
    return ctx.reps * len(ctx.systems())


def atomr_sample(ctx: Ctx, runs: int, steps: int) -> float:
    from atomr import Done, LmdbStore, Runtime

    from benchmarks._graphs import atomr_chain

    wf = atomr_chain("chain", steps)
    with ctx.tmpdir("atomr-conc") as d, Runtime(store=LmdbStore(d), durability="sync") as rt:
        rt.register(wf)
        warm = rt.start("chain", {"n": 0}, run_id="warm").result(timeout=RESULT_TIMEOUT)
        check(isinstance(warm, Done), f"warm-up run ended {warm!r}")

        def go() -> list[Any]:
            if hasattr(rt, "start_many"):
                handles = rt.start_many("chain", [{"n": 0}] * runs, [f"r{i}" for i in range(runs)])
            else:
                handles = [rt.start("chain", {"n": 0}, run_id=f"r{i}") for i in range(runs)]
            outs = [h.result(timeout=RESULT_TIMEOUT) for h in handles]
            rt.flush()
            return outs

        secs, outs = timed(go)
        bad = [o for o in outs if not (isinstance(o, Done) and o.state["n"] == steps)]
        check(not bad, f"{len(bad)} atomr runs ended wrong, e.g. {bad[:1]!r}")
    return runs * steps / secs


def lg_sample(ctx: Ctx, runs: int, steps: int, threads: int) -> float:
    from benchmarks import _lg

    with ctx.tmpdir("lg-conc") as d:
        saver = _lg.sqlite_saver(d)
        try:
            graph = _lg.chain(steps).compile(checkpointer=saver)
            graph.invoke({"n": 0}, _lg.config("warm"), durability="sync")
            with ThreadPoolExecutor(max_workers=threads) as pool:

                def go() -> list[Any]:
                    futs = [pool.submit(graph.invoke, {"n": 0}, _lg.config(f"r{i}"), durability="sync")
                            for i in range(runs)]
                    return [f.result(timeout=RESULT_TIMEOUT) for f in futs]

                secs, outs = timed(go)
            bad = [o for o in outs if o["n"] != steps]
            check(not bad, f"{len(bad)} langgraph runs ended wrong, e.g. {bad[:1]!r}")
        finally:
            saver.conn.close()
    return runs * steps / secs


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    fns = {"atomr": lambda: atomr_sample(ctx, p["runs"], p["steps"])}
    if ctx.lg:
        fns["langgraph"] = lambda: lg_sample(ctx, p["runs"], p["steps"], p["lg_threads"])
    samples = sample_loop(ctx, "concurrent", fns)
    row = make_row(
        "concurrent.durable",
        f"{p['runs']} concurrent runs x {p['steps']} steps, LmdbStore vs SqliteSaver, sync",
        "super-steps/s", "higher", samples, target=TARGETS["concurrent_durable"],
        note="" if p["runs"] == 100 else "quick size; the target is for 100 runs",
    )
    return {"params": p, "rows": [row]}
