"""Step failures: retries with backoff, per-step timeouts, crashes (BaseException),
and resuming a failed run (only the failed step runs again, with a fresh budget)."""

from __future__ import annotations

import asyncio
import threading
import time

import pykka
import pytest

from atomr import Command, Done, Failed, RetryPolicy
from atomr import events as ev
from atomr.actors.checkpointer import Checkpointer
from atomr.actors.pool import StepActor
from atomr.errors import RunError, StepResultError
from workflows import (  # noqa: F401 - fixtures
    T,
    Calls,
    build,
    diamond,
    journal,
    logger,
    retry,
    runtimes,
    ALL_STORES,
    PERSISTENT,
    store_kinds,
)

#: every store: the runtime's behaviour must not depend on the backend
store_kind = store_kinds(*ALL_STORES)


def _flaky(name, calls, fail_first, exc=ValueError, stamps=None):
    """Fails its first ``fail_first`` executions (over the whole test), then succeeds."""

    def step(state, ctx):
        n = calls.hit(name, ctx)
        if stamps is not None:
            stamps.append(time.monotonic())
        if n <= fail_first:
            raise exc(f"{name} boom {n}")
        return {"log": [f"{name}@{ctx.attempt}"]}

    return step


@pytest.mark.parametrize("parallel", [False, True])
def test_retry_with_backoff_then_success(runtimes, store_kind, parallel):
    calls, stamps = Calls(), []
    steps = {"f": _flaky("f", calls, 2, stamps=stamps)}
    if parallel:  # the flaky step shares its layer (runs on the step actors)
        steps["g"] = logger("g", calls)
    wf = build("retry", steps, retry=RetryPolicy(max_attempts=3, backoff_s=0.01), entry="f")
    rt = runtimes(store_kind, workflows=[wf])
    h = rt.start("retry", {}, run_id="r")
    seen = list(h.events(timeout=T))
    out = h.result(timeout=T)
    assert isinstance(out, Done), out
    assert "f@3" in out.state["log"]
    assert calls.attempts("f") == [1, 2, 3]
    # the waits between attempts honour the backoff: 0.01 s, then 0.02 s
    assert stamps[1] - stamps[0] >= 0.009 and stamps[2] - stamps[1] >= 0.019
    events = journal(rt, "retry", "r")
    started = [e.attempt for e in events if type(e) is ev.StepStarted and e.step == "f"]
    failed = [(e.attempt, e.final, e.error_type) for e in events if type(e) is ev.StepFailed]
    assert started == [1, 2, 3]
    assert failed == [(1, False, "ValueError"), (2, False, "ValueError")]
    keys = {e.idempotency_key for e in events if type(e) is ev.StepStarted and e.step == "f"}
    assert keys == {"retry/r/1/f"}  # one key across attempts
    assert [e.attempt for e in seen if e.kind == "retrying"] == [1, 2]
    if parallel:
        assert calls["g"] == 1


def test_retries_exhausted_fail_the_run(runtimes, store_kind):
    calls = Calls()
    wf = build("exh", {"a": logger("a", calls), "f": _flaky("f", calls, 99)}, [("a", "f")],
               retry=retry(3, 0.01))
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("exh", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed), out
    assert (out.step_id, out.error_type, out.super_step) == ("f", "ValueError", 1)
    assert "f boom 3" in out.message
    with pytest.raises(RunError, match="f boom 3"):
        out.raise_error()
    v = rt.get_state("exh", "r")
    assert v.status == "failed" and v.next == ["f"]
    assert v.error == ("f", "ValueError", out.message)
    assert v.values["log"] == ["a"]
    events = journal(rt, "exh", "r")
    failed = [(e.attempt, e.final) for e in events if type(e) is ev.StepFailed]
    assert failed == [(1, False), (2, False), (3, True)]
    assert type(events[-1]) is ev.RunFailed
    assert [s.run_id for s in rt.runs(status="failed")] == ["r"]
    assert rt.history("exh", "r")[-1].label == "failed:f"


