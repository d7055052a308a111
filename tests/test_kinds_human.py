"""Human(prompt, into, on_reject): a durable pause answered by a person."""

from __future__ import annotations

import pytest

from atomr import (AppendList, Command, Dag, Done, Failed, Human, LastWriteWins, Paused, StateSchema,
                   Workflow)
from atomr import events as ev
from atomr.errors import GraphError, InvalidResumeValue, Rejected
from kinds_scripts.helpers import events, example, maybe_reopen, of_type
from workflows import T, Calls, logger, runtimes, store_kind  # noqa: F401 - fixtures


def sch() -> StateSchema:
    return StateSchema({"log": AppendList(), "approval": LastWriteWins()})


def human_wf(calls: Calls, on_reject: str = "fail", wid: str = "hum") -> Workflow:
    dag = (Dag.builder("pre").step("pre", logger("pre", calls))
           .step("approve", Human("Ship it?", into="approval", on_reject=on_reject))
           .step("post", logger("post", calls)).edge("pre", "approve").edge("approve", "post").build())
    return Workflow(wid, dag, sch())


def start_paused(rt, wid: str = "hum", run_id: str = "r") -> Paused:
    out = rt.start(wid, {}, run_id=run_id).result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "interrupt" and out.steps == ["approve"], out
    return out


def test_pauses_with_the_prompt_and_an_approval_goes_on(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[human_wf(calls)])
    out = start_paused(rt)
    [intr] = out.interrupts
    assert intr.step_id == "approve" and intr.payload["prompt"] == "Ship it?"
    view = rt.get_state("hum", "r")
    assert view.status == "paused" and view.next == ["approve"] and view.values["approval"] is None
    out = rt.resume("hum", "r", Command(resume={"approved": True, "by": "alice"})).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["approval"] == {"approved": True, "by": "alice"}
    assert out.state["log"] == ["pre", "post"] and dict(calls.counts) == {"pre": 1, "post": 1}
    assert of_type(rt, "hum", "r", ev.HumanApproved) == [ev.HumanApproved("approve", "alice")]


def test_approval_without_a_name(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[human_wf(Calls())])
    start_paused(rt)
    out = rt.resume("hum", "r", Command(resume={"approved": True})).result(timeout=T)
    assert isinstance(out, Done), out
    assert of_type(rt, "hum", "r", ev.HumanApproved) == [ev.HumanApproved("approve", None)]


def test_rejection_fails_the_run_with_rejected(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[human_wf(calls)])
    start_paused(rt)
    answer = {"approved": False, "by": "bob", "reason": "tests are red"}
    out = rt.resume("hum", "r", Command(resume=answer)).result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "Rejected" and out.step_id == "approve"
    assert "tests are red" in out.message and "bob" in out.message
    with pytest.raises(Rejected):
        out.raise_error()
    assert calls["post"] == 0
    assert of_type(rt, "hum", "r", ev.HumanApproved) == []
    assert rt.get_state("hum", "r").status == "failed"


def test_rejection_with_on_reject_continue_is_written_and_the_run_goes_on(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[human_wf(calls, on_reject="continue")])
    start_paused(rt)
    answer = {"approved": False, "reason": "not now"}
    out = rt.resume("hum", "r", Command(resume=answer)).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["approval"] == answer and out.state["log"] == ["pre", "post"]
    assert of_type(rt, "hum", "r", ev.HumanApproved) == []


@pytest.mark.parametrize("bad", ["yes", True, {"approved": "yes"}, {"by": "alice"}, {"approved": 1}, ["approved"]])
def test_an_invalid_answer_is_refused_and_the_run_stays_paused(runtimes, store_kind, bad):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[human_wf(calls)])
    out = start_paused(rt)
    n = len(events(rt, "hum", "r"))
    with pytest.raises(InvalidResumeValue, match="'approve'"):
        rt.resume("hum", "r", Command(resume=bad))
    iid = out.interrupts[0].id
    with pytest.raises(InvalidResumeValue):  # by id too
        rt.resume("hum", "r", Command(resume={iid: bad}))
    assert len(events(rt, "hum", "r")) == n  # nothing journaled
    view = rt.get_state("hum", "r")
    assert view.status == "paused" and [i.id for i in view.interrupts] == [iid]
    out = rt.resume("hum", "r", Command(resume={"approved": True, "by": "carol"})).result(timeout=T)
    assert isinstance(out, Done) and out.state["approval"]["by"] == "carol", out


def test_a_plain_resume_asks_again(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[human_wf(Calls())])
    first = start_paused(rt)
    out = rt.resume("hum", "r", Command()).result(timeout=T)
    assert isinstance(out, Paused) and [i.payload for i in out.interrupts] == [first.interrupts[0].payload]


def test_the_wait_survives_a_runtime_close_and_reopen(runtimes):
    calls = Calls()
    rt = runtimes("lmdb", workflows=[human_wf(calls)])
    start_paused(rt)
    rt = runtimes.reopen(rt)
    assert rt.recover() == []
    view = rt.get_state("hum", "r")
    assert view.status == "paused" and view.interrupts[0].payload["prompt"] == "Ship it?"
    rt = runtimes.reopen(rt)
    out = rt.resume("hum", "r", Command(resume={"approved": True, "by": "dave"})).result(timeout=T)
    assert isinstance(out, Done) and out.state["approval"] == {"approved": True, "by": "dave"}, out
    assert dict(calls.counts) == {"pre": 1, "post": 1}
    assert of_type(rt, "hum", "r", ev.HumanApproved) == [ev.HumanApproved("approve", "dave")]


def test_two_humans_in_one_layer_are_answered_by_id(runtimes, store_kind):
    dag = (Dag.builder("a").step("a", Human("A?", into="approval")).step("b", Human("B?", into="log"))
           .build())
    rt = runtimes(store_kind, workflows=[Workflow("two", dag, sch())])
    out = rt.start("two", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and len(out.interrupts) == 2, out
    by_prompt = {i.payload["prompt"]: i.id for i in out.interrupts}
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("two", "r", Command(resume={by_prompt["A?"]: {"approved": True, "by": "x"},
                                                by_prompt["B?"]: {"approved": True, "by": "y"}}))
    out = out.result(timeout=T)
    assert isinstance(out, Done), out
    assert sorted(e.approver for e in of_type(rt, "two", "r", ev.HumanApproved)) == ["x", "y"]


def test_on_reject_is_checked():
    with pytest.raises(GraphError, match="on_reject"):
        Human("?", into="approval", on_reject="ignore")


def test_example():
    mod = example("kinds_human")
    assert mod.workflow.id == "kinds-human"
    approved, rejected = mod.main()
    assert isinstance(approved, Done) and isinstance(rejected, Done)
    assert approved.state["log"][-1].startswith("shipped v1.0")
    assert rejected.state["log"][-1] == "back to work: tests are red"
