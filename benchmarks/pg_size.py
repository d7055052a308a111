"""Workload 10: bytes in Postgres after one 300-step run appending a 200-byte message per step.

As ``store_size`` does on disk, on Postgres: one run of 300 super-steps, each
incrementing ``n`` and appending one 200-byte message to a message-list
channel (atomr: ``AppendList``; LangGraph: ``Annotated[list, operator.add]``),
durability "sync", alone in a fresh schema. Measured right after the run,
without VACUUM or ANALYZE: the sum of ``pg_total_relation_size`` (heap, TOAST
and indexes) of every table in the side's schema (atomr: ``PostgresStore``'s
schema; LangGraph: ``PostgresSaver``'s tables, put in their own schema by
``search_path``). Sizes are deterministic, so this is measured once.
"""

from __future__ import annotations

from typing import Any

from benchmarks import _sql
from benchmarks._common import RESULT_TIMEOUT, TARGETS, Ctx, check, make_row

NAME = "pg_size"
STEPS, MESSAGE_BYTES = 300, 200


def params(ctx: Ctx) -> dict[str, Any]:
    return {"steps": STEPS, "message_bytes": MESSAGE_BYTES, "durability": "sync", "pg_dsn": _sql.masked_dsn()}


def _systems(ctx: Ctx) -> tuple[str, ...]:
    if _sql.skip_reason("postgres") is not None:
        return ()
    return ("atomr", "langgraph") if ctx.lg and _sql.lg_postgres_available()[0] else ("atomr",)


def samples_count(ctx: Ctx) -> int:
    return len(_systems(ctx))


def atomr_bytes(ctx: Ctx, steps: int, size: int) -> dict[str, Any]:
    from atomr import Done, Runtime

    from benchmarks._graphs import atomr_msg_chain

    wf = atomr_msg_chain("msgs", steps, size)
    with _sql.atomr_pg_store() as (store, schema):
        with Runtime(store=store, durability="sync") as rt:
            rt.register(wf)
            out = rt.start("msgs", {"n": 0}, run_id="r").result(timeout=RESULT_TIMEOUT)
            check(isinstance(out, Done) and out.state["n"] == steps and len(out.state["msgs"]) == steps,
                  f"atomr message chain ended {out!r}"[:300])
            rt.flush()
            total, tables = _sql.schema_bytes(schema)
    return {"bytes": total, "tables": tables}


def lg_bytes(ctx: Ctx, steps: int, size: int) -> dict[str, Any]:
    from benchmarks import _lg

    with _sql.fresh_schema(create=True) as schema, _sql.lg_postgres_saver(schema) as saver:
        graph = _lg.msg_chain(steps, size).compile(checkpointer=saver)
        out = graph.invoke({"n": 0, "msgs": []}, _lg.config("r"), durability="sync")
        check(out["n"] == steps and len(out["msgs"]) == steps, "langgraph message chain result")
        total, tables = _sql.schema_bytes(schema)
    return {"bytes": total, "tables": tables}


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    systems = _systems(ctx)
    if not systems:
        return {"params": p, "rows": [],
                "skipped": [{"id": NAME, "reason": _sql.skip_reason("postgres") or "not runnable"}]}
    a = atomr_bytes(ctx, STEPS, MESSAGE_BYTES)
    ctx.progress.step(f"{NAME}: atomr")
    samples = {"atomr": [a["bytes"]]}
    lg = None
    if "langgraph" in systems:
        lg = lg_bytes(ctx, STEPS, MESSAGE_BYTES)
        ctx.progress.step(f"{NAME}: langgraph")
        samples["langgraph"] = [lg["bytes"]]
    note = "" if "langgraph" in systems or not ctx.lg else _sql.lg_postgres_available()[1]
    row = make_row(NAME, f"Postgres bytes after a {STEPS}-step run, +{MESSAGE_BYTES} B message/step "
                         "(sum of pg_total_relation_size over the side's schema)",
                   "bytes", "lower", samples, stat="value", target=TARGETS["pg_size"], note=note)
    return {"params": p, "rows": [row], "skipped": [], "detail": {"atomr": a, "langgraph": lg},
            "postgres": _sql.pg_server()}
