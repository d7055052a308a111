"""A Loop whose body is a Dag of any steps: each iteration is a child run whose
steps are journaled, retried, timed out, streamed and interrupted one by one."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from atomr import (AppendList, Cancelled, Command, Dag, Done, LastWriteWins, Loop, Map, Paused, RetryPolicy,
                   StateSchema, Subgraph, Workflow)
from atomr import events as ev
from atomr.store import format as fmt
from atomr.store.base import AppendBatch
from workflows import ALL_STORES, T, make_store, runtimes, store_kinds  # noqa: F401 - fixtures

store_kind = store_kinds(*ALL_STORES)


def _schema() -> StateSchema:
    return StateSchema({"n": (LastWriteWins(), 0), "log": AppendList(), "items": (LastWriteWins(), []),
                        "out": LastWriteWins(), "answer": LastWriteWins()})


def _wf(body: Dag, while_: Any, wid: str = "w", **kw: Any) -> Workflow:
    return Workflow(wid, Dag.builder("loop").step("loop", Loop(body, while_=while_, max_iterations=10)).build(),
                    _schema(), **kw)


def _child(rt: Any, n: int, step: str = "loop", wid: str = "w", run: str = "r", ss: int = 1) -> list[Any]:
    """The journal of iteration ``n``'s child run."""
    return [e for _, e in rt.store.journal(f"{wid}:{step}", f"{wid}/{run}/{step}#{n}@{ss}")]


def _agent_body(calls: list[str]) -> Dag:
    async def model(s: Any, c: Any) -> Any:
        await asyncio.sleep(0)
        calls.append(f"model{s['n']}")
        return {"n": s["n"] + 1, "log": [f"model{s['n']}"]}

    async def tools(s: Any, c: Any) -> Any:
        calls.append(f"tools{s['n']}")
        return {"log": [f"tools{s['n']}"]}

    return (Dag.builder("model").step("model", model).step("tools", tools)
            .step("finish", lambda s, c: {"answer": f"after {s['n']}"})
            .branch("model", lambda s: "tools" if s["n"] < 3 else "finish", {"tools": "tools", "finish": "finish"})
            .build())


