"""Regressions found by review: aliasing, inline steps while siblings run,
recover() with an idle live actor, async steps that cancel themselves."""

import asyncio
import threading
import time

import pytest

from atomr import (
    AppendList,
    Command,
    Dag,
    Done,
    Failed,
    LastWriteWins,
    LmdbStore,
    MemoryStore,
    Paused,
    RetryPolicy,
    Runtime,
    StateSchema,
    Workflow,
)
from atomr import events as ev
from atomr.store.base import AppendBatch
from atomr.store import format as fmt

T = 30


def test_the_callers_input_and_commands_are_not_shared_with_the_run(tmp_path):
    gate = threading.Event()

    def count(s, c):
        gate.wait(T)
        return {"n": len(s["items"])}

    def ask(s, c):
        return {"got": c.interrupt("?")}

    schema = StateSchema({"items": LastWriteWins(), "n": LastWriteWins(), "got": LastWriteWins()})
    wf = Workflow("w", Dag.builder("count").step("count", count).step("ask", ask).edge("count", "ask").build(), schema)
    with Runtime(store=LmdbStore(tmp_path / "s")) as rt:
        rt.register(wf)
        items = [1, 2]
        h = rt.start("w", {"items": items}, run_id="r")
        items.append(3)  # the caller reuses its list after start() returned
        gate.set()
        assert isinstance(h.result(timeout=T), Paused)
        answer = {"ok": [1]}
        h = rt.resume("w", "r", Command(resume=answer))
        answer["ok"].append(2)
        out = h.result(timeout=T)
        assert isinstance(out, Done)
        assert out.state["items"] == [1, 2] and out.state["n"] == 2
        assert out.state["got"] == {"ok": [1]}
        # the live state equals the journal's
        assert rt.history("w", "r")[-1].values == out.state


def test_a_retried_step_does_not_run_inline_while_a_sibling_runs(tmp_path):
    """The sibling's completion must reach the journal while the retry runs."""
    attempts = []
    release = threading.Event()

    def fast(s, c):
        return {"log": ["fast"]}

    def flaky(s, c):
        attempts.append(c.attempt)
        if c.attempt == 1:
            raise RuntimeError("first attempt fails")
        release.wait(T)
        return {"log": ["flaky"]}

    wf = Workflow("w", Dag.builder("fast").step("fast", fast).step("flaky", flaky).build(),
                  StateSchema({"log": AppendList()}), retry=RetryPolicy(max_attempts=2))
    with Runtime(store=LmdbStore(tmp_path / "s"), durability="sync") as rt:
        rt.register(wf)
        h = rt.start("w", {}, run_id="r")
        deadline = time.monotonic() + T
        while True:  # fast's completion becomes durable while flaky's retry still runs
            done = [e.step for _, e in rt.store.journal("w", "r") if type(e) is ev.StepCompleted]
            if "fast" in done:
                break
            assert time.monotonic() < deadline, "the sibling's writes were not committed"
            time.sleep(0.02)
        release.set()
        assert isinstance(h.result(timeout=T), Done)
        assert attempts == [1, 2]


def test_recover_carries_on_a_run_whose_actor_was_fetched_first(tmp_path):
    path = tmp_path / "s"
    wf = Workflow("w", Dag.builder("a").step("a", lambda s, c: {"n": 1}).build(),
                  StateSchema({"n": LastWriteWins()}))
    with Runtime(store=LmdbStore(path)) as rt:  # a run left "running", as a crash leaves it
        rt.register(wf)
        batch = AppendBatch("w", "r", 1, [fmt.encode_event(ev.RunStarted({}, {}, 1))], status="running",
                            super_step=0, meta={})
        rt._maintain(lambda store: store.write([batch]))
    with Runtime(store=LmdbStore(path)) as rt:
        rt.register(wf)
        rt.ref("w", "r")  # an idle actor now holds the run
        handles = rt.recover()
        assert [h.run_id for h in handles] == ["r"]
        assert isinstance(handles[0].result(timeout=T), Done)
        assert rt.live_runs() == 0


def test_an_async_step_that_cancels_itself_fails_its_attempt():
    async def cancels(s, c):
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut

    wf = Workflow("w", Dag.builder("a").step("a", cancels).build(), StateSchema({"n": LastWriteWins()}))
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        out = rt.start("w", {}, run_id="r").result(timeout=T)
        assert isinstance(out, Failed) and out.error_type == "StepCrashed"
        assert rt.live_runs() == 0
