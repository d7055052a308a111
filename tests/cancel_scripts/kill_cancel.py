"""Cancel runs in a process that is then killed with SIGKILL (tests/test_cancel.py).

Imported by the test (the workflows, with BLOCK off: a recovered run finishes),
and run as a script in a subprocess:

    python kill_cancel.py MODE STORE DURABILITY

STORE: an LMDB directory or a store URL (``sqlite:///…``, ``postgresql://…?schema=…``).

Modes:

* ``after``: start run ``r0`` (its step ``work`` polls ``ctx.cancelled``), cancel
  it, print ``CANCELLED <super_step> <status in the store>`` as soon as
  ``cancel()`` returned, and SIGKILL itself at once.
* ``paused``: the same with run ``p0`` of the workflow that pauses on an interrupt.
* ``middle``: start ``N_MIDDLE`` runs (all blocked in ``work``), print ``READY``,
  then cancel them one after the other, printing ``CANCELLED <i>`` after each;
  the test kills the process while it cancels.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: import atomr from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

WID = "cancel-kill"
ASK_WID = "cancel-kill-ask"
N_MIDDLE = 6
#: in the killed process, ``work`` waits for the cancel; in the test it returns at once
BLOCK = False
#: released once per run whose ``work`` started waiting
ENTERED = threading.Semaphore(0)
WAIT_S = 60.0


def _schema() -> StateSchema:
    return StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0)})


def pre(state: Any, ctx: Any) -> Any:
    return {"log": ["pre"], "n": state["n"] + 1}


def work(state: Any, ctx: Any) -> Any:
    if BLOCK:
        ENTERED.release()
        deadline = time.monotonic() + WAIT_S
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.002)
    return {"log": ["work"], "n": 100}


def post(state: Any, ctx: Any) -> Any:
    return {"log": ["post"]}


def ask(state: Any, ctx: Any) -> Any:
    return {"log": [f"ask:{ctx.interrupt('go on?')}"]}


def workflow() -> Workflow:
    dag = (Dag.builder("pre").step("pre", pre).step("work", work).step("post", post)
           .edge("pre", "work").edge("work", "post").build())
    return Workflow(WID, dag, _schema())


def ask_workflow() -> Workflow:
    dag = (Dag.builder("pre").step("pre", pre).step("ask", ask).step("post", post)
           .edge("pre", "ask").edge("ask", "post").build())
    return Workflow(ASK_WID, dag, _schema())


def _status(rt: Any, wid: str, run_id: str) -> str:
    s = rt.store.summary(wid, run_id)
    return s.status if s is not None else "absent"


def open_target(target: str) -> Any:
    """As ``workflows.open_target``: a store URL, or an LMDB directory."""
    from atomr import LmdbStore, open_store

    return open_store(target) if "://" in target else LmdbStore(target, map_size=64 << 20)


def main(argv: list[str]) -> None:
    from atomr import Paused, Runtime

    global BLOCK
    BLOCK = True
    mode, store_dir, durability = argv
    rt = Runtime(store=open_target(store_dir), durability=durability)
    rt.register(workflow())
    rt.register(ask_workflow())
    if mode == "after":
        rt.start(WID, {}, run_id="r0")
        assert ENTERED.acquire(timeout=WAIT_S)
        out = rt.cancel(WID, "r0", "stop", timeout=WAIT_S)
        status = _status(rt, WID, "r0")
        print(f"CANCELLED {out.super_step} {status}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "paused":
        got = rt.start(ASK_WID, {}, run_id="p0").result(timeout=WAIT_S)
        assert isinstance(got, Paused), got
        out = rt.cancel(ASK_WID, "p0", "stop", timeout=WAIT_S)
        status = _status(rt, ASK_WID, "p0")
        print(f"CANCELLED {out.super_step} {status}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "middle":
        for i in range(N_MIDDLE):
            rt.start(WID, {}, run_id=f"m{i}")
        for _ in range(N_MIDDLE):
            assert ENTERED.acquire(timeout=WAIT_S)
        print("READY", flush=True)
        for i in range(N_MIDDLE):
            rt.cancel(WID, f"m{i}", "stop", timeout=WAIT_S)
            print(f"CANCELLED {i}", flush=True)
        print("ALL", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    time.sleep(3600)  # killed here


if __name__ == "__main__":
    main(sys.argv[1:])
