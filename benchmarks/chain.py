"""Workload 1: one run of a chain of trivial steps; metric super-steps/s.

The headline case, "durable-sync-fsync-full", compares like for like: LMDB
with ``fsync="full"`` (data and meta page synced on every commit) against
SqliteSaver in WAL mode with synchronous=FULL (the WAL fsynced on every
commit), durability "sync": the same power-loss guarantee on both sides.
The other cases: in memory (MemoryStore vs InMemorySaver), and durable with
each durability mode on each store's defaults (LmdbStore fsyncs a commit's
data pages and syncs its meta page with the next commit, fsync="commit";
SQLite as above), "sync" / "async" / "exit".
The timed section is the run end to end plus a flush of the store, so every
mode is timed until its writes are done (LangGraph's invoke returns only once
its checkpoint writes are finished).
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import RESULT_TIMEOUT, TARGETS, Ctx, check, make_row, sample_loop, timed

NAME = "chain"
#: (case, durability, what, target key); the first is the headline
CASES = (
    ("durable-sync-fsync-full", "sync",
     "like for like: LmdbStore(fsync='full') vs SqliteSaver (synchronous=FULL), durability=sync",
     "chain_durable_full"),
    ("memory", "sync", "MemoryStore vs InMemorySaver", "chain_memory"),
    ("durable-sync", "sync", "LmdbStore (default fsync='commit') vs SqliteSaver, durability=sync",
     "chain_durable"),
    ("durable-async", "async", "LmdbStore vs SqliteSaver, durability=async", "chain_durable"),
    ("durable-exit", "exit", "LmdbStore vs SqliteSaver, durability=exit", "chain_durable"),
)


HEADLINE = CASES[0][0]


def params(ctx: Ctx) -> dict[str, Any]:
    return {"steps": 50}


def samples_count(ctx: Ctx) -> int:
    return len(CASES) * ctx.reps * len(ctx.systems())


def atomr_sample(ctx: Ctx, case: str, durability: str, steps: int) -> float:
    from atomr import Done, LmdbStore, MemoryStore, Runtime

    from benchmarks._graphs import atomr_chain

    wf = atomr_chain("chain", steps)
    with ctx.tmpdir("atomr-chain") as d:
        if case == "memory":
            store = MemoryStore()
        elif case.endswith("fsync-full"):
            store = LmdbStore(d, fsync="full")
        else:
            store = LmdbStore(d)
        with Runtime(store=store, durability=durability) as rt:
            rt.register(wf)
            warm = rt.start("chain", {"n": 0}, run_id="warm").result(timeout=RESULT_TIMEOUT)
            check(isinstance(warm, Done), f"warm-up run ended {warm!r}")

            def go() -> Any:
                out = rt.start("chain", {"n": 0}, run_id="timed").result(timeout=RESULT_TIMEOUT)
                rt.flush()
                return out

            secs, out = timed(go)
            check(isinstance(out, Done) and out.state["n"] == steps, f"atomr chain ended {out!r}")
    return steps / secs


def lg_sample(ctx: Ctx, case: str, durability: str, steps: int) -> float:
    from benchmarks import _lg

    graph_def = _lg.chain(steps)
    with ctx.tmpdir("lg-chain") as d:
        if case == "memory":
            saver = _lg.memory_saver()
        elif case.endswith("fsync-full"):
            saver = _lg.sqlite_saver(d, synchronous="FULL")
            level = _lg.sqlite_synchronous(saver)
            check(level == "FULL", f"like-for-like case: SQLite synchronous is {level}, not FULL")
        else:
            saver = _lg.sqlite_saver(d)
        try:
            graph = graph_def.compile(checkpointer=saver)
            graph.invoke({"n": 0}, _lg.config("warm"), durability=durability)
            secs, out = timed(lambda: graph.invoke({"n": 0}, _lg.config("timed"), durability=durability))
            check(out["n"] == steps, f"langgraph chain ended {out!r}")
        finally:
            conn = getattr(saver, "conn", None)
            if conn is not None:
                conn.close()
    return steps / secs


def run(ctx: Ctx) -> dict[str, Any]:
    steps = params(ctx)["steps"]
    rows = []
    for case, durability, what, target_key in CASES:
        fns = {"atomr": lambda c=case, m=durability: atomr_sample(ctx, c, m, steps)}
        if ctx.lg:
            fns["langgraph"] = lambda c=case, m=durability: lg_sample(ctx, c, m, steps)
        samples = sample_loop(ctx, f"chain {case}", fns)
        rows.append(make_row(
            f"chain.{case}", f"chain {steps} steps, {what}", "super-steps/s", "higher", samples,
            target=TARGETS[target_key], headline=case == HEADLINE,
        ))
    return {"params": params(ctx), "rows": rows}
