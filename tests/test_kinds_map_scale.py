"""A Map over many items costs O(1) per item to schedule and to complete."""

from __future__ import annotations

import pytest

from atomr import Dag, Done, LastWriteWins, Map, MemoryStore, Runtime, StateSchema, Workflow
from atomr.graph import drive
from atomr.graph.progress import RunProgress

N = 30_000


def _sq(x, ctx):
    return x * x


@pytest.mark.timeout(60)  # a scan per completion made this minutes long
def test_a_map_over_30000_items_completes_in_item_order():
    dag = (Dag.builder("prep").step("prep", lambda s, c: {"items": list(range(N))})
           .step("m", Map(_sq, items="items", into="out", max_concurrency=64)).edge("prep", "m").build())
    wf = Workflow("mp", dag, StateSchema({"items": LastWriteWins(), "out": LastWriteWins()}))
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        out = rt.start("mp", {}).result(timeout=50)
    assert isinstance(out, Done), out
    assert out.state["out"] == [i * i for i in range(N)]


def test_map_decisions_take_from_a_queue_and_retry_in_front():
    p = RunProgress("w", "r")
    p.values = {"items": list(range(10))}
    p.items = {"m": {0: 0, 3: 9}}  # two elements already done (journaled before a crash)
    d = drive.map_begin("m", "items", p)
    assert isinstance(d, drive.Driven)
    assert list(d.todo) == [1, 2, 4, 5, 6, 7, 8, 9]
    assert drive.map_take(d, 3) == [1, 2, 4]
    assert drive.map_take(d, 3) == []  # three in flight: no more
    d.inflight.discard(2)
    d.todo.appendleft(2)  # element 2 is retried first
    assert drive.map_take(d, 3) == [2]
    assert drive.map_settle(d, p.items["m"], "out") is None
    d.failed = ("ValueError", "bad")
    d.inflight.clear()
    assert drive.map_take(d, 3) == []  # nothing new after a failure
    s = drive.map_settle(d, p.items["m"], "out")
    assert s is not None and s.how == "failed" and s.error == ("ValueError", "bad")


def test_map_over_a_non_list_is_a_named_failure():
    p = RunProgress("w", "r")
    p.values = {"items": 5}
    s = drive.map_begin("m", "items", p)
    assert isinstance(s, drive.Settle) and s.how == "failed" and s.error[0] == "MapError"
    assert "needs a list in channel 'items'" in s.error[1]


def test_child_run_ids_are_unambiguous():
    assert drive.child_run_id("par", "a/b", "s") != drive.child_run_id("par/a", "b", "s")
    assert drive.child_run_id("w", "r", "s") == "w/r/s"  # plain ids read as before
    assert drive.child_run_id("w%2F", "r", "s") != drive.child_run_id("w/", "r", "s")
