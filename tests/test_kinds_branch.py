"""Branch: a router picks labels once the branch step's super-step is merged;
untaken targets (and what only they lead to) are skipped; decisions are
journaled and replayed, never decided twice."""

from __future__ import annotations

import threading

import pytest

from atomr import (AppendList, Command, Dag, Done, Failed, Human, LastWriteWins, Loop, Map, Paused,
                   StateSchema, Subgraph, Workflow)
from atomr import events as ev
from atomr.errors import BranchError
from kinds_scripts.helpers import events, example, maybe_reopen, of_type
from workflows import T, Calls, logger, runtimes, store_kind  # noqa: F401 - fixtures


def sch() -> StateSchema:
    return StateSchema({"log": AppendList(), "p": LastWriteWins(), "answers": AppendList()})


class Router:
    """Counts its calls; returns ``pick(state)``."""

    def __init__(self, pick=lambda s: s["p"]) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.pick = pick

    def __call__(self, state):
        with self.lock:
            self.calls += 1
        return self.pick(state)


def triage_wf(calls: Calls, router: Router, wid: str = "tri", **kw) -> Workflow:
    """t -branch-> {X: x, Y: y};  x -> ax -> j;  y -> j."""
    dag = (Dag.builder("t")
           .step("t", logger("t", calls)).step("x", logger("x", calls)).step("y", logger("y", calls))
           .step("ax", logger("ax", calls)).step("j", logger("j", calls))
           .branch("t", router, {"X": "x", "Y": "y"})
           .edge("x", "ax").edge("ax", "j").edge("y", "j")
           .build())
    return Workflow(wid, dag, sch(), **kw)


