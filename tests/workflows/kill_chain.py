"""A 30-step chain whose steps log their idempotency key to a side file.

Imported by tests/test_recovery_kill.py (the workflow), and run as a script in a
subprocess that the test kills with SIGKILL:

    python kill_chain.py STORE SIDE_FILE N_RUNS [DURABILITY]

The script starts N_RUNS runs on the store STORE names (an LMDB directory, or
a store URL: ``sqlite:///…``, ``postgresql://…?schema=…``; durability "sync"
unless DURABILITY says otherwise), each at its
own pace, prints "READY" once every run has reached super-step ``READY_AT``
(the fastest are far ahead by then), and keeps going
(steps from ``BLOCK_AT`` on never return, so no run can finish before the kill).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

WID = "killchain"
STEPS = 30
READY_AT = 4
BLOCK_AT = 25


def step_names() -> list[str]:
    return [f"k{i:02d}" for i in range(STEPS)]


def workflow(side_file: str, delay: float = 0.0, block_at: int | None = None,
             on_step: Any = None) -> Any:
    from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

    def make(name: str) -> Any:
        def step(state: Any, ctx: Any) -> Any:
            with open(side_file, "a") as f:
                f.write(ctx.idempotency_key + "\n")
                f.flush()
                os.fsync(f.fileno())
            if on_step is not None:
                on_step(ctx)
            if block_at is not None and ctx.super_step >= block_at:
                time.sleep(3600)
            if delay:  # runs go at different paces: the kill finds them at different points
                time.sleep(delay * (1 + int(ctx.run_id.removeprefix("run") or 0) % 5))
            return {"log": [name], "n": state["n"] + 1}

        return step

    names = step_names()
    b = Dag.builder(names[0])
    for s in names:
        b.step(s, make(s))
    for x, y in zip(names, names[1:]):
        b.edge(x, y)
    schema = StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0)})
    return Workflow(WID, b.build(), schema)


def open_target(target: str) -> Any:
    """As ``workflows.open_target``: a store URL, or an LMDB directory."""
    from atomr import LmdbStore, open_store

    return open_store(target) if "://" in target else LmdbStore(target, map_size=64 << 20)


def main(argv: list[str]) -> None:
    from atomr import Runtime

    store_dir, side_file, n_runs = argv[0], argv[1], int(argv[2])
    durability = argv[3] if len(argv) > 3 else "sync"
    lock = threading.Lock()
    reached: dict[str, int] = {}
    ready = threading.Event()

    def on_step(ctx: Any) -> None:
        with lock:
            reached[ctx.run_id] = max(reached.get(ctx.run_id, 0), ctx.super_step)
            if len(reached) == n_runs and min(reached.values()) >= READY_AT:
                ready.set()

    rt = Runtime(store=open_target(store_dir), durability=durability)
    rt.register(workflow(side_file, delay=0.02, block_at=BLOCK_AT, on_step=on_step))
    for i in range(n_runs):
        rt.start(WID, {"n": 0}, run_id=f"run{i}")
    if not ready.wait(60):
        print("NOT READY", reached, flush=True)
        sys.exit(3)
    print("READY", flush=True)
    time.sleep(120)  # the test kills us long before


if __name__ == "__main__":
    main(sys.argv[1:])