def test_non_retryable_errors_fail_at_once(runtimes, store_kind):
    calls = Calls()

    def bad_result(state, ctx):
        calls.hit("bad", ctx)
        return 42  # not a dict / list of pairs

    wf1 = build("only-key", {"f": _flaky("f", calls, 99)},
                retry=RetryPolicy(max_attempts=5, retry_on=(KeyError,)))
    wf2 = build("bad", {"bad": bad_result}, retry=retry(5, 0.0))
    rt = runtimes(store_kind, workflows=[wf1, wf2])
    out = rt.start("only-key", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "ValueError"
    out = rt.start("bad", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == StepResultError.__name__
    assert calls["f"] == 1 and calls["bad"] == 1


@pytest.mark.parametrize("reopen", [False, True])
def test_failed_sibling_resumed_alone_with_fresh_budget(runtimes, store_kind, reopen):
    if reopen and store_kind not in PERSISTENT:
        pytest.skip("a MemoryStore does not survive a reopen")
    calls = Calls()
    wf = build(
        "sib",
        {"root": logger("root", calls), "a": logger("a", calls, writes={"n": 5}),
         "b": _flaky("b", calls, 3), "z": logger("z", calls)},
        [("root", "a"), ("root", "b"), ("a", "z"), ("b", "z")],
        retry=retry(2, 0.01),
    )
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("sib", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "b", out
    v = rt.get_state("sib", "r")
    assert v.next == ["b"] and v.values["n"] == 0  # a's writes pending
    if reopen:
        rt = runtimes.reopen(rt)
    # attempt 1 of the resumed run fails again, attempt 2 succeeds: a fresh budget of 2
    out = rt.resume("sib", "r", Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["root", "a", "b@2", "z"]
    assert out.state["n"] == 5
    assert calls.counts == {"root": 1, "a": 1, "b": 4, "z": 1}
    assert calls.attempts("b") == [1, 2, 1, 2]
    assert [e.step for e in journal(rt, "sib", "r") if type(e) is ev.StepCompleted] == ["root", "a", "b", "z"]


def test_step_timeout(runtimes, store_kind):
    release = threading.Event()
    calls = Calls()

    def sleepy(state, ctx):
        calls.hit("sleepy", ctx)
        release.wait(5)
        return {"log": ["late"]}

    async def sleepy_async(state, ctx):
        calls.hit("sleepy_async", ctx)
        await asyncio.sleep(5)
        return {"log": ["late"]}

    wf = build("slow", {"s": sleepy}, step_timeout_s=0.2)
    wfa = build("slow-async", {"s": sleepy_async}, step_timeout_s=0.2)
    rt = runtimes(store_kind, workflows=[wf, wfa, diamond("after", barrier=None)])
    try:
        for wid in ("slow", "slow-async"):
            out = rt.start(wid, {}, run_id="r").result(timeout=T)
            assert isinstance(out, Failed), out
            assert out.error_type == "StepTimeout" and out.step_id == "s"
            assert "0.2" in out.message
            assert not release.is_set()  # the outcome did not wait for the step
            st = [e for e in journal(rt, wid, "r") if type(e) is ev.StepFailed]
            assert [(e.error_type, e.final) for e in st] == [("StepTimeout", True)]
        # the runtime is still usable, with every step worker (a parallel layer
        # of four steps that meet on a barrier needs four free workers)
        barrier = threading.Barrier(4, timeout=10)
        meet = lambda s, c: barrier.wait()  # noqa: E731
        wide = build("wide", {"r": logger("r"), **{k: logger(k, before=meet) for k in "wxyz"}},
                     [("r", k) for k in "wxyz"])
        rt.register(wide)
        out = rt.start("wide", {}).result(timeout=T)
        assert isinstance(out, Done), out
        assert isinstance(rt.start("after", {}).result(timeout=T), Done)
    finally:
        release.set()
    # the late answer of the timed-out step changes nothing
    time.sleep(0.05)
    assert rt.get_state("slow", "r").status == "failed"


def test_timeout_then_retry_succeeds(runtimes, store_kind):
    calls = Calls()
    release = threading.Event()

    def first_hangs(state, ctx):
        if calls.hit("s", ctx) == 1:
            release.wait(T)
        return {"log": [f"s@{ctx.attempt}"]}

    wf = build("tr", {"s": first_hangs}, step_timeout_s=1.5, retry=retry(2, 0.01))
    rt = runtimes(store_kind, workflows=[wf])
    try:
        out = rt.start("tr", {}, run_id="r").result(timeout=T)
    finally:
        release.set()
    assert isinstance(out, Done), out
    assert out.state["log"] == ["s@2"]
    st = [(e.attempt, e.error_type, e.final) for e in journal(rt, "tr", "r") if type(e) is ev.StepFailed]
    assert st == [(1, "StepTimeout", False)]


def _runtime_actors(rt):
    refs = list(rt.executor._refs)  # noqa: SLF001 - the step actors
    if rt._core.checkpointer is not None:  # noqa: SLF001
        refs.append(rt._core.checkpointer)  # noqa: SLF001
    return refs


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("where", ["inline", "layer", "async"])
def test_base_exception_fails_only_that_run(runtimes, store_kind, exc, where):
    gate = threading.Event()
    started = threading.Semaphore(0)

    def slow(state, ctx):
        started.release()
        assert gate.wait(T)

    def crash(state, ctx):
        raise exc("stop everything?")

    async def crash_async(state, ctx):
        raise exc("stop everything?")

    steps = {"c": crash_async if where == "async" else crash}
    if where == "layer":
        steps["d"] = logger("d")
    crasher = build("crasher", steps, entry="c")
    others = build("others", {"a": logger("a"), "b": logger("b", before=slow)}, [("a", "b")])
    rt = runtimes(store_kind, workflows=[crasher, others])
    handles = [rt.start("others", {}, run_id=f"o{i}") for i in range(3)]
    for _ in handles:
        assert started.acquire(timeout=T)  # all three are mid-run
    out = rt.start("crasher", {}, run_id="x").result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "StepCrashed" and out.step_id == "c"
    assert exc.__name__ in out.message
    gate.set()
    for h in handles:
        assert isinstance(h.result(timeout=T), Done)
    # nothing was stop_all'ed: the runtime's actors are alive and registered
    mine = _runtime_actors(rt)
    assert len(mine) == (5 if store_kind in PERSISTENT else 4)  # a checkpointer writes LMDB and SQL
    registered = pykka.ActorRegistry.get_all()
    for ref in mine:
        assert ref.is_alive() and ref in registered, ref
    assert len(pykka.ActorRegistry.get_by_class(StepActor)) >= 4
    if store_kind in PERSISTENT:
        assert {r.actor_class for r in mine} == {StepActor, Checkpointer}
    # and the runtime goes on working
    assert isinstance(rt.start("others", {}).result(timeout=T), Done)
    assert rt.get_state("crasher", "x").status == "failed"


def test_timed_out_worker_does_not_starve_queued_steps(runtimes, store_kind):
    """Steps of other runs queued behind a stuck (timed-out) step move to the
    worker that replaces it instead of waiting for the stuck one to return."""
    release, entered = threading.Event(), threading.Event()

    def hang(state, ctx):
        entered.set()
        release.wait(T)
        return {"log": ["late"]}

    a = build("hang", {"h1": hang, "h2": logger("h2")}, step_timeout_s=0.3, entry="h1")
    b = build("queued", {"x": logger("x"), "y": logger("y")}, entry="x")
    rt = runtimes(store_kind, workflows=[a, b], step_workers=1)
    try:
        ha = rt.start("hang", {}, run_id="a")
        assert entered.wait(T)
        hb = rt.start("queued", {}, run_id="b")  # queued behind h1 on the only worker
        out = ha.result(timeout=T)
        assert isinstance(out, Failed) and out.error_type == "StepTimeout" and out.step_id == "h1"
        out = hb.result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["x", "y"], out
        assert not release.is_set()
    finally:
        release.set()


def test_timeout_of_one_run_never_cancels_another_runs_step(runtimes, store_kind):
    """Step tokens are unique across runs: abandoning run A's timed-out step
    must not cancel run B's async step (which had the same per-run token)."""
    go_b, release_a, entered_b = threading.Event(), threading.Event(), threading.Event()

    async def slow_async(state, ctx):
        entered_b.set()
        await asyncio.to_thread(go_b.wait, T)
        return {"log": ["b"]}

    def hang(state, ctx):
        release_a.wait(T)

    wa = build("ta", {"h": hang}, step_timeout_s=0.3)
    wb = build("tb", {"s": slow_async})
    rt = runtimes(store_kind, workflows=[wa, wb])
    try:
        hb = rt.start("tb", {}, run_id="b")
        assert entered_b.wait(T)
        out = rt.start("ta", {}, run_id="a").result(timeout=T)
        assert isinstance(out, Failed) and out.error_type == "StepTimeout"
        go_b.set()
        out = hb.result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["b"], out
    finally:
        release_a.set()
        go_b.set()


def test_bad_step_results_fail_with_named_errors(runtimes, store_kind):
    def unknown_channel(state, ctx):
        return {"nope": 1}

    def not_storable(state, ctx):
        return {"winner": object()}

    def bad_payload(state, ctx):
        ctx.interrupt(object())

    rt = runtimes(store_kind, workflows=[
        build("uc", {"s": unknown_channel}, retry=retry(3, 0.0)),
        build("ns", {"s": not_storable}, retry=retry(3, 0.0)),
        build("bp", {"s": bad_payload}, retry=retry(3, 0.0)),
    ])
    for wid, etype in (("uc", "UnknownChannelError"), ("ns", "CodecError"), ("bp", "CodecError")):
        out = rt.start(wid, {}, run_id="r").result(timeout=T)
        assert isinstance(out, Failed), out
        assert (out.error_type, out.step_id) == (etype, "s"), out
        failed = [e for e in journal(rt, wid, "r") if type(e) is ev.StepFailed]
        assert len(failed) == 1 and failed[0].final  # misuse is never retried


def test_reducer_error_at_merge_fails_the_run(runtimes, store_kind):
    from atomr import MergeMap
    from workflows import schema

    calls = Calls()
    wf = build("red", {"a": logger("a", calls, writes={"m": {"k": 1}}),
                       "b": logger("b", calls, writes={"m": "oops"})},
               entry="a", sch=schema(m=MergeMap()))
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("red", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.error_type == "ReducerError" and out.step_id == "b"
    v = rt.get_state("red", "r")
    assert v.status == "failed" and v.values["log"] == []  # nothing merged
    # the steps' writes are kept: a resume merges them again (and fails the same way)
    out = rt.resume("red", "r", Command()).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "ReducerError"
    assert calls.counts == {"a": 1, "b": 1}


def test_crashed_step_can_be_retried_by_resume(runtimes, store_kind):
    calls = Calls()

    def crash_once(state, ctx):
        if calls.hit("c", ctx) == 1:
            raise KeyboardInterrupt
        return {"log": ["c"]}

    rt = runtimes(store_kind, workflows=[build("co", {"c": crash_once})])
    out = rt.start("co", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "StepCrashed"
    out = rt.resume("co", "r", Command()).result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["c"]


def test_run_actor_internal_error_is_restarted(runtimes, store_kind, monkeypatch):
    """An unexpected error inside a run actor: the supervisor rehydrates the
    run from the store and carries it on; the caller still gets the outcome."""
    from atomr.graph import superstep as algo

    real = algo.commit_values
    boom = {"left": 1}

    def flaky_commit(plan, p):
        if boom["left"] and p.super_step == 1:
            boom["left"] -= 1
            raise RuntimeError("internal hiccup")
        return real(plan, p)

    monkeypatch.setattr(algo, "commit_values", flaky_commit)
    calls = Calls()
    wf = build("ie", {"a": logger("a", calls), "b": logger("b", calls), "c": logger("c", calls)},
               [("a", "b"), ("b", "c")])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("ie", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "b", "c"]
    assert boom["left"] == 0
    assert calls["a"] == 1 and calls["c"] == 1 and calls["b"] in (1, 2)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_returned_awaitable_keeps_async_loop(runtimes, exc):
    """A sync step returning a coroutine that raises KeyboardInterrupt/SystemExit
    (awaited on the shared loop) fails its run; async steps keep working."""

    async def crash_async(state, ctx):
        raise exc("stop the loop?")

    async def fine(state, ctx):
        await asyncio.sleep(0)
        return {"log": ["fine"]}

    crasher = build("aw", {"c": lambda s, c: crash_async(s, c), "d": logger("d")}, entry="c")
    rt = runtimes("memory", workflows=[crasher, build("fine", {"f": fine})])
    assert isinstance(rt.start("fine", {}).result(timeout=T), Done)  # the loop exists
    out = rt.start("aw", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "StepCrashed" and out.step_id == "c", out
    out = rt.start("fine", {}).result(timeout=T)
    assert isinstance(out, Done), out
