"""Subgraph(workflow, inputs, outputs): a child run as a step, stored on its own,
interruptible through the parent, failing the parent with its error."""

from __future__ import annotations

import pytest

from atomr import (AppendList, Command, Dag, Done, Failed, LastWriteWins, Map, Paused, StateSchema,
                   Subgraph, Workflow)
from atomr import events as ev
from atomr.errors import AmbiguousResumeError, GraphError, WorkflowExists
from kinds_scripts.helpers import example, maybe_reopen, of_type
from workflows import T, Calls, runtimes, store_kind  # noqa: F401 - fixtures


def child_schema() -> StateSchema:
    return StateSchema({"docs": (LastWriteWins(), []), "report": LastWriteWins(),
                        "n": (LastWriteWins(), 0), "scratch": AppendList(), "items": LastWriteWins(),
                        "out": LastWriteWins()})


def parent_schema() -> StateSchema:
    return StateSchema({"docs": (LastWriteWins(), []), "report": (AppendList(), ["old"]),
                        "n": (LastWriteWins(), 0), "log": AppendList()})


def make_child(calls: Calls, last=None, wid: str = "child", **kw) -> Workflow:
    def c1(state, ctx):
        calls.hit("c1", ctx)
        return {"scratch": [f"saw {state['docs']}"], "n": 99}

    def c2(state, ctx):
        calls.hit("c2", ctx)
        extra = last(state, ctx) if last is not None else "auto"
        return {"report": f"{len(state['docs'])} docs, {extra}", "scratch": ["c2"]}

    dag = Dag.builder("c1").step("c1", c1).step("c2", c2).edge("c1", "c2").build()
    return Workflow(wid, dag, child_schema(), **kw)


def make_parent(child: Workflow | str, calls: Calls, wid: str = "parent") -> Workflow:
    def pre(state, ctx):
        calls.hit("pre", ctx)
        return {"docs": state["docs"] + ["late"], "n": 1, "log": ["pre"]}

    def post(state, ctx):
        calls.hit("post", ctx)
        return {"log": ["post"]}

    dag = (Dag.builder("pre").step("pre", pre)
           .step("sub", Subgraph(child, inputs=["docs"], outputs=["report"]))
           .step("post", post).edge("pre", "sub").edge("sub", "post").build())
    return Workflow(wid, dag, parent_schema())


CHILD_RUN = "parent/p/sub"


def test_child_run_id_history_inputs_outputs_and_private_channels(runtimes, store_kind):
    calls = Calls()
    parent = make_parent(make_child(calls), calls)
    rt = runtimes(store_kind, workflows=[parent])
    assert "child" in rt.workflows  # registered with its parent
    out = rt.start("parent", {"docs": ["a"]}, run_id="p").result(timeout=T)
    assert isinstance(out, Done), out
    # inputs copied in (as of the Subgraph's super-step), outputs merged through the parent's reducer
    assert out.state["report"] == ["old", "2 docs, auto"]
    assert out.state["docs"] == ["a", "late"]
    assert out.state["n"] == 1  # the child's "n" is not an output: private
    assert "scratch" not in out.state
    assert out.state["log"] == ["pre", "post"]
    child = rt.get_state("child", CHILD_RUN)
    assert child.status == "done" and child.meta == {"parent": ["parent", "p", "sub"]}
    assert child.values["scratch"] == ["saw ['a', 'late']", "c2"] and child.values["n"] == 99
    hist = rt.history("child", CHILD_RUN)
    assert [c.label for c in hist] == ["input", "layer:1", "layer:2", "done"]
    assert hist[0].values["docs"] == ["a", "late"] and hist[0].values["scratch"] == []
    assert {(s.workflow_id, s.run_id) for s in rt.runs()} == {("parent", "p"), ("child", CHILD_RUN)}
    done = [e for e in of_type(rt, "parent", "p", ev.StepCompleted) if e.step == "sub"]
    assert done == [ev.StepCompleted("sub", 2, [("report", "2 docs, auto")])]


