"""atomr.otel: spans for run executions, super-steps and step attempts (SDK in-memory exporter)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from atomr import (AppendList, Command, Dag, Done, Failed, Map, MemoryStore, Paused, RetryPolicy, Runtime,
                   StateSchema, Workflow, _trace)

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

import atomr.otel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T = 30


@pytest.fixture
def spans():
    """Tracing on, into an in-memory exporter; ``spans()`` lists the finished spans."""
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    atomr.otel.instrument(tracer_provider=provider)
    yield _Spans(exporter, provider.get_tracer("user"))
    atomr.otel.uninstrument()


class _Spans:
    def __init__(self, exporter: InMemorySpanExporter, tracer: Any) -> None:
        self.exporter, self.tracer = exporter, tracer

    def __call__(self) -> Any:
        return self.exporter.get_finished_spans()


def by_name(spans: Any, name: str) -> list[Any]:
    return [s for s in spans() if s.name == name]


def parent_of(spans: Any, span: Any) -> Any:
    [p] = [s for s in spans() if span.parent is not None and s.context.span_id == span.parent.span_id]
    return p


def runtime(*wfs: Workflow, **kw: Any) -> Runtime:
    rt = Runtime(store=MemoryStore(), **kw)
    for wf in wfs:
        rt.register(wf)
    return rt


def test_a_span_per_execution_super_step_and_step_with_attributes(spans):
    tracer = spans.tracer

    def a(state, ctx):
        with tracer.start_as_current_span("user.a"):
            return {"log": ["a"]}

    def b(state, ctx):  # a and b share a layer: they run on step threads
        with tracer.start_as_current_span("user.b"):
            return {"log": ["b"]}

    def c(state, ctx):  # alone in its layer: may run in the run actor's turn
        with tracer.start_as_current_span("user.c"):
            return {"log": ["c"]}

    dag = Dag.builder("a").step("a", a).step("b", b).step("c", c).edge("a", "c").edge("b", "c").build()
    with runtime(Workflow("w", dag, StateSchema({"log": AppendList()}))) as rt:
        assert isinstance(rt.start("w", {}, run_id="r").result(timeout=T), Done)
    [run] = by_name(spans, "atomr.run w")
    assert run.parent is None and run.status.status_code == StatusCode.UNSET
    assert dict(run.attributes) == {"atomr.workflow_id": "w", "atomr.run_id": "r", "atomr.resumed": False,
                                         "atomr.outcome": "done", "atomr.super_step": 2}
    layers = sorted(by_name(spans, "atomr.super_step"), key=lambda s: s.attributes["atomr.super_step"])
    assert [s.attributes["atomr.super_step"] for s in layers] == [1, 2]
    assert all(parent_of(spans, s) is not None and s.parent.span_id == run.context.span_id for s in layers)
    assert all(s.attributes["atomr.outcome"] == "committed" for s in layers)
    for step, layer in (("a", 1), ("b", 1), ("c", 2)):
        [span] = by_name(spans, f"atomr.step {step}")
        assert dict(span.attributes) == {"atomr.workflow_id": "w", "atomr.run_id": "r", "atomr.step_id": step,
                                         "atomr.super_step": layer, "atomr.attempt": 1,
                                         "atomr.outcome": "completed"}
        assert span.parent.span_id == layers[layer - 1].context.span_id
        [user] = by_name(spans, f"user.{step}")  # the step's own spans nest under its span
        assert user.parent.span_id == span.context.span_id
        assert span.context.trace_id == run.context.trace_id


def test_async_steps_and_map_elements_run_in_their_span(spans):
    tracer = spans.tracer

    async def fetch(state, ctx):
        with tracer.start_as_current_span("user.fetch"):
            await asyncio.sleep(0.001)
            with tracer.start_as_current_span("user.fetch.inner"):
                await asyncio.sleep(0)
        return {"log": ["f"]}

    def each(item, ctx):
        with tracer.start_as_current_span(f"user.item{item}"):
            return item * 2

    dag = Dag.builder("fetch").step("fetch", fetch).step("m", Map(each, items="items", into="out")) \
        .edge("fetch", "m").build()
    schema = StateSchema({"log": AppendList(), "items": AppendList(), "out": AppendList()})
    with runtime(Workflow("am", dag, schema)) as rt:
        out = rt.start("am", {"items": [1, 2, 3]}, run_id="r").result(timeout=T)
        assert isinstance(out, Done) and sorted(out.state["out"]) == [2, 4, 6]
    [step] = by_name(spans, "atomr.step fetch")
    [user] = by_name(spans, "user.fetch")
    [inner] = by_name(spans, "user.fetch.inner")
    assert user.parent.span_id == step.context.span_id and inner.parent.span_id == user.context.span_id
    for i in (1, 2, 3):
        [part] = [s for s in spans() if s.attributes.get("atomr.unit") == f"m[{i - 1}]"]
        assert part.attributes["atomr.step_id"] == "m" and part.attributes["atomr.super_step"] == 2
        [user] = by_name(spans, f"user.item{i}")
        assert user.parent.span_id == part.context.span_id


def test_a_retry_is_a_new_span_and_a_failure_has_its_error_type(spans):
    calls = {"n": 0}

    def flaky(state, ctx):
        calls["n"] += 1
        raise ValueError(f"boom {calls['n']}")

    wf = Workflow("f", Dag.builder("flaky").step("flaky", flaky).build(), StateSchema({"log": AppendList()}),
                  retry=RetryPolicy(max_attempts=2))
    with runtime(wf) as rt:
        out = rt.start("f", {}, run_id="r").result(timeout=T)
        assert isinstance(out, Failed)
    attempts = sorted(by_name(spans, "atomr.step flaky"), key=lambda s: s.attributes["atomr.attempt"])
    assert [s.attributes["atomr.attempt"] for s in attempts] == [1, 2]
    assert len({s.context.span_id for s in attempts}) == 2
    for s in attempts:
        assert s.attributes["atomr.outcome"] == "failed" and s.attributes["error.type"] == "ValueError"
        assert s.status.status_code == StatusCode.ERROR and s.status.description.startswith("boom")
    [run] = by_name(spans, "atomr.run f")
    assert run.attributes["atomr.outcome"] == "failed" and run.attributes["error.type"] == "ValueError"
    assert run.attributes["atomr.step_id"] == "flaky" and run.status.status_code == StatusCode.ERROR
    [layer] = by_name(spans, "atomr.super_step")
    assert layer.attributes["atomr.outcome"] == "failed"


def test_a_paused_execution_ends_at_the_pause_and_the_resume_links_to_it(spans):
    def ask(state, ctx):
        return {"log": [ctx.interrupt("ok?")]}

    wf = Workflow("p", Dag.builder("ask").step("ask", ask).build(), StateSchema({"log": AppendList()}))
    with runtime(wf) as rt:
        assert isinstance(rt.start("p", {}, run_id="r").result(timeout=T), Paused)
        first = by_name(spans, "atomr.run p")
        assert len(first) == 1 and first[0].attributes["atomr.outcome"] == "paused"  # ended at the pause
        [step] = by_name(spans, "atomr.step ask")
        assert step.attributes["atomr.outcome"] == "interrupted"
        assert isinstance(rt.resume("p", "r", Command(resume="yes")).result(timeout=T), Done)
    runs = by_name(spans, "atomr.run p")
    assert len(runs) == 2
    second = [s for s in runs if s is not first[0] and s.context.span_id != first[0].context.span_id][0]
    assert [link.context.span_id for link in second.links] == [first[0].context.span_id]
    assert second.attributes["atomr.resumed"] is True and second.attributes["atomr.outcome"] == "done"


def test_a_cancelled_run_abandons_its_step_spans(spans):
    started = threading.Event()

    async def slow(state, ctx):
        started.set()
        await asyncio.sleep(30)

    wf = Workflow("c", Dag.builder("slow").step("slow", slow).build(), StateSchema({"log": AppendList()}))
    with runtime(wf) as rt:
        h = rt.start("c", {}, run_id="r")
        assert started.wait(T)
        rt.cancel("c", "r", reason="test")
        h.result(timeout=T)
    [step] = by_name(spans, "atomr.step slow")
    assert step.attributes["atomr.outcome"] == "abandoned"
    [run] = by_name(spans, "atomr.run c")
    assert run.attributes["atomr.outcome"] == "cancelled"


def test_off_by_default_and_after_uninstrument(spans):
    wf = Workflow("o", Dag.builder("s").step("s", lambda s, c: {"log": [1]}).build(),
                  StateSchema({"log": AppendList()}))
    atomr.otel.uninstrument()
    assert not atomr.otel.is_instrumented() and not _trace.enabled
    with runtime(wf) as rt:
        assert isinstance(rt.start("o", {}).result(timeout=T), Done)
    assert spans() == ()


def test_importing_atomr_imports_no_optional_package():
    code = ("import sys, atomr, atomr.otel, atomr.codec, atomr.graph.schema; "
            "bad = [m for m in ('opentelemetry', 'pydantic', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=ROOT)


def test_trace_run_example_prints_the_tree():
    sys.path.insert(0, str(ROOT))
    try:
        from examples import trace_run
    finally:
        sys.path.remove(str(ROOT))
    text = trace_run.main()
    lines = text.splitlines()
    assert lines[0].startswith("atomr.run traced [paused]")
    assert any("atomr.step ship attempt 1 [failed] error.type=ConnectionError" in x for x in lines)
    assert any(x.startswith("      GET /inventory") for x in lines)
    assert any(x.startswith("      llm.complete") for x in lines)
    assert any(x.startswith("atomr.run traced [done] linked to the paused execution") for x in lines)


def test_a_run_resumed_in_another_process_links_to_its_earlier_execution(spans, tmp_path):
    from atomr import SqliteStore

    def ask(state, ctx):
        return {"log": [ctx.interrupt("ok?")]}

    def wf():
        return Workflow("p", Dag.builder("ask").step("ask", ask).build(), StateSchema({"log": AppendList()}))

    path = str(tmp_path / "runs.db")
    with Runtime(store=SqliteStore(path), worker_id="A") as a:
        a.register(wf())
        assert isinstance(a.start("p", {}, run_id="r").result(timeout=T), Paused)
    [first] = by_name(spans, "atomr.run p")
    _trace._paused.clear()  # another process knows nothing of it: only the store does
    with Runtime(store=SqliteStore(path), worker_id="B") as b:
        b.register(wf())
        assert isinstance(b.resume("p", "r", Command(resume="yes")).result(timeout=T), Done)
        assert b.store.summary("p", "r").meta["atomr_trace"].endswith(f"{by_name(spans, 'atomr.run p')[-1].context.span_id:016x}")
    second = [s for s in by_name(spans, "atomr.run p") if s.context.span_id != first.context.span_id]
    assert [link.context.span_id for link in second[0].links] == [first.context.span_id]
    assert second[0].links[0].context.trace_id == first.context.trace_id


def test_a_subgraph_child_run_links_to_its_parent_step_span(spans):
    from atomr import Subgraph

    def inner(state, ctx):
        return {"log": [f"inner {ctx.run_id}"]}

    def ask(state, ctx):
        return {"log": [f"asked {ctx.interrupt('go?')}"]}

    child = Workflow("kid", Dag.builder("inner").step("inner", inner).step("ask", ask).edge("inner", "ask").build(),
                     StateSchema({"log": AppendList()}))
    parent = Workflow("mom", Dag.builder("pre").step("pre", lambda s, c: {"log": ["pre"]})
                      .step("sub", Subgraph(child, inputs=["log"], outputs=["log"])).edge("pre", "sub").build(),
                      StateSchema({"log": AppendList()}))
    with runtime(parent) as rt:
        assert isinstance(rt.start("mom", {}, run_id="r").result(timeout=T), Paused)
        [step] = by_name(spans, "atomr.step sub")  # ended when the child paused
        assert step.attributes["atomr.outcome"] == "interrupted"
        assert step.attributes["atomr.child_workflow_id"] == "kid"
        assert step.attributes["atomr.child_run_id"] == "mom/r/sub"
        [mom] = by_name(spans, "atomr.run mom")
        layer = parent_of(spans, step)
        assert layer.name == "atomr.super_step" and layer.attributes["atomr.super_step"] == 2
        assert parent_of(spans, layer).context.span_id == mom.context.span_id
        [kid] = by_name(spans, "atomr.run kid")
        assert [link.context.span_id for link in kid.links] == [step.context.span_id]
        assert kid.attributes["atomr.run_id"] == "mom/r/sub" and kid.attributes["atomr.outcome"] == "paused"
        [pending] = rt.get_state("mom", "r").interrupts
        assert isinstance(rt.resume("mom", "r", Command(resume={pending.id: "yes"})).result(timeout=T), Done)
    steps = by_name(spans, "atomr.step sub")
    assert len(steps) == 2
    second = [s for s in steps if s.context.span_id != step.context.span_id][0]
    assert second.attributes["atomr.outcome"] == "completed"
    kids = by_name(spans, "atomr.run kid")
    assert len(kids) == 2
    resumed = [s for s in kids if s.context.span_id != kid.context.span_id][0]
    # the child's resumed execution links to the parent's new step span and to its own paused execution
    assert {link.context.span_id for link in resumed.links} == {second.context.span_id, kid.context.span_id}
    assert resumed.attributes["atomr.outcome"] == "done"
    assert _trace._parents == {}


def test_a_failed_subgraph_child_fails_its_parent_step_span(spans):
    from atomr import Subgraph

    def boom(state, ctx):
        raise ValueError("no")

    child = Workflow("kid2", Dag.builder("boom").step("boom", boom).build(), StateSchema({"log": AppendList()}))
    parent = Workflow("mom2", Dag.builder("sub").step("sub", Subgraph(child)).build(),
                      StateSchema({"log": AppendList()}))
    with runtime(parent) as rt:
        assert isinstance(rt.start("mom2", {}, run_id="r").result(timeout=T), Failed)
    [step] = by_name(spans, "atomr.step sub")
    assert step.attributes["atomr.outcome"] == "failed" and step.attributes["error.type"] == "ValueError"
    assert step.status.status_code == StatusCode.ERROR
    [kid] = by_name(spans, "atomr.run kid2")
    assert [link.context.span_id for link in kid.links] == [step.context.span_id]
