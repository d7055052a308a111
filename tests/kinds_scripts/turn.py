"""A run's second turn killed with SIGKILL mid-way, for tests/test_turns_kill.py.

    python turn.py STORE SIDE_FILE GO_FILE DURABILITY

STORE: an LMDB directory or a store URL. The run ``r1`` of workflow ``turns``
(hear -> think -> reply) finishes its first turn, then takes a second with
``{"msg": "two"}``; in that turn ``think`` records itself in SIDE_FILE and
blocks until GO_FILE exists (it never does here). Once ``hear`` of the second
turn is committed the script prints "READY" and waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

WID = "turns"
RUN_ID = "r1"


def record(side: str, line: str) -> None:
    with open(side, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def workflow(side: str, go: str) -> Any:
    from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

    schema = StateSchema({"log": AppendList(), "msg": LastWriteWins()})

    def step(name: str) -> Any:
        def fn(state: Any, ctx: Any) -> Any:
            record(side, f"{name} {state['msg']} {ctx.super_step}")
            if name == "think" and state["msg"] == "two":
                while not os.path.exists(go):
                    time.sleep(0.01)
            return {"log": [f"{name}:{state['msg']}"]}
        return fn

    dag = (Dag.builder("hear").step("hear", step("hear")).step("think", step("think"))
           .step("reply", step("reply")).edge("hear", "think").edge("think", "reply").build())
    return Workflow(WID, dag, schema)


def open_target(target: str) -> Any:
    from atomr import LmdbStore, open_store

    return open_store(target) if "://" in target else LmdbStore(target, map_size=64 << 20)


def main(argv: list[str]) -> None:
    from atomr import Done, Runtime
    from atomr import events as ev

    target, side, go, durability = argv
    rt = Runtime(store=open_target(target), durability=durability)
    rt.register(workflow(side, go))
    out = rt.start(WID, {"msg": "one"}, run_id=RUN_ID).result(timeout=60)
    assert isinstance(out, Done), out
    rt.start(WID, {"msg": "two"}, run_id=RUN_ID, if_exists="continue")
    deadline = time.monotonic() + 60
    while True:
        events = [e for _, e in rt.store.journal(WID, RUN_ID)]
        turn = [i for i, e in enumerate(events) if type(e) is ev.TurnStarted]
        if turn and any(type(e) is ev.SuperStepCommitted for e in events[turn[0]:]) or \
                durability == "exit" and os.path.exists(side) and "think two" in open(side).read():
            break
        if time.monotonic() > deadline:
            print("NOT READY", flush=True)
            return
        time.sleep(0.01)
    print("READY", flush=True)
    time.sleep(3600)  # killed here


if __name__ == "__main__":
    main(sys.argv[1:])