def test_child_interrupt_pauses_the_parent_and_the_resume_is_forwarded(runtimes, store_kind):
    calls = Calls()
    child = make_child(calls, last=lambda s, ctx: ctx.interrupt({"question": "ok?", "docs": s["docs"]}))
    rt = runtimes(store_kind, workflows=[make_parent(child, calls)])
    out = rt.start("parent", {"docs": ["a"]}, run_id="p").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "interrupt" and out.steps == ["sub"], out
    [intr] = out.interrupts
    assert intr.step_id == "sub"
    assert intr.payload == {"question": "ok?", "docs": ["a", "late"]}  # the child's payload, unchanged
    view = rt.get_state("parent", "p")
    assert view.status == "paused" and view.next == ["sub"] and [i.id for i in view.interrupts] == [intr.id]
    cview = rt.get_state("child", CHILD_RUN)
    assert cview.status == "paused" and cview.interrupts[0].payload == intr.payload
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("parent", "p", Command(resume="fine")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["report"] == ["old", "2 docs, fine"]
    assert dict(calls.counts) == {"pre": 1, "c1": 1, "c2": 2, "post": 1}
    assert rt.get_state("child", CHILD_RUN).status == "done"
    assert "interrupt:c2" in [c.label for c in rt.history("child", CHILD_RUN)]


def test_several_child_interrupts_are_answered_by_id_through_the_parent(runtimes, store_kind):
    child = Workflow("mchild", Dag.builder("m").step(
        "m", Map(lambda item, ctx: f"{item}={ctx.interrupt(item)}", items="items", into="out")).build(),
        child_schema())
    dag = (Dag.builder("sub").step("sub", Subgraph(child, inputs=["items"], outputs=["out"])).build())
    parent = Workflow("mparent", dag, StateSchema({"items": LastWriteWins(), "out": LastWriteWins()}))
    rt = runtimes(store_kind, workflows=[parent])
    out = rt.start("mparent", {"items": ["x", "y"]}, run_id="p").result(timeout=T)
    assert isinstance(out, Paused), out
    intrs = sorted(out.interrupts, key=lambda i: i.payload)  # raised in any order
    assert [i.payload for i in intrs] == ["x", "y"] and {i.step_id for i in intrs} == {"sub"}
    ids = [i.id for i in intrs]
    assert ids == ["sub/m[0]:1:0", "sub/m[1]:1:0"]
    with pytest.raises(AmbiguousResumeError):
        rt.resume("mparent", "p", Command(resume="?"))
    out = rt.resume("mparent", "p", Command(resume={ids[1]: 2})).result(timeout=T)
    assert isinstance(out, Paused) and [i.id for i in out.interrupts] == [ids[0]], out
    out = rt.resume("mparent", "p", Command(resume={ids[0]: 1})).result(timeout=T)
    assert isinstance(out, Done) and out.state["out"] == ["x=1", "y=2"], out


def test_child_failure_fails_the_parent_with_the_childs_error_type(runtimes, store_kind):
    calls = Calls()

    def flaky(state, ctx):
        if calls["c2"] == 1:
            raise KeyError("no such doc")
        return "recovered"

    rt = runtimes(store_kind, workflows=[make_parent(make_child(calls, last=flaky), calls)])
    out = rt.start("parent", {}, run_id="p").result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "KeyError" and out.step_id == "sub" and "no such doc" in out.message
    assert rt.get_state("child", CHILD_RUN).status == "failed"
    assert rt.get_state("parent", "p").status == "failed"
    # resuming the parent retries the child where it failed
    out = rt.resume("parent", "p", Command()).result(timeout=T)
    assert isinstance(out, Done) and out.state["report"] == ["old", "1 docs, recovered"], out
    assert dict(calls.counts) == {"pre": 1, "c1": 1, "c2": 2, "post": 1}


def test_child_breakpoint_holds_the_parent_until_a_resume(runtimes, store_kind):
    calls = Calls()
    child = make_child(calls, interrupt_before=["c2"])
    rt = runtimes(store_kind, workflows=[make_parent(child, calls)])
    out = rt.start("parent", {}, run_id="p").result(timeout=T)
    assert isinstance(out, Paused) and out.steps == ["sub"] and out.interrupts == [], out
    assert rt.get_state("child", CHILD_RUN).pause_reason == "before"
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("parent", "p", Command()).result(timeout=T)
    assert isinstance(out, Done) and out.state["report"] == ["old", "1 docs, auto"], out
    assert dict(calls.counts) == {"pre": 1, "c1": 1, "c2": 1, "post": 1}


def test_subgraph_by_workflow_id(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[make_parent("child", calls)])
    out = rt.start("parent", {}, run_id="p").result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "WorkflowNotFound" and "'child'" in out.message, out
    rt.register(make_child(calls))
    out = rt.start("parent", {}, run_id="q").result(timeout=T)
    assert isinstance(out, Done) and out.state["report"] == ["old", "1 docs, auto"], out


def test_subgraph_arguments_and_registration_are_checked(runtimes):
    child = make_child(Calls())
    with pytest.raises(GraphError, match="'nope'"):
        Subgraph(child, inputs=["nope"])
    with pytest.raises(GraphError, match="'gone'"):
        Subgraph(child, outputs=["gone"])
    with pytest.raises(GraphError):
        Subgraph(42)  # type: ignore[arg-type]
    rt = runtimes("memory", workflows=[make_child(Calls())])  # another workflow called "child"
    with pytest.raises(WorkflowExists):
        rt.register(make_parent(child, Calls()))


def test_example():
    mod = example("kinds_subgraph")
    assert mod.workflow.id == "kinds-subgraph"
    out = mod.main()
    assert isinstance(out, Done)
    assert out.state["report"] == ["[plain] actors: actors in the docs; actors in the code; actors in the issues"]
    assert out.state["log"] == ["planned", "published 1 report(s)"]
    assert "notes" not in out.state
