"""Runs driven by messages from other pykka actors, and the thread cost of paused runs."""

from __future__ import annotations

import queue
import threading

import pykka
import pytest

from atomr import Accepted, Command, Done, Failed, Paused, Rejected, Resume, Run
from atomr.errors import RunExists, RunNotPaused
from atomr.types import StepEvent
from workflows import (  # noqa: F401 - fixtures
    T,
    Calls,
    asker,
    build,
    logger,
    runtimes,
    store_kind,
    wait_for,
)


def _two_questions(calls=None):
    return build(
        "drv",
        {"a": logger("a", calls), "q": asker("q", calls, times=2), "side": logger("side", calls),
         "z": logger("z", calls)},
        [("a", "q"), ("a", "side"), ("q", "z"), ("side", "z")],
    )


class Driver(pykka.ThreadingActor):
    """Starts nothing itself: answers each Paused of its run by telling the run
    a Resume, and reports the final outcome on ``results``."""

    def __init__(self, rt, wid, run_id, results, auto=True):
        super().__init__()
        self.rt, self.wid, self.run_id = rt, wid, run_id
        self.results = results
        self.auto = auto
        self.got = []

    def on_receive(self, message):
        self.got.append(message)
        if isinstance(message, Paused) and self.auto:
            (pending,) = message.interrupts
            answer = f"{self.run_id}:{pending.id}"
            self.rt.ref(self.wid, self.run_id).tell(
                Resume(Command(resume=answer), reply_to=self.actor_ref))
        elif isinstance(message, (Done, Failed, Rejected)) or (isinstance(message, Paused) and not self.auto):
            self.results.put((self.run_id, message, list(self.got)))


def test_actor_drives_runs_by_messages(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_two_questions(calls)])
    results: queue.Queue = queue.Queue()
    n = 12
    drivers = [Driver.start(rt, "drv", f"r{i}", results) for i in range(n)]
    try:
        for i, d in enumerate(drivers):
            rt.ref("drv", f"r{i}").tell(Run({"n": i}, reply_to=d))
        got = {}
        for _ in range(n):
            run_id, outcome, seen = results.get(timeout=T)
            got[run_id] = (outcome, seen)
    finally:
        for d in drivers:
            d.stop(block=False)
    assert sorted(got) == sorted(f"r{i}" for i in range(n))
    for run_id, (outcome, seen) in got.items():
        assert isinstance(outcome, Done), outcome
        assert outcome.state["answers"] == [["q", f"{run_id}:q:2:0", f"{run_id}:q:2:1"]]
        assert outcome.state["log"] == ["a", "q", "side", "z"]
        assert [type(m).__name__ for m in seen] == ["Paused", "Paused", "Done"]
    assert calls["side"] == n and calls["a"] == n and calls["q"] == 3 * n


