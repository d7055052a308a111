"""Join policies: "all" (default) waits for every predecessor; "any" runs after
the first to finish and cancels the rest (journaled StepCancelled)."""

from __future__ import annotations

import threading

import pytest

from atomr import AppendList, Dag, Done, LastWriteWins, Map, StateSchema, Workflow
from atomr import events as ev
from atomr.errors import JoinError
from kinds_scripts.helpers import events, of_type
from workflows import T, Calls, logger, runtimes, store_kind, wait_for  # noqa: F401 - fixtures


def sch() -> StateSchema:
    return StateSchema({"log": AppendList(), "winner": LastWriteWins(), "items": LastWriteWins(),
                        "out": LastWriteWins(), "answers": AppendList()})


def race(calls: Calls, release: threading.Event, returned: threading.Event, policy: str | None = "any",
         slow_fn=None) -> Workflow:
    """a -> (fast, slow) -> merge; slow blocks until ``release``; fast finishes
    once slow is running (so the cancel hits a running step)."""
    running = threading.Event()

    def slow(state, ctx):
        calls.hit("slow", ctx)
        running.set()
        assert release.wait(T)
        returned.set()
        return {"log": ["slow"], "winner": "slow"}

    b = (Dag.builder("a").step("a", logger("a", calls))
         .step("fast", logger("fast", calls, lambda s, c: running.wait(T) if slow_fn is None else None,
                               writes={"winner": "fast"}))
         .step("slow", slow_fn or slow).step("merge", logger("merge", calls))
         .edge("a", "fast").edge("a", "slow").edge("fast", "merge").edge("slow", "merge"))
    if policy is not None:
        b.join("merge", policy=policy)
    return Workflow("race", b.build(), sch())


def test_any_join_first_finisher_wins_and_the_rest_are_cancelled(runtimes, store_kind):
    calls, release, returned = Calls(), threading.Event(), threading.Event()
    try:
        rt = runtimes(store_kind, workflows=[race(calls, release, returned)])
        h = rt.start("race", {}, run_id="r")
        seen = list(h.events(timeout=T))
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["log"] == ["a", "fast", "merge"] and out.state["winner"] == "fast"
        assert calls["merge"] == 1 and calls["slow"] == 1
        assert of_type(rt, "race", "r", ev.StepCancelled)[0].step == "slow"
        assert [e.step for e in of_type(rt, "race", "r", ev.StepCancelled)] == ["slow"]
        assert [e.step for e in seen if e.kind == "cancelled"] == ["slow"]
        assert not any(type(e) is ev.StepCompleted and e.step == "slow" for e in events(rt, "race", "r"))
        n = len(events(rt, "race", "r"))
    finally:
        release.set()
    assert returned.wait(T)
    # the cancelled attempt's late result changes nothing
    assert len(events(rt, "race", "r")) == n
    assert rt.get_state("race", "r").values["winner"] == "fast"


@pytest.mark.parametrize("policy", [None, "all"])
def test_all_join_waits_for_every_predecessor(runtimes, store_kind, policy):
    calls, release, returned = Calls(), threading.Event(), threading.Event()
    release.set()
    rt = runtimes(store_kind, workflows=[race(calls, release, returned, policy=policy)])
    out = rt.start("race", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert sorted(out.state["log"]) == ["a", "fast", "merge", "slow"] and out.state["log"][-1] == "merge"
    assert calls["merge"] == 1
    assert of_type(rt, "race", "r", ev.StepCancelled) == []


def test_any_join_cancels_a_running_map(runtimes, store_kind):
    calls, release, returned = Calls(), threading.Event(), threading.Event()

    def element(item, ctx):
        calls.hit(f"item{item}")
        assert release.wait(T)
        return item

    try:
        wf = race(calls, release, returned, slow_fn=Map(element, items="items", into="out", max_concurrency=2))
        rt = runtimes(store_kind, workflows=[wf])
        out = rt.start("race", {"items": [1, 2, 3]}, run_id="r").result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["out"] is None and out.state["log"] == ["a", "fast", "merge"]
        assert [e.step for e in of_type(rt, "race", "r", ev.StepCancelled)] == ["slow"]
        assert calls["item3"] == 0  # never started
    finally:
        release.set()


def test_any_join_a_pending_interrupt_of_the_loser_is_dropped(runtimes):
    """slow asks a question; fast finishes after that: the run completes without pausing."""
    calls = Calls()
    holder: dict = {}

    def fast(state, ctx):
        rt = holder["rt"]
        wait_for(lambda: any(type(e) is ev.Interrupted for e in events(rt, "race", ctx.run_id)),
                 what="slow's interrupt in the journal")
        return {"log": ["fast"], "winner": "fast"}

    def slow(state, ctx):
        return {"answers": [ctx.interrupt("which?")]}

    dag = (Dag.builder("a").step("a", logger("a", calls)).step("fast", fast).step("slow", slow)
           .step("merge", logger("merge", calls)).edge("a", "fast").edge("a", "slow")
           .edge("fast", "merge").edge("slow", "merge").join("merge", policy="any").build())
    rt = runtimes("lmdb", workflows=[Workflow("race", dag, sch())])
    holder["rt"] = rt
    out = rt.start("race", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "fast", "merge"] and out.state["answers"] == []
    assert [e.step for e in of_type(rt, "race", "r", ev.StepCancelled)] == ["slow"]


def test_join_policy_is_checked_by_the_builder():
    b = Dag.builder("a").step("a", logger("a")).step("b", logger("b")).edge("a", "b")
    with pytest.raises(JoinError, match="'first'"):
        b.join("b", policy="first").build()
    dag = Dag.builder("a").step("a", logger("a")).step("b", logger("b")).edge("a", "b").join("b", "any").build()
    assert dag.join_policy == {"b": "any"}
