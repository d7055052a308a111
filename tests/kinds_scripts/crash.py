"""Step-kind workflows that record their work in a side file, for kill -9 tests.

Imported by tests/test_kinds_recovery.py (the workflows), and run as a script
in a subprocess that the test kills with SIGKILL:

    python crash.py SCENARIO STORE SIDE_FILE GO_FILE

STORE: an LMDB directory or a store URL (``sqlite:///…``, ``postgresql://…?schema=…``).

Every unit of work (a Map element, a Loop iteration, a router call, a step)
appends one line to SIDE_FILE before doing anything else. One unit blocks
until GO_FILE exists (it never does in the killed process; the recovering test
creates it first). The script prints "READY" once that unit is blocked and the
work before it is committed in the store, then waits to be killed.

Scenarios: map, loop, branch, subgraph, human, loopdag (a Loop whose body is a Dag).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCENARIOS = ("map", "loop", "branch", "subgraph", "human", "loopdag")
RUN_ID = "r1"
ITEMS = [0, 1, 2, 3, 4]
BLOCK_ITEM = 2
LOOP_END = 5
BLOCK_ITERATION = 2

#: set (in the killed process) when the blocking unit reached its wait
BLOCKED = threading.Event()


def record(side: str, line: str) -> None:
    with open(side, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def lines(side: str | Path) -> list[str]:
    p = Path(side)
    return p.read_text().splitlines() if p.exists() else []


def block_until(go: str) -> None:
    if os.path.exists(go):
        return
    BLOCKED.set()
    while not os.path.exists(go):
        time.sleep(0.01)


def workflow(scenario: str, side: str, go: str) -> Any:
    """The workflow of ``scenario`` (its id is ``crash-<scenario>``)."""
    from atomr import (AppendList, Dag, Human, LastWriteWins, Loop, Map, StateSchema, Subgraph,
                       Workflow)

    schema = StateSchema({
        "log": AppendList(),
        "n": (LastWriteWins(), 0),
        "items": (LastWriteWins(), []),
        "out": LastWriteWins(),
        "report": LastWriteWins(),
        "approval": LastWriteWins(),
    })

    def logger(name: str, block: bool = False) -> Callable[[Any, Any], Any]:
        def step(state: Any, ctx: Any) -> Any:
            record(side, f"step {name}")
            if block:
                block_until(go)
            return {"log": [name]}

        return step

    wid = f"crash-{scenario}"
    if scenario == "map":
        def element(item: int, ctx: Any) -> int:
            record(side, f"item {item}")
            if item == BLOCK_ITEM:
                block_until(go)
            return item * 10

        dag = (Dag.builder("m").step("m", Map(element, items="items", into="out", max_concurrency=1))
               .step("after", logger("after")).edge("m", "after").build())
        return Workflow(wid, dag, schema)
    if scenario == "loop":
        def body(state: Any, ctx: Any) -> Any:
            n = state["n"]
            record(side, f"iteration {n}")
            if n == BLOCK_ITERATION:
                block_until(go)
            return {"n": n + 1, "log": [f"it{n}"]}

        dag = (Dag.builder("pre").step("pre", logger("pre"))
               .step("lp", Loop(body, while_=lambda s: s["n"] < LOOP_END, max_iterations=10))
               .edge("pre", "lp").build())
        return Workflow(wid, dag, schema)
    if scenario == "loopdag":
        def a(state: Any, ctx: Any) -> Any:
            record(side, f"a {state['n']}")
            return {"log": [f"a{state['n']}"]}

        async def b(state: Any, ctx: Any) -> Any:
            n = state["n"]
            record(side, f"b {n}")
            if n == BLOCK_ITERATION:
                await asyncio.to_thread(block_until, go)
            return {"n": n + 1, "log": [f"b{n}"]}

        body = Dag.builder("a").step("a", a).step("b", b).edge("a", "b").build()
        dag = (Dag.builder("pre").step("pre", logger("pre"))
               .step("lp", Loop(body, while_=lambda s: s["n"] < LOOP_END, max_iterations=10))
               .edge("pre", "lp").build())
        return Workflow(wid, dag, schema)
    if scenario == "branch":
        def router(state: Any) -> str:
            record(side, "route")
            # a second decision would take the other way
            return "first" if lines(side).count("route") == 1 else "second"

        dag = (Dag.builder("t").step("t", logger("t"))
               .step("a", logger("a", block=True)).step("b", logger("b")).step("j", logger("j"))
               .branch("t", router, {"first": "a", "second": "b"})
               .edge("a", "j").edge("b", "j").build())
        return Workflow(wid, dag, schema)
    if scenario == "subgraph":
        child_schema = StateSchema({"items": (LastWriteWins(), []), "report": LastWriteWins(),
                                    "log": AppendList()})

        def c2(state: Any, ctx: Any) -> Any:
            record(side, "step c2")
            block_until(go)
            return {"report": f"{len(state['items'])} items", "log": ["c2"]}

        child = Workflow(f"{wid}-child", Dag.builder("c1").step("c1", logger("c1")).step("c2", c2)
                         .edge("c1", "c2").build(), child_schema)
        dag = (Dag.builder("pre").step("pre", logger("pre"))
               .step("sub", Subgraph(child, inputs=["items"], outputs=["report"]))
               .step("post", logger("post")).edge("pre", "sub").edge("sub", "post").build())
        return Workflow(wid, dag, schema)
    if scenario == "human":
        dag = (Dag.builder("pre").step("pre", logger("pre"))
               .step("approve", Human("Ship it?", into="approval"))
               .step("post", logger("post")).edge("pre", "approve").edge("approve", "post").build())
        return Workflow(wid, dag, schema)
    raise ValueError(f"unknown scenario {scenario!r}; use one of {SCENARIOS}")


def committed(store: Any, scenario: str) -> bool:
    """The work before the blocking unit is in the store."""
    from atomr import events as ev

    wid = f"crash-{scenario}"

    def journal(w: str, r: str) -> list[Any]:
        if store.summary(w, r) is None:
            return []
        return [e for _, e in store.journal(w, r)]

    if scenario == "map":
        got = {e.index for e in journal(wid, RUN_ID) if type(e) is ev.ItemCompleted}
        return set(range(BLOCK_ITEM)) <= got
    if scenario == "loop":
        return any(type(e) is ev.LoopIterated and e.iteration == BLOCK_ITERATION
                   for e in journal(wid, RUN_ID))
    if scenario == "loopdag":  # iteration 2's first body step is journaled
        child = journal(f"{wid}:lp", f"{wid}/{RUN_ID}/lp#{BLOCK_ITERATION}@2")
        return any(type(e) is ev.SuperStepCommitted for e in child)
    if scenario == "branch":
        return any(type(e) is ev.BranchTaken for e in journal(wid, RUN_ID))
    if scenario == "subgraph":
        return any(type(e) is ev.SuperStepCommitted
                   for e in journal(f"{wid}-child", f"{wid}/{RUN_ID}/sub"))
    return True


def open_target(target: str) -> Any:
    """As ``workflows.open_target``: a store URL, or an LMDB directory."""
    from atomr import LmdbStore, open_store

    return open_store(target) if "://" in target else LmdbStore(target, map_size=64 << 20)


def main(argv: list[str]) -> None:
    from atomr import Paused, Runtime

    scenario, store_dir, side, go = argv
    rt = Runtime(store=open_target(store_dir), durability="sync")
    rt.register(workflow(scenario, side, go))
    h = rt.start(f"crash-{scenario}", {"items": ITEMS}, run_id=RUN_ID)
    deadline = time.monotonic() + 60
    if scenario == "human":
        out = h.result(timeout=60)
        assert isinstance(out, Paused), out
    else:
        while not (BLOCKED.is_set() and committed(rt.store, scenario)):
            if time.monotonic() > deadline:
                print(f"NOT READY {rt.get_state(f'crash-{scenario}', RUN_ID)}", flush=True)
                return
            time.sleep(0.01)
    print("READY", flush=True)
    time.sleep(3600)  # killed here


if __name__ == "__main__":
    main(sys.argv[1:])
