"""Fan-out with CPU-bound steps: local step actors vs :class:`atomr.ray.RayExecutor`.

The graph is ``depth`` layers of ``width`` steps (every step of layer k before
every step of layer k+1); each step is a pure-Python loop of about ``step_ms``
milliseconds. Locally the steps of a layer run on step-actor threads and the
GIL makes them run one after the other; on Ray each step is a task in its own
worker process, so a layer should take about ``ceil(width / cores)`` step
times. Both runtimes use a durable (``sync``) LmdbStore in a temporary
directory; Ray's start-up and worker warm-up are outside the timings.

``run(quick)`` returns the timings (seconds per run) and the speed-up, or
``{"skipped": reason}`` when Ray is not installed.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

NAME = "ray_fanout"
WIDTH, DEPTH, STEP_MS = 4, 3, 50.0
RESULT_TIMEOUT = 600.0


def _spin(iters: int) -> int:
    x = 0
    for i in range(iters):
        x = (x + i * i) % 1_000_003
    return x


def calibrate(step_ms: float = STEP_MS) -> int:
    """Loop iterations that take about ``step_ms`` here (best of a few tries)."""
    n = 20_000
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        _spin(n)
        best = min(best, time.perf_counter() - t)
    return max(1000, int(n * (step_ms / 1000.0) / best))


def cpu_step(state: Any, ctx: Any) -> dict[str, Any]:
    """One CPU-bound step: spin ``iters`` times, log its id."""
    _spin(state["iters"])
    return {"log": [ctx.step_id]}


def workflow(width: int = WIDTH, depth: int = DEPTH) -> Any:
    from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

    layers = [[f"l{k}_{j}" for j in range(width)] for k in range(depth)]
    b = Dag.builder(layers[0][0])
    for k, layer in enumerate(layers):
        for sid in layer:
            b.step(sid, cpu_step)
            if k:
                for prev in layers[k - 1]:
                    b.edge(prev, sid)
    schema = StateSchema({"log": (AppendList(), []), "iters": (LastWriteWins(), 0)})
    return Workflow("cpu_fan", b.build(), schema)


def _time_runs(executor: Any, iters: int, reps: int, width: int, depth: int,
               probe: dict[str, Any] | None = None) -> list[float]:
    from atomr import Done, LmdbStore, Runtime

    d = tempfile.mkdtemp(prefix="atomr-rayfan-")
    try:
        kw: dict[str, Any] = {"step_workers": width} if executor is None else {"executor": executor}
        with Runtime(store=LmdbStore(os.path.join(d, "s")), durability="sync", **kw) as rt:
            rt.register(workflow(width, depth))
            warm = rt.start("cpu_fan", {"iters": iters}, run_id="warm").result(timeout=RESULT_TIMEOUT)
            if not isinstance(warm, Done):
                raise RuntimeError(f"warm-up run ended {warm!r}")
            if probe is not None:  # Ray is up (and shut down with the runtime if started here)
                import ray

                probe["ray_cpus"] = int(ray.cluster_resources().get("CPU", 0))
            secs = []
            for r in range(reps):
                t = time.perf_counter()
                out = rt.start("cpu_fan", {"iters": iters}, run_id=f"r{r}").result(timeout=RESULT_TIMEOUT)
                secs.append(time.perf_counter() - t)
                if not isinstance(out, Done) or len(out.state["log"]) != width * depth:
                    raise RuntimeError(f"run ended {out!r}")
            return secs
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(quick: bool) -> dict[str, Any]:
    """Time local step actors vs RayExecutor on the CPU-bound fan-out."""
    try:
        import ray
        from ray import cloudpickle
    except ImportError as exc:
        return {"name": NAME, "skipped": f"ray is not installed (pip install 'atomr[ray]'): {exc}"}
    from atomr.ray import RayExecutor

    width, depth = WIDTH, DEPTH
    reps = 1 if quick else 3
    iters = calibrate(STEP_MS)
    samples = []
    for _ in range(3):
        t = time.perf_counter()
        _spin(iters)
        samples.append(time.perf_counter() - t)
    step_s = statistics.median(samples)
    cores = os.cpu_count() or 1

    # the steps travel by value, so Ray workers need not import this module
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    local = _time_runs(None, iters, reps, width, depth)
    started_here = not ray.is_initialized()
    kwargs: dict[str, Any] = {}
    if started_here and not os.environ.get("RAY_ADDRESS"):
        kwargs["num_cpus"] = cores
    executor = RayExecutor(**kwargs)
    probe: dict[str, Any] = {}
    try:
        on_ray = _time_runs(executor, iters, reps, width, depth, probe)
    finally:
        executor.close()
    ray_cpus = probe.get("ray_cpus", 0)
    lm, rm = statistics.median(local), statistics.median(on_ray)
    return {
        "name": NAME,
        "params": {"width": width, "depth": depth, "step_ms": STEP_MS, "reps": reps,
                   "durability": "sync", "store": "LmdbStore"},
        "iters": iters,
        "step_s": step_s,
        "cores": cores,
        "ray_cpus": ray_cpus,
        "started_ray": started_here,
        "local_s": local,
        "ray_s": on_ray,
        "local_median_s": lm,
        "ray_median_s": rm,
        "speedup": lm / rm if rm > 0 else None,
        "ideal_serial_s": width * depth * step_s,
        "ideal_parallel_s": depth * math.ceil(width / max(1, min(cores, ray_cpus or cores))) * step_s,
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
