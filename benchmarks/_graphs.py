"""The benchmark graphs for atomr, and the payload shared with the LangGraph side.

Every graph here has a twin in :mod:`benchmarks._lg` with the same steps (same
ids), the same edges, the same state channels and equivalent reducers:
``LastWriteWins`` <-> a plain LangGraph channel, ``AppendList`` <->
``Annotated[list, operator.add]``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

Hook = Callable[[], None] | None


def message(i: int, size: int = 200) -> str:
    """A deterministic, poorly compressible ASCII message of ``size`` bytes for step ``i``."""
    out = ""
    seed = f"msg-{i}".encode()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed.hex()
    return out[:size]


def chain_step_ids(steps: int) -> list[str]:
    return [f"s{i}" for i in range(steps)]


def fanout_step_ids(width: int, depth: int) -> list[list[str]]:
    return [[f"l{k}_{j}" for j in range(width)] for k in range(depth)]


def agent_step_ids(steps: int) -> list[str]:
    return [f"call{i}" for i in range(steps)]


def chain_fn(hook: Hook = None) -> Callable[..., dict[str, Any]]:
    """The trivial chain step: ``n += 1`` (after calling ``hook`` if given)."""
    if hook is None:

        def inc(state: Any, ctx: Any) -> dict[str, Any]:
            return {"n": state["n"] + 1}

        return inc

    def inc_hooked(state: Any, ctx: Any) -> dict[str, Any]:
        hook()
        return {"n": state["n"] + 1}

    return inc_hooked


def atomr_chain(wf_id: str, steps: int, hook: Hook = None) -> Workflow:
    """s0 -> s1 -> ... -> s{steps-1}, each incrementing the LastWriteWins counter ``n``."""
    ids = chain_step_ids(steps)
    fn = chain_fn(hook)
    b = Dag.builder(ids[0])
    for i, sid in enumerate(ids):
        b.step(sid, fn)
        if i:
            b.edge(ids[i - 1], sid)
    return Workflow(wf_id, b.build(), StateSchema({"n": (LastWriteWins(), 0)}))


def atomr_msg_chain(wf_id: str, steps: int, size: int = 200) -> Workflow:
    """A chain whose every step increments ``n`` and appends one ``size``-byte message."""
    ids = chain_step_ids(steps)
    b = Dag.builder(ids[0])
    for i, sid in enumerate(ids):
        msg = message(i, size)

        def step(state: Any, ctx: Any, _m: str = msg) -> dict[str, Any]:
            return {"n": state["n"] + 1, "msgs": [_m]}

        b.step(sid, step)
        if i:
            b.edge(ids[i - 1], sid)
    schema = StateSchema({"n": (LastWriteWins(), 0), "msgs": (AppendList(), [])})
    return Workflow(wf_id, b.build(), schema)


def atomr_fanout(wf_id: str, width: int, depth: int) -> Workflow:
    """``depth`` layers of ``width`` steps; every step of layer k precedes every step
    of layer k+1, so a run is ``depth`` super-steps of ``width`` parallel steps.
    Each step appends its id to the AppendList channel ``log``."""
    layers = fanout_step_ids(width, depth)
    b = Dag.builder(layers[0][0])
    for k, layer in enumerate(layers):
        for sid in layer:

            def step(state: Any, ctx: Any, _s: str = sid) -> dict[str, Any]:
                return {"log": [_s]}

            b.step(sid, step)
            if k:
                for prev in layers[k - 1]:
                    b.edge(prev, sid)
    return Workflow(wf_id, b.build(), StateSchema({"log": (AppendList(), [])}))


def atomr_agent_chain(wf_id: str, steps: int, io_seconds: float) -> Workflow:
    """An "agent": a chain of ``steps`` ``async def`` steps, each awaiting
    ``asyncio.sleep(io_seconds)`` (a stand-in for a model or tool call), then ``n += 1``."""
    ids = agent_step_ids(steps)

    async def call(state: Any, ctx: Any) -> dict[str, Any]:
        await asyncio.sleep(io_seconds)
        return {"n": state["n"] + 1}

    b = Dag.builder(ids[0])
    for i, sid in enumerate(ids):
        b.step(sid, call)
        if i:
            b.edge(ids[i - 1], sid)
    return Workflow(wf_id, b.build(), StateSchema({"n": (LastWriteWins(), 0)}))
