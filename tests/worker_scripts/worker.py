"""A worker process of a shared store (tests/test_workers_processes.py).

Imported by the test (the workflow, so a client can register it), and run as
a program in a subprocess:

    python -m tests.worker_scripts.worker STORE_URL WORKER_ID LEASE_S SIDE_FILE [CONCURRENCY [OWN_RUNS]]

STORE_URL: ``sqlite:////abs/path.db`` or ``postgresql://…?schema=NAME``.
It joins the store as worker WORKER_ID, registers :data:`WID`, prints
``ready <pid>`` and serves until SIGTERM (then closes and prints ``bye``) or
until it is killed. With OWN_RUNS, it then starts that many runs itself
(it owns them) and prints ``outcome <run_id> <type> <n or error type>`` as
each handle's ``result()`` returns (a run taken over from it is followed
through the store). When WORKER_ID is in use it prints ``refused <error>`` and
exits with status 3.

Every execution of a step appends two lines to SIDE_FILE (one ``write`` each
on an ``O_APPEND`` file: lines of several processes never interleave)::

    start <pid> <token> <run_id> <step> <super_step> <time.time()>
    end   <pid> <token> <run_id> <step> <super_step> <time.time()>

``token`` is unique per execution and is what the step writes to channel
``who``: the journal's ``StepCompleted`` tells which execution was committed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a program: import atomr from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

WID = "wp-chain"
N_STEPS = 6
STEP_S = float(os.environ.get("ATOMR_WP_STEP_S", "0.3"))
_OUT = threading.Lock()
#: where steps record their executions (set by main(); None in a client)
SIDE: list[str] = []


def _record(kind: str, token: str, ctx: Any) -> None:
    if not SIDE:
        return
    line = f"{kind} {os.getpid()} {token} {ctx.run_id} {ctx.step_id} {ctx.super_step} {time.time():.6f}\n"
    fd = os.open(SIDE[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _step(state: Any, ctx: Any) -> Any:
    token = f"{os.getpid()}:{uuid.uuid4().hex[:10]}"
    _record("start", token, ctx)
    time.sleep(STEP_S)
    _record("end", token, ctx)
    return {"n": state["n"] + 1, "who": token, "trail": [ctx.step_id]}


def make(n: int = N_STEPS) -> Workflow:
    b = Dag.builder("s0")
    for i in range(n):
        b = b.step(f"s{i}", _step)
        if i:
            b = b.edge(f"s{i - 1}", f"s{i}")
    schema = StateSchema({"n": (LastWriteWins(), 0), "who": (LastWriteWins(), ""), "trail": AppendList()})
    return Workflow(WID, b.build(), schema)


def _wait(h: Any) -> None:
    try:
        out = h.result(timeout=120)
        what = f"{type(out).__name__} {out.state['n'] if hasattr(out, 'state') else out.error_type}"
    except Exception as exc:  # noqa: BLE001 - reported to the test
        what = f"raised {type(exc).__name__}"
    with _OUT:  # one write per line: threads printing at once must not interleave
        sys.stdout.write(f"outcome {h.run_id} {what}\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    import logging

    from atomr import Runtime, open_store
    from atomr.errors import WorkerIdInUse

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")

    url, worker_id, lease_s, side = argv[:4]
    concurrency = int(argv[4]) if len(argv) > 4 else 1000
    own = int(argv[5]) if len(argv) > 5 else 0
    SIDE.append(side)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    store = open_store(url)
    try:
        rt = Runtime(store, worker_id=worker_id, lease_s=float(lease_s), concurrency=concurrency)
    except WorkerIdInUse as exc:
        print(f"refused {type(exc).__name__}: {exc}", flush=True)
        store.close()
        return 3
    rt.register(make())
    print(f"ready {os.getpid()}", flush=True)
    for _ in range(own):
        threading.Thread(target=_wait, args=(rt.start(WID, {"n": 0}),), daemon=True).start()
    while not stop.wait(0.2):
        pass
    rt.close()
    print("bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
