"""Workload 3: many concurrent runs of a chain, durable (sync); total super-steps/s.

Two cases, each on a fresh store per sample:

* "one_by_one" (the issue's figure): 96 concurrent chains of 25 steps, each
  started by the caller with ``rt.start(...)`` one at a time (each start
  returns once it is durable, while the runs started before it execute);
  then wait for every outcome;
* "start_many": 100 chains of 20 steps started with one ``rt.start_many``
  call, so their starts share commits; then wait for every outcome.

atomr: one Runtime on one LmdbStore (default fsync).
LangGraph: one compiled graph on one shared SqliteSaver, each run an
``invoke`` submitted one at a time to a ThreadPoolExecutor: "one_by_one" with
a thread per run (all 96 in flight at once, as atomr's; measured a little
faster than 16 threads), "start_many" with 16 threads as before.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks._common import RESULT_TIMEOUT, TARGETS, Ctx, check, make_row, sample_loop, timed

NAME = "concurrent"
#: case -> (runs, steps, runs in --quick mode, how atomr starts them, LangGraph threads or None
#: for one per run)
CASES = {
    "one_by_one": (96, 25, 16, "start", None),
    "start_many": (100, 20, 20, "start_many", 16),
}


def params(ctx: Ctx) -> dict[str, Any]:
    return {
        "cases": {case: {"runs": quick if ctx.quick else runs, "steps": steps, "atomr_start": how,
                         "lg_threads": threads or (quick if ctx.quick else runs)}
                  for case, (runs, steps, quick, how, threads) in CASES.items()},
        "durability": "sync",
    }


def samples_count(ctx: Ctx) -> int:
    return len(CASES) * ctx.reps * len(ctx.systems())


def atomr_sample(ctx: Ctx, runs: int, steps: int, how: str) -> float:
    from atomr import Done, LmdbStore, Runtime

    from benchmarks._graphs import atomr_chain

    wf = atomr_chain("chain", steps)
    with ctx.tmpdir("atomr-conc") as d, Runtime(store=LmdbStore(d), durability="sync") as rt:
        rt.register(wf)
        warm = rt.start("chain", {"n": 0}, run_id="warm").result(timeout=RESULT_TIMEOUT)
        check(isinstance(warm, Done), f"warm-up run ended {warm!r}")

        def go() -> list[Any]:
            if how == "start_many":
                handles = rt.start_many("chain", [{"n": 0}] * runs, [f"r{i}" for i in range(runs)],
                                        timeout=RESULT_TIMEOUT)
            else:
                handles = [rt.start("chain", {"n": 0}, run_id=f"r{i}", timeout=RESULT_TIMEOUT)
                           for i in range(runs)]
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
    rows = []
    for case, (full_runs, steps, _quick, how, _threads) in CASES.items():
        runs, threads = p["cases"][case]["runs"], p["cases"][case]["lg_threads"]
        fns = {"atomr": lambda r=runs, s=steps, h=how: atomr_sample(ctx, r, s, h)}
        if ctx.lg:
            fns["langgraph"] = lambda r=runs, s=steps, t=threads: lg_sample(ctx, r, s, t)
        samples = sample_loop(ctx, f"concurrent {case}", fns)
        started = "rt.start one by one" if how == "start" else "one rt.start_many"
        rows.append(make_row(
            f"concurrent.{case}",
            f"{runs} concurrent runs x {steps} steps ({started}), LmdbStore vs SqliteSaver "
            f"({threads} threads), sync",
            "super-steps/s", "higher", samples, target=TARGETS["concurrent_durable"],
            note="" if runs == full_runs else f"quick size; the target is for {full_runs} runs",
        ))
    return {"params": p, "rows": rows}
