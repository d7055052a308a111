"""A run hears every message while one of its steps runs.

A step — plain or ``async def``, alone in its layer (lent a dispatcher thread)
or not — never runs inside its run actor's turn: a stream opened mid-step gets
the run's items at once and the step's ``ctx.emit`` items live, and a cancel
mid-step ends the run at once, the step's late writes discarded. The steps
here last up to ``STEP`` seconds unless the test releases them earlier: a run
that waits for its step before answering fails the checks made while the step
still runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from atomr import Cancelled, Done, Runtime
from atomr import events as ev
from atomr.actors.dispatcher import DispatchedActor, Dispatcher
from workflows import ALL_STORES, T, build, journal, logger, runtimes, store_kinds  # noqa: F401

store_kind = store_kinds(*ALL_STORES)

#: how long a step runs unless released (the user's "2 s step")
STEP = 2.0
#: an answer that does not wait for the step comes well within this (a loaded box)
PROMPT = 1.0


class Slow:
    """A step that emits a token every 20 ms until released or ``STEP`` seconds
    passed, then returns ``{"log": ["work"], "n": 99}``; plain or ``async def``."""

    def __init__(self, is_async: bool) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.left = threading.Event()

        def plain(state: Any, ctx: Any) -> Any:
            self.entered.set()
            deadline, i = time.monotonic() + STEP, 0
            while not self.release.is_set() and time.monotonic() < deadline:
                ctx.emit(f"tok{i}")
                i += 1
                self.release.wait(0.02)
            self.left.set()
            return {"log": ["work"], "n": 99}

        async def coro(state: Any, ctx: Any) -> Any:
            self.entered.set()
            deadline, i = time.monotonic() + STEP, 0
            while not self.release.is_set() and time.monotonic() < deadline:
                ctx.emit(f"tok{i}")
                i += 1
                await asyncio.sleep(0.02)
            self.left.set()
            return {"log": ["work"], "n": 99}

        self.fn = coro if is_async else plain


def chain(wid: str, work: Any) -> Any:
    """pre -> work -> post: ``work`` is alone in its layer."""
    return build(wid, {"pre": logger("pre"), "work": work, "post": logger("post")},
                 [("pre", "work"), ("work", "post")])


def wide(wid: str, work: Any) -> Any:
    """pre -> (work, side) -> post: ``work`` has a sibling (the pool, not a lent thread)."""
    return build(wid, {"pre": logger("pre"), "work": work, "side": logger("side"), "post": logger("post")},
                 [("pre", "work"), ("pre", "side"), ("work", "post"), ("side", "post")])


SHAPES = [("plain", chain), ("async", chain), ("plain-wide", wide)]


@pytest.mark.parametrize("kind,shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_a_stream_opened_during_a_step_gets_the_run_at_once_and_its_emits_live(runtimes, store_kind, kind, shape):
    slow = Slow(kind == "async")
    rt = runtimes(store_kind, workflows=[shape("s", slow.fn)])
    h = rt.start("s", {}, run_id="r1")
    try:
        assert slow.entered.wait(T)
        t0 = time.monotonic()
        items = rt.handle("s", "r1").stream(["updates", "custom"], timeout=T)
        first = next(items)  # the journal: pre's writes
        assert not slow.left.is_set(), "the stream's first item waited for the step to return"
        assert time.monotonic() - t0 < PROMPT
        assert first.mode == "updates" and first.data == {"pre": {"log": ["pre"]}}
        while (item := next(items)).mode != "custom":
            assert item.mode == "updates", item
        assert not slow.left.is_set(), "ctx.emit reached the stream only after the step returned"
        assert item.step == "work" and item.data["step"] == "work" and item.data["payload"].startswith("tok")
        slow.release.set()
        rest = list(items)
        assert rest[-1].mode == "outcome" and isinstance(rest[-1].data, Done)
        assert {"work": {"log": ["work"], "n": 99}} in [i.data for i in rest if i.mode == "updates"]
    finally:
        slow.release.set()
    assert h.result(timeout=T).state["log"][-1] == "post"


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_step_events_opened_during_a_step_come_at_once(runtimes, kind):
    slow = Slow(kind == "async")
    rt = runtimes("memory", workflows=[chain("e", slow.fn)])
    rt.start("e", {}, run_id="r1")
    try:
        assert slow.entered.wait(T)
        t0 = time.monotonic()
        events = rt.handle("e", "r1").events(timeout=T)
        seen = []
        while not (seen and seen[-1].kind == "started" and seen[-1].step == "work"):
            seen.append(next(events))
        assert not slow.left.is_set(), "events waited for the step to return"
        assert time.monotonic() - t0 < PROMPT
        slow.release.set()
        assert [e for e in events][-1].kind == "outcome"
    finally:
        slow.release.set()


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_cancel_during_a_lone_plain_step_is_at_once_and_its_late_writes_are_discarded(
        runtimes, store_kind, durability):
    """The step ignores ctx.cancelled and returns after the cancel: the outcome
    does not wait for it, and what it returns is never committed."""
    slow = Slow(False)
    rt = runtimes(store_kind, durability, workflows=[chain("c", slow.fn)])
    h = rt.start("c", {"n": 1}, run_id="r1")
    try:
        assert slow.entered.wait(T)
        t0 = time.monotonic()
        out = rt.cancel("c", "r1", "stop", timeout=T)
        took = time.monotonic() - t0
        assert not slow.left.is_set(), "cancel waited for the plain step to return"
        assert took < PROMPT, took
        assert out == Cancelled("c", "r1", 1, "stop")
        assert h.result(timeout=T) == out
    finally:
        slow.release.set()
    assert slow.left.wait(T)
    deadline = time.monotonic() + T
    while rt._core.stepping and time.monotonic() < deadline:  # noqa: SLF001 - its StepDone was delivered (dropped)
        time.sleep(0.01)
    v = rt.get_state("c", "r1")
    assert v.status == "cancelled" and v.values["log"] == ["pre"] and v.values["n"] == 1
    events = journal(rt, "c", "r1")
    assert type(events[-1]) is ev.RunCancelled
    assert not [e for e in events if type(e) is ev.StepCompleted and e.step == "work"]
    assert rt.cancel("c", "r1", "again", timeout=T) == out
    # the lent thread came back: the runtime goes on
    assert rt.start("c", {}, run_id="r2").result(timeout=T).state["log"] == ["pre", "work", "post"]


def test_a_step_lent_a_thread_runs_after_the_turn_on_that_thread(runtimes):
    """The default shape keeps its speed: a lone plain step runs on the very
    dispatcher thread whose turn sent it (no hand-off), yet outside the turn."""
    threads: list[str] = []

    def step(state: Any, ctx: Any) -> Any:
        threads.append(threading.current_thread().name)
        return {"n": state["n"] + 1}

    rt = runtimes("memory", workflows=[build("t", {"a": step, "b": step, "c": step}, [("a", "b"), ("b", "c")])])
    assert rt.start("t", {}, run_id="r1").result(timeout=T).state["n"] == 3
    assert len(threads) == 3 and all(t.startswith("atomr-dispatch") for t in threads), threads
    rt2 = runtimes("memory", workflows=[build("t", {"a": step})], inline_steps=False)
    threads.clear()
    rt2.start("t", {}, run_id="r1").result(timeout=T)
    assert not threads[0].startswith("atomr-dispatch"), threads  # inline_steps=False: the step pool


# --- the dispatcher's loan ---------------------------------------------------------------


class Lender(DispatchedActor):
    """Lends ``work`` on ("lend", work); records every other message with the
    thread that handled it."""

    #: the last one made (the test reads it)
    last: Lender | None = None

    def __init__(self, d: Dispatcher) -> None:
        super().__init__()
        Lender.last = self
        self.use_dispatcher(d)
        self.d = d
        self.seen: list[tuple[Any, str]] = []
        self.got = threading.Event()
        self.lent: list[bool] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "lend":
            self.lent.append(self.d.lend(message[1]))
            return None
        self.seen.append((message, threading.current_thread().name))
        if message == "answer":
            self.got.set()
        return None


def test_lent_work_runs_after_the_turn_on_its_thread_and_the_mailbox_stays_open():
    d = Dispatcher(threads=3, name="lend-test")
    release, ran = threading.Event(), []
    try:
        ref = Lender.start(d)
        actor = Lender.last

        def work() -> Any:
            ran.append(threading.current_thread().name)
            release.wait(T)
            return ref, "answer"

        ref.tell(("lend", work))
        deadline = time.monotonic() + T
        while not ran and time.monotonic() < deadline:
            time.sleep(0.005)
        ref.tell("ping")  # heard while the work blocks
        while not actor.seen and time.monotonic() < deadline:
            time.sleep(0.005)
        assert actor.seen and actor.seen[0][0] == "ping" and actor.seen[0][1] != ran[0]
        release.set()
        assert actor.got.wait(T)
        assert actor.seen[-1] == ("answer", ran[0])  # the answer's turn ran on the lent thread
        assert actor.lent == [True]
        ref.stop(timeout=T)
    finally:
        release.set()
        d.close()


def test_at_most_all_threads_but_one_are_lent():
    d = Dispatcher(threads=3, name="lend-budget")
    gate = threading.Event()
    try:
        assert d.lend(lambda: gate.wait(T) and None) and d.lend(lambda: gate.wait(T) and None)
        assert not d.lend(lambda: None)  # the third thread stays for actors' turns
        ref = Lender.start(d)
        ref.tell("ping")
        deadline = time.monotonic() + T
        while not Lender.last.seen and time.monotonic() < deadline:
            time.sleep(0.005)
        assert Lender.last.seen
        gate.set()
        while not d.try_block() and time.monotonic() < deadline:  # both loans came back
            time.sleep(0.005)
        d.unblock()
        ref.stop(timeout=T)
    finally:
        gate.set()
        d.close()


def test_lent_work_whose_actor_stopped_is_dropped():
    d = Dispatcher(threads=2, name="lend-dead")
    try:
        ref = Lender.start(d)
        actor = Lender.last
        ref.stop(timeout=T)
        done = threading.Event()

        def work() -> Any:
            done.set()
            return ref, "answer"

        assert d.lend(work)
        assert done.wait(T)
        time.sleep(0.05)
        assert not actor.got.is_set()
        assert d.try_block()  # the loan came back
        d.unblock()
    finally:
        d.close()


def test_runtime_still_runs_when_no_thread_may_be_lent(runtimes):
    """dispatcher_threads=1: nothing may be lent; a lone step goes to the pool."""
    rt: Runtime = runtimes("memory", workflows=[chain("one", logger("work"))], dispatcher_threads=1)
    assert rt.start("one", {}).result(timeout=T).state["log"] == ["pre", "work", "post"]
