"""Loop(body, while_, max_iterations): while_ checked before each iteration,
each iteration merged at once and checkpointed, LoopLimitError past the limit,
interrupts inside the body, durable across restarts."""

from __future__ import annotations

import asyncio

import pytest

from atomr import (AppendList, Command, Dag, Done, Failed, LastWriteWins, Loop, Paused, RetryPolicy,
                   StateSchema, Workflow)
from atomr import events as ev
from atomr.errors import GraphError, LoopLimitError
from kinds_scripts.helpers import example, maybe_reopen, of_type
from workflows import T, Calls, logger, runtimes, store_kind  # noqa: F401 - fixtures


def sch() -> StateSchema:
    return StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0), "limit": (LastWriteWins(), 3),
                        "answers": AppendList()})


class Pred:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, state) -> bool:
        self.seen.append(state["n"])
        return state["n"] < state["limit"]


def loop_wf(body, pred=None, max_iterations: int = 10, wid: str = "loop", **kw) -> Workflow:
    dag = (Dag.builder("pre").step("pre", logger("pre"))
           .step("lp", Loop(body, while_=pred or Pred(), max_iterations=max_iterations))
           .step("post", logger("post")).edge("pre", "lp").edge("lp", "post").build())
    return Workflow(wid, dag, sch(), **kw)


def counting_body(calls: Calls):
    def body(state, ctx):
        calls.hit(f"it{state['n']}", ctx)
        return {"n": state["n"] + 1, "log": [f"it{state['n']}"]}

    return body


def test_zero_iterations(runtimes, store_kind):
    calls, pred = Calls(), Pred()
    rt = runtimes(store_kind, workflows=[loop_wf(counting_body(calls), pred)])
    out = rt.start("loop", {"n": 5}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["pre", "post"] and out.state["n"] == 5
    assert sum(calls.counts.values()) == 0 and pred.seen == [5]
    assert of_type(rt, "loop", "r", ev.LoopIterated) == []
    assert not any(c.label.startswith("loop:") for c in rt.history("loop", "r"))


def test_zero_iterations_as_the_first_step(runtimes, store_kind):
    dag = Dag.builder("lp").step("lp", Loop(logger("never"), while_=lambda s: False)).build()
    rt = runtimes(store_kind, workflows=[Workflow("loop0", dag, sch())])
    out = rt.start("loop0", {}).result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == [], out


def test_each_iteration_is_merged_and_checkpointed(runtimes, store_kind):
    calls, pred = Calls(), Pred()
    rt = runtimes(store_kind, workflows=[loop_wf(counting_body(calls), pred)])
    out = rt.start("loop", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["n"] == 3 and out.state["log"] == ["pre", "it0", "it1", "it2", "post"]
    assert pred.seen == [0, 1, 2, 3]  # checked before each iteration, on the merged state
    assert dict(calls.counts) == {"it0": 1, "it1": 1, "it2": 1}
    hist = rt.history("loop", "r")
    loops = [(c.label, c.values["n"], c.values["log"][-1]) for c in hist if c.label.startswith("loop:")]
    assert loops == [("loop:lp:1", 1, "it0"), ("loop:lp:2", 2, "it1"), ("loop:lp:3", 3, "it2")]
    labels = [c.label for c in hist]
    assert labels.index("layer:1") < labels.index("loop:lp:1") < labels.index("loop:lp:3") < labels.index("layer:2")
    assert [e.iteration for e in of_type(rt, "loop", "r", ev.LoopIterated)] == [1, 2, 3]


def test_loop_limit_fails_the_run_naming_the_loop(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[loop_wf(counting_body(calls), lambda s: True, max_iterations=4)])
    out = rt.start("loop", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "LoopLimitError" and out.step_id == "lp"
    assert "'lp'" in out.message and "max_iterations=4" in out.message
    with pytest.raises(LoopLimitError):
        out.raise_error()
    assert sum(calls.counts.values()) == 4
    view = rt.get_state("loop", "r")
    assert view.status == "failed" and view.error[1] == "LoopLimitError"


def test_interrupt_inside_the_body(runtimes, store_kind):
    calls = Calls()

    def body(state, ctx):
        calls.hit(f"it{state['n']}", ctx)
        got = ctx.interrupt({"n": state["n"]}) if state["n"] in (1, 2) else None
        return {"n": state["n"] + 1, "answers": [got] if got else []}

    rt = runtimes(store_kind, workflows=[loop_wf(body)])
    out = rt.start("loop", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "interrupt" and out.steps == ["lp"], out
    [first] = out.interrupts
    assert first.step_id == "lp" and first.payload == {"n": 1}
    view = rt.get_state("loop", "r")
    assert view.values["n"] == 1 and view.next == ["lp"]  # the first iteration is merged
    assert [c.label for c in rt.history("loop", "r")][-2:] == ["loop:lp:1", "interrupt:lp"]
    rt = maybe_reopen(runtimes, rt, store_kind)
    out = rt.resume("loop", "r", Command(resume="a")).result(timeout=T)
    assert isinstance(out, Paused), out
    [second] = out.interrupts
    assert second.payload == {"n": 2} and second.id != first.id  # each iteration its own id
    out = rt.resume("loop", "r", Command(resume={second.id: "b"})).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == ["a", "b"] and out.state["n"] == 3
    # finished iterations never ran again; an interrupted one ran again once answered
    assert dict(calls.counts) == {"it0": 1, "it1": 2, "it2": 2}


def test_body_error_fails_the_run_and_a_retry_reruns_only_that_iteration(runtimes, store_kind):
    calls = Calls()

    def body(state, ctx):
        k = calls.hit(f"it{state['n']}", ctx)
        if state["n"] == 1 and k == 1:
            raise ConnectionError("flaky")
        return {"n": state["n"] + 1}

    retry = RetryPolicy(max_attempts=2, backoff_s=0.0)
    rt = runtimes(store_kind, workflows=[loop_wf(body, retry=retry)])
    out = rt.start("loop", {}).result(timeout=T)
    assert isinstance(out, Done) and out.state["n"] == 3, out
    assert dict(calls.counts) == {"it0": 1, "it1": 2, "it2": 1}

    def broken(state, ctx):
        raise ValueError("bad body")

    rt.register(loop_wf(broken, wid="loop-bad"))
    out = rt.start("loop-bad", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "ValueError" and out.step_id == "lp", out


def test_while_predicate_error_fails_the_run(runtimes, store_kind):
    def pred(state):
        raise KeyError("missing")

    rt = runtimes(store_kind, workflows=[loop_wf(counting_body(Calls()), pred)])
    out = rt.start("loop", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "KeyError" and "'lp'" in out.message, out


def test_async_body(runtimes, store_kind):
    async def body(state, ctx):
        await asyncio.sleep(0)
        return {"n": state["n"] + 1}

    rt = runtimes(store_kind, workflows=[loop_wf(body)])
    out = rt.start("loop", {"limit": 4}).result(timeout=T)
    assert isinstance(out, Done) and out.state["n"] == 4, out


def test_loop_arguments_are_checked():
    with pytest.raises(GraphError, match="max_iterations"):
        Loop(logger("x"), while_=lambda s: True, max_iterations=0)
    with pytest.raises(GraphError, match="body"):
        Loop("nope", while_=lambda s: True)  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="while_"):
        Loop(logger("x"), while_=None)  # type: ignore[arg-type]


def test_example():
    mod = example("kinds_loop")
    assert mod.workflow.id == "kinds-loop"
    out = mod.main()
    assert isinstance(out, Done)
    assert out.state["score"] >= mod.TARGET and len(out.state["edits"]) == 3
