"""Workload 4: bytes on disk after one long run that appends a message per step.

One run of ``steps`` steps, each incrementing ``n`` and appending one
200-byte message (AppendList / ``operator.add``), durability "sync", no other
run in the store. Sizes are deterministic, so this is measured once.

Two comparisons:

* "open": right after the run, store still open: atomr's LMDB data file
  (the larger of ``LmdbStore.stored_bytes()`` and ``data.mdb``'s size) vs
  SQLite's database file plus its ``-wal``;
* "closed": after closing both: ``data.mdb`` vs the SQLite file once its WAL
  has been checkpointed into it.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks._common import RESULT_TIMEOUT, TARGETS, Ctx, check, file_size, make_row

NAME = "store_size"


def params(ctx: Ctx) -> dict[str, Any]:
    return {"steps": 100 if ctx.quick else 500, "message_bytes": 200, "durability": "sync"}


def samples_count(ctx: Ctx) -> int:
    return len(ctx.systems())


def atomr_sizes(ctx: Ctx, steps: int, size: int) -> dict[str, int]:
    from atomr import Done, LmdbStore, Runtime

    from benchmarks._graphs import atomr_msg_chain

    wf = atomr_msg_chain("msgs", steps, size)
    with ctx.tmpdir("atomr-size") as d:
        store = LmdbStore(d)
        with Runtime(store=store, durability="sync") as rt:
            rt.register(wf)
            out = rt.start("msgs", {"n": 0}, run_id="r").result(timeout=RESULT_TIMEOUT)
            check(isinstance(out, Done) and out.state["n"] == steps and len(out.state["msgs"]) == steps,
                  f"atomr message chain ended {out!r}"[:300])
            rt.flush()
            sizes = {"stored_bytes": store.stored_bytes(), "data_mdb": file_size(os.path.join(d, "data.mdb")),
                     "lock_mdb": file_size(os.path.join(d, "lock.mdb"))}
        sizes["data_mdb_closed"] = file_size(os.path.join(d, "data.mdb"))
    return sizes


def lg_sizes(ctx: Ctx, steps: int, size: int) -> dict[str, int]:
    from benchmarks import _lg

    with ctx.tmpdir("lg-size") as d:
        saver = _lg.sqlite_saver(d)
        try:
            graph = _lg.msg_chain(steps, size).compile(checkpointer=saver)
            out = graph.invoke({"n": 0, "msgs": []}, _lg.config("r"), durability="sync")
            check(out["n"] == steps and len(out["msgs"]) == steps, "langgraph message chain result")
            sizes = _lg.sqlite_sizes(d)
        finally:
            saver.conn.close()
        closed = _lg.sqlite_sizes(d)
        sizes["db_closed"] = closed["db"] + closed["wal"]
    return sizes


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    a = atomr_sizes(ctx, p["steps"], p["message_bytes"])
    ctx.progress.step("store_size: atomr")
    lg = None
    if ctx.lg:
        lg = lg_sizes(ctx, p["steps"], p["message_bytes"])
        ctx.progress.step("store_size: langgraph")
    open_s = {"atomr": [max(a["stored_bytes"], a["data_mdb"])]}
    closed_s = {"atomr": [a["data_mdb_closed"]]}
    if lg is not None:
        open_s["langgraph"] = [lg["db"] + lg["wal"]]
        closed_s["langgraph"] = [lg["db_closed"]]
    what = f"store after a {p['steps']}-step run, +{p['message_bytes']} B message/step"
    note = "" if p["steps"] == 500 else "quick size; the target is for 500 steps"
    rows = [
        make_row("store_size.open", what + " (open: data.mdb vs sqlite+wal)", "bytes", "lower", open_s,
                 stat="value", target=TARGETS["store_size"], note=note),
        make_row("store_size.closed", what + " (closed: data.mdb vs checkpointed sqlite)", "bytes", "lower",
                 closed_s, stat="value", target=TARGETS["store_size"], note=note),
    ]
    return {"params": p, "rows": rows, "detail": {"atomr": a, "langgraph": lg}}
