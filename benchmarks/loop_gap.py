"""Workload 11 (loop_gap): how long the caller's asyncio loop is held while it drives many durable runs.

An async web app that embeds an engine starts runs and awaits their outcomes
from its own event loop; any stretch in which that loop cannot run (the GIL
held by the engine's threads, a long garbage collection, a big batch encoded
in one call) freezes every request the app serves for that long.

* atomr: one Runtime on the default ``LmdbStore`` (default fsync), durability
  "sync"; ``runs`` tasks on one loop each ``await rt.astart(...)`` a 10-step
  chain and then ``await`` the handle;
* LangGraph: the same chain on an ``AsyncSqliteSaver`` (aiosqlite; WAL,
  synchronous=FULL), ``runs`` tasks each ``await graph.ainvoke(...,
  durability="sync")``.

A ticker task on the same loop sleeps 1 ms at a time and records the longest
time between two of its wake-ups: the loop's longest gap (ms), the figure
against the limit of 20 ms for atomr. ``gc.callbacks`` time every garbage
collection during the timed section (the longest and the generation-2 total
are in the details), and the details give the same ticker's longest gap on an
idle loop right after each atomr sample: the floor the machine itself imposes. Every run must end Done with ``n == steps``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from benchmarks._common import LIMITS, RESULT_TIMEOUT, Ctx, check, make_row, sample_loop

NAME = "loop_gap"
STEPS = 10
WF = "chain"
TICK_S = 0.001
LIMIT_MS = LIMITS["loop_gap_ms"]


def params(ctx: Ctx) -> dict[str, Any]:
    return {"runs": 100 if ctx.quick else 1_000, "steps": STEPS, "tick_s": TICK_S, "durability": "sync",
            "atomr_api": "astart + await handle", "lg_api": "ainvoke on AsyncSqliteSaver"}


def samples_count(ctx: Ctx) -> int:
    return ctx.reps * len(ctx.systems())


class GcTimer:
    """Times every garbage collection through ``gc.callbacks`` while entered."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, ms)
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._t0) * 1000))

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)

    def summary(self) -> dict[str, Any]:
        gen2 = [ms for g, ms in self.pauses if g == 2]
        return {"collections": len(self.pauses), "longest_ms": max((ms for _, ms in self.pauses), default=0.0),
                "gen2": len(gen2), "gen2_longest_ms": max(gen2, default=0.0), "gen2_total_ms": sum(gen2)}


class Ticker:
    """A task on the running loop waking every ``tick`` s; ``longest`` is the longest
    time (s) between two wake-ups, the sleep itself included."""

    def __init__(self, tick: float = TICK_S) -> None:
        self.tick = tick
        self.longest = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(self.tick)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            self.ticks += 1
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task


async def measure(fn: Any) -> tuple[float, float, Any, dict[str, Any]]:
    """(longest gap ms, seconds, fn's result, gc summary) of ``await fn()`` under a ticker."""
    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(0.01)
    with GcTimer() as gct:
        t0 = time.perf_counter()
        out = await fn()
        secs = time.perf_counter() - t0
    await ticker.stop()
    return ticker.longest * 1000, secs, out, gct.summary()


def idle_gap(seconds: float) -> float:
    """The longest gap (ms) of the same ticker on a loop doing nothing else for
    ``seconds``: what the machine itself imposes (a loaded box preempts the process)."""

    async def idle() -> None:
        await asyncio.sleep(seconds)

    return asyncio.run(measure(idle))[0]


def atomr_runs(rt: Any, runs: int, prefix: str = "r") -> Any:
    """The caller's side: one task per run, each ``await rt.astart(...)`` then ``await handle``."""

    async def one(i: int) -> Any:
        h = await rt.astart(WF, {"n": 0}, f"{prefix}{i}", timeout=RESULT_TIMEOUT)
        return await h.aresult(timeout=RESULT_TIMEOUT)

    async def go() -> list[Any]:
        return list(await asyncio.gather(*(one(i) for i in range(runs))))

    return go


