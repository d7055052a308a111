"""Map(fn, items, into, max_concurrency): results in input order, bounded
concurrency, per-element journaling and interrupts, clear errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

from atomr import (AppendList, Command, Dag, Done, Failed, LastWriteWins, Map, Paused, RetryPolicy,
                   StateSchema, Workflow)
from atomr import events as ev
from atomr.errors import AmbiguousResumeError, GraphError
from kinds_scripts.helpers import events, example, maybe_reopen, of_type
from workflows import T, Calls, logger, runtimes, store_kind, wait_for  # noqa: F401 - fixtures


def sch() -> StateSchema:
    return StateSchema({"log": AppendList(), "items": LastWriteWins(), "out": LastWriteWins(),
                        "acc": (AppendList(), ["x"])})


def map_wf(fn, max_concurrency: int = 4, into: str = "out", first: bool = False, wid: str = "map",
           **kw) -> Workflow:
    m = Map(fn, items="items", into=into, max_concurrency=max_concurrency)
    if first:
        dag = Dag.builder("m").step("m", m).step("post", logger("post")).edge("m", "post").build()
    else:
        dag = (Dag.builder("pre").step("pre", logger("pre")).step("m", m).step("post", logger("post"))
               .edge("pre", "m").edge("m", "post").build())
    return Workflow(wid, dag, sch(), **kw)


def test_results_are_in_input_order_whatever_the_finishing_order(runtimes, store_kind):
    n = 4
    finished = [threading.Event() for _ in range(n)]

    def fn(item, ctx):
        if item + 1 < n:  # wait for the next element: they finish last to first
            assert finished[item + 1].wait(T)
        finished[item].set()
        return f"r{item}"

    rt = runtimes(store_kind, workflows=[map_wf(fn, max_concurrency=n)], step_workers=n)
    out = rt.start("map", {"items": list(range(n))}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["out"] == ["r0", "r1", "r2", "r3"]
    assert [e.index for e in of_type(rt, "map", "r", ev.ItemCompleted)] == [3, 2, 1, 0]


def test_max_concurrency_is_respected(runtimes, store_kind):
    k, n = 3, 9
    lock = threading.Lock()
    active = [0]
    peak = [0]
    barrier = threading.Barrier(k)  # a batch of k must run together: the bound is reached

    def fn(item, ctx):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        barrier.wait(T)
        with lock:
            active[0] -= 1
        return item * item

    rt = runtimes(store_kind, workflows=[map_wf(fn, max_concurrency=k)], step_workers=2 * k)
    out = rt.start("map", {"items": list(range(n))}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["out"] == [i * i for i in range(n)]
    assert peak[0] == k
    # the journal agrees: never more than k elements started and not completed
    running, most = set(), 0
    for e in events(rt, "map", "r"):
        if type(e) is ev.StepStarted and e.step.startswith("m["):
            running.add(e.step)
            most = max(most, len(running))
        elif type(e) is ev.ItemCompleted:
            running.discard(f"m[{e.index}]")
    assert most == k and not running


def test_element_interrupts_have_their_own_ids_and_only_unfinished_elements_rerun(runtimes, store_kind):
    calls = Calls()

    def fn(item, ctx):
        calls.hit(f"item{item}", ctx)
        assert ctx.item == item and ctx.step_id == "m"
        if item in (1, 3):
            return f"{item}:{ctx.interrupt({'item': item})}"
        return f"{item}"

    rt = runtimes(store_kind, workflows=[map_wf(fn, max_concurrency=2)])
    out = rt.start("map", {"items": [0, 1, 2, 3, 4]}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "interrupt" and out.steps == ["m"], out
    intrs = sorted(out.interrupts, key=lambda i: i.payload["item"])  # raised in any order
    assert [(i.step_id, i.payload) for i in intrs] == [("m", {"item": 1}), ("m", {"item": 3})]
    ids = [i.id for i in intrs]
    assert len(set(ids)) == 2 and ids[0].startswith("m[1]") and ids[1].startswith("m[3]")
    assert sorted(e.index for e in of_type(rt, "map", "r", ev.ItemCompleted)) == [0, 2, 4]
    with pytest.raises(AmbiguousResumeError):
        rt.resume("map", "r", Command(resume="?"))
    rt = maybe_reopen(runtimes, rt, store_kind)
    assert sorted(i.id for i in rt.get_state("map", "r").interrupts) == sorted(ids)
    out = rt.resume("map", "r", Command(resume={ids[1]: "b"})).result(timeout=T)
    assert isinstance(out, Paused) and [i.id for i in out.interrupts] == [ids[0]], out
    out = rt.resume("map", "r", Command(resume="a")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["out"] == ["0", "1:a", "2", "3:b", "4"] and out.state["log"] == ["pre", "post"]
    assert dict(calls.counts) == {"item0": 1, "item1": 2, "item2": 1, "item3": 2, "item4": 1}


def test_all_element_interrupts_answered_at_once(runtimes, store_kind):
    def fn(item, ctx):
        return ctx.interrupt(item) * 2

    rt = runtimes(store_kind, workflows=[map_wf(fn)])
    out = rt.start("map", {"items": [1, 2, 3]}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and len(out.interrupts) == 3, out
    answers = {i.id: i.payload * 10 for i in out.interrupts}
    out = rt.resume("map", "r", Command(resume=answers)).result(timeout=T)
    assert isinstance(out, Done) and out.state["out"] == [20, 40, 60], out


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("items,shown", [(None, "NoneType"), ("abc", "str"), ({"a": 1}, "dict"), (7, "int")])
def test_missing_or_non_list_items_fail_the_run(runtimes, store_kind, items, shown, first):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[map_wf(lambda item, ctx: calls.hit("el"), first=first)])
    data = {} if items is None else {"items": items}
    out = rt.start("map", data, run_id="r").result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "MapError" and out.step_id == "m"
    assert "'items'" in out.message and shown in out.message and "list" in out.message
    assert calls["el"] == 0
    assert rt.get_state("map", "r").status == "failed"


@pytest.mark.parametrize("first", [True, False])
def test_empty_list(runtimes, store_kind, first):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[map_wf(lambda item, ctx: calls.hit("el"), first=first)])
    out = rt.start("map", {"items": []}).result(timeout=T)
    assert isinstance(out, Done) and out.state["out"] == [] and out.state["log"][-1] == "post", out
    assert calls["el"] == 0


def test_results_go_through_the_reducer_of_into(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[map_wf(lambda item, ctx: item + 1, into="acc")])
    out = rt.start("map", {"items": [1, 2, 3]}).result(timeout=T)
    assert isinstance(out, Done) and out.state["acc"] == ["x", 2, 3, 4], out


def test_element_keys_and_contexts(runtimes, store_kind):
    seen = {}
    lock = threading.Lock()

    def fn(item, ctx):
        with lock:
            seen[item] = (ctx.item, ctx.idempotency_key, ctx.run_id, ctx.attempt)
        return item

    rt = runtimes(store_kind, workflows=[map_wf(fn)])
    assert isinstance(rt.start("map", {"items": ["a", "b", "c"]}, run_id="r").result(timeout=T), Done)
    assert [seen[x][0] for x in "abc"] == [0, 1, 2]
    assert len({seen[x][1] for x in "abc"}) == 3
    assert all(seen[x][2] == "r" and seen[x][3] == 1 for x in "abc")


def test_element_error_fails_the_run_and_a_retry_reruns_only_that_element(runtimes, store_kind):
    calls = Calls()

    def fn(item, ctx):
        if calls.hit(f"item{item}") == 1 and item == 2:
            raise ConnectionError("flaky")
        return item

    wf = map_wf(fn, retry=RetryPolicy(max_attempts=2, backoff_s=0.0))
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("map", {"items": [0, 1, 2, 3]}).result(timeout=T)
    assert isinstance(out, Done) and out.state["out"] == [0, 1, 2, 3], out
    assert dict(calls.counts) == {"item0": 1, "item1": 1, "item2": 2, "item3": 1}

    def bad(item, ctx):
        if item == 1:
            raise ValueError(f"cannot handle {item}")
        return item

    rt.register(map_wf(bad, wid="map-bad"))
    out = rt.start("map-bad", {"items": [0, 1, 2]}).result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "ValueError" and out.step_id == "m" and "cannot handle 1" in out.message


def test_async_element_function(runtimes, store_kind):
    async def fn(item, ctx):
        await asyncio.sleep(0)
        return item * 3

    rt = runtimes(store_kind, workflows=[map_wf(fn, max_concurrency=2)])
    out = rt.start("map", {"items": [1, 2, 3, 4]}).result(timeout=T)
    assert isinstance(out, Done) and out.state["out"] == [3, 6, 9, 12], out


def test_map_arguments_are_checked():
    with pytest.raises(GraphError, match="max_concurrency"):
        Map(lambda i, c: i, items="items", into="out", max_concurrency=0)
    with pytest.raises(GraphError, match="callable"):
        Map("nope", items="items", into="out")  # type: ignore[arg-type]


def test_example():
    mod = example("kinds_map")
    assert mod.workflow.id == "kinds-map"
    out = mod.main()
    assert isinstance(out, Done)
    assert len(out.state["summaries"]) == 5
    assert [s.split(":")[0] for s in out.state["summaries"]] == ["#0", "#1", "#2", "#3", "#4"]
