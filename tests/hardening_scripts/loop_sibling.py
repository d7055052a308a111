"""A layer of a Loop and a sibling that reads the Loop's channel, for a kill -9 test.

Imported by tests/test_hardening_runs.py (the workflow), and run as a script in
a subprocess that the test kills with SIGKILL:

    python loop_sibling.py STORE_DIR

The sibling step blocks for good in the killed process. The script prints
"READY" once the Loop's iterations and its completion are committed in the
store while the sibling is blocked, then waits to be killed. The recovering
test runs the sibling again: it must see ``n`` as it was before the layer.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

WID = "loop-sibling"
RUN_ID = "r1"
LOOP_END = 3

#: set (in the killed process) when the sibling reached its wait
BLOCKED = threading.Event()


def workflow(sibling: Callable[[Any, Any], Any], wid: str = WID,
             while_: Callable[[Any], bool] | None = None, **wf_kw: Any) -> Any:
    """root -> (lp: Loop writing n three times, sib) -> end. ``while_``: the
    Loop's predicate (default: ``n < LOOP_END``)."""
    from atomr import AppendList, Dag, LastWriteWins, Loop, StateSchema, Workflow

    schema = StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0), "seen": AppendList()})

    def root(state: Any, ctx: Any) -> Any:
        return {"log": ["root"]}

    def body(state: Any, ctx: Any) -> Any:
        return {"n": state["n"] + 1, "log": [f"it{state['n']}"]}

    def end(state: Any, ctx: Any) -> Any:
        return {"log": [f"end n={state['n']} seen={list(state['seen'] or [])}"]}

    dag = (Dag.builder("root").step("root", root)
           .step("lp", Loop(body, while_=while_ or (lambda s: s["n"] < LOOP_END), max_iterations=10))
           .step("sib", sibling).step("end", end)
           .edge("root", "lp").edge("root", "sib").edge("lp", "end").edge("sib", "end")
           .build())
    return Workflow(wid, dag, schema, **wf_kw)


def sibling_writes(state: Any) -> dict[str, Any]:
    return {"seen": [state["n"]], "log": ["sib"]}


def loop_committed(store: Any) -> bool:
    """The Loop's iterations and its completion are in the store."""
    from atomr import events as ev

    if store.summary(WID, RUN_ID) is None:
        return False
    got = [e for _, e in store.journal(WID, RUN_ID)]
    iterations = [e.iteration for e in got if type(e) is ev.LoopIterated]
    return iterations == list(range(1, LOOP_END + 1)) and any(
        type(e) is ev.StepCompleted and e.step == "lp" for e in got)


def main(argv: list[str]) -> None:
    from atomr import LmdbStore, Runtime

    (store_dir,) = argv
    forever = threading.Event()

    def blocking_sibling(state: Any, ctx: Any) -> Any:
        BLOCKED.set()
        forever.wait()
        return sibling_writes(state)

    rt = Runtime(store=LmdbStore(store_dir, map_size=64 << 20), durability="sync")
    rt.register(workflow(blocking_sibling))
    rt.start(WID, {}, run_id=RUN_ID)
    deadline = time.monotonic() + 60
    while not (BLOCKED.is_set() and loop_committed(rt.store)):
        if time.monotonic() > deadline:
            print(f"NOT READY {rt.get_state(WID, RUN_ID)}", flush=True)
            return
        time.sleep(0.01)
    print("READY", flush=True)
    time.sleep(3600)  # killed here


if __name__ == "__main__":
    main(sys.argv[1:])