def test_test_thread_resumes_an_actor_driven_run(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_two_questions()])
    results: queue.Queue = queue.Queue()
    d = Driver.start(rt, "drv", "r", results, auto=False)
    try:
        listener: queue.Queue = queue.Queue()

        class Listen:
            def tell(self, m):
                listener.put(m)

        rt.ref("drv", "r").tell(Run({}, reply_to=d, listener=Listen(), meta={"by": "actor"}))
        _, out, _ = results.get(timeout=T)
        assert isinstance(out, Paused) and [i.id for i in out.interrupts] == ["q:2:0"]
        first = listener.get(timeout=T)
        assert isinstance(first, Accepted)
        kinds = []
        while True:
            m = listener.get(timeout=T)
            assert isinstance(m, StepEvent)
            kinds.append(m.kind)
            if m.kind == "outcome":
                break
        assert "interrupted" in kinds and kinds.count("committed") == 1
        for answer in ("one", "two"):
            rt.ref("drv", "r").tell(Resume(Command(resume=answer), reply_to=d))
            _, out, _ = results.get(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["answers"] == [["q", "one", "two"]]
        assert rt.get_state("drv", "r").meta == {"by": "actor"}

        # refusals arrive on reply_to as Rejected
        rt.ref("drv", "r").tell(Run({}, reply_to=d))
        _, out, _ = results.get(timeout=T)
        assert isinstance(out, Rejected) and isinstance(out.error, RunExists)
        rt.ref("drv", "r").tell(Resume(Command(), reply_to=d))
        _, out, _ = results.get(timeout=T)
        assert isinstance(out, Rejected) and isinstance(out.error, RunNotPaused)
    finally:
        d.stop(block=False)


def test_paused_runs_hold_no_thread(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_two_questions()])
    # warm up (first use of anything lazily started), then measure
    warm = rt.start("drv", {}, run_id="warm").result(timeout=T)
    assert isinstance(warm, Paused)
    wait_for(lambda: rt.live_runs() == 0, what="warm-up actor to stop")
    baseline = threading.active_count()

    n = 50
    handles = [rt.start("drv", {"n": i}, run_id=f"p{i}") for i in range(n)]
    for h in handles:
        out = h.result(timeout=T)
        assert isinstance(out, Paused), out
    wait_for(lambda: rt.live_runs() == 0 and threading.active_count() <= baseline,
             what=f"threads back to {baseline} (now {threading.active_count()}, live runs {rt.live_runs()})")
    assert len(rt.runs(status="paused")) == n + 1

    for answer in ("x", "y"):
        handles = [rt.resume("drv", f"p{i}", Command(resume=answer)) for i in range(n)]
        outs = [h.result(timeout=T) for h in handles]
    assert all(isinstance(o, Done) for o in outs), outs
    assert all(o.state["answers"] == [["q", "x", "y"]] for o in outs)
    wait_for(lambda: rt.live_runs() == 0 and threading.active_count() <= baseline,
             what="threads back to baseline after the runs ended")


@pytest.mark.parametrize("rounds", [200])
def test_resume_right_after_outcome_never_lost(runtimes, store_kind, rounds):
    """Resuming the instant an outcome arrives races the old actor's shutdown;
    the request must always reach a live actor."""
    wf = build("fast", {"q": asker("q", times=3)})
    rt = runtimes(store_kind, workflows=[wf])
    for i in range(rounds // 4):
        out = rt.start("fast", {}, run_id=f"f{i}").result(timeout=T)
        for k in range(3):
            assert isinstance(out, Paused), out
            out = rt.resume("fast", f"f{i}", Command(resume=k)).result(timeout=T)
        assert isinstance(out, Done), out


def test_close_with_busy_runs_is_bounded_and_quiet(runtimes, caplog):
    """close() waits ``timeout`` in all (not per run) for runs busy in a step;
    those runs stay "running", stop quietly once their step returns (no
    restart, nothing written after close), and recover() finishes them."""
    import logging
    import time

    caplog.set_level(logging.DEBUG, logger="atomr")
    release = threading.Event()
    entered = threading.Semaphore(0)
    returned = threading.Semaphore(0)
    first = {}

    def block(state, ctx):
        if ctx.run_id not in first:
            first[ctx.run_id] = True
            entered.release()
            release.wait(T)
            returned.release()
        return {"log": ["b"]}

    wf = build("busy", {"a": logger("a"), "b": block, "c": logger("c")}, [("a", "b"), ("b", "c")])
    rt = runtimes("lmdb", workflows=[wf])
    n = 5
    for i in range(n):
        rt.start("busy", {}, run_id=f"r{i}")
    for _ in range(n):
        assert entered.acquire(timeout=T)
    t0 = time.monotonic()
    rt.close(timeout=1.0)
    assert time.monotonic() - t0 < n * 1.0 - 1.0  # one shared timeout, not one per run
    release.set()
    for _ in range(n):
        assert returned.acquire(timeout=T)
    rt2 = runtimes.reopen(rt)  # (rt is closed already: reopen just opens the files again)
    assert {s.status for s in rt2.runs()} == {"running"}
    outs = [h.result(timeout=T) for h in rt2.recover()]
    assert len(outs) == n and all(isinstance(o, Done) for o in outs), outs
    assert all(o.state["log"] == ["a", "b", "c"] for o in outs)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("atomr")]
    assert errors == [], [r.getMessage() for r in errors]
