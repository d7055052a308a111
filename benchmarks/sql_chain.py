"""Workload 8: one durable chain of 40 steps on SQL stores, like for like; metric super-steps/s.

Two cases, the same database engine and the same durability on both sides,
durability "sync":

* "sqlite": atomr's ``SqliteStore(synchronous="full")`` (WAL) vs LangGraph's
  ``SqliteSaver`` (WAL, ``PRAGMA synchronous=FULL`` forced and checked on its
  connection): every commit fsyncs the WAL on both sides;
* "postgres": atomr's ``PostgresStore`` vs LangGraph's ``PostgresSaver`` (one
  connection, as ``from_conn_string`` makes it), the server's default
  ``synchronous_commit``; each side in a fresh schema, dropped afterwards.

As in ``chain``, the timed section is one run end to end plus a flush of
atomr's store, after a warm-up run on the same store. A case whose store or
server is missing is skipped with the reason (see :mod:`benchmarks._sql`).
"""

from __future__ import annotations

from typing import Any

from benchmarks import _sql
from benchmarks._common import RESULT_TIMEOUT, Ctx, check, timed

NAME = "sql_chain"
STEPS = 40
#: backend -> (what, target key)
CASES = {
    "sqlite": ("SqliteStore(synchronous='full') vs SqliteSaver (WAL, synchronous=FULL)", "sql_chain_sqlite"),
    "postgres": ("PostgresStore vs PostgresSaver (default synchronous_commit)", "sql_chain_postgres"),
}


def params(ctx: Ctx) -> dict[str, Any]:
    return {"steps": STEPS, "durability": "sync", "pg_dsn": _sql.masked_dsn()}


def samples_count(ctx: Ctx) -> int:
    return _sql.samples_count(ctx, CASES)


def atomr_sample(ctx: Ctx, backend: str, steps: int) -> float:
    from atomr import Done, Runtime

    from benchmarks._graphs import atomr_chain

    wf = atomr_chain("chain", steps)
    with ctx.tmpdir(f"atomr-sqlchain-{backend}") as d, _sql.atomr_store(backend, d) as store:
        with Runtime(store=store, durability="sync") as rt:
            rt.register(wf)
            warm = rt.start("chain", {"n": 0}, run_id="warm").result(timeout=RESULT_TIMEOUT)
            check(isinstance(warm, Done), f"warm-up run ended {warm!r}")

            def go() -> Any:
                out = rt.start("chain", {"n": 0}, run_id="timed").result(timeout=RESULT_TIMEOUT)
                rt.flush()
                return out

            _sql.mark("begin")
            secs, out = timed(go)
            _sql.mark("end")
            check(isinstance(out, Done) and out.state["n"] == steps, f"atomr chain ended {out!r}")
    return steps / secs


def lg_sample(ctx: Ctx, backend: str, steps: int) -> float:
    from benchmarks import _lg

    graph_def = _lg.chain(steps)

    def measure(saver: Any) -> float:
        graph = graph_def.compile(checkpointer=saver)
        graph.invoke({"n": 0}, _lg.config("warm"), durability="sync")
        _sql.mark("begin")
        secs, out = timed(lambda: graph.invoke({"n": 0}, _lg.config("timed"), durability="sync"))
        _sql.mark("end")
        check(out["n"] == steps, f"langgraph chain ended {out!r}")
        return steps / secs

    if backend == "sqlite":
        with ctx.tmpdir("lg-sqlchain") as d, _sql.lg_sqlite_full(d) as saver:
            return measure(saver)
    with _sql.fresh_schema(create=True) as schema, _sql.lg_postgres_saver(schema) as saver:
        return measure(saver)


def run(ctx: Ctx) -> dict[str, Any]:
    return _sql.run_cases(ctx, NAME, CASES, lambda b: atomr_sample(ctx, b, STEPS), lambda b: lg_sample(ctx, b, STEPS),
                          lambda what: f"chain {STEPS} steps, {what}, durability=sync", params=params(ctx))
