"""Durable timers: ctx.sleep / ctx.sleep_until, rt.wake, sleeping across a restart."""

from __future__ import annotations

import threading
import time

import pytest

from atomr import AppendList, Dag, Done, LastWriteWins, MemoryStore, Runtime, StateSchema, Workflow
from atomr.errors import AtomrError
from workflows import ALL_STORES, PERSISTENT, reopeners

T = 20.0
S = StateSchema({"n": (LastWriteWins(), 0), "log": AppendList()})


def sleeper(seconds: float, calls: list[float] | None = None) -> Workflow:
    def a(state, ctx):
        if calls is not None:
            calls.append(time.time())
        ctx.sleep(seconds)
        return {"n": state["n"] + 1, "log": ["slept"]}

    dag = Dag.builder("a").step("a", a).step("b", lambda s, c: {"log": ["b"]}).edge("a", "b").build()
    return Workflow("sl", dag, S)


#: timers on every store; a sleep across a restart on every persistent one
any_store = reopeners(*ALL_STORES)
reopen_store = reopeners(*PERSISTENT)


@pytest.fixture
def rt(any_store):
    with Runtime(store=any_store()) as r:
        yield r


def test_a_sleeping_run_is_visible_and_wakes_on_time(rt):
    calls: list[float] = []
    rt.register(sleeper(0.4, calls))
    t0 = time.time()
    h = rt.start("sl", {}, run_id="r")
    deadline = time.monotonic() + T
    while rt.get_state("sl", "r").status != "sleeping" and time.monotonic() < deadline:
        time.sleep(0.01)
    view = rt.get_state("sl", "r")
    assert view.status == "sleeping" and view.wake_at is not None and view.wake_at >= t0 + 0.39
    assert [s.status for s in rt.runs(status="sleeping")] == ["sleeping"]
    # a sleeping run holds no actor (it lets go just after its "sleeping" is committed)
    deadline = time.monotonic() + 5.0
    while rt.live_runs() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert rt.live_runs() == 0
    out = h.result(timeout=T)  # the handle waits through the sleep
    assert isinstance(out, Done) and out.state == {"n": 1, "log": ["slept", "b"]}
    assert time.time() - t0 >= 0.39
    assert len(calls) == 2  # the step ran again once woken; the call then returned


def test_wake_early_and_errors(rt):
    rt.register(sleeper(60))
    h = rt.start("sl", {}, run_id="r")
    deadline = time.monotonic() + T
    while rt.get_state("sl", "r").status != "sleeping" and time.monotonic() < deadline:
        time.sleep(0.01)
    rt.wake("sl", "r")
    assert isinstance(h.result(timeout=T), Done)
    with pytest.raises(AtomrError, match="no pending sleep"):
        rt.wake("sl", "r")


def test_bad_sleep_arguments_fail_the_step(rt):
    def bad(state, ctx):
        ctx.sleep(float("nan"))

    rt.register(Workflow("bad", Dag.builder("a").step("a", bad).build(), S))
    out = rt.start("bad", {}).result(timeout=T)
    assert out.status == "failed" and "finite number of seconds" in out.message


def test_a_sleep_survives_a_restart_and_an_overdue_timer_fires_at_once(reopen_store):
    with Runtime(store=reopen_store()) as rt:
        rt.register(sleeper(0.3))
        rt.start("sl", {}, run_id="r")
        deadline = time.monotonic() + T
        while rt.get_state("sl", "r").status != "sleeping" and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(0.4)  # the wake time passes while no runtime has the store open
    with Runtime(store=reopen_store()) as rt:
        rt.register(sleeper(0.3))
        out = rt.handle("sl", "r").result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["slept", "b"]


def test_a_thousand_sleeping_runs_hold_no_thread():
    wake = time.time() + 4.0

    def a(state, ctx):
        ctx.sleep_until(wake)
        return {"n": 1}

    with Runtime(store=MemoryStore()) as rt:
        rt.register(Workflow("many", Dag.builder("a").step("a", a).build(), S))
        before = threading.active_count()
        hs = rt.start_many("many", [{} for _ in range(1000)])
        deadline = time.monotonic() + T
        while len(rt.runs(status="sleeping")) < 1000 and time.monotonic() < deadline and time.time() < wake:
            time.sleep(0.02)
        if time.time() < wake:  # (on a very slow machine the wake time may pass first)
            assert len(rt.runs(status="sleeping")) == 1000
            assert threading.active_count() <= before + 2  # one timer thread for all of them
            while rt.live_runs() and time.time() < wake - 0.5:  # the last ones release themselves
                time.sleep(0.01)
            assert rt.live_runs() == 0 or time.time() >= wake - 0.5
        assert all(isinstance(h.result(timeout=T), Done) for h in hs)
