"""Workload 2: fan-out ``width`` wide x ``depth`` deep, durable (sync).

Both graphs: ``depth`` layers of ``width`` nodes, every node of layer k an
edge to every node of layer k+1, so a run is ``depth`` super-steps and
``width * depth`` node runs; every node appends to an AppendList /
``operator.add`` channel, so the parallel writes of a super-step merge.
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import RESULT_TIMEOUT, TARGETS, Ctx, check, make_row, sample_loop, timed

NAME = "fanout"


#: timed runs per sample (one run of 80 node runs is only a few ms: too short to time alone)
RUNS = 5


def params(ctx: Ctx) -> dict[str, Any]:
    return {"width": 10, "depth": 8, "durability": "sync", "runs_per_sample": 1 if ctx.quick else RUNS}


def samples_count(ctx: Ctx) -> int:
    return ctx.reps * len(ctx.systems())


def atomr_sample(ctx: Ctx, width: int, depth: int, runs: int) -> float:
    from atomr import Done, LmdbStore, Runtime

    from benchmarks._graphs import atomr_fanout

    wf = atomr_fanout("fan", width, depth)
    with ctx.tmpdir("atomr-fan") as d, Runtime(store=LmdbStore(d), durability="sync") as rt:
        rt.register(wf)
        warm = rt.start("fan", {}, run_id="warm").result(timeout=RESULT_TIMEOUT)
        check(isinstance(warm, Done), f"warm-up run ended {warm!r}")

        def go() -> Any:
            for i in range(runs):
                out = rt.start("fan", {}, run_id=f"timed{i}").result(timeout=RESULT_TIMEOUT)
            rt.flush()
            return out

        secs, out = timed(go)
        check(isinstance(out, Done) and len(out.state["log"]) == width * depth, f"atomr fan-out ended {out!r}")
        check(rt.get_state("fan", "timed0").super_step == depth, "atomr fan-out super-step count")
    return secs / runs


def lg_sample(ctx: Ctx, width: int, depth: int, runs: int) -> float:
    from benchmarks import _lg

    with ctx.tmpdir("lg-fan") as d:
        saver = _lg.sqlite_saver(d)
        try:
            graph = _lg.fanout(width, depth).compile(checkpointer=saver)
            graph.invoke({"log": []}, _lg.config("warm"), durability="sync")
            def go() -> Any:
                for i in range(runs):
                    out = graph.invoke({"log": []}, _lg.config(f"timed{i}"), durability="sync")
                return out

            secs, out = timed(go)
            secs /= runs
            check(len(out["log"]) == width * depth, f"langgraph fan-out ended with {len(out['log'])} writes")
            step = graph.get_state(_lg.config("timed0")).metadata.get("step")
            check(step == depth, f"langgraph fan-out ran {step} super-steps")
        finally:
            saver.conn.close()
    return secs


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    width, depth, runs = p["width"], p["depth"], p["runs_per_sample"]
    fns = {"atomr": lambda: atomr_sample(ctx, width, depth, runs)}
    if ctx.lg:
        fns["langgraph"] = lambda: lg_sample(ctx, width, depth, runs)
    secs = sample_loop(ctx, "fanout", fns)
    per = lambda k: {s: [k / x for x in v] for s, v in secs.items()}  # noqa: E731
    what = f"fan-out {width}x{depth}, LmdbStore vs SqliteSaver, sync"
    rows = [
        make_row("fanout.node_runs", what, "node runs/s", "higher", per(width * depth),
                 target=TARGETS["fanout_node_runs"]),
        make_row("fanout.super_steps", what, "super-steps/s", "higher", per(depth)),
    ]
    return {"params": p, "rows": rows}
