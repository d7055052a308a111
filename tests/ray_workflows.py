"""Workflows for the Ray tests: module-level steps, importable by Ray workers and
shard processes (the tests put this directory on the workers' PYTHONPATH).

Side effects that must be counted across processes go to files whose path is
in the run's input (channel ``dir``).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from atomr import AppendList, Dag, LastWriteWins, RetryPolicy, StateSchema, Workflow

T = 60.0  # generous bound for any wait


def schema() -> StateSchema:
    return StateSchema({
        "log": AppendList(),
        "n": (LastWriteWins(), 0),
        "dir": (LastWriteWins(), ""),
        "answers": AppendList(),
        "pid": AppendList(),
    })


def mark(state: Any, name: str) -> int:
    """Append ``name`` to the file ``dir/name`` and return how many lines it has."""
    path = os.path.join(state["dir"], name)
    with open(path, "a", encoding="utf-8") as f:
        f.write(name + "\n")
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def count(dir: str, name: str) -> int:
    path = os.path.join(dir, name)
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def init_local_ray(ray: Any, num_cpus: int = 2) -> None:
    """Start a local Ray whose workers can import this module."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})


@pytest.fixture(scope="module")
def local_ray() -> Any:
    """A local Ray for one test module (shared by the Ray test modules)."""
    import ray

    if ray.is_initialized():  # pragma: no cover - left over by another module
        ray.shutdown()
    init_local_ray(ray, num_cpus=2)
    yield ray
    ray.shutdown()


# --- chain + parallel layer: a -> (b1, b2, b3) -> c -> d ---------------------------


def step_a(state: Any, ctx: Any) -> Any:
    return {"log": ["a"], "n": state["n"] + 1}


def step_b1(state: Any, ctx: Any) -> Any:
    return {"log": ["b1"], "n": state["n"] * 10}


def step_b2(state: Any, ctx: Any) -> Any:
    return [("log", ["b2"]), ("log", [f"b2@{ctx.super_step}"])]


async def step_b3(state: Any, ctx: Any) -> Any:
    await asyncio.sleep(0)
    return {"log": [f"b3:{ctx.step_id}:{ctx.attempt}"]}


def step_c(state: Any, ctx: Any) -> Any:
    return {"log": [f"c saw {len(state['log'])}"], "n": state["n"] + 5}


def step_d(state: Any, ctx: Any) -> None:
    return None


def pipeline() -> Workflow:
    b = Dag.builder("a").step("a", step_a).step("b1", step_b1).step("b2", step_b2)
    b.step("b3", step_b3).step("c", step_c).step("d", step_d)
    for x in ("b1", "b2", "b3"):
        b.edge("a", x).edge(x, "c")
    b.edge("c", "d")
    return Workflow("pipe", b.build(), schema())


# --- failures ---------------------------------------------------------------------


def step_fails(state: Any, ctx: Any) -> Any:
    mark(state, "fails")
    raise ValueError(f"bad input on attempt {ctx.attempt}")


def failing() -> Workflow:
    b = Dag.builder("a").step("a", step_a).step("boom", step_fails).edge("a", "boom")
    return Workflow("failing", b.build(), schema(), retry=RetryPolicy(max_attempts=3, backoff_s=0.01))


def step_slow(state: Any, ctx: Any) -> Any:
    mark(state, "slow")
    time.sleep(120)
    mark(state, "slow-finished")
    return {"log": ["slow"]}


def slow() -> Workflow:
    b = Dag.builder("slow").step("slow", step_slow)
    return Workflow("slow", b.build(), schema(), step_timeout_s=3.0)


def step_crash_once(state: Any, ctx: Any) -> Any:
    if mark(state, "crash") == 1:
        os._exit(1)
    return {"log": [f"survived attempt {ctx.attempt}"]}


def crash_once() -> Workflow:
    b = Dag.builder("a").step("a", step_a).step("crash", step_crash_once).edge("a", "crash")
    return Workflow("crash_once", b.build(), schema(), retry=RetryPolicy(max_attempts=2))


def step_crash_always(state: Any, ctx: Any) -> Any:
    mark(state, "crash_always")
    os._exit(1)


def crash_always() -> Workflow:
    b = Dag.builder("crash").step("crash", step_crash_always)
    return Workflow("crash_always", b.build(), schema())


# --- interrupts -------------------------------------------------------------------


def step_ask(state: Any, ctx: Any) -> Any:
    first = ctx.interrupt({"q": "first?", "run": ctx.run_id})
    second = ctx.interrupt({"q": "second?"})
    return {"answers": [[first, second]], "pid": [os.getpid()]}


def asking() -> Workflow:
    b = Dag.builder("a").step("a", step_a).step("ask", step_ask).step("c", step_c)
    b.edge("a", "ask").edge("ask", "c")
    return Workflow("asking", b.build(), schema())


# --- sharding ----------------------------------------------------------------------


def step_wait_flag(state: Any, ctx: Any) -> Any:
    """Counts itself, then waits until the file ``dir/go`` exists."""
    mark(state, f"wait-{ctx.run_id}")
    flag = os.path.join(state["dir"], "go")
    deadline = time.monotonic() + T
    while not os.path.exists(flag):
        if time.monotonic() > deadline:
            raise TimeoutError("flag never appeared")
        time.sleep(0.05)
    return {"log": ["waited"]}


def sharded() -> Workflow:
    b = Dag.builder("a").step("a", step_a).step("ask", step_ask).step("c", step_c)
    b.edge("a", "ask").edge("ask", "c")
    return Workflow("sharded", b.build(), schema())


def blocking() -> Workflow:
    b = Dag.builder("a").step("a", step_a).step("wait", step_wait_flag).step("c", step_c)
    b.edge("a", "wait").edge("wait", "c")
    return Workflow("blocking", b.build(), schema())
