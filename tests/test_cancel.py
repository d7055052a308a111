"""Cancel (issue 15): ``rt.cancel`` / ``await rt.acancel`` / ``atomr cancel``.

A cancelled run ends with ``Cancelled(workflow_id, run_id, super_step, reason)``,
its status is "cancelled", the super-step in flight is not committed (writes of
steps that finish after the cancel are discarded), an ``async def`` step gets
``asyncio.CancelledError``, a plain step sees ``ctx.cancelled``, a Subgraph's
child runs are cancelled too; a cancelled run cannot be resumed, it can be
forked; the cancel is durable once ``cancel()`` returns (SIGKILL tests).

Every wait is bounded; steps meet on Events, not sleeps. A known bug would be marked
``xfail(strict=True)`` with the evidence in their reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from atomr import (Cancelled, Command, Done, Failed, LastWriteWins, Loop, Map, MemoryStore, Paused,
                   RetryPolicy, Runtime, Subgraph, Workflow)
from atomr import events as ev
from atomr.errors import AtomrError, RunNotFound, RunNotPaused, RunOver, RuntimeClosed, WorkflowNotFound
from atomr.graph.drive import child_run_id
from cancel_scripts import cli_flow
from cancel_scripts import kill_cancel as kc
from workflows import (ALL_STORES, CRASH_KINDS, PERSISTENT, T, Calls, CrashTarget, asker, build,  # noqa: F401
                       crash_targets, journal, logger, runtimes, schema, store_kinds, store_state, wait_for)

#: cancel on every store (the durable-cancel cases on every persistent one)
store_kind = store_kinds(*ALL_STORES)
persistent_kind = store_kinds(*PERSISTENT)
crash_target = crash_targets(*CRASH_KINDS)

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
#: a prompt answer is well under this (a hang is caught long before ``T``)
PROMPT = 3.0
#: how long an xfailed test waits for what a fix would do at once
SHORT = 1.5


# --- steps ----------------------------------------------------------------------------


class Blocker:
    """A plain step that waits until the run is cancelled, polling ``ctx.cancelled``
    (for at most ``limit`` seconds), then returns ``writes``."""

    def __init__(self, name: str, writes: dict[str, Any] | None = None, limit: float = T) -> None:
        self.name = name
        self.writes = {"log": [name], "n": 99} if writes is None else writes
        self.limit = limit
        self.entered = threading.Event()
        self.saw_cancel = threading.Event()
        self.left = threading.Event()
        self.calls = 0

        def step(state: Any, ctx: Any) -> Any:
            self.calls += 1
            self.entered.set()
            deadline = time.monotonic() + self.limit
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.002)
            if ctx.cancelled:
                self.saw_cancel.set()
            self.left.set()
            return dict(self.writes)

        step.__name__ = f"block_{name}"
        self.fn = step


def chain_wf(wid: str, middle: Any, calls: Calls | None = None, **wf_kw: Any) -> Workflow:
    """pre -> work -> post."""
    return build(wid, {"pre": logger("pre", calls), "work": middle, "post": logger("post", calls)},
                 [("pre", "work"), ("work", "post")], **wf_kw)


def ask_wf(wid: str, calls: Calls | None = None) -> Workflow:
    """pre -> ask (interrupts) -> post."""
    return build(wid, {"pre": logger("pre", calls), "ask": asker("ask", calls), "post": logger("post", calls)},
                 [("pre", "ask"), ("ask", "post")])


def labels(rt: Runtime, wid: str, run_id: str) -> list[tuple[int, str]]:
    return [(c.super_step, c.label) for c in rt.history(wid, run_id)]


def assert_cancelled_at(rt: Runtime, wid: str, run_id: str, super_step: int, reason: str) -> None:
    """The run is cancelled after ``super_step`` committed super-steps and nothing later was committed."""
    v = rt.get_state(wid, run_id)
    assert v.status == "cancelled", v
    assert v.super_step == super_step
    hist = labels(rt, wid, run_id)
    assert hist[-1] == (super_step, "cancelled"), hist
    assert not [lb for ss, lb in hist if lb.startswith("layer:") and ss > super_step], hist
    assert run_id in [s.run_id for s in rt.runs(status="cancelled", workflow_id=wid)]
    assert run_id not in [s.run_id for s in rt.runs(status="running")]
    events = journal(rt, wid, run_id)
    assert type(events[-1]) is ev.RunCancelled and events[-1].reason == reason
    assert [e.super_step for e in events if type(e) is ev.SuperStepCommitted] == list(range(1, super_step + 1))


def reopened(runtimes: Any, rt: Runtime) -> Runtime:
    """A persistent store: a new runtime on the same data (a restart); memory: ``rt``."""
    return rt if isinstance(rt.store, MemoryStore) else runtimes.reopen(rt)


def drain_pool(rt: Runtime) -> None:
    """Run s0 -> (p0, p1): p0 and p1 go to the step pool's FIFO queue behind
    whatever is queued there, so once they are done, every sync unit queued
    before them was taken (or skipped): nothing queued earlier starts later."""
    if "sentinel" not in rt.workflows:
        rt.register(build("sentinel", {"s0": logger("s0"), "p0": logger("p0"), "p1": logger("p1")},
                          [("s0", "p0"), ("s0", "p1")]))
    out = rt.start("sentinel", {}).result(timeout=T)
    assert isinstance(out, Done), out


# --- 1. a running plain step that polls ctx.cancelled ---------------------------------------


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_cancel_a_running_plain_step_that_polls_ctx_cancelled(runtimes, store_kind, durability):
    calls = Calls()
    work = Blocker("work", {"log": ["work"], "n": 99})
    wf = chain_wf("c1", work.fn, calls)
    rt = runtimes(store_kind, durability, workflows=[wf])
    h = rt.start("c1", {"n": 1}, run_id="r1")
    assert work.entered.wait(T)
    t0 = time.monotonic()
    out = rt.cancel("c1", "r1", "stop", timeout=T)
    assert time.monotonic() - t0 < PROMPT
    assert out == Cancelled("c1", "r1", 1, "stop")
    assert type(out) is Cancelled and out.status == "cancelled"
    assert work.left.wait(T) and work.saw_cancel.is_set()  # it returned early
    assert h.result(timeout=T) == out  # the run's own handle gets the same outcome
    v = rt.get_state("c1", "r1")
    assert v.values["log"] == ["pre"] and v.values["n"] == 1  # work's writes discarded
    assert_cancelled_at(rt, "c1", "r1", 1, "stop")
    events = journal(rt, "c1", "r1")
    assert not [e for e in events if type(e) is ev.StepCompleted and e.step == "work"]
    assert calls["post"] == 0 and work.calls == 1
    rt = reopened(runtimes, rt)  # LMDB: the same after a restart, and recover() leaves it alone
    assert rt.recover() == []
    assert rt.get_state("c1", "r1").values == v.values
    assert_cancelled_at(rt, "c1", "r1", 1, "stop")
    assert rt.cancel("c1", "r1", "again", timeout=T) == out
    assert calls["post"] == 0 and work.calls == 1


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_plain_step_that_ignores_the_cancel_has_its_writes_discarded(runtimes, store_kind, durability):
    """cancel() cannot kill a plain step: once the step returns (after the cancel)
    its writes are discarded and nothing after it runs."""
    calls = Calls()
    noticed, release, left = threading.Event(), threading.Event(), threading.Event()
    entered = threading.Event()

    def stubborn(state: Any, ctx: Any) -> Any:
        entered.set()
        deadline = time.monotonic() + T
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.002)
        noticed.set()
        release.wait(T)  # keeps going after the cancel
        left.set()
        return {"log": ["stubborn"], "n": 42}

    rt = runtimes(store_kind, durability, workflows=[chain_wf("c2", stubborn, calls)])
    h = rt.start("c2", {}, run_id="r1")
    assert entered.wait(T)
    got: dict[str, Any] = {}
    th = threading.Thread(target=lambda: got.setdefault("out", rt.cancel("c2", "r1", "late", timeout=T)))
    th.start()
    assert noticed.wait(T)
    release.set()
    th.join(T)
    assert not th.is_alive()
    assert got["out"] == Cancelled("c2", "r1", 1, "late")
    assert left.wait(T)
    assert h.result(timeout=T) == got["out"]
    v = rt.get_state("c2", "r1")
    assert v.values["log"] == ["pre"] and v.values["n"] == 0
    assert_cancelled_at(rt, "c2", "r1", 1, "late")
    assert calls["post"] == 0


def test_cancel_right_after_start(runtimes, store_kind):
    calls = Calls()
    work = Blocker("work")
    rt = runtimes(store_kind, workflows=[chain_wf("c3", work.fn, calls)])
    h = rt.start("c3", {}, run_id="r1")
    out = rt.cancel("c3", "r1", timeout=T)
    assert out.run_id == "r1" and out.reason == "" and out.super_step in (0, 1)
    assert h.result(timeout=T) == out
    assert_cancelled_at(rt, "c3", "r1", out.super_step, "")
    assert calls["post"] == 0
    assert work.calls <= 1 and (work.calls == 0 or work.left.wait(T))


def test_cancel_during_a_retry_backoff_is_prompt(runtimes, store_kind):
    failed_once = threading.Event()
    attempts: list[int] = []

    def flaky(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        failed_once.set()
        raise ValueError("try later")

    wf = chain_wf("c4", flaky, retry=RetryPolicy(max_attempts=5, backoff_s=T))
    rt = runtimes(store_kind, workflows=[wf])
    h = rt.start("c4", {}, run_id="r1")
    assert failed_once.wait(T)
    t0 = time.monotonic()
    out = rt.cancel("c4", "r1", "give up", timeout=T)
    assert time.monotonic() - t0 < PROMPT  # not held up by the backoff timer
    assert out == Cancelled("c4", "r1", 1, "give up")
    assert h.result(timeout=T) == out
    assert_cancelled_at(rt, "c4", "r1", 1, "give up")
    assert attempts == [1]


# --- the cancel is durable once cancel() returns ----------------------------------------------


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_store_says_cancelled_as_soon_as_cancel_returns_for_a_running_run(runtimes, persistent_kind, durability):
    seen = []
    for i in range(3):
        work = Blocker("work")
        wid = f"d{i}"
        rt = runtimes(persistent_kind, durability, workflows=[chain_wf(wid, work.fn)])
        h = rt.start(wid, {}, run_id="r1")
        assert work.entered.wait(T)
        rt.cancel(wid, "r1", "stop", timeout=T)
        s = rt.store.summary(wid, "r1")
        seen.append(s.status if s is not None else "absent")
        assert isinstance(h.result(timeout=T), Cancelled)
    assert seen == ["cancelled"] * 3


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_store_says_cancelled_as_soon_as_cancel_returns_for_a_paused_run(runtimes, persistent_kind, durability):
    rt = runtimes(persistent_kind, durability, workflows=[ask_wf("dp")])
    assert isinstance(rt.start("dp", {}, run_id="r1").result(timeout=T), Paused)
    rt.cancel("dp", "r1", "stop", timeout=T)
    assert rt.store.summary("dp", "r1").status == "cancelled"


# --- 2. an async def step gets CancelledError -----------------------------------------------


@pytest.mark.parametrize("swallow", [False, True], ids=["reraise", "swallow"])
def test_async_step_gets_cancelled_error(runtimes, store_kind, swallow):
    calls = Calls()
    entered, left = threading.Event(), threading.Event()
    seen: list[str] = []

    async def slow(state: Any, ctx: Any) -> Any:
        entered.set()
        try:
            await asyncio.sleep(T)
            seen.append("slept")
        except asyncio.CancelledError:
            seen.append("CancelledError")
            if not swallow:
                raise
        finally:
            seen.append("finally")
            left.set()
        return {"log": ["slow"], "n": 7}  # a step that swallows it: its writes are discarded anyway

    rt = runtimes(store_kind, workflows=[chain_wf("a1", slow, calls)])
    h = rt.start("a1", {}, run_id="r1")
    assert entered.wait(T)
    t0 = time.monotonic()
    out = rt.cancel("a1", "r1", "enough", timeout=T)
    assert time.monotonic() - t0 < PROMPT
    assert out == Cancelled("a1", "r1", 1, "enough")
    assert left.wait(T)
    assert seen == ["CancelledError", "finally"]
    assert h.result(timeout=T) == out
    v = rt.get_state("a1", "r1")
    assert v.values["log"] == ["pre"] and v.values["n"] == 0
    assert_cancelled_at(rt, "a1", "r1", 1, "enough")
    assert calls["post"] == 0


# --- 3. paused, failed, done, unknown; resume refused; fork; idempotent ---------------------------


def test_cancel_a_paused_run_then_resume_is_refused_and_fork_works(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[ask_wf("p1", calls)])
    assert isinstance(rt.start("p1", {"n": 5}, run_id="r1").result(timeout=T), Paused)
    out = rt.cancel("p1", "r1", "no longer needed", timeout=T)
    assert out == Cancelled("p1", "r1", 1, "no longer needed")
    assert_cancelled_at(rt, "p1", "r1", 1, "no longer needed")
    assert "r1" not in [s.run_id for s in rt.runs(status="paused")]

    with pytest.raises(RunNotPaused) as exc:
        rt.resume("p1", "r1", Command(resume="yes"))
    assert "cancelled" in str(exc.value) and "fork" in str(exc.value)
    assert exc.value.status == "cancelled"

    # cancelling again returns the same outcome (the first reason) and writes nothing
    before = store_state(rt)
    assert rt.cancel("p1", "r1", "second reason", timeout=T) == out
    assert store_state(rt) == before

    # a fork of the cancelled run is a paused copy that runs to the end
    fid = rt.fork("p1", "r1", 1)
    assert rt.get_state("p1", fid).status == "paused"
    got = rt.resume("p1", fid, Command()).result(timeout=T)
    assert isinstance(got, Paused) and [i.step_id for i in got.interrupts] == ["ask"]
    got = rt.resume("p1", fid, Command(resume="yes")).result(timeout=T)
    assert isinstance(got, Done), got
    assert got.state["log"] == ["pre", "ask", "post"] and got.state["answers"] == [["ask", "yes"]]
    assert got.state["n"] == 5
    assert rt.get_state("p1", "r1").status == "cancelled"  # the original stays cancelled

    rt = reopened(runtimes, rt)
    assert rt.cancel("p1", "r1", timeout=T) == out
    with pytest.raises(RunNotPaused):
        rt.resume("p1", "r1", Command())
    assert rt.recover() == []


def test_cancel_a_failed_run(runtimes, store_kind):
    def boom(state: Any, ctx: Any) -> Any:
        raise ValueError("boom")

    rt = runtimes(store_kind, workflows=[chain_wf("f1", boom)])
    failed = rt.start("f1", {}, run_id="r1").result(timeout=T)
    assert isinstance(failed, Failed) and failed.step_id == "work"
    out = rt.cancel("f1", "r1", "abandoned", timeout=T)
    assert out == Cancelled("f1", "r1", 1, "abandoned")
    assert_cancelled_at(rt, "f1", "r1", 1, "abandoned")
    assert rt.get_state("f1", "r1").values["log"] == ["pre"]
    with pytest.raises(RunNotPaused) as exc:
        rt.resume("f1", "r1", Command())
    assert "cancelled" in str(exc.value) and "fork" in str(exc.value)
    assert rt.cancel("f1", "r1", timeout=T) == out


def test_cancel_refusals_write_nothing(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[build("ok", {"a": logger("a")}), ask_wf("p2")])
    assert isinstance(rt.start("ok", {}, run_id="d1").result(timeout=T), Done)
    assert isinstance(rt.start("p2", {}, run_id="r1").result(timeout=T), Paused)
    before = store_state(rt)

    with pytest.raises(RunOver) as exc:
        rt.cancel("ok", "d1", "too late", timeout=T)
    assert "done" in str(exc.value) and "fork" in str(exc.value)
    with pytest.raises(RunNotFound):
        rt.cancel("ok", "nope", timeout=T)
    with pytest.raises(WorkflowNotFound):
        rt.cancel("no-such-workflow", "r1", timeout=T)
    for bad_reason in (5, None, b"bytes", ["list"]):
        with pytest.raises(AtomrError, match="reason"):
            rt.cancel("p2", "r1", bad_reason, timeout=T)  # type: ignore[arg-type]
    for bad_id in ("", 5, None):
        with pytest.raises(AtomrError):
            rt.cancel("p2", bad_id, timeout=T)  # type: ignore[arg-type]
    for bad_timeout in (-1, "x", float("nan")):
        with pytest.raises(AtomrError):
            rt.cancel("p2", "r1", timeout=bad_timeout)  # type: ignore[arg-type]

    assert store_state(rt) == before
    assert rt.get_state("ok", "d1").status == "done"
    assert rt.get_state("p2", "r1").status == "paused"
    got = rt.resume("p2", "r1", Command(resume="fine")).result(timeout=T)  # still resumable
    assert isinstance(got, Done)
    rt.close()
    with pytest.raises(RuntimeClosed):
        rt.cancel("p2", "r1", timeout=T)


def test_cancel_with_an_unstorable_reason_is_refused_and_writes_nothing(runtimes):
    rt = runtimes("memory", workflows=[ask_wf("p3")])
    assert isinstance(rt.start("p3", {}, run_id="r1").result(timeout=T), Paused)
    try:
        with pytest.raises(AtomrError):
            rt.cancel("p3", "r1", "bad \ud800 reason", timeout=PROMPT)
    finally:
        status = rt.get_state("p3", "r1").status
    assert status == "paused"


# --- 4. Subgraph: the child run is cancelled too -----------------------------------------------


def _parent(child: Workflow, wid: str = "parent") -> Workflow:
    return build(wid, {"pre": logger("pre"), "sub": Subgraph(child, inputs=["n"], outputs=["log"]),
                       "post": logger("post")}, [("pre", "sub"), ("sub", "post")])


def _cancel_parent_and_wait_for_child(rt: Runtime, child_wid: str, entered: threading.Event) -> str:
    h = rt.start("parent", {}, run_id="r1")
    assert entered.wait(T)
    t0 = time.monotonic()
    out = rt.cancel("parent", "r1", "stop", timeout=T)
    assert time.monotonic() - t0 < PROMPT
    assert out == Cancelled("parent", "r1", 1, "stop")
    assert h.result(timeout=T) == out
    assert_cancelled_at(rt, "parent", "r1", 1, "stop")
    cid = child_run_id("parent", "r1", "sub")
    return str(wait_for(lambda: (rt.store.summary(child_wid, cid) is not None
                                 and rt.store.summary(child_wid, cid).status in ("cancelled", "done", "failed")
                                 and rt.store.summary(child_wid, cid).status),
                        T, "the child run to end"))


def test_subgraph_child_with_an_async_step_is_cancelled_with_its_parent(runtimes, store_kind):
    entered, left = threading.Event(), threading.Event()
    seen: list[str] = []

    async def slow(state: Any, ctx: Any) -> Any:
        entered.set()
        try:
            await asyncio.sleep(T)
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise
        finally:
            left.set()
        return {"log": ["slow"]}

    child = build("child", {"c1": logger("c1"), "c2": slow}, [("c1", "c2")])
    rt = runtimes(store_kind, workflows=[_parent(child)])
    assert _cancel_parent_and_wait_for_child(rt, "child", entered) == "cancelled"
    assert left.wait(T) and seen == ["CancelledError"]
    cid = child_run_id("parent", "r1", "sub")
    assert rt.get_state("child", cid).values["log"] == ["c1"]
    assert labels(rt, "child", cid)[-1][1] == "cancelled"
    assert "parent/r1" in journal(rt, "child", cid)[-1].reason  # the child says why
    assert rt.get_state("parent", "r1").values["log"] == ["pre"]


def test_subgraph_child_with_parallel_plain_steps_is_cancelled_with_its_parent(runtimes, store_kind):
    x = Blocker("x", {"log": ["x"]})
    y = Blocker("y", {"log": ["y"]})
    both = threading.Event()
    threading.Thread(target=lambda: x.entered.wait(T) and y.entered.wait(T) and both.set(), daemon=True).start()
    child = build("child", {"c1": logger("c1"), "x": x.fn, "y": y.fn}, [("c1", "x"), ("c1", "y")])
    rt = runtimes(store_kind, workflows=[_parent(child)])
    assert _cancel_parent_and_wait_for_child(rt, "child", both) == "cancelled"
    assert x.left.wait(T) and y.left.wait(T) and x.saw_cancel.is_set() and y.saw_cancel.is_set()
    cid = child_run_id("parent", "r1", "sub")
    assert rt.get_state("child", cid).values["log"] == ["c1"]


def test_subgraph_child_with_an_inline_plain_step_is_cancelled_with_its_parent(runtimes):
    c2 = Blocker("c2", {"log": ["c2"]}, limit=SHORT)  # gives up waiting after SHORT
    child = build("child", {"c1": logger("c1"), "c2": c2.fn}, [("c1", "c2")])
    rt = runtimes("memory", workflows=[_parent(child)])
    status = _cancel_parent_and_wait_for_child(rt, "child", c2.entered)
    assert c2.left.wait(T)
    assert (status, c2.saw_cancel.is_set()) == ("cancelled", True)


def test_a_paused_subgraph_child_is_cancelled_with_its_parent(runtimes):
    child = build("child", {"c1": logger("c1"), "c2": asker("c2")}, [("c1", "c2")])
    rt = runtimes("memory", workflows=[_parent(child)])
    got = rt.start("parent", {}, run_id="r1").result(timeout=T)
    assert isinstance(got, Paused)
    cid = child_run_id("parent", "r1", "sub")
    assert rt.get_state("child", cid).status == "paused"
    assert rt.cancel("parent", "r1", "stop", timeout=T) == Cancelled("parent", "r1", 1, "stop")
    wait_for(lambda: rt.store.summary("child", cid).status != "paused", SHORT, "the child to leave 'paused'")
    assert rt.get_state("child", cid).status == "cancelled"


# --- 5. Map / Loop in flight --------------------------------------------------------------------


def _map_wf(element: Any, max_concurrency: int) -> Workflow:
    sch = schema(items=(LastWriteWins(), []), out=LastWriteWins())
    return build("mp", {"pre": logger("pre"), "m": Map(element, items="items", into="out",
                                                         max_concurrency=max_concurrency),
                        "post": logger("post")}, [("pre", "m"), ("m", "post")], sch=sch)


def _run_map_and_cancel(runtimes: Any, store_kind: str, max_concurrency: int, workers: int) -> int:
    """Start a Map of 20 elements, cancel it once ``min(max_concurrency, workers)``
    run, drain the pool; returns how many elements were ever called."""
    calls = Calls()
    started = threading.Semaphore(0)
    left = threading.Semaphore(0)

    def element(item: int, ctx: Any) -> int:
        calls.hit("el")
        started.release()
        deadline = time.monotonic() + T
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.002)
        left.release()
        return item * 10

    rt = runtimes(store_kind, workflows=[_map_wf(element, max_concurrency)], step_workers=workers)
    h = rt.start("mp", {"items": list(range(20))}, run_id="r1")
    running = min(max_concurrency, workers)
    for _ in range(running):
        assert started.acquire(timeout=T)
    out = rt.cancel("mp", "r1", "stop", timeout=T)
    assert out == Cancelled("mp", "r1", 1, "stop")
    assert h.result(timeout=T) == out
    if max_concurrency > workers:  # elements wait in the pool's queue: let them (not) start
        drain_pool(rt)
    n = calls["el"]
    for _ in range(n):
        assert left.acquire(timeout=T)
    v = rt.get_state("mp", "r1")
    assert v.values["out"] is None and v.values["log"] == ["pre"]
    assert_cancelled_at(rt, "mp", "r1", 1, "stop")
    rt.close()
    return calls["el"]


def test_cancel_stops_a_map_from_starting_more_elements(runtimes, store_kind):
    assert _run_map_and_cancel(runtimes, store_kind, max_concurrency=2, workers=4) == 2


def test_cancel_stops_map_elements_queued_on_the_pool_from_starting(runtimes):
    counts = [_run_map_and_cancel(runtimes, "memory", max_concurrency=16, workers=4) for _ in range(5)]
    assert counts == [4] * 5


def test_cancel_stops_a_loop_from_starting_more_iterations(runtimes, store_kind):
    calls = Calls()
    entered, left = threading.Event(), threading.Event()

    def body(state: Any, ctx: Any) -> Any:
        n = state["n"]
        calls.hit("body")
        if n == 2:
            entered.set()
            deadline = time.monotonic() + T
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.002)
            left.set()
        return {"n": n + 1, "log": [f"it{n}"]}

    wf = build("lp", {"pre": logger("pre"), "loop": Loop(body, while_=lambda s: s["n"] < 100, max_iterations=200),
                      "post": logger("post", calls)}, [("pre", "loop"), ("loop", "post")])
    rt = runtimes(store_kind, workflows=[wf])
    h = rt.start("lp", {}, run_id="r1")
    assert entered.wait(T)
    out = rt.cancel("lp", "r1", "stop", timeout=T)
    assert out == Cancelled("lp", "r1", 1, "stop")
    assert h.result(timeout=T) == out
    assert left.wait(T)  # the next iteration would be sent by the run's turn, which ended with the cancel
    assert calls["body"] == 3 and calls["post"] == 0
    v = rt.get_state("lp", "r1")
    assert "it2" not in v.values["log"] and v.values["n"] <= 2  # the cancelled iteration's writes are gone
    assert_cancelled_at(rt, "lp", "r1", 1, "stop")


# --- 6. a parallel layer: no write of the layer reaches the state --------------------------------


def _parallel_wf(a_in: threading.Event, a_saw: threading.Event, b_in: threading.Event,
                 b_go: threading.Event, b_done: threading.Event) -> Workflow:
    """pre -> (a, b) -> post. In runs r0, r1, ... (not in forks) ``a`` waits
    for the cancel and ``b`` for ``b_go``."""

    def a(state: Any, ctx: Any) -> Any:
        if ctx.run_id[1:].isdigit():
            a_in.set()
            deadline = time.monotonic() + T
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.001)
            if ctx.cancelled:
                a_saw.set()
        return {"log": ["a"], "winner": "a"}

    def b(state: Any, ctx: Any) -> Any:
        if ctx.run_id[1:].isdigit():
            b_in.set()
            assert b_go.wait(T)
        b_done.set()
        return {"log": ["b"], "n": 7}

    return build("par", {"pre": logger("pre"), "a": a, "b": b, "post": logger("post")},
                 [("pre", "a"), ("pre", "b"), ("a", "post"), ("b", "post")])


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_cancel_from_another_thread_while_a_sibling_completes(runtimes, store_kind, durability):
    """b completes before the cancel, after the cancel flag is up, or while the
    cancel is sent: neither a's nor b's writes reach the state, also after a
    restart. (A fresh runtime per run: see test_a_cancelled_steps_pool_slot_is_not_handed_out_twice.)"""
    a_in, a_saw, b_in, b_go, b_done = (threading.Event() for _ in range(5))
    wf = _parallel_wf(a_in, a_saw, b_in, b_go, b_done)
    for i, order in enumerate(["b-first", "cancel-first", "together"]):
        for e in (a_in, a_saw, b_in, b_go, b_done):
            e.clear()
        rid = f"r{i}"
        rt = runtimes(store_kind, durability, workflows=[wf])
        h = rt.start("par", {}, run_id=rid)
        assert a_in.wait(T) and b_in.wait(T)  # both siblings are running
        got: dict[str, Any] = {}
        th = threading.Thread(target=lambda: got.setdefault("out", rt.cancel("par", rid, "race", timeout=T)))
        if order == "b-first":  # b's completion is recorded by the run before the cancel
            b_go.set()
            for e in h.events(timeout=T):
                if e.kind == "completed" and e.step == "b":
                    break
            th.start()
        elif order == "cancel-first":  # b returns after the cancel flag is up
            th.start()
            assert a_saw.wait(T)  # the sibling a saw ctx.cancelled
            b_go.set()
        else:  # b returns while the cancel is sent
            b_go.set()
            th.start()
        th.join(T)
        assert not th.is_alive()
        assert got["out"] == Cancelled("par", rid, 1, "race")
        assert h.result(timeout=T) == got["out"]
        assert b_done.wait(T)
        for again in (False, True):
            if again:  # LMDB: rehydration does not take b's pending writes either
                rt = reopened(runtimes, rt)
            v = rt.get_state("par", rid)
            assert (v.values["log"], v.values["n"], v.values["winner"]) == (["pre"], 0, None), (order, v.values)
            assert_cancelled_at(rt, "par", rid, 1, "race")
        # a fork from the last committed super-step runs the whole layer again, each step once
        fid = rt.fork("par", rid, 1)
        got = rt.resume("par", fid, Command()).result(timeout=T)
        assert isinstance(got, Done), got
        assert got.state["log"] == ["pre", "a", "b", "post"] and got.state["n"] == 7


class _GatedLock:
    """Stands in for ``LocalExecutor._lock``: while ``abandon_many`` is gated, the
    first release inside it waits until the abandoned step's slot is idle, so the
    cancelled step returns (it saw ctx.cancelled) right after abandon's lock
    section: the interleaving that once put one slot in ``_idle`` twice."""

    def __init__(self, ex: Any) -> None:
        self._real = ex._lock
        self._ex = ex
        self.owner: threading.Thread | None = None  # the thread in the gated abandon()
        self.slot: int | None = None  # the abandoned step's worker slot
        self.gated = threading.Event()

    def __enter__(self) -> _GatedLock:
        self._real.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        slot = None
        if threading.current_thread() is self.owner and self.slot is not None:
            slot, self.slot = self.slot, None
        self._real.release()
        if slot is not None:
            deadline = time.monotonic() + PROMPT
            while slot not in self._ex._idle and time.monotonic() < deadline:
                time.sleep(0.001)
            self.gated.set()


def test_a_cancelled_steps_pool_slot_is_not_handed_out_twice(runtimes, monkeypatch):
    workers = 4
    a_in = threading.Event()

    def a(state: Any, ctx: Any) -> Any:
        a_in.set()
        deadline = time.monotonic() + T
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.001)
        return {"log": ["a"]}

    barrier = threading.Barrier(workers, timeout=SHORT)
    wide = build("wide", {"s0": logger("s0"), **{f"p{i}": logger(f"p{i}", before=lambda s, c: barrier.wait())
                                                 for i in range(workers)}},
                 [("s0", f"p{i}") for i in range(workers)])
    rt = runtimes("memory", step_workers=workers,
                  workflows=[build("par2", {"pre": logger("pre"), "a": a, "b": logger("b")},
                                   [("pre", "a"), ("pre", "b")]), wide])
    ex = rt._core.executor
    lock = _GatedLock(ex)
    monkeypatch.setattr(ex, "_lock", lock)
    original = ex.abandon_many

    def gated_abandon(tokens: list[int]) -> None:
        for token in tokens:
            slot = ex._running.get(token)
            if slot is not None:
                lock.owner, lock.slot = threading.current_thread(), slot
        original(tokens)

    # a cancel abandons its steps with abandon_many: one lock section replaces the running
    # step's worker and gives its slot to the fresh one, so the old worker (retired) cannot
    # put the slot back a second time however the cancelled step's return interleaves
    monkeypatch.setattr(ex, "abandon_many", gated_abandon)
    rt.start("par2", {}, run_id="r1")
    assert a_in.wait(T)
    assert rt.cancel("par2", "r1", timeout=T) == Cancelled("par2", "r1", 1, "")
    assert lock.gated.wait(T)  # the abandoned step's slot is idle again
    monkeypatch.setattr(ex, "abandon_many", original)
    time.sleep(0.1)  # the cancelled step has returned meanwhile (it polls ctx.cancelled)
    assert len(ex._idle) == len(set(ex._idle)) == workers, ex._idle
    # every worker must take one of the four barrier steps: they all meet
    out = rt.start("wide", {}, run_id="w1").result(timeout=T)
    assert isinstance(out, Done), out


def test_events_stream_ends_with_the_cancelled_outcome(runtimes):
    work = Blocker("work")
    rt = runtimes("memory", workflows=[chain_wf("ev1", work.fn)])
    h = rt.start("ev1", {}, run_id="r1")
    assert work.entered.wait(T)
    out = rt.cancel("ev1", "r1", "bye", timeout=T)
    last = list(h.events(timeout=T))[-1]
    assert last.kind == "outcome" and last.data == out


# --- 7. the asyncio API ------------------------------------------------------------------------


async def test_acancel(runtimes, store_kind):
    entered, left = threading.Event(), threading.Event()
    seen: list[str] = []

    async def slow(state: Any, ctx: Any) -> Any:
        entered.set()
        try:
            await asyncio.sleep(T)
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise
        finally:
            left.set()
        return {"log": ["slow"]}

    work = Blocker("work")
    rt = runtimes(store_kind, workflows=[chain_wf("aio", slow), chain_wf("aio-plain", work.fn), ask_wf("aio-ask"),
                                         build("aio-ok", {"a": logger("a")})])
    h = await rt.astart("aio", {}, run_id="r1")
    assert await asyncio.to_thread(entered.wait, T)
    out = await rt.acancel("aio", "r1", "async stop", timeout=T)
    assert out == Cancelled("aio", "r1", 1, "async stop")
    assert await h.aresult(timeout=T) == out
    assert await asyncio.to_thread(left.wait, T) and seen == ["CancelledError"]
    assert (await rt.aget_state("aio", "r1")).status == "cancelled"

    h = await rt.astart("aio-plain", {}, run_id="r1")
    assert await asyncio.to_thread(work.entered.wait, T)
    out = await rt.acancel("aio-plain", "r1", timeout=T)
    assert out == Cancelled("aio-plain", "r1", 1, "")
    assert await h.aresult(timeout=T) == out

    assert isinstance(await (await rt.astart("aio-ask", {}, run_id="p1")).aresult(timeout=T), Paused)
    out = await rt.acancel("aio-ask", "p1", "paused one", timeout=T)
    assert out == Cancelled("aio-ask", "p1", 1, "paused one")
    assert await rt.acancel("aio-ask", "p1", "again", timeout=T) == out
    with pytest.raises(RunNotPaused):
        await rt.aresume("aio-ask", "p1", Command(resume=1))
    fid = await rt.afork("aio-ask", "p1", 1)
    assert (await rt.aget_state("aio-ask", fid)).status == "paused"

    assert isinstance(await (await rt.astart("aio-ok", {}, run_id="d1")).aresult(timeout=T), Done)
    with pytest.raises(RunOver):
        await rt.acancel("aio-ok", "d1", timeout=T)
    with pytest.raises(RunNotFound):
        await rt.acancel("aio-ok", "missing", timeout=T)
    with pytest.raises(AtomrError):
        await rt.acancel("aio-ask", "p1", 3, timeout=T)  # type: ignore[arg-type]
    assert sorted((s.workflow_id, s.run_id) for s in await rt.aruns(status="cancelled")) == \
        [("aio", "r1"), ("aio-ask", "p1"), ("aio-plain", "r1")]


# --- 8. durability across SIGKILL ----------------------------------------------------------------


SCRIPT = Path(kc.__file__).resolve()


def _lines(stream: Any, out: queue.Queue) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def _spawn(mode: str, target: CrashTarget, durability: str) -> tuple[subprocess.Popen, queue.Queue]:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), mode, target.url, durability],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def _next_line(proc: subprocess.Popen, lines: queue.Queue) -> str:
    try:
        got = lines.get(timeout=T)
    except queue.Empty:
        got = None
    if got is None:
        proc.kill()
        proc.wait(timeout=T)
        raise AssertionError(f"the script printed nothing more; stderr: {proc.stderr.read()}")
    return str(got)


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=T)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _verify(target: CrashTarget) -> None:
    if target.kind != "lmdb":
        return  # `atomr verify` checks LMDB files; the SQL stores are checked by reading every run back
    p = subprocess.run([sys.executable, "-m", "atomr", "--store", target.url, "verify"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr


def _fresh_runtime(target: CrashTarget, durability: str = "sync") -> Runtime:
    rt = Runtime(store=target.open(), durability=durability)
    rt.register(kc.workflow())
    rt.register(kc.ask_workflow())
    return rt


def _after_kill(mode: str, target: CrashTarget, durability: str, wid: str, run_id: str) -> None:
    proc, lines = _spawn(mode, target, durability)
    try:
        line = _next_line(proc, lines)
    finally:
        _reap(proc)
    assert line.startswith("CANCELLED "), line
    _, super_step, status_when_returned = line.split()
    assert super_step == "1"
    with _fresh_runtime(target) as rt:
        s = rt.store.summary(wid, run_id)
        after = s.status if s is not None else "absent"
        handles = rt.recover()
        recovered = [(h.workflow_id, h.run_id) for h in handles]
        for h in handles:
            h.result(timeout=T)
        assert (status_when_returned, after, recovered) == ("cancelled", "cancelled", [])
        assert_cancelled_at(rt, wid, run_id, 1, "stop")
        assert rt.cancel(wid, run_id, timeout=T) == Cancelled(wid, run_id, 1, "stop")


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_sigkill_right_after_cancel_returned_running_run(crash_target, durability):
    _after_kill("after", crash_target, durability, kc.WID, "r0")


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_sigkill_right_after_cancel_returned_paused_run(crash_target, durability):
    _after_kill("paused", crash_target, durability, kc.ASK_WID, "p0")


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_sigkill_in_the_middle_of_cancels_never_breaks_the_store(crash_target, durability):
    proc, lines = _spawn("middle", crash_target, durability)
    try:
        assert _next_line(proc, lines) == "READY"
        assert _next_line(proc, lines) == "CANCELLED 0"
        assert _next_line(proc, lines) == "CANCELLED 1"
    finally:
        _reap(proc)  # while it cancels m2 (or a later one)
    store = crash_target.open()
    try:
        status = {s.run_id: s.status for s in store.runs(workflow_id=kc.WID)}
        for rid in status:
            list(store.journal(kc.WID, rid))  # every record reads back
    finally:
        store.close()
    assert set(status.values()) <= {"running", "cancelled"}, status
    if durability == "sync":  # every start was durable before start() returned
        assert sorted(status) == [f"m{i}" for i in range(kc.N_MIDDLE)]
    with _fresh_runtime(crash_target) as rt:
        handles = rt.recover()
        running = sorted(r for r, s in status.items() if s == "running")
        # a worker on a shared store may carry some on by itself before recover(): those it
        # finished already are not handed out again; every run the kill left running finishes
        assert set(h.run_id for h in handles) <= set(running)
        if not rt.store.shared:
            assert sorted(h.run_id for h in handles) == running
        for h in [*handles, *(rt.handle(kc.WID, r) for r in running)]:
            got = h.result(timeout=T)
            assert isinstance(got, Done) and got.state["log"] == ["pre", "work", "post"], got
        for rid, s in status.items():
            v = rt.get_state(kc.WID, rid)
            if s == "cancelled":
                assert_cancelled_at(rt, kc.WID, rid, 1, "stop")
                assert v.values["log"] == ["pre"] and v.values["n"] == 1
            else:
                assert v.status == "done"
            assert rt.history(kc.WID, rid)
        assert rt.recover() == []
    _verify(crash_target)


# --- 9. the CLI ----------------------------------------------------------------------------------


def atomr(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    return subprocess.run([sys.executable, "-m", "atomr", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def test_cli_cancel_a_paused_run(tmp_path):
    store = tmp_path / "s"
    wid = cli_flow.WID
    p = atomr(store, "run", "cancel_scripts.cli_flow:workflow", "--run-id", "c1")
    assert p.returncode == 3, p.stdout + p.stderr  # paused on the interrupt
    p = atomr(store, "cancel", wid, "c1", "--reason", "no longer needed")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == f"cancelled {wid}/c1 at super-step 1: no longer needed"
    p = atomr(store, "cancel", wid, "c1", "--reason", "twice")  # idempotent: the first reason stays
    assert p.returncode == 0 and p.stdout.strip() == f"cancelled {wid}/c1 at super-step 1: no longer needed", \
        p.stdout + p.stderr
    p = atomr(store, "show", wid, "c1", "--json")
    doc = json.loads(p.stdout)
    assert doc["status"] == "cancelled" and doc["values"]["log"] == ["pre"], doc
    p = atomr(store, "resume", wid, "c1", "--resume", '"yes"')
    assert p.returncode == 2, p.stdout + p.stderr
    assert "cancelled" in p.stderr and "fork" in p.stderr
    p = atomr(store, "runs", "--status", "cancelled", "--json")
    assert [r["run_id"] for r in json.loads(p.stdout)] == ["c1"]