@pytest.mark.parametrize("pick,log,skipped", [
    ("X", ["t", "x", "ax", "j"], {"y"}),
    ("Y", ["t", "y", "j"], {"x", "ax"}),
])
def test_one_label_skips_the_other_path_and_the_join_runs_once(runtimes, store_kind, pick, log, skipped):
    calls, router = Calls(), Router()
    rt = runtimes(store_kind, workflows=[triage_wf(calls, router)])
    out = rt.start("tri", {"p": pick}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == log
    assert router.calls == 1
    assert calls["j"] == 1  # the join waited only for its non-skipped predecessor
    for s in skipped:
        assert calls[s] == 0
    assert of_type(rt, "tri", "r", ev.BranchTaken) == [ev.BranchTaken("t", [pick])]
    started = {e.step for e in of_type(rt, "tri", "r", ev.StepStarted)}
    assert started.isdisjoint(skipped)


def test_router_returns_a_list_of_labels(runtimes, store_kind):
    calls, router = Calls(), Router()
    rt = runtimes(store_kind, workflows=[triage_wf(calls, router)])
    out = rt.start("tri", {"p": ["Y", "X"]}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert sorted(out.state["log"]) == sorted(["t", "x", "y", "ax", "j"])
    assert calls["j"] == 1 and router.calls == 1
    assert of_type(rt, "tri", "r", ev.BranchTaken) == [ev.BranchTaken("t", ["Y", "X"])]


def test_router_may_return_any_iterable_of_labels(runtimes, store_kind):
    calls = Calls()
    router = Router(lambda s: (label for label in ("X", "Y") if label in s["p"]))  # a generator
    rt = runtimes(store_kind, workflows=[triage_wf(calls, router)])
    out = rt.start("tri", {"p": "XY"}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert sorted(out.state["log"]) == sorted(["t", "x", "y", "ax", "j"])
    assert of_type(rt, "tri", "r", ev.BranchTaken) == [ev.BranchTaken("t", ["X", "Y"])]


@pytest.mark.parametrize("picked,shown", [("W", "'W'"), (["X", "nope"], "'nope'"), (3, "3")])
def test_unknown_label_fails_the_run_naming_it_and_the_known_ones(runtimes, store_kind, picked, shown):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[triage_wf(calls, Router())])
    out = rt.start("tri", {"p": picked}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "BranchError" and out.step_id == "t"
    assert f"unknown label {shown}" in out.message
    assert "'X', 'Y'" in out.message
    with pytest.raises(BranchError):
        out.raise_error()
    assert calls["x"] == calls["y"] == 0
    assert of_type(rt, "tri", "r", ev.BranchTaken) == []
    assert rt.get_state("tri", "r").status == "failed"


def test_a_router_that_raises_fails_the_run_with_its_error(runtimes, store_kind):
    def bad(state):
        raise LookupError("no route today")

    rt = runtimes(store_kind, workflows=[triage_wf(Calls(), Router(bad))])
    out = rt.start("tri", {"p": "X"}).result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "LookupError" and out.step_id == "t" and "no route today" in out.message


def test_a_target_also_reachable_through_a_taken_path_still_runs(runtimes, store_kind):
    """t -branch-> {X: x, Y: y}; x -> y: taking X runs y too (after x)."""
    calls = Calls()
    dag = (Dag.builder("t").step("t", logger("t", calls)).step("x", logger("x", calls))
           .step("y", logger("y", calls)).step("z", logger("z", calls))
           .branch("t", Router(), {"X": "x", "Y": "y", "Z": "z"}).edge("x", "y").build())
    rt = runtimes(store_kind, workflows=[Workflow("reach", dag, sch())])
    out = rt.start("reach", {"p": "X"}).result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["t", "x", "y"], out
    out = rt.start("reach", {"p": "Y"}).result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["t", "y"], out  # x skipped, y runs
    assert calls["z"] == 0 and calls["y"] == 2


def test_steps_behind_a_skipped_branch_step_are_skipped_and_its_router_never_asked(runtimes, store_kind):
    calls, outer, inner = Calls(), Router(), Router(lambda s: "c")
    dag = (Dag.builder("t").step("t", logger("t", calls)).step("x", logger("x", calls))
           .step("y", logger("y", calls)).step("x1", logger("x1", calls)).step("x2", logger("x2", calls))
           .step("j", logger("j", calls))
           .branch("t", outer, {"X": "x", "Y": "y"}).branch("x", inner, {"c": "x1", "d": "x2"})
           .edge("x1", "j").edge("x2", "j").edge("y", "j").build())
    rt = runtimes(store_kind, workflows=[Workflow("nested", dag, sch())])
    out = rt.start("nested", {"p": "Y"}, run_id="y").result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["t", "y", "j"], out
    assert inner.calls == 0
    out = rt.start("nested", {"p": "X"}, run_id="x").result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["t", "x", "x1", "j"], out
    assert inner.calls == 1
    assert [e.step for e in of_type(rt, "nested", "x", ev.BranchTaken)] == ["t", "x"]


def test_router_reads_the_state_after_a_breakpoint_update(runtimes, store_kind):
    """interrupt_after the branch step: the router runs on resume, and sees Command(update=...)."""
    calls, router = Calls(), Router()
    rt = runtimes(store_kind, workflows=[triage_wf(calls, router, interrupt_after=["t"])])
    out = rt.start("tri", {"p": "Y"}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "after" and out.steps == ["t"], out
    assert router.calls == 0
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("tri", "r", Command(update={"p": "X"})).result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["t", "x", "ax", "j"], out
    assert router.calls == 1


def test_decision_is_replayed_when_the_run_resumes_not_decided_again(runtimes, store_kind):
    """A target pauses after the decision; the resumed run (a new actor rebuilt from
    the journal, on LMDB even a new runtime) follows the journaled decision."""
    calls = Calls()
    router = Router(lambda s: "X" if router.calls == 1 else "Y")  # a second decision would differ

    def ask(state, ctx):
        calls.hit("x", ctx)
        return {"log": ["x"], "answers": [ctx.interrupt("go?")]}

    dag = (Dag.builder("t").step("t", logger("t", calls)).step("x", ask).step("y", logger("y", calls))
           .step("j", logger("j", calls)).branch("t", router, {"X": "x", "Y": "y"})
           .edge("x", "j").edge("y", "j").build())
    rt = runtimes(store_kind, workflows=[Workflow("replay", dag, sch())])
    out = rt.start("replay", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and [i.id for i in out.interrupts] == ["x:2:0"], out
    assert rt.get_state("replay", "r").next == ["x"]  # y is skipped
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("replay", "r", Command(resume="yes")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["t", "x", "j"] and out.state["answers"] == ["yes"]
    assert router.calls == 1 and calls["y"] == 0
    assert len(of_type(rt, "replay", "r", ev.BranchTaken)) == 1


def test_branch_on_a_human_answer(runtimes, store_kind):
    calls = Calls()
    dag = (Dag.builder("h").step("h", Human("ok?", into="p", on_reject="continue"))
           .step("yes", logger("yes", calls)).step("no", logger("no", calls))
           .branch("h", lambda s: "y" if s["p"]["approved"] else "n", {"y": "yes", "n": "no"}).build())
    rt = runtimes(store_kind, workflows=[Workflow("hb", dag, sch())])
    for run_id, approved, log in (("a", True, ["yes"]), ("b", False, ["no"])):
        assert isinstance(rt.start("hb", {}, run_id=run_id).result(timeout=T), Paused)
        out = rt.resume("hb", run_id, Command(resume={"approved": approved})).result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == log, out


def test_builder_checks_branches():
    b = Dag.builder("t").step("t", logger("t")).step("x", logger("x"))
    with pytest.raises(BranchError, match="'nowhere'"):
        b.branch("t", Router(), {"X": "nowhere"}).build()
    with pytest.raises(BranchError, match="not callable"):
        Dag.builder("t").step("t", logger("t")).step("x", logger("x")).branch("t", "x", {"X": "x"}).build()
    with pytest.raises(BranchError, match="no targets"):
        Dag.builder("t").step("t", logger("t")).branch("t", Router(), {}).build()


def all_kinds() -> Workflow:
    """Every kind in one workflow: branch, loop, map (an element asks), human,
    subgraph (the child asks), any-join."""
    def write(state, ctx):
        return {"report": f"{len(state['docs'])} docs, {ctx.interrupt({'child': 'ok?'})}"}

    def summarise(item, ctx):
        return f"S({item}:{ctx.interrupt({'doc': item})})" if item == "b" else f"S({item})"

    child = Workflow("mchild", Dag.builder("w").step("w", write).build(),
                     StateSchema({"docs": LastWriteWins(), "report": LastWriteWins()}))
    schema = StateSchema({"log": AppendList(), "p": LastWriteWins(), "score": (LastWriteWins(), 0.0),
                          "docs": LastWriteWins(), "summaries": LastWriteWins(),
                          "approval": LastWriteWins(), "report": LastWriteWins()})
    dag = (Dag.builder("triage").step("triage", logger("triage"))
           .branch("triage", Router(), {"urgent": "page", "normal": "queue"})
           .step("page", logger("page")).step("queue", logger("queue"))
           .step("refine", Loop(lambda s, c: {"score": s["score"] + 0.4}, while_=lambda s: s["score"] < 1,
                                max_iterations=10))
           .step("summarise", Map(summarise, items="docs", into="summaries", max_concurrency=2))
           .step("approve", Human("Ship it?", into="approval"))
           .step("child", Subgraph(child, inputs=["docs"], outputs=["report"]))
           .step("merge", logger("merge")).join("merge", policy="any")
           .edge("page", "refine").edge("queue", "refine").edge("refine", "summarise")
           .edge("summarise", "approve").edge("approve", "child").edge("approve", "merge")
           .edge("child", "merge")
           .build())
    return Workflow("allkinds", dag, schema)


def test_mermaid_of_a_workflow_with_every_kind_shows_the_branch_labels():
    pytest.importorskip("atomr._mermaid", reason="mermaid export not available yet")
    text = all_kinds().to_mermaid()
    assert "urgent" in text and "normal" in text
    for step in ("triage", "page", "queue", "refine", "summarise", "approve", "child", "merge"):
        assert step in text


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_every_kind_in_one_run(runtimes, store_kind, durability):
    rt = runtimes(store_kind, durability, workflows=[all_kinds()])
    out = rt.start("allkinds", {"p": "urgent", "docs": ["a", "b", "c"]}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and [i.payload for i in out.interrupts] == [{"doc": "b"}], out
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("allkinds", "r", Command(resume="yes")).result(timeout=T)
    assert isinstance(out, Paused) and out.interrupts[0].payload["prompt"] == "Ship it?", out
    out = rt.resume("allkinds", "r", Command(resume={"approved": True, "by": "alice"})).result(timeout=T)
    assert isinstance(out, Paused), out
    # the child asks next, through its parent step
    assert [(i.step_id, i.payload) for i in out.interrupts] == [("child", {"child": "ok?"})]
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("allkinds", "r", Command(resume="fine")).result(timeout=T)
    assert isinstance(out, Done), out
    st = out.state
    assert st["log"] == ["triage", "page", "merge"] and st["score"] >= 1
    assert st["summaries"] == ["S(a)", "S(b:yes)", "S(c)"]
    assert st["approval"] == {"approved": True, "by": "alice"} and st["report"] == "3 docs, fine"
    labels = [c.label for c in rt.history("allkinds", "r")]
    assert labels[0] == "input" and labels[-1] == "done"
    assert [x for x in labels if x.startswith("loop:")] == ["loop:refine:1", "loop:refine:2", "loop:refine:3"]


def test_the_public_names():
    import atomr
    from atomr import Branch, Human, Loop, Map, Subgraph, dispatch_fan_out  # noqa: F401
    from atomr.errors import LoopLimitError, Rejected  # noqa: F401

    for name in ("Branch", "Loop", "Map", "Human", "Subgraph", "dispatch_fan_out"):
        assert name in atomr.__all__


def test_example():
    mod = example("kinds_branch")
    assert mod.workflow.id == "kinds-branch"
    outs = mod.main()
    assert all(isinstance(o, Done) for o in outs)
    logs = [o.state["log"][1:] for o in outs]
    assert logs[0] == ["queued for the support team", "closed the triage"]
    assert logs[1] == ["paged the on-call engineer", "closed the triage"]
    assert logs[2] == ["paged the on-call engineer", "queued for the support team", "closed the triage"]
