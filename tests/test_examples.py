"""The workflows of examples/ (and the demo's), run on a MemoryStore runtime."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import sys
from pathlib import Path

import pytest

from atomr import Command, Done, Failed, MemoryStore, Paused, Runtime

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import agent_loop, doc_fanout, order_pipeline, react_agent  # noqa: E402

T = 30  # generous: the machine is shared


@pytest.fixture
def rt():
    with Runtime(store=MemoryStore()) as runtime:
        yield runtime


# -- order pipeline ------------------------------------------------------------


def test_order_pipeline_pauses_for_a_large_order_and_ships_once_approved(rt):
    rt.register(order_pipeline.workflow)
    h = rt.start("orders", order_pipeline.SAMPLE_ORDER, run_id="o1")
    events = list(h.events(timeout=T))
    out = events[-1].data
    assert isinstance(out, Paused) and out.reason == "interrupt"
    # price, reserve and screen ran in the same super-step
    layer2 = {e.step for e in events if e.kind == "started" and e.super_step == 2}
    assert layer2 == {"price", "reserve", "screen"}
    [intr] = out.interrupts
    assert intr.step_id == "approve"
    assert intr.payload["total_cents"] == 59_400 and intr.payload["order_id"] == "A-1001"
    view = rt.get_state("orders", "o1")
    assert view.status == "paused" and view.next == ["approve"]
    assert view.values["reserved"] == ["desk", "lamp"] and view.values["approved"] is None

    done = rt.resume("orders", "o1", Command(resume="yes")).result(timeout=T)
    assert isinstance(done, Done)
    assert done.state["approved"] is True and done.state["tracking"] == "TRK-A-1001"
    assert done.state["log"][-2:] == ["approved by a person", "shipped"]


def test_order_pipeline_rejected_order_releases_stock(rt):
    rt.register(order_pipeline.workflow)
    rt.start("orders", order_pipeline.SAMPLE_ORDER, run_id="o2").result(timeout=T)
    done = rt.resume("orders", "o2", Command(resume="no")).result(timeout=T)
    assert isinstance(done, Done)
    assert done.state["approved"] is False and done.state["reserved"] == [] and done.state["tracking"] is None


def test_order_pipeline_small_order_needs_no_person(rt):
    rt.register(order_pipeline.workflow)
    order = {"order_id": "S-1", "items": [{"sku": "pen", "qty": 3, "cents": 150}]}
    done = rt.start("orders", order).result(timeout=T)
    assert isinstance(done, Done)
    assert done.state["total"] == 486 and "auto-approved" in done.state["log"]


def test_order_pipeline_bad_order_fails_at_validate(rt):
    rt.register(order_pipeline.workflow)
    out = rt.start("orders", {"order_id": "E-1", "items": []}).result(timeout=T)
    assert isinstance(out, Failed)
    assert out.step_id == "validate" and out.error_type == "ValueError" and "no items" in out.message


def test_demo_workflow_matches_the_example(rt):
    from atomr import demo

    rt.register(demo.workflow)
    paused = rt.start("orders", demo.SAMPLE_ORDER).result(timeout=T)
    assert isinstance(paused, Paused) and [i.step_id for i in paused.interrupts] == ["approve"]
    done = rt.resume("orders", paused.run_id, Command(resume=demo.APPROVAL)).result(timeout=T)
    assert isinstance(done, Done) and done.state["tracking"] == "TRK-A-1001"


# -- document fan-out ------------------------------------------------------------


def test_doc_fanout_runs_the_analyses_in_parallel_and_joins_them(rt):
    rt.register(doc_fanout.workflow)
    h = rt.start("doc-fanout", {"doc": doc_fanout.SAMPLE_DOC})
    events = list(h.events(timeout=T))
    done = events[-1].data
    assert isinstance(done, Done)
    parallel = {e.step for e in events if e.kind == "started" and e.super_step == 2}
    assert parallel == set(doc_fanout.ANALYSES)
    # AppendList merges the parallel writes in step order, whatever finished first
    assert [f["kind"] for f in done.state["findings"]] == sorted(doc_fanout.ANALYSES)
    report = done.state["report"].splitlines()
    assert report[0] == "3 sections, 47 words"
    assert report[1] == "outline: Durable workflows / Recovery / Tooling"
    assert report[3] == "open TODOs: 2"
    history = rt.history("doc-fanout", h.run_id)
    assert [c.label for c in history] == ["input", "layer:1", "layer:2", "layer:3", "done"]


def test_doc_fanout_empty_document_fails(rt):
    rt.register(doc_fanout.workflow)
    out = rt.start("doc-fanout", {"doc": "  \n\n "}).result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "split" and out.error_type == "ValueError"


# -- agent loop ------------------------------------------------------------------


def test_agent_loop_calls_tools_retries_and_answers(rt):
    rt.register(agent_loop.workflow)
    h = rt.start("agent", {"question": "How warm is it in Lisbon, in Fahrenheit?"})
    events = list(h.events(timeout=T))
    done = events[-1].data
    assert isinstance(done, Done)
    assert done.state["answer"] == "It is 69.8°F (21°C) in Lisbon."
    assert done.state["tool_calls"] == 2
    retried = [(e.step, e.data[0]) for e in events if e.kind == "retrying"]
    assert retried == [("act_1", "TimeoutError")]  # the weather tool's simulated outage
    tools = [m["tool"] for m in done.state["messages"] if m["role"] == "tool"]
    assert tools == ["weather", "c_to_f"]


@pytest.mark.parametrize(
    ("question", "answer", "calls"),
    [
        ("How warm is it in Oslo?", "It is -3°C in Oslo.", 1),
        ("How warm is it in Paris?", "Sorry: no station in Paris.", 1),
        ("how warm is it?", "Which city do you mean?", 0),
    ],
)
def test_agent_loop_answers_every_question_deterministically(rt, question, answer, calls):
    rt.register(agent_loop.workflow)
    done = rt.start("agent", {"question": question}).result(timeout=T)
    assert isinstance(done, Done)
    assert done.state["answer"] == answer and done.state["tool_calls"] == calls


# -- ReAct agent (a Loop whose body is a Dag) ---------------------------------------


def test_react_agent_calls_each_tool_once_and_answers(rt, monkeypatch):
    rt.register(react_agent.workflow)
    react_agent.CALLS.clear()
    opened = threading.Event()
    tool = react_agent.get_weather

    async def weather_once_streamed(city: str) -> str:
        await asyncio.to_thread(opened.wait, T)  # the answer's tokens are emitted once the stream is open
        return await tool(city)

    monkeypatch.setitem(react_agent.TOOLS, "get_weather", weather_once_streamed)
    question = {"role": "user", "content": "Is it warmer in Lisbon than in Oslo?"}
    h = rt.start("react_agent", {"messages": [question]}, run_id="q1")
    tokens = []
    for item in h.stream(["custom", "events"], timeout=T):
        opened.set()
        if item.mode == "custom":
            tokens.append(item.data)
    out = h.result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answer"] == "Lisbon is the warmest: Lisbon 21°C, Oslo -3°C."
    assert react_agent.CALLS == ["get_weather(Lisbon)", "get_weather(Oslo)"]
    roles = [m["role"] for m in out.state["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    # model -> tools, model -> tools, model -> respond: three turns, each a checkpoint
    assert [c.label for c in rt.history("react_agent", "q1") if c.label.startswith("loop:")] == [
        "loop:agent:1", "loop:agent:2", "loop:agent:3"]
    # the last turn's model streamed its answer token by token (each turn is its own child run)
    assert tokens and all(t["step"] == "agent#2/model" for t in tokens)
    assert " ".join(t["payload"] for t in tokens) == out.state["answer"]


def test_react_agent_without_a_city_answers_at_once(rt):
    rt.register(react_agent.workflow)
    out = rt.start("react_agent", {"messages": [{"role": "user", "content": "Is it warm?"}]}).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answer"] == "Which city do you mean?"


# -- as scripts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        ("order_pipeline.py", "'shipped'"),
        ("doc_fanout.py", "open TODOs: 2"),
        ("agent_loop.py", "It is 69.8°F (21°C) in Lisbon."),
        ("react_agent.py", "Lisbon is the warmest: Lisbon 21°C, Oslo -3°C."),
    ],
)
def test_examples_run_as_scripts(tmp_path, script, expect):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=tmp_path,
                          capture_output=True, text=True, encoding="utf-8", timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout


def test_react_agent_turn_streams_each_body_step(rt):
    rt.register(react_agent.workflow)
    out = rt.start("react_agent", {"messages": [{"role": "user", "content": "Is it warm in Oslo?"}]},
                   run_id="q").result(timeout=T)
    assert isinstance(out, Done), out
    turn = rt.handle("react_agent:agent", "react_agent/q/agent#0@1")
    steps = [i.step for i in turn.stream("updates", timeout=T) if i.mode == "updates"]
    assert steps == ["model", "tools"]
