"""Workload 5: recovery after a SIGKILL halfway through many runs; runs finished/s.

Per sample and system:

1. a "crash" child process durably starts ``runs`` runs of a ``steps``-step
   chain (atomr: ``rt.start`` each; LangGraph: ``invoke(input,
   interrupt_before=[first node])`` each, which durably records the input the
   same way), then lets them execute. Every step bumps a process-wide counter;
   the step that brings it to half of ``runs * steps`` writes a signal file,
   and from then on every step blocks, so nothing past the half is committed;
2. the parent sees the signal file and SIGKILLs the child, then reads the store
   to record how far the runs got (outside any timing);
3. a fresh "recover" child process times, from before it opens the store
   (graph construction included) until every run is finished:
   atomr ``Runtime(...).recover()`` and waiting for every handle, vs LangGraph
   ``graph.invoke(None, config)`` for every thread from a 16-thread pool on one
   shared SqliteSaver. It then checks every run ended with ``n == steps``.

Metric: ``runs / seconds`` of step 3.

Run as ``python -m benchmarks.recovery crash|recover SYSTEM DIR RUNS STEPS [SIGNAL]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks._common import RESULT_TIMEOUT, TARGETS, BenchError, Ctx, check, make_row, sample_loop

NAME = "recovery"
LG_THREADS = 16
WF = "chain"


def params(ctx: Ctx) -> dict[str, Any]:
    return {"runs": 20 if ctx.quick else 1000, "steps": 20, "durability": "sync", "lg_threads": LG_THREADS}


def samples_count(ctx: Ctx) -> int:
    return ctx.reps * len(ctx.systems())


def run_id(i: int) -> str:
    return f"r{i:05d}"


# -- child side ---------------------------------------------------------------


def _half_hook(total: int, signal_path: str) -> tuple[Any, threading.Event]:
    gate = threading.Event()
    lock = threading.Lock()
    count = [0]
    half = max(1, total // 2)

    def hook() -> None:
        gate.wait()
        with lock:
            count[0] += 1
            c = count[0]
            if c == half:
                with open(signal_path + ".tmp", "w") as f:
                    f.write(str(c))
                os.replace(signal_path + ".tmp", signal_path)
        if c >= half:
            while True:  # hold the step until the process is killed
                time.sleep(60)

    return hook, gate


def _crash_atomr(d: str, runs: int, steps: int, signal_path: str) -> None:
    from atomr import LmdbStore, Runtime

    from benchmarks._graphs import atomr_chain

    hook, gate = _half_hook(runs * steps, signal_path)
    rt = Runtime(store=LmdbStore(d), durability="sync")
    rt.register(atomr_chain(WF, steps, hook))
    for i in range(runs):
        rt.start(WF, {"n": 0}, run_id=run_id(i), timeout=RESULT_TIMEOUT)
    gate.set()
    while True:
        time.sleep(60)


def _crash_lg(d: str, runs: int, steps: int, signal_path: str) -> None:
    from benchmarks import _lg

    hook, gate = _half_hook(runs * steps, signal_path)
    graph = _lg.chain(steps, hook).compile(checkpointer=_lg.sqlite_saver(d))
    for i in range(runs):
        graph.invoke({"n": 0}, _lg.config(run_id(i)), interrupt_before=["s0"], durability="sync")
    gate.set()
    pool = ThreadPoolExecutor(max_workers=LG_THREADS)
    for i in range(runs):
        pool.submit(graph.invoke, None, _lg.config(run_id(i)), durability="sync")
    while True:
        time.sleep(60)


def _recover_atomr(d: str, runs: int, steps: int) -> dict[str, Any]:
    from atomr import Done, LmdbStore, Runtime

    from benchmarks._graphs import atomr_chain

    t0 = time.perf_counter()
    store = LmdbStore(d)
    rt = Runtime(store=store, durability="sync")
    rt.register(atomr_chain(WF, steps))
    handles = rt.recover()
    outs = [h.result(timeout=RESULT_TIMEOUT) for h in handles]
    rt.flush()
    secs = time.perf_counter() - t0
    bad = [o for o in outs if not isinstance(o, Done)]
    ok_runs = sum(1 for i in range(runs) if rt.get_state(WF, run_id(i)).values.get("n") == steps)
    statuses = [s.status for s in store.runs()]
    rt.close()
    return {"seconds": secs, "recovered": len(handles), "finished": ok_runs, "not_done_outcomes": len(bad),
            "done": statuses.count("done"), "ok": ok_runs == runs and not bad}


def _recover_lg(d: str, runs: int, steps: int) -> dict[str, Any]:
    from benchmarks import _lg

    t0 = time.perf_counter()
    saver = _lg.sqlite_saver(d)
    graph = _lg.chain(steps).compile(checkpointer=saver)
    with ThreadPoolExecutor(max_workers=LG_THREADS) as pool:
        futs = [pool.submit(graph.invoke, None, _lg.config(run_id(i)), durability="sync") for i in range(runs)]
        for f in futs:
            f.result(timeout=RESULT_TIMEOUT)
    secs = time.perf_counter() - t0
    ok_runs = 0
    for i in range(runs):
        st = graph.get_state(_lg.config(run_id(i)))
        ok_runs += st.values.get("n") == steps and not st.next
    saver.conn.close()
    return {"seconds": secs, "recovered": runs, "finished": ok_runs, "ok": ok_runs == runs}


def child_main(argv: list[str]) -> int:
    phase, system, d, runs_s, steps_s, *rest = argv
    runs, steps = int(runs_s), int(steps_s)
    if phase == "crash":
        (_crash_atomr if system == "atomr" else _crash_lg)(d, runs, steps, rest[0])
        return 0
    res = (_recover_atomr if system == "atomr" else _recover_lg)(d, runs, steps)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


# -- parent side ----------------------------------------------------------------


def _child(args: list[str], log: Any) -> subprocess.Popen[str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.recovery", *args],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env,
    )


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def _inspect(system: str, d: str, runs: int, steps: int) -> dict[str, Any]:
    """How far the killed runs got (read in this process, outside any timing)."""
    progress: list[int] = []
    if system == "atomr":
        from atomr import LmdbStore

        store = LmdbStore(d)
        try:
            by_id = {s.run_id: s for s in store.runs()}
            progress = [by_id[run_id(i)].super_step if run_id(i) in by_id else -1 for i in range(runs)]
        finally:
            store.close()
    else:
        from benchmarks import _lg

        saver = _lg.sqlite_saver(d)
        try:
            graph = _lg.chain(steps).compile(checkpointer=saver)
            for i in range(runs):
                st = graph.get_state(_lg.config(run_id(i)))
                progress.append(int(st.values.get("n", -1)) if st.values else -1)
        finally:
            saver.conn.close()
    return {
        "super_steps_done": sum(max(0, x) for x in progress),
        "super_steps_total": runs * steps,
        "runs_finished": sum(1 for x in progress if x == steps),
        "runs_not_started": sum(1 for x in progress if x == 0),
        "runs_midway": sum(1 for x in progress if 0 < x < steps),
        "runs_missing": sum(1 for x in progress if x < 0),
    }


def sample(ctx: Ctx, system: str, runs: int, steps: int, details: list[dict[str, Any]]) -> float:
    with ctx.tmpdir(f"{system}-recovery") as d:
        store_dir = os.path.join(d, "store")
        os.makedirs(store_dir)
        sig = os.path.join(d, "half.signal")
        crash_log = os.path.join(d, "crash.log")
        with open(crash_log, "w") as log:
            proc = _child(["crash", system, store_dir, str(runs), str(steps), sig], log)
        try:
            deadline = time.monotonic() + RESULT_TIMEOUT
            while not os.path.exists(sig):
                if proc.poll() is not None:
                    raise BenchError(f"{system} crash child exited early ({proc.returncode}): {_tail(crash_log)}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{system} crash child never reached half way: {_tail(crash_log)}")
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
            if proc.stdout:
                proc.stdout.close()
        before = _inspect(system, store_dir, runs, steps)
        check(before["runs_missing"] == 0, f"{system}: {before['runs_missing']} runs were never recorded")
        rec_log = os.path.join(d, "recover.log")
        with open(rec_log, "w") as log:
            rp = _child(["recover", system, store_dir, str(runs), str(steps)], log)
        try:
            out, _ = rp.communicate(timeout=RESULT_TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            rp.kill()
            rp.communicate()
            raise BenchError(f"{system} recovery did not finish: {_tail(rec_log)}") from None
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if rp.returncode != 0 or not lines:
            raise BenchError(f"{system} recovery child failed ({rp.returncode}): {_tail(rec_log)}")
        res = json.loads(lines[-1][len("RESULT "):])
        check(res["ok"], f"{system}: only {res['finished']}/{runs} runs finished correctly after recovery")
        details.append({"system": system, "before_recovery": before, "recovery": res})
        return runs / res["seconds"]


def run(ctx: Ctx) -> dict[str, Any]:
    p = params(ctx)
    details: list[dict[str, Any]] = []
    fns = {"atomr": lambda: sample(ctx, "atomr", p["runs"], p["steps"], details)}
    if ctx.lg:
        fns["langgraph"] = lambda: sample(ctx, "langgraph", p["runs"], p["steps"], details)
    samples = sample_loop(ctx, "recovery", fns)
    row = make_row(
        "recovery", f"recover {p['runs']} runs x {p['steps']} steps killed half way, LMDB vs SqliteSaver",
        "runs finished/s", "higher", samples, target=TARGETS["recovery"],
        note="" if p["runs"] == 1000 else "quick size; the target is for 1,000 runs",
    )
    return {"params": p, "rows": [row], "detail": details}


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