def test_async_steps_and_a_branch_in_the_body(runtimes, store_kind):
    calls: list[str] = []
    rt = runtimes(store_kind, workflows=[_wf(_agent_body(calls), lambda s: s["answer"] is None)])
    out = rt.start("w", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answer"] == "after 3" and out.state["n"] == 3
    assert out.state["log"] == ["model0", "tools1", "model1", "tools2", "model2"]
    assert calls == ["model0", "tools1", "model1", "tools2", "model2"]
    labels = [c.label for c in rt.history("w", "r")]
    assert [x for x in labels if x.startswith("loop:")] == ["loop:loop:1", "loop:loop:2", "loop:loop:3"]
    # each body step is journaled on its own, in the iteration's child run
    first = _child(rt, 0)
    assert [e.step for e in first if type(e) is ev.StepCompleted] == ["model", "tools"]
    assert [e.chosen for e in first if type(e) is ev.BranchTaken] == [["tools"]]
    last = _child(rt, 2)
    assert [e.step for e in last if type(e) is ev.StepCompleted] == ["model", "finish"]
    # the child runs are the parent's: only the parent is listed as recoverable
    assert rt.get_state("w:loop", "w/r/loop#0@1").status == "done"


def test_an_interrupt_in_the_body_names_the_inner_step_and_resumes(runtimes, store_kind):
    incs: list[int] = []

    def inc(s: Any, c: Any) -> Any:
        incs.append(s["n"])
        return {"n": s["n"] + 1}

    def ask(s: Any, c: Any) -> Any:
        return {"log": [f"{s['n']}:{c.interrupt({'q': s['n']})}"]}

    body = Dag.builder("inc").step("inc", inc).step("ask", ask).edge("inc", "ask").build()
    rt = runtimes(store_kind, workflows=[_wf(body, lambda s: s["n"] < 2)])
    out = rt.start("w", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused), out
    [i] = out.interrupts
    assert (i.id, i.step_id, i.payload) == ("loop#0/ask:2:0", "loop", {"q": 1})
    if store_kind != "memory":
        rt = runtimes.reopen(rt)  # the answer reaches the child from a fresh process's runtime
    out = rt.resume("w", "r", Command(resume={i.id: "yes"})).result(timeout=T)
    assert isinstance(out, Paused), out
    assert [x.id for x in out.interrupts] == ["loop#1/ask:2:0"]
    out = rt.resume("w", "r", Command(resume="no")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["1:yes", "2:no"] and out.state["n"] == 2
    assert incs == [0, 1]  # a resume re-ran only the interrupted step


def test_map_and_subgraph_in_the_body(runtimes):
    child = Workflow("sum", Dag.builder("c").step("c", lambda s, c: {"out": sum(s["items"])}).build(),
                     StateSchema({"items": (LastWriteWins(), []), "out": LastWriteWins()}))

    async def double(x: int, c: Any) -> int:
        return x * 2

    body = (Dag.builder("m").step("m", Map(double, items="items", into="items", max_concurrency=2))
            .step("sum", Subgraph(child, inputs=["items"], outputs=["out"]))
            .step("count", lambda s, c: {"n": s["n"] + 1, "log": [s["out"]]})
            .edge("m", "sum").edge("sum", "count").build())
    rt = runtimes("memory", workflows=[_wf(body, lambda s: s["n"] < 2)])
    out = rt.start("w", {"items": [1, 2]}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["items"] == [4, 8] and out.state["log"] == [6, 12]
    assert sorted(e.index for e in _child(rt, 1) if type(e) is ev.ItemCompleted) == [0, 1]


def test_a_nested_loop_with_an_interrupt_in_its_body(runtimes):
    def tick(s: Any, c: Any) -> Any:
        said = c.interrupt({"n": s["n"]}) if s["n"] == 4 else "-"
        return {"n": s["n"] + 1, "log": [f"t{s['n']}{said}"]}

    inner = Loop(Dag.builder("tick").step("tick", tick).build(), while_=lambda s: s["n"] % 3 != 0)
    body = (Dag.builder("start").step("start", lambda s, c: {"n": s["n"] + 1, "log": [f"o{s['n']}"]})
            .step("inner", inner).edge("start", "inner").build())
    rt = runtimes("memory", workflows=[_wf(body, lambda s: s["n"] < 6)])
    assert set(rt.workflows) == {"w", "w:loop", "w:loop:inner"}
    out = rt.start("w", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused), out
    [i] = out.interrupts
    assert (i.id, i.payload) == ("loop#1/inner#0/tick:1:0", {"n": 4})
    out = rt.resume("w", "r", Command(resume="!")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["o0", "t1-", "t2-", "o3", "t4!", "t5-"] and out.state["n"] == 6


def test_a_body_step_is_retried_and_timed_out_on_its_own(runtimes):
    attempts: list[int] = []
    before: list[int] = []

    def first(s: Any, c: Any) -> Any:
        before.append(s["n"])
        return {"log": ["first"]}

    async def flaky(s: Any, c: Any) -> Any:
        attempts.append(c.attempt)
        if c.attempt == 1:
            await asyncio.sleep(60)  # timed out
        if c.attempt == 2:
            raise ValueError("try again")
        return {"n": s["n"] + 1}

    body = Dag.builder("first").step("first", first).step("flaky", flaky).edge("first", "flaky").build()
    wf = _wf(body, lambda s: s["n"] < 1, retry=RetryPolicy(max_attempts=3, backoff_s=0.01), step_timeout_s=1.5)
    rt = runtimes("memory", workflows=[wf])
    out = rt.start("w", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert attempts == [1, 2, 3] and before == [0]  # only the failing step ran again
    failed = [(e.step, e.error_type, e.final) for e in _child(rt, 0) if type(e) is ev.StepFailed]
    assert failed == [("flaky", "StepTimeout", False), ("flaky", "ValueError", False)]


def test_body_steps_ctx_emit_reaches_the_parents_stream(runtimes):
    heard = threading.Event()

    def talk(s: Any, c: Any) -> Any:
        deadline = time.monotonic() + T
        while not heard.is_set() and time.monotonic() < deadline:
            c.emit({"n": s["n"]})  # until the stream hears one
            time.sleep(0.02)
        return {"n": s["n"] + 1}

    rt = runtimes("memory", workflows=[_wf(Dag.builder("talk").step("talk", talk).build(), lambda s: s["n"] < 1)])
    h = rt.start("w", {}, run_id="r")
    got = []
    for item in h.stream(["custom"], timeout=T):
        if item.mode == "custom":
            got.append(item.data)
            heard.set()
        elif item.mode == "outcome":
            assert isinstance(item.data, Done), item.data
            break
    assert got and got[0] == {"step": "loop#0/talk", "payload": {"n": 0}}


def test_cancelling_the_parent_cancels_the_iteration_in_flight(runtimes):
    body = Dag.builder("ask").step("ask", lambda s, c: {"log": [c.interrupt("?")]}).build()
    rt = runtimes("memory", workflows=[_wf(body, lambda s: True)])
    assert isinstance(rt.start("w", {}, run_id="r").result(timeout=T), Paused)
    assert isinstance(rt.cancel("w", "r", "enough", timeout=T), Cancelled)
    deadline = time.monotonic() + T
    while rt.get_state("w:loop", "w/r/loop#0@1").status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rt.get_state("w:loop", "w/r/loop#0@1").status == "cancelled"


@pytest.mark.parametrize("kind", ["memory", "lmdb", "sqlite"])
def test_a_run_journaled_by_the_one_unit_dag_body_resumes(runtimes, tmp_path, kind):
    """Before Dag bodies ran as child runs, an iteration was one unit ``loop#n``
    ending in LoopIterated; such a journal, cut in iteration 1, still resumes."""
    body = (Dag.builder("a").step("a", lambda s, c: {"n": s["n"] + 1, "log": [f"a{s['n']}"]})
            .step("b", lambda s, c: {"log": [f"b{s['n']}"]}).edge("a", "b").build())
    wf = _wf(body, lambda s: s["n"] < 2)
    old = [ev.RunStarted({}, {}, 1), ev.StepStarted("loop", 1, 1, "w/r/1/loop"),
           ev.StepStarted("loop#0", 1, 1, "w/r/1/loop#0"),
           ev.LoopIterated("loop", 1, 1, [("n", 1), ("log", ["a0"]), ("log", ["b1"])], 2),
           ev.StepStarted("loop#1", 1, 1, "w/r/1/loop#1")]
    path = tmp_path / "old"
    if kind == "memory":
        rt = runtimes("memory", workflows=[wf])
        store = rt.store
    else:
        store = make_store(kind, path)
    errs = store.write([AppendBatch("w", "r", 1, [fmt.encode_event(e) for e in old], status="running",
                                    super_step=0)])
    assert errs == [None]
    if kind != "memory":
        store.close()
        rt = runtimes(kind, path=path, workflows=[wf])
    rt.recover()  # (a runtime on a shared store may have taken the run up already, as a worker)
    deadline = time.monotonic() + T
    while rt.get_state("w", "r").status == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    view = rt.get_state("w", "r")
    assert view.status == "done", view
    assert view.values["n"] == 2 and view.values["log"] == ["a0", "b1", "a1", "b2"]
    assert [c.label for c in rt.history("w", "r") if c.label.startswith("loop:")] == ["loop:loop:1", "loop:loop:2"]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_every_durability_merges_each_iteration(runtimes, durability):
    calls: list[str] = []
    rt = runtimes("lmdb", durability=durability,
                  workflows=[_wf(_agent_body(calls), lambda s: s["answer"] is None)])
    out = rt.start("w", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["model0", "tools1", "model1", "tools2", "model2"]
    assert out.state["answer"] == "after 3"


def test_a_failed_body_step_is_retried_when_the_run_is_resumed(runtimes):
    broken = [True]
    firsts: list[int] = []

    def first(s: Any, c: Any) -> Any:
        firsts.append(s["n"])
        return {"log": [f"first{s['n']}"]}

    def second(s: Any, c: Any) -> Any:
        if broken[0]:
            raise RuntimeError("the tool is down")
        return {"n": s["n"] + 1}

    body = Dag.builder("first").step("first", first).step("second", second).edge("first", "second").build()
    rt = runtimes("memory", workflows=[_wf(body, lambda s: s["n"] < 2)])
    out = rt.start("w", {}, run_id="r").result(timeout=T)
    assert type(out).__name__ == "Failed" and out.error_type == "RuntimeError", out
    assert "the tool is down" in out.message
    broken[0] = False
    out = rt.resume("w", "r", Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["first0", "first1"] and firsts == [0, 1]  # first ran once per iteration


def test_each_iteration_is_a_traced_step_its_child_run_links_to(runtimes):
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import atomr.otel

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    atomr.otel.instrument(tracer_provider=provider)
    try:
        body = Dag.builder("inc").step("inc", lambda s, c: {"n": s["n"] + 1}).build()
        rt = runtimes("memory", workflows=[_wf(body, lambda s: s["n"] < 2)])
        assert isinstance(rt.start("w", {}, run_id="r").result(timeout=T), Done)
    finally:
        atomr.otel.uninstrument()
    spans = exporter.get_finished_spans()
    its = {s.name: s for s in spans if s.name.startswith("atomr.step loop#")}
    assert sorted(its) == ["atomr.step loop#0", "atomr.step loop#1"]
    assert its["atomr.step loop#1"].attributes["atomr.child_run_id"] == "w/r/loop#1@1"
    assert all(s.attributes["atomr.outcome"] == "completed" for s in its.values())
    kids = [s for s in spans if s.name == "atomr.run w:loop"]
    assert sorted(link.context.span_id for k in kids for link in k.links) == sorted(
        s.context.span_id for s in its.values())


def test_a_body_step_sleeps_and_the_loop_goes_on_when_it_wakes(runtimes):
    naps: list[int] = []

    def nap(s: Any, c: Any) -> Any:
        c.sleep(0.2)
        naps.append(s["n"])
        return {"n": s["n"] + 1}

    rt = runtimes("lmdb", workflows=[_wf(Dag.builder("nap").step("nap", nap).build(), lambda s: s["n"] < 2)])
    out = rt.start("w", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["n"] == 2 and naps == [0, 1]
