"""Per-step options: ``DagBuilder.step(id, fn, retry=, timeout_s=)`` override the
workflow's ``retry`` / ``step_timeout_s`` for that step (for a Map, per element)."""

from __future__ import annotations

import time

import pytest

from atomr import Dag, Done, Failed, Map, RetryPolicy, StateSchema, Workflow
from atomr import events as ev
from atomr.errors import GraphError
from atomr import AppendList, LastWriteWins
from workflows import T, Calls, journal, runtimes, schema, ALL_STORES, store_kinds  # noqa: F401

store_kind = store_kinds(*ALL_STORES)


def _flaky(name: str, calls: Calls, fail_first: int):
    def step(state, ctx):
        if calls.hit(name, ctx) <= fail_first:
            raise ValueError(f"{name} boom")
        return {"log": [f"{name}@{ctx.attempt}"]}
    return step


def _sleeper(name: str, seconds: float):
    def step(state, ctx):
        time.sleep(seconds)
        return {"log": [name]}
    return step


def test_step_retry_overrides_the_workflow_default(runtimes, store_kind):
    calls = Calls()
    dag = (Dag.builder("a")
           .step("a", _flaky("a", calls, 2), retry=RetryPolicy(max_attempts=3, backoff_s=0.01))
           .step("b", _flaky("b", calls, 1))
           .edge("a", "b").build())
    wf = Workflow("own-retry", dag, schema())  # default: one attempt
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("own-retry", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "b", out
    assert calls.attempts("a") == [1, 2, 3]
    assert calls.attempts("b") == [1]  # b keeps the workflow's policy: no retry
    failed = [(e.step, e.attempt, e.final) for e in journal(rt, "own-retry", "r") if type(e) is ev.StepFailed]
    assert failed == [("a", 1, False), ("a", 2, False), ("b", 1, True)]


def test_step_retry_fewer_attempts_than_the_workflow(runtimes):
    calls = Calls()
    dag = Dag.builder("a").step("a", _flaky("a", calls, 5), retry=RetryPolicy(max_attempts=2)).build()
    wf = Workflow("fewer", dag, schema(), retry=RetryPolicy(max_attempts=9))
    rt = runtimes("memory", workflows=[wf])
    out = rt.start("fewer", {}).result(timeout=T)
    assert isinstance(out, Failed) and calls.attempts("a") == [1, 2]


def test_step_retry_on_is_the_steps_own(runtimes):
    calls = Calls()
    dag = Dag.builder("a").step("a", _flaky("a", calls, 1),
                                retry=RetryPolicy(max_attempts=3, retry_on=KeyError)).build()
    wf = Workflow("on", dag, schema(), retry=RetryPolicy(max_attempts=3))
    out = runtimes("memory", workflows=[wf]).start("on", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "ValueError"
    assert calls.attempts("a") == [1]  # a ValueError is not in the step's retry_on


def test_step_timeout_overrides_the_workflow_default(runtimes, store_kind):
    dag = (Dag.builder("slow")
           .step("slow", _sleeper("slow", 0.6))          # no timeout of its own: the workflow's none
           .step("quick", _sleeper("quick", 5), timeout_s=0.3)
           .edge("slow", "quick").build())
    wf = Workflow("own-timeout", dag, schema())
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("own-timeout", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "quick" and out.error_type == "StepTimeout", out
    assert "0.3s" in out.message


def test_step_timeout_longer_than_the_workflows(runtimes):
    dag = (Dag.builder("a").step("a", _sleeper("a", 0.5), timeout_s=20)
           .step("b", _sleeper("b", 0.5)).edge("a", "b").build())
    wf = Workflow("longer", dag, schema(), step_timeout_s=0.2)
    out = runtimes("memory", workflows=[wf]).start("longer", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "b" and out.error_type == "StepTimeout", out
    # with only a's own timeout the run finishes
    wf2 = Workflow("longer2", Dag.builder("a").step("a", _sleeper("a", 0.5), timeout_s=20).build(),
                   schema(), step_timeout_s=0.2)
    out2 = runtimes("memory", workflows=[wf2]).start("longer2", {}).result(timeout=T)
    assert isinstance(out2, Done) and out2.state["log"] == ["a"]


def test_map_step_options_apply_to_each_element(runtimes, store_kind):
    calls = Calls()

    def each(item, ctx):
        if calls.hit(f"e{item}", ctx) == 1:
            raise ValueError("first try fails")
        if item == 3:
            time.sleep(5)
        return item * 10

    sch = StateSchema({"items": LastWriteWins(), "out": AppendList()})
    dag = Dag.builder("m").step("m", Map(each, items="items", into="out"),
                                retry=RetryPolicy(max_attempts=2), timeout_s=1.0).build()
    rt = runtimes(store_kind, workflows=[Workflow("map-opts", dag, sch)])
    out = rt.start("map-opts", {"items": [1, 2]}).result(timeout=T)
    assert isinstance(out, Done) and out.state["out"] == [10, 20], out
    assert calls.attempts("e1") == [1, 2] and calls.attempts("e2") == [1, 2]
    out = rt.start("map-opts", {"items": [3]}).result(timeout=T)  # 2nd attempt overruns 1 s
    assert isinstance(out, Failed) and "StepTimeout" in (out.error_type + out.message), out


@pytest.mark.parametrize("kw, text", [
    ({"retry": 3}, "retry must be a RetryPolicy"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"timeout_s": "5"}, "timeout_s"),
    ({"timeout_s": True}, "timeout_s"),
])
def test_bad_step_options_are_refused_naming_the_step(kw, text):
    with pytest.raises(GraphError, match=text) as info:
        Dag.builder("a").step("a", lambda s, c: None, **kw)
    assert "'a'" in str(info.value)


def test_options_are_on_the_dag_and_the_workflow():
    pol = RetryPolicy(max_attempts=4)
    dag = Dag.builder("a").step("a", lambda s, c: None, retry=pol).step("b", lambda s, c: None, timeout_s=2) \
        .edge("a", "b").build()
    assert dag.options["a"].retry is pol and dag.options["b"].timeout_s == 2 and set(dag.options) == {"a", "b"}
    wf = Workflow("w", dag, schema(), step_timeout_s=7)
    assert wf.step_retry == {"a": pol, "b": wf.retry}
    assert wf.step_timeouts == {"a": 7, "b": 2}


def test_help_of_map_says_what_is_per_element():
    doc = Map.__doc__ or ""
    for word in ("Per element", "retries", "timeouts", "durability", "timeout_s", "retry="):
        assert word in doc, word
