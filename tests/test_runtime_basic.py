"""Runtime basics: DAG execution, parallel layers, deterministic merges, async steps,
durability modes, events and history, on every store (memory, LMDB, SQLite, Postgres)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from atomr import Command, Done, Paused
from atomr import events as ev
from workflows import (  # noqa: F401 - fixtures
    DURABILITIES,
    STORES,
    T,
    Calls,
    asker,
    build,
    chain,
    diamond,
    durability,
    journal,
    logger,
    runtimes,
    ALL_STORES,
    PERSISTENT,
    store_kinds,
    wait_for,
    wait_step_completed,
)

#: every store: the runtime's behaviour must not depend on the backend
store_kind = store_kinds(*ALL_STORES)


def test_diamond_runs_parallel_layer_concurrently(runtimes, store_kind, durability):
    calls = Calls()
    barrier = threading.Barrier(2, timeout=10)
    wf = diamond("diamond", calls, barrier)
    rt = runtimes(store_kind, durability, workflows=[wf])
    h = rt.start("diamond", {"n": 7}, run_id="r1", meta={"who": "test"})
    out = h.result(timeout=T)
    assert isinstance(out, Done), out
    # b and c both passed a 2-party barrier: they ran at the same time
    assert not barrier.broken
    assert out.state["log"] == ["a", "b", "c", "d"]
    assert out.state["n"] == 7
    assert out.state["winner"] == "c"  # topo order: b merged first, c last
    assert dict(calls.counts) == {"a": 1, "b": 1, "c": 1, "d": 1}

    view = rt.get_state("diamond", "r1")
    assert view.status == "done"
    assert view.super_step == 3
    assert view.values == out.state
    assert view.next == []
    assert view.meta == {"who": "test"}
    hist = rt.history("diamond", "r1")
    assert [(c.super_step, c.label) for c in hist] == [
        (0, "input"), (1, "layer:1"), (2, "layer:2"), (3, "layer:3"), (3, "done"),
    ]
    assert hist[0].values["n"] == 7 and hist[0].values["log"] == []  # a list channel starts empty
    assert hist[2].values["log"] == ["a", "b", "c"]
    assert [s.run_id for s in rt.runs(status="done")] == ["r1"]
    assert rt.runs(status="running") == []
    wait_for(lambda: rt.live_runs() == 0, what="run actors to stop")


def test_several_roots_run_in_the_first_layer(runtimes, store_kind):
    calls = Calls()
    barrier = threading.Barrier(3, timeout=10)

    def meet(state, ctx):
        barrier.wait()

    wf = build(
        "roots",
        {"x": logger("x", calls, meet), "y": logger("y", calls, meet), "w": logger("w", calls, meet),
         "z": logger("z", calls)},
        [("x", "z"), ("y", "z"), ("w", "z")],
        entry="x",
    )
    assert wf.plan.layers == [["w", "x", "y"], ["z"]]
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("roots", {}).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["w", "x", "y", "z"]
    assert dict(calls.counts) == {"w": 1, "x": 1, "y": 1, "z": 1}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_merge_order_is_topological_not_arrival(runtimes, store_kind, mode):
    """b is first in topological order but finishes last (it waits until c's
    completion is journaled): the merge must still put b before c."""
    holder = {}

    def slow_b(state, ctx):
        wait_step_completed(holder["rt"].store, ctx.workflow_id, ctx.run_id, "c")

    wf = build(
        "order",
        {
            "a": logger("a"),
            "b": logger("b", before=slow_b, writes={"winner": "b"}),
            "c": logger("c", writes={"winner": "c"}),
            "d": logger("d"),
        },
        [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    )
    rt = runtimes(store_kind, mode, workflows=[wf])
    holder["rt"] = rt
    outs = [rt.start("order", {}, run_id=f"r{i}") for i in range(3)]
    for h in outs:
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["log"] == ["a", "b", "c", "d"]
        assert out.state["winner"] == "c"
        done = [e.step for e in journal(rt, "order", h.run_id) if type(e) is ev.StepCompleted]
        assert done == ["a", "c", "b", "d"]  # arrival order really was c before b


@pytest.mark.parametrize("inline", [True, False])
def test_chain_of_many_steps(runtimes, store_kind, durability, inline):
    wf = chain("chain", 12)
    rt = runtimes(store_kind, durability, workflows=[wf], inline_steps=inline)
    handles = [rt.start("chain", {"n": i}, run_id=f"r{i}") for i in range(5)]
    for i, h in enumerate(handles):
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["n"] == i + 12
        assert out.state["log"] == [f"s{k:02d}" for k in range(12)]
    assert len(rt.runs(status="done")) == 5


def test_async_steps_and_mixed_layer(runtimes, store_kind):
    """async def steps work; a layer mixing async and sync steps runs them together."""
    sync_async = threading.Barrier(2, timeout=10)  # sync b <-> async c
    both_async = {}

    async def a(state, ctx):
        await asyncio.sleep(0)
        return {"log": ["a"], "n": state["n"] + 1}

    def b(state, ctx):
        sync_async.wait()
        return {"log": ["b"]}

    async def c(state, ctx):
        await asyncio.to_thread(sync_async.wait)
        both_async.setdefault("bar", asyncio.Barrier(2))
        await asyncio.wait_for(both_async["bar"].wait(), 10)
        return {"log": ["c"]}

    async def e(state, ctx):
        both_async.setdefault("bar", asyncio.Barrier(2))
        await asyncio.wait_for(both_async["bar"].wait(), 10)
        return [("log", "e")]

    async def d(state, ctx):
        v = ctx.interrupt("async?")
        return {"log": [f"d:{v}"], "n": state["n"] * 10}

    wf = build("mixed", {"a": a, "b": b, "c": c, "e": e, "d": d},
               [("a", "b"), ("a", "c"), ("a", "e"), ("b", "d"), ("c", "d"), ("e", "d")])
    assert wf.is_async == {"a": True, "b": False, "c": True, "e": True, "d": True}
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("mixed", {"n": 1}, run_id="m").result(timeout=T)
    assert isinstance(out, Paused), out
    assert [i.id for i in out.interrupts] == ["d:3:0"]
    out = rt.resume("mixed", "m", Command(resume="yes")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "b", "c", "e", "d:yes"]
    assert out.state["n"] == 20


def _scenario(rt, run_id):
    """diamond with an interrupt in the parallel layer and a resume: returns
    (final state, history as comparable tuples)."""
    out = rt.start("scn", {"n": 3}, run_id=run_id).result(timeout=T)
    assert isinstance(out, Paused), out
    out = rt.resume("scn", run_id, Command(resume="ok")).result(timeout=T)
    assert isinstance(out, Done), out
    hist = [(c.super_step, c.label, c.values, c.seq, c.next) for c in rt.history("scn", run_id)]
    return out.state, hist


def _scn_workflow():
    return build(
        "scn",
        {"a": logger("a"), "b": asker("b"), "c": logger("c", writes={"winner": "c"}),
         "d": logger("d")},
        [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    )


@pytest.mark.parametrize("kind", STORES)
def test_durability_modes_give_identical_results(runtimes, kind):
    results = {}
    for mode in DURABILITIES:
        rt = runtimes(kind, mode, workflows=[_scn_workflow()])
        results[mode] = _scenario(rt, "same-id")
        rt.close()
    ref_state, ref_hist = results["sync"]
    assert ref_state["log"] == ["a", "b", "c", "d"]
    assert ref_state["answers"] == [["b", "ok"]]
    for mode in ("async", "exit"):
        assert results[mode][0] == ref_state, mode
        assert results[mode][1] == ref_hist, mode


def test_events_stream_ends_with_outcome(runtimes, store_kind):
    wf = diamond("ev")
    rt = runtimes(store_kind, workflows=[wf])
    h = rt.start("ev", {})
    seen = list(h.events(timeout=T))
    assert seen[-1].kind == "outcome"
    assert isinstance(seen[-1].data, Done)
    started = [(e.step, e.super_step) for e in seen if e.kind == "started"]
    completed = [(e.step, e.super_step) for e in seen if e.kind == "completed"]
    assert sorted(started) == sorted(completed) == [("a", 1), ("b", 2), ("c", 2), ("d", 3)]
    assert [e.super_step for e in seen if e.kind == "committed"] == [1, 2, 3]
    assert h.result(timeout=T) == seen[-1].data


def test_start_validates_before_writing(runtimes, store_kind):
    from atomr.errors import RunExists, UnknownChannelError, WorkflowNotFound

    wf = diamond("v")
    rt = runtimes(store_kind, workflows=[wf])
    with pytest.raises(UnknownChannelError):
        rt.start("v", {"nope": 1})
    with pytest.raises(WorkflowNotFound):
        rt.start("missing", {})
    assert rt.runs() == []
    assert isinstance(rt.start("v", {}, run_id="x").result(timeout=T), Done)
    with pytest.raises(RunExists):
        rt.start("v", {}, run_id="x")
    assert len(journal(rt, "v", "x")) > 0
    assert [s.run_id for s in rt.runs()] == ["x"]


def test_runs_survive_reopen(runtimes, store_kind):
    if store_kind not in PERSISTENT:
        pytest.skip("a MemoryStore does not survive a reopen")
    wf = build("re", {"a": logger("a"), "b": asker("b"), "c": logger("c")}, [("a", "b"), ("b", "c")])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("re", {"n": 1}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused)
    rt2 = runtimes.reopen(rt)
    view = rt2.get_state("re", "r")
    assert view.status == "paused" and view.interrupts[0].id == "b:2:0"
    out = rt2.resume("re", "r", Command(resume=5)).result(timeout=T)
    assert isinstance(out, Done)
    assert out.state["log"] == ["a", "b", "c"] and out.state["answers"] == [["b", 5]]


def test_wide_layer_larger_than_the_worker_pool(runtimes, store_kind):
    calls = Calls()
    names = [f"p{i}" for i in range(10)]
    wf = build("wide", {"root": logger("root", calls), **{n: logger(n, calls) for n in names},
                        "join": logger("join", calls)},
               [("root", n) for n in names] + [(n, "join") for n in names])
    rt = runtimes(store_kind, workflows=[wf], step_workers=2)
    outs = [h.result(timeout=T) for h in [rt.start("wide", {}) for _ in range(4)]]
    for out in outs:
        assert isinstance(out, Done), out
        assert out.state["log"] == ["root", *names, "join"]
    assert all(calls[n] == 4 for n in names)