def atomr_sample(ctx: Ctx, runs: int, details: list[dict[str, Any]]) -> float:
    from atomr import Done, LmdbStore, Runtime

    from benchmarks._graphs import atomr_chain

    with ctx.tmpdir("atomr-gap") as d, Runtime(store=LmdbStore(d), durability="sync") as rt:
        rt.register(atomr_chain(WF, STEPS))
        warm = rt.start(WF, {"n": 0}, run_id="warm").result(timeout=RESULT_TIMEOUT)
        check(isinstance(warm, Done), f"warm-up run ended {warm!r}")
        gap, secs, outs, gcs = asyncio.run(measure(atomr_runs(rt, runs)))
        bad = [o for o in outs if not (isinstance(o, Done) and o.state["n"] == STEPS)]
        check(len(outs) == runs and not bad, f"{len(bad)} atomr runs ended wrong, e.g. {bad[:1]!r}")
    details.append({"system": "atomr", "runs": runs, "seconds": secs, "longest_gap_ms": gap, "gc": gcs,
                    "idle_loop_longest_gap_ms": idle_gap(min(secs, 3.0))})
    return gap


def lg_sample(ctx: Ctx, runs: int, details: list[dict[str, Any]]) -> float:
    from benchmarks import _lg

    async def main(d: str) -> tuple[float, float, Any, dict[str, Any]]:
        async with _lg.async_sqlite_saver(d) as (saver, _level):
            graph = _lg.chain(STEPS).compile(checkpointer=saver)
            warm = await graph.ainvoke({"n": 0}, _lg.config("warm"), durability="sync")
            check(warm["n"] == STEPS, f"langgraph warm-up run ended {warm!r}")

            async def go() -> list[Any]:
                return list(await asyncio.gather(*(
                    graph.ainvoke({"n": 0}, _lg.config(f"r{i}"), durability="sync") for i in range(runs))))

            return await measure(go)

    with ctx.tmpdir("lg-gap") as d:
        gap, secs, outs, gcs = asyncio.run(main(d))
    bad = [o for o in outs if o["n"] != STEPS]
    check(len(outs) == runs and not bad, f"{len(bad)} langgraph runs ended wrong, e.g. {bad[:1]!r}")
    details.append({"system": "langgraph", "runs": runs, "seconds": secs, "longest_gap_ms": gap, "gc": gcs})
    return gap


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    details: list[dict[str, Any]] = []
    fns = {"atomr": lambda: atomr_sample(ctx, p["runs"], details)}
    if ctx.lg:
        fns["langgraph"] = lambda: lg_sample(ctx, p["runs"], details)
    samples = sample_loop(ctx, "loop_gap", fns)
    quick = "" if p["runs"] == 1_000 else "quick size; the limit is for 1,000 runs"
    what = (f"caller's loop longest gap, {p['runs']:,} runs of {STEPS}-step chains started and awaited "
            "from one asyncio loop, LmdbStore vs AsyncSqliteSaver, sync")
    rows = [make_row("loop_gap", what, "ms", "lower", samples, limit=LIMIT_MS, note=quick),
            make_row("loop_gap.vs_langgraph", what + " (LangGraph / atomr)", "ms", "lower", samples, note=quick)]
    return {"params": p, "rows": rows, "detail": details}


if __name__ == "__main__":  # a quick look without the harness: python -m benchmarks.loop_gap [runs]
    import sys
    import tempfile

    from benchmarks._common import Progress

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with tempfile.TemporaryDirectory() as scratch:
        c = Ctx(False, reps, "--lg" in sys.argv, scratch, Progress(0, enabled=False))
        out: list[dict[str, Any]] = []
        for _ in range(reps):
            atomr_sample(c, n, out)
            if c.lg:
                lg_sample(c, n, out)
        for x in out:
            print(x)
