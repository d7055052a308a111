"""Regression tests of issue 18's run-level hardening: what each step of a layer
sees, Subgraph namespaces, maintenance against live runs, crash loops, bad
requests, unprintable exceptions, close() races, a start that does not fit the
store, and the thread budget of many async runs."""

from __future__ import annotations

import asyncio
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

from atomr import (AppendList, Command, Dag, Done, Failed, LastWriteWins, LmdbStore,
                   Paused, RetryPolicy, Runtime, StateSchema, Subgraph, Workflow)
from atomr import events as ev
from atomr._run import actor as wmod
from atomr.errors import (AtomrError, CheckpointNotFound, RunNotFound, RuntimeClosed, StoreError)
from atomr.graph.drive import child_run_id
from hardening_scripts import loop_sibling as ls
from workflows import (ALL_STORES, T, Calls, build, journal, logger, runtimes, store_kind,  # noqa: F401
                       store_kinds, store_state)

#: ids no store can keep are refused alike by every store (LMDB, SQLite, Postgres, memory)
any_store_kind = store_kinds(*ALL_STORES)

#: a prompt answer: well under this (a hang is caught long before ``T``)
PROMPT = 3.0


def _reference_state(runtimes: Any) -> dict[str, Any]:
    """The final state of the loop-and-sibling workflow run without any trouble."""
    rt = runtimes("memory", workflows=[ls.workflow(lambda s, c: ls.sibling_writes(s), wid="ref")])
    out = rt.start("ref", {}, run_id="ref").result(timeout=T)
    assert isinstance(out, Done), out
    return out.state


# --- 1. every step of a layer sees the state as it was before the layer -------------


class LateSibling:
    """A sibling of the Loop that first runs once the Loop has finished iterating
    (its while_ said no), records the ``n`` it sees, and fails its first
    ``fail_first`` executions."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.loop_done = threading.Event()
        self.seen: list[tuple[int, Any]] = []
        self.calls = 0
        self._lock = threading.Lock()

    def while_(self, state: Any) -> bool:
        go = state["n"] < ls.LOOP_END
        if not go:
            self.loop_done.set()
        return go

    def __call__(self, state: Any, ctx: Any) -> Any:
        with self._lock:
            self.calls += 1
            k = self.calls
        if k == 1:
            assert self.loop_done.wait(T), "the Loop never finished"
        self.seen.append((ctx.attempt, state["n"]))
        if k <= self.fail_first:
            raise ValueError(f"sibling fails (call {k})")
        return ls.sibling_writes(state)


def _late_wf(sib: LateSibling, wid: str, **kw: Any) -> Workflow:
    return ls.workflow(sib, wid=wid, while_=sib.while_, **kw)


@pytest.mark.parametrize("mode", ["late", "retry"])
def test_layer_sibling_sees_pre_layer_state_late_or_retried(runtimes, store_kind, mode):
    """The sibling runs (or runs again after a failed attempt) once the Loop's
    iterations are merged: it still sees n as it was before the layer."""
    sib = LateSibling(fail_first=1 if mode == "retry" else 0)
    wf = _late_wf(sib, "lsib", retry=RetryPolicy(max_attempts=2, backoff_s=0))
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("lsib", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    want = [(1, 0), (2, 0)] if mode == "retry" else [(1, 0)]
    assert sib.seen == want, f"the sibling saw the Loop's iterations: {sib.seen}"
    assert out.state == _reference_state(runtimes)
    assert out.state["seen"] == [0] and out.state["n"] == ls.LOOP_END
    assert rt.get_state("lsib", "r").values == out.state


@pytest.mark.parametrize("reopen", [False, True])
def test_layer_sibling_resumed_after_failure_sees_pre_layer_state(runtimes, store_kind, reopen):
    """The sibling fails for good after the Loop finished; the failed run is
    resumed (in a new runtime on LMDB: the layer's base state is rehydrated)."""
    if reopen and store_kind != "lmdb":
        pytest.skip("only LMDB survives a reopen")
    sib = LateSibling(fail_first=1)
    wf = _late_wf(sib, "lsib")
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("lsib", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "sib", out
    view = rt.get_state("lsib", "r")
    assert view.status == "failed" and view.next == ["sib"]
    if reopen:
        rt = runtimes.reopen(rt)
    out = rt.resume("lsib", "r", Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert sib.seen == [(1, 0), (1, 0)], f"the resumed sibling saw the Loop's iterations: {sib.seen}"
    assert out.state == _reference_state(runtimes)
    # the Loop did not run again
    iterations = [e.iteration for e in journal(rt, "lsib", "r") if type(e) is ev.LoopIterated]
    assert iterations == [1, 2, 3]


class AskingSibling(LateSibling):
    """Like LateSibling, but asks a question (a dynamic interrupt) instead of failing."""

    def __call__(self, state: Any, ctx: Any) -> Any:
        with self._lock:
            self.calls += 1
            k = self.calls
        if k == 1:
            assert self.loop_done.wait(T), "the Loop never finished"
        self.seen.append((ctx.attempt, state["n"]))
        answer = ctx.interrupt({"n": state["n"]})
        return {**ls.sibling_writes(state), "log": [f"sib {answer}"]}


@pytest.mark.parametrize("reopen", [False, True])
def test_layer_sibling_resumed_after_its_interrupt_sees_pre_layer_state(runtimes, store_kind, reopen):
    if reopen and store_kind != "lmdb":
        pytest.skip("only LMDB survives a reopen")
    sib = AskingSibling(fail_first=0)
    rt = runtimes(store_kind, workflows=[_late_wf(sib, "lask")])
    out = rt.start("lask", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused), out
    assert [i.payload for i in out.interrupts] == [{"n": 0}]
    if reopen:
        rt = runtimes.reopen(rt)
    out = rt.resume("lask", "r", Command(resume="yes")).result(timeout=T)
    assert isinstance(out, Done), out
    assert sib.seen == [(1, 0), (1, 0)], f"the resumed sibling saw the Loop's iterations: {sib.seen}"
    assert out.state["seen"] == [0] and out.state["n"] == ls.LOOP_END
    assert "sib yes" in out.state["log"]


def test_a_sibling_loop_does_not_see_another_loop_s_iterations(runtimes, store_kind):
    from atomr import Loop

    a_done = threading.Event()
    seen_by_b: list[tuple[int, int]] = []

    def a_while(state: Any) -> bool:
        go = state["n"] < 3
        if not go:
            a_done.set()
        return go

    def b_body(state: Any, ctx: Any) -> Any:
        if state["bi"] == 0:  # B's next iteration starts once A has finished
            assert a_done.wait(T), "loop A never finished"
        seen_by_b.append((state["bi"], state["n"]))
        return {"bi": state["bi"] + 1, "bn": [state["n"]]}

    sch = StateSchema({"n": (LastWriteWins(), 0), "bi": (LastWriteWins(), 0), "bn": AppendList()})
    dag = (Dag.builder("root").step("root", lambda s, c: None)
           .step("A", Loop(lambda s, c: {"n": s["n"] + 1}, a_while, 10))
           .step("B", Loop(b_body, lambda s: s["bi"] < 2, 10))
           .edge("root", "A").edge("root", "B").build())
    rt = runtimes(store_kind, workflows=[Workflow("two-loops", dag, sch)])
    out = rt.start("two-loops", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Done), out
    assert seen_by_b == [(0, 0), (1, 0)], f"loop B saw loop A's iterations: {seen_by_b}"
    assert out.state == {"n": 3, "bi": 2, "bn": [0, 0]}


def _lines(stream: Any, out: queue.Queue) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def test_layer_sibling_after_kill_9_sees_pre_layer_state(runtimes, tmp_path):
    """kill -9 while the sibling runs, after the Loop's iterations and completion
    were committed: the recovered sibling sees the pre-layer n."""
    store_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(Path(ls.__file__).resolve()), str(store_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        got = lines.get(timeout=T)
        assert got == "READY", f"script said {got!r}; stderr: {proc.stderr.read() if got is None else ''}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=T)
        proc.stdout.close()
        proc.stderr.close()
    seen: list[int] = []

    def sibling(state: Any, ctx: Any) -> Any:
        seen.append(state["n"])
        return ls.sibling_writes(state)

    rt = runtimes("lmdb", path=store_dir, workflows=[ls.workflow(sibling)])
    assert rt.get_state(ls.WID, ls.RUN_ID).status == "running"
    handles = rt.recover()
    assert [h.run_id for h in handles] == [ls.RUN_ID]
    out = handles[0].result(timeout=T)
    assert isinstance(out, Done), out
    assert seen == [0], f"the recovered sibling saw the Loop's committed iterations: {seen}"
    assert out.state == _reference_state(runtimes)
    iterations = [e.iteration for e in journal(rt, ls.WID, ls.RUN_ID) if type(e) is ev.LoopIterated]
    assert iterations == [1, 2, 3]  # committed iterations did not run again


# --- 2. Subgraph child runs are namespaced unambiguously ------------------------------


def _child_wf(ran_as: list[tuple[str, int]]) -> Workflow:
    def times_ten(state: Any, ctx: Any) -> Any:
        ran_as.append((ctx.run_id, state["x"]))
        return {"y": state["x"] * 10}

    sch = StateSchema({"x": (LastWriteWins(), 0), "y": LastWriteWins()})
    return Workflow("child", Dag.builder("c").step("c", times_ten).build(), sch)


def _parent_wf(wid: str, child: Workflow, sub_steps: tuple[str, ...] = ("sub",)) -> Workflow:
    sch = StateSchema({"x": (LastWriteWins(), 0), "y": AppendList()})
    b = Dag.builder("pre").step("pre", lambda s, c: None)
    for s in sub_steps:
        b.step(s, Subgraph(child, inputs=["x"], outputs=["y"])).edge("pre", s)
    return Workflow(wid, b.build(), sch)


@pytest.mark.parametrize("first,second", [
    (("par", "a/b"), ("par/a", "b")),          # joined with "/": par/a/b/sub both
    (("p", "x/y"), ("p", "x%2Fy")),            # an escape sequence spelled out in a run id
    (("p", "x%y"), ("p", "x%25y")),
    (("p", "%2F"), ("p", "/")),
])
def test_subgraph_child_runs_of_different_parents_never_collide(runtimes, store_kind, first, second):
    ran_as: list[tuple[str, int]] = []
    child = _child_wf(ran_as)
    wids = sorted({first[0], second[0]})
    rt = runtimes(store_kind, workflows=[_parent_wf(w, child) for w in wids])
    out1 = rt.start(first[0], {"x": 1}, run_id=first[1]).result(timeout=T)
    out2 = rt.start(second[0], {"x": 2}, run_id=second[1]).result(timeout=T)
    assert isinstance(out1, Done) and isinstance(out2, Done), (out1, out2)
    assert out1.state["y"] == [10]
    assert out2.state["y"] == [20], f"the second parent got the first one's child output: {out2.state}"
    ids = [child_run_id(first[0], first[1], "sub"), child_run_id(second[0], second[1], "sub")]
    assert ids[0] != ids[1]
    assert sorted(ran_as) == sorted([(ids[0], 1), (ids[1], 2)])
    assert sorted(s.run_id for s in rt.runs(workflow_id="child")) == sorted(ids)
    for rid, x in zip(ids, (1, 2)):
        assert rt.get_state("child", rid).values == {"x": x, "y": x * 10}


def test_subgraph_step_ids_with_a_slash_never_collide(runtimes, store_kind):
    """Run "a" step "b/sub" and run "a/b" step "sub" of one workflow: joined
    with "/", both children would be q/a/b/sub."""
    ran_as: list[tuple[str, int]] = []
    child = _child_wf(ran_as)
    rt = runtimes(store_kind, workflows=[_parent_wf("q", child, ("sub", "b/sub"))])
    out1 = rt.start("q", {"x": 1}, run_id="a").result(timeout=T)
    out2 = rt.start("q", {"x": 2}, run_id="a/b").result(timeout=T)
    assert isinstance(out1, Done) and isinstance(out2, Done), (out1, out2)
    assert out1.state["y"] == [10, 10]
    assert out2.state["y"] == [20, 20], f"a child run was shared: {out2.state}"
    assert len(rt.runs(workflow_id="child")) == 4 == len({r for r, _ in ran_as})


def test_concurrent_parents_with_colliding_joined_ids_each_get_their_own_child(runtimes, store_kind):
    """Both parents' children run at the same time (they meet on a barrier)."""
    barrier = threading.Barrier(2, timeout=10)
    ran_as: list[tuple[str, int]] = []

    def meet(state: Any, ctx: Any) -> Any:
        ran_as.append((ctx.run_id, state["x"]))
        barrier.wait()
        return {"y": state["x"] * 10}

    sch = StateSchema({"x": (LastWriteWins(), 0), "y": LastWriteWins()})
    child = Workflow("child", Dag.builder("c").step("c", meet).build(), sch)
    rt = runtimes(store_kind, workflows=[_parent_wf("par", child), _parent_wf("par/a", child)])
    h1 = rt.start("par", {"x": 1}, run_id="a/b")
    h2 = rt.start("par/a", {"x": 2}, run_id="b")
    out1, out2 = h1.result(timeout=T), h2.result(timeout=T)
    assert isinstance(out1, Done) and isinstance(out2, Done), (out1, out2)
    assert (out1.state["y"], out2.state["y"]) == ([10], [20])


def test_a_subgraph_never_adopts_a_run_it_did_not_start(runtimes, store_kind):
    ran_as: list[tuple[str, int]] = []
    child = _child_wf(ran_as)
    rt = runtimes(store_kind, workflows=[_parent_wf("par", child)])
    cid = child_run_id("par", "r", "sub")
    try:
        squatter = rt.start("child", {"x": 5}, run_id=cid).result(timeout=T)
    except AtomrError:
        return  # the child namespace is reserved: fine
    assert isinstance(squatter, Done), squatter
    out = rt.start("par", {"x": 1}, run_id="r").result(timeout=T)
    if isinstance(out, Failed):  # refused with a reason: fine too
        assert out.error_type != "InternalError", out
        return
    assert isinstance(out, Done), out
    assert out.state["y"] == [10], f"the parent adopted a run it did not start: {out.state}"


def test_a_run_whose_meta_has_a_parent_key_is_still_recovered(runtimes):
    entered, release = threading.Event(), threading.Event()
    first = runtimes("lmdb", workflows=[_blocking_wf("parallel", entered, release)])
    path = runtimes._paths[id(first)]
    try:
        first.start("blk", {}, run_id="x", meta={"parent": ["blk", "nobody", "s"]})
    except AtomrError:
        return  # the key is reserved: fine
    assert entered.wait(T)
    first.close()
    release.set()
    rt = runtimes("lmdb", path=path, workflows=[_blocking_wf("parallel", threading.Event(), release)])
    assert rt.get_state("blk", "x").status == "running"
    handles = rt.recover()
    assert [h.run_id for h in handles] == ["x"], "the run is left running with nothing to move it"
    assert isinstance(handles[0].result(timeout=T), Done)


# --- 3. maintenance never touches a live run -------------------------------------------


def _after_clock_moves(ms: int) -> None:
    """Wait until the wall clock (in ms) is past ``ms`` (purge compares updated_ms < now)."""
    deadline = time.monotonic() + 2
    while int(time.time() * 1000) <= ms + 1:
        assert time.monotonic() < deadline, "the clock did not move"
        time.sleep(0.001)


def _readable(rt: Runtime, wid: str, rid: str) -> tuple[str, int]:
    """The run is whole: get_state and history work, its journal has no gap."""
    view = rt.get_state(wid, rid)
    hist = rt.history(wid, rid)
    assert hist and hist[0].label == "input" and hist[0].super_step == 0, hist
    seqs = [seq for seq, _ in rt.store.journal(wid, rid)]
    assert seqs == list(range(1, len(seqs) + 1)), f"journal gap in {wid}/{rid}: {seqs}"
    return view.status, len(seqs)


def _gone(rt: Runtime, wid: str, rid: str) -> None:
    """The run is fully gone: no summary, no journal, no state."""
    assert rt.store.summary(wid, rid) is None
    assert list(rt.store.journal(wid, rid)) == []
    with pytest.raises(RunNotFound):
        rt.get_state(wid, rid)
    assert rid not in {s.run_id for s in rt.runs(workflow_id=wid)}


class FailOnce:
    """A step that fails the first time it runs for each run id, optionally
    blocking (on ``release``) the second time."""

    def __init__(self, block_second: bool = False) -> None:
        self.block_second = block_second
        self.entered = threading.Event()
        self.release = threading.Event()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, state: Any, ctx: Any) -> Any:
        with self._lock:
            first = ctx.run_id not in self._seen
            self._seen.add(ctx.run_id)
        if first:
            raise ValueError(f"first call of {ctx.run_id} fails")
        if self.block_second:
            self.entered.set()
            assert self.release.wait(T), "the test never released the step"
        return {"log": [f"ok {ctx.run_id}"]}


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_purge_and_delete_never_touch_a_run_blocked_in_a_step(runtimes, store_kind, durability):
    """A failed run, resumed, blocks in its step: its store status may still say
    "failed" (durability async/exit), yet purge and delete leave it alone."""
    step = FailOnce(block_second=True)
    wf = build("m", {"a": logger("a"), "f": step}, [("a", "f")])
    rt = runtimes(store_kind, durability, workflows=[wf])
    assert isinstance(rt.start("m", {}, run_id="live").result(timeout=T), Failed)
    assert isinstance(rt.start("m", {}, run_id="old").result(timeout=T), Failed)
    _after_clock_moves(max(s.updated_ms for s in rt.runs()))
    h = rt.resume("m", "live", Command())
    try:
        assert step.entered.wait(T), "the resumed step never ran"
        before = journal(rt, "m", "live")
        n = rt.purge(older_than_s=0, statuses=("done", "failed", "paused"))
        assert n == 1, "purge must delete the idle failed run and only it"
        _gone(rt, "m", "old")
        assert journal(rt, "m", "live")[:len(before)] == before
        t0 = time.monotonic()
        with pytest.raises(AtomrError) as info:
            rt.delete("m", "live")
        assert time.monotonic() - t0 < PROMPT
        assert "executing" in str(info.value)
        assert rt.store.summary("m", "live") is not None
        t0 = time.monotonic()
        with pytest.raises(AtomrError, match="running"):
            rt.purge(older_than_s=0, statuses=("running",))
        with pytest.raises(AtomrError, match="running"):
            rt.purge(0, statuses=("failed", "running"))
        assert time.monotonic() - t0 < PROMPT
        assert rt.store.summary("m", "live") is not None
    finally:
        step.release.set()
    out = h.result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "ok live"]
    assert _readable(rt, "m", "live")[0] == "done"


def test_purge_refuses_running_even_for_a_run_idle_in_the_store(runtimes, store_kind):
    """statuses=("running",) is refused outright, and nothing is deleted."""
    step = FailOnce(block_second=True)
    wf = build("m", {"f": step})
    rt = runtimes(store_kind, workflows=[wf])
    assert isinstance(rt.start("m", {}, run_id="r").result(timeout=T), Failed)
    before = store_state(rt)
    for statuses in (("running",), ["running", "done"], {"running"}):
        with pytest.raises(AtomrError, match="running"):
            rt.purge(0, statuses=statuses)
    assert store_state(rt) == before


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_resume_racing_purge_never_leaves_a_half_deleted_run(runtimes, store_kind, durability):
    step = FailOnce()
    wf = build("race", {"a": logger("a"), "f": step}, [("a", "f")])
    rt = runtimes(store_kind, durability, workflows=[wf])
    outcomes = {"deleted": 0, "resumed": 0}
    for i in range(30):
        rid = f"r{i}"
        assert isinstance(rt.start("race", {}, run_id=rid).result(timeout=T), Failed)
        _after_clock_moves(rt.store.summary("race", rid).updated_ms)
        barrier = threading.Barrier(2, timeout=10)
        got: dict[str, Any] = {}
        # vary the interleaving (not an ordering the test relies on): one side
        # or the other gets a head start of 0..2.5 ms
        lag = (i % 6) * 0.0005

        def resume() -> None:
            barrier.wait()
            if i % 2:
                time.sleep(lag)
            try:
                got["resume"] = rt.resume("race", rid, Command()).result(timeout=T)
            except BaseException as exc:  # noqa: BLE001 - checked below
                got["resume"] = exc

        def purge() -> None:
            barrier.wait()
            if not i % 2:
                time.sleep(lag)
            try:
                got["purge"] = rt.purge(0, statuses=("failed",))
            except BaseException as exc:  # noqa: BLE001 - checked below
                got["purge"] = exc

        threads = [threading.Thread(target=resume), threading.Thread(target=purge)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T)
            assert not t.is_alive(), f"iteration {i}: a racing call hung"
        r, p = got["resume"], got["purge"]
        assert p in (0, 1), f"iteration {i}: purge -> {p!r}"
        if isinstance(r, Done):
            assert p == 0
            assert _readable(rt, "race", rid)[0] == "done"
            assert r.state["log"] == ["a", f"ok {rid}"]
            outcomes["resumed"] += 1
        else:
            assert isinstance(r, RunNotFound), f"iteration {i}: resume -> {r!r}"
            assert p == 1
            _gone(rt, "race", rid)
            outcomes["deleted"] += 1
    assert sum(outcomes.values()) == 30
    # nothing is left running, and the runtime still works
    assert rt.runs(status="running") == []
    assert rt.live_runs() == 0
    out = rt.start("race", {}, run_id="after").result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "f"


# --- 4. a run actor that keeps crashing ends durably failed ---------------------------


def _chain6() -> Workflow:
    names = [f"s{i}" for i in range(6)]
    b = Dag.builder("s0")
    for s in names:
        b.step(s, lambda st, c, s=s: {"n": st["n"] + 1, "log": [s]})
    for x, y in zip(names, names[1:]):
        b.edge(x, y)
    return Workflow("crashy", b.build(), StateSchema({"n": (LastWriteWins(), 0), "log": AppendList()}))


@pytest.mark.parametrize("reopen", [False, True])
def test_a_run_actor_crashing_for_good_is_failed_durably_then_resumable(runtimes, store_kind,
                                                                        monkeypatch, reopen):
    if reopen and store_kind != "lmdb":
        pytest.skip("only LMDB survives a reopen")
    real = wmod.WorkflowActor._dispatch
    crashes: list[int] = []

    def broken(self: Any, steps: Any) -> Any:
        if self.p.super_step >= 2:  # two super-steps commit, then every turn crashes
            crashes.append(self.p.super_step)
            raise RuntimeError("injected bug in the run actor")
        return real(self, steps)

    monkeypatch.setattr(wmod.WorkflowActor, "_dispatch", broken)
    rt = runtimes(store_kind, workflows=[_chain6()])
    t0 = time.monotonic()
    out = rt.start("crashy", {}, run_id="r").result(timeout=T)
    assert time.monotonic() - t0 < 10, "giving up took too long"
    assert isinstance(out, Failed), out
    assert out.error_type == "InternalError"
    assert len(crashes) >= 2, "the actor was not restarted before giving up"
    view = rt.get_state("crashy", "r")
    assert view.status == "failed", "the store must say failed, never running"
    assert view.error is not None and view.error[1] == "InternalError"
    assert view.values["n"] == 2 and view.values["log"] == ["s0", "s1"]
    assert [s.run_id for s in rt.runs(status="failed")] == ["r"]
    assert rt.runs(status="running") == []
    n_crashes = len(crashes)
    assert rt.recover() == []
    assert len(crashes) == n_crashes, "recover() picked the failed run up"
    monkeypatch.undo()  # the cause is gone
    if reopen:
        rt = runtimes.reopen(rt)
        assert rt.recover() == []
    out = rt.resume("crashy", "r", Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["n"] == 6 and out.state["log"] == [f"s{i}" for i in range(6)]
    done = [e.step for e in journal(rt, "crashy", "r") if type(e) is ev.StepCompleted]
    assert done == [f"s{i}" for i in range(6)]  # no committed step ran twice
    assert rt.get_state("crashy", "r").status == "done"


def test_a_crash_looping_run_does_not_harm_other_runs(runtimes, store_kind, monkeypatch):
    real = wmod.WorkflowActor._dispatch

    def broken_for_one(self: Any, steps: Any) -> Any:
        if self.key[1] == "bad":
            raise RuntimeError("injected bug for one run")
        return real(self, steps)

    monkeypatch.setattr(wmod.WorkflowActor, "_dispatch", broken_for_one)
    rt = runtimes(store_kind, workflows=[_chain6()])
    bad = rt.start("crashy", {}, run_id="bad")
    goods = [rt.start("crashy", {}, run_id=f"good{i}") for i in range(5)]
    for h in goods:
        out = h.result(timeout=T)
        assert isinstance(out, Done) and out.state["n"] == 6, out
    out = bad.result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "InternalError", out
    assert rt.get_state("crashy", "bad").status == "failed"
    # a resume while the cause is still there fails it again, durably, without hanging
    out = rt.resume("crashy", "bad", Command()).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "InternalError", out
    assert rt.get_state("crashy", "bad").status == "failed"


# --- 5. bad requests are answered at once with a named error ---------------------------


def _paused(runtimes: Any, store_kind: str) -> Runtime:
    """A runtime with workflow "w" (a -> q, q asks) and run "p" paused at q."""
    from workflows import asker

    rt = runtimes(store_kind, workflows=[build("w", {"a": logger("a"), "q": asker("q")}, [("a", "q")])])
    out = rt.start("w", {}, run_id="p").result(timeout=T)
    assert isinstance(out, Paused), out
    return rt


def _refused(rt: Runtime, call: Any, error: type[BaseException] = AtomrError) -> BaseException:
    """``call(rt)`` raises ``error`` (a named atomr error) at once, and the store
    and the paused run are untouched."""
    view, before = rt.get_state("w", "p"), store_state(rt)
    t0 = time.monotonic()
    with pytest.raises(AtomrError) as info:
        call(rt)
    assert time.monotonic() - t0 < PROMPT, "the refusal was not prompt"
    assert isinstance(info.value, error), info.value
    assert str(info.value), "the error says nothing"
    assert rt.get_state("w", "p") == view
    assert store_state(rt) == before
    assert rt.live_runs() == 0, "a refused request left a run actor behind"
    return info.value


NAN, INF = float("nan"), float("inf")

BAD_REQUESTS = {
    # resume: the command is checked before anything is written
    "update-short-pair": lambda rt: rt.resume("w", "p", Command(update=[("x",)])),
    "update-short-pair-known-channel": lambda rt: rt.resume("w", "p", Command(update=[("log",)])),
    "update-not-iterable": lambda rt: rt.resume("w", "p", Command(update=5)),
    "update-unknown-channel": lambda rt: rt.resume("w", "p", Command(update={"nope": 1})),
    "update-unstorable": lambda rt: rt.resume("w", "p", Command(update={"log": [object()]})),
    "resume-unstorable": lambda rt: rt.resume("w", "p", Command(resume=object())),
    "resume-surrogate": lambda rt: rt.resume("w", "p", Command(resume="a\udc80")),
    "goto-unknown": lambda rt: rt.resume("w", "p", Command(goto="zz")),
    "goto-int": lambda rt: rt.resume("w", "p", Command(goto=5)),
    "not-a-command": lambda rt: rt.resume("w", "p", {"resume": 1}),
    # start: meta, run ids, inputs, timeouts
    "meta-list": lambda rt: rt.start("w", {}, meta=[1, 2]),
    "meta-int-key": lambda rt: rt.start("w", {}, meta={1: 2}),
    "meta-unstorable": lambda rt: rt.start("w", {}, meta={"k": object()}),
    "meta-surrogate": lambda rt: rt.start("w", {}, meta={"k": "\udc80"}),
    "run-id-int": lambda rt: rt.start("w", {}, run_id=123),
    "run-id-empty": lambda rt: rt.start("w", {}, run_id=""),
    "run-id-surrogate": lambda rt: rt.start("w", {}, run_id="a\udc80"),
    "run-id-too-long": lambda rt: rt.start("w", {}, run_id="x" * 600),
    "input-list": lambda rt: rt.start("w", [1, 2]),
    "input-surrogate": lambda rt: rt.start("w", {"log": ["\udc80"]}),
    "start-many-str-ids": lambda rt: rt.start_many("w", [{}, {}], run_ids="ab"),
    "start-many-duplicate-ids": lambda rt: rt.start_many("w", [{}, {}], run_ids=["d", "d"]),
    "start-many-one-bad-id": lambda rt: rt.start_many("w", [{}, {}], run_ids=["ok", "a\udc80"]),
    "start-many-one-bad-input": lambda rt: rt.start_many("w", [{}, {"nope": 1}]),
    # run ids with a lone surrogate anywhere
    "resume-run-id-surrogate": lambda rt: rt.resume("w", "a\udc80", Command()),
    "delete-run-id-surrogate": lambda rt: rt.delete("w", "a\udc80"),
    "prune-run-id-surrogate": lambda rt: rt.prune("w", "a\udc80"),
    "fork-run-id-surrogate": lambda rt: rt.fork("w", "a\udc80", 0),
    "fork-new-id-surrogate": lambda rt: rt.fork("w", "p", 0, new_run_id="a\udc80"),
    "state-at-run-id-surrogate": lambda rt: rt.state_at("w", "a\udc80", 0),
    # super-steps, keep_last, older_than_s
    "state-at-str": lambda rt: rt.state_at("w", "p", "1"),
    "state-at-negative": lambda rt: rt.state_at("w", "p", -1),
    "state-at-float": lambda rt: rt.state_at("w", "p", 1.0),
    "state-at-bool": lambda rt: rt.state_at("w", "p", True),
    "fork-str": lambda rt: rt.fork("w", "p", "1"),
    "fork-edits-list": lambda rt: rt.fork("w", "p", 1, edits=[("log", ["x"])]),
    "fork-edits-unknown-channel": lambda rt: rt.fork("w", "p", 1, edits={"nope": 1}),
    "prune-keep-0": lambda rt: rt.prune("w", "p", keep_last=0),
    "prune-keep-str": lambda rt: rt.prune("w", "p", keep_last="2"),
    "prune-keep-bool": lambda rt: rt.prune("w", "p", keep_last=True),
    "prune-keep-float": lambda rt: rt.prune("w", "p", keep_last=2.0),
    "purge-nan": lambda rt: rt.purge(NAN),
    "purge-inf": lambda rt: rt.purge(INF),
    "purge-negative": lambda rt: rt.purge(-1),
    "purge-str": lambda rt: rt.purge("1"),
    "purge-statuses-str": lambda rt: rt.purge(0, statuses="paused"),
    "purge-unknown-status": lambda rt: rt.purge(0, statuses=("paused", "zombie")),
    "recover-max-active-0": lambda rt: rt.recover(max_active=0),
    # a second Runtime on the same store object
    "second-runtime": lambda rt: Runtime(store=rt.store),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_refused_at_once_and_changes_nothing(runtimes, store_kind, case):
    rt = _paused(runtimes, store_kind)
    _refused(rt, BAD_REQUESTS[case])
    # the paused run still answers a good request
    out = rt.resume("w", "p", Command(resume="ok")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == [["q", "ok"]]


def test_state_at_with_a_str_names_the_type_not_a_missing_checkpoint(runtimes, store_kind):
    rt = _paused(runtimes, store_kind)
    err = _refused(rt, lambda rt: rt.state_at("w", "p", "1"))
    assert not isinstance(err, CheckpointNotFound), err
    assert "str" in str(err) and "int" in str(err), err
    assert rt.state_at("w", "p", 1).super_step == 1  # the int works


def test_several_bad_requests_in_a_row_leave_the_run_resumable(runtimes, store_kind):
    rt = _paused(runtimes, store_kind)
    for case, call in BAD_REQUESTS.items():
        try:
            _refused(rt, call)
        except BaseException as exc:  # noqa: BLE001 - name the case that broke
            raise AssertionError(f"case {case!r}: {exc!r}") from exc
    out = rt.resume("w", "p", Command(resume="ok")).result(timeout=T)
    assert isinstance(out, Done), out


def test_flush_and_other_calls_after_close_raise_runtime_closed(runtimes, store_kind):
    rt = _paused(runtimes, store_kind)
    rt.close()
    for call in (lambda: rt.flush(), lambda: rt.start("w", {}), lambda: rt.get_state("w", "p"),
                 lambda: rt.resume("w", "p", Command(resume=1)), lambda: rt.purge(0),
                 lambda: rt.runs(), lambda: rt.history("w", "p"), lambda: rt.recover()):
        t0 = time.monotonic()
        with pytest.raises(RuntimeClosed):
            call()
        assert time.monotonic() - t0 < PROMPT
    rt.close()  # a second close is harmless


def test_a_second_runtime_on_an_open_store_object_is_refused(runtimes, store_kind):
    rt = _paused(runtimes, store_kind)
    with pytest.raises(AtomrError, match="already used"):
        Runtime(store=rt.store)
    # the first runtime is unharmed
    out = rt.resume("w", "p", Command(resume="ok")).result(timeout=T)
    assert isinstance(out, Done), out
    assert rt.start("w", {}, run_id="again").result(timeout=T).workflow_id == "w"


BAD_TIMEOUTS = {
    "resume-timeout-nan": lambda rt: rt.resume("w", "p", Command(resume=1), timeout=NAN),
    "resume-timeout-str": lambda rt: rt.resume("w", "p", Command(resume=1), timeout="30"),
    "start-timeout-nan": lambda rt: rt.start("w", {}, run_id="s", timeout=NAN),
    "start-timeout-negative": lambda rt: rt.start("w", {}, run_id="s", timeout=-1),
    "start-many-timeout-str": lambda rt: rt.start_many("w", [{}, {}], run_ids=["m1", "m2"], timeout="x"),
}


@pytest.mark.parametrize("case", list(BAD_TIMEOUTS))
def test_a_bad_timeout_is_refused_before_the_request_is_sent(runtimes, store_kind, case):
    rt = _paused(runtimes, store_kind)
    _refused(rt, BAD_TIMEOUTS[case])
    rt.flush()
    assert [s.run_id for s in rt.runs()] == ["p"], "a refused start started runs"
    assert rt.get_state("w", "p").status == "paused", "a refused resume resumed the run"


BAD_IDS = {"surrogate": "a\udc80", "int": 123, "empty": "", "70k-bytes": "x" * 70_000}

ID_CALLS = {
    "get_state": lambda rt, rid: rt.get_state("w", rid),
    "history": lambda rt, rid: rt.history("w", rid),
    "ref": lambda rt, rid: rt.ref("w", rid),
    "resume": lambda rt, rid: rt.resume("w", rid, Command()),
    "delete": lambda rt, rid: rt.delete("w", rid),
    "prune": lambda rt, rid: rt.prune("w", rid),
    "state_at": lambda rt, rid: rt.state_at("w", rid, 0),
    "fork": lambda rt, rid: rt.fork("w", rid, 0),
    "fork-new-id": lambda rt, rid: rt.fork("w", "p", 0, new_run_id=rid),
    "start": lambda rt, rid: rt.start("w", {}, run_id=rid),
}

_REF = ("Runtime.ref() does not check the run id: it spawns a run actor for an id start() refuses "
        "(a Run told to it is Rejected with a raw UnicodeEncodeError/AttributeError, or creates a run "
        "with an empty id)")
_LONG = ("format.check_ids builds the run key (u16 length fields) before comparing its size with "
         "MAX_KEY_BYTES: an id over 65,535 bytes raises struct.error, not StoreError")
_READ = ("Runtime.get_state()/history() do not check the run id: LmdbStore.summary -> format.run_key "
         "raises UnicodeEncodeError / AttributeError")
#: (store, call, id) -> the reason it is expected to fail (none left)
KNOWN_ID_BUGS: dict[tuple[str, str, str], str] = {}


@pytest.mark.parametrize("bad", list(BAD_IDS))
@pytest.mark.parametrize("call", list(ID_CALLS))
def test_a_run_id_that_cannot_be_stored_is_refused_by_every_call(runtimes, any_store_kind, call, bad, request):
    store_kind = any_store_kind
    reason = KNOWN_ID_BUGS.get((store_kind, call, bad))
    if reason is not None:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))
    rt = _paused(runtimes, store_kind)
    if call == "delete" and bad == "70k-bytes" and store_kind == "memory":
        # no such run: "nothing deleted" is a fine answer too, as is a refusal
        before = store_state(rt)
        try:
            assert rt.delete("w", BAD_IDS[bad]) is False
        except AtomrError:
            pass
        assert store_state(rt) == before
        return
    _refused(rt, lambda rt: ID_CALLS[call](rt, BAD_IDS[bad]))


@pytest.mark.parametrize("wid", ["w\udc80", "w" * 70_000], ids=["surrogate", "70k-chars"])
def test_a_workflow_id_that_cannot_be_stored_is_refused(runtimes, any_store_kind, wid):
    rt = runtimes(any_store_kind)
    with pytest.raises(AtomrError):
        wf = build(wid, {"a": logger("a")})
        rt.register(wf)
        rt.start(wid, {}, run_id="r")
    assert rt.runs() == [] and rt.live_runs() == 0


@pytest.mark.parametrize("timeout", [NAN, "1", 1e300])
@pytest.mark.parametrize("what", ["result", "events"])
def test_a_bad_handle_timeout_is_refused_at_once(runtimes, timeout, what):
    release = threading.Event()
    entered = threading.Event()

    def blocked(state: Any, ctx: Any) -> Any:
        entered.set()
        release.wait(T)
        return {"log": ["late"]}

    rt = runtimes("memory", workflows=[build("b", {"s": blocked})])
    h = rt.start("b", {}, run_id="r")
    assert entered.wait(T)
    got: list[BaseException | None] = []

    def wait() -> None:
        try:
            if what == "result":
                h.result(timeout=timeout)
            else:
                next(iter(h.events(timeout=timeout)))
                next(iter(h.events(timeout=timeout)))
            got.append(None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            got.append(exc)

    t = threading.Thread(target=wait, daemon=True)
    try:
        t.start()
        t.join(PROMPT)
        assert not t.is_alive(), f"{what}(timeout={timeout!r}) hangs while the run is blocked"
        assert got and isinstance(got[0], AtomrError), got
    finally:
        release.set()
        t.join(T)
    assert isinstance(h.result(timeout=T), Done)


# --- 6. a step's exception that cannot be printed fails the run readably ---------------


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class StrRaisesBase(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


class StrNotStr(Exception):
    def __str__(self) -> Any:
        return 42


class ReprAndStrRaise(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


UNPRINTABLE = {
    "surrogate-message": lambda: ValueError("bad \udc80 text \ud800"),
    "surrogate-args": lambda: KeyError("\udc80"),
    "str-raises": StrRaises,
    "str-raises-base-exception": StrRaisesBase,
    "str-returns-int": StrNotStr,
    "str-and-repr-raise": ReprAndStrRaise,
}


def _placed(where: str, exc: Any, calls: Calls) -> Workflow:
    """A workflow whose user code raises ``exc()`` at ``where``."""
    from atomr import Loop, Map

    def boom(state: Any, ctx: Any) -> Any:
        calls.hit("boom", ctx)
        raise exc()

    async def aboom(state: Any, ctx: Any) -> Any:
        calls.hit("boom", ctx)
        raise exc()

    def element(item: Any, ctx: Any) -> Any:
        calls.hit("boom", ctx)
        raise exc()

    def predicate(state: Any) -> bool:
        calls.hit("boom")
        raise exc()

    sch = StateSchema({"log": AppendList(), "items": (LastWriteWins(), [1]), "out": LastWriteWins()})
    steps: dict[str, Any] = {"r": logger("r")}
    if where == "inline":
        steps["f"] = boom
    elif where == "parallel":
        steps.update(f=boom, g=logger("g"))
    elif where == "async":
        steps["f"] = aboom
    elif where == "map":
        steps["f"] = Map(element, items="items", into="out")
    elif where == "loop-body":
        steps["f"] = Loop(boom, while_=lambda s: True, max_iterations=3)
    elif where == "loop-predicate":
        steps["f"] = Loop(logger("body"), while_=predicate, max_iterations=3)
    else:
        raise ValueError(where)
    return build("u", steps, [("r", s) for s in steps if s != "r"], sch=sch)


PLACES = ["inline", "parallel", "async", "map", "loop-body", "loop-predicate"]


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("kind", list(UNPRINTABLE))
def test_an_unprintable_step_exception_fails_the_run_readably(runtimes, store_kind, kind, where):
    calls = Calls()
    exc = UNPRINTABLE[kind]
    rt = runtimes(store_kind, workflows=[_placed(where, exc, calls)])
    out = rt.start("u", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed), out
    assert out.step_id == "f" and out.error_type != "InternalError", out
    assert out.message.encode("utf-8"), "the message must be encodable"
    assert out.error_type == type(exc()).__name__, out
    assert calls["boom"] == 1, f"user code ran {calls['boom']} times: a crash loop"
    view = rt.get_state("u", "r")
    assert view.status == "failed" and view.error is not None
    assert view.error[:2] == ("f", out.error_type) and view.error[2] == out.message
    assert rt.history("u", "r")[-1].label == "failed:f"
    assert rt.runs(status="failed")[0].run_id == "r"
    if store_kind == "lmdb":  # and it reads back from disk
        rt = runtimes.reopen(rt)
        assert rt.get_state("u", "r").error == view.error
        assert rt.recover() == []


class _Unencodable(str):
    """A str whose encode() raises: what a hostile ``__str__`` can return."""

    def encode(self, *a: Any, **k: Any) -> bytes:
        raise RuntimeError("this text cannot be encoded")


class StrSubclass(Exception):
    def __str__(self) -> str:
        return _Unencodable("sub \udc80")


@pytest.mark.parametrize("where", ["inline", "parallel", "async"])
def test_an_exception_whose_str_is_a_hostile_str_subclass_fails_the_run(runtimes, where):
    calls = Calls()
    rt = runtimes("memory", workflows=[_placed(where, StrSubclass, calls)])
    h = rt.start("u", {}, run_id="r")
    try:
        out = h.result(timeout=PROMPT)
    finally:
        status = rt.get_state("u", "r").status
    assert isinstance(out, Failed) and out.error_type == "StrSubclass", out
    assert calls["boom"] == 1 and status == "failed"


class _BadItems(dict):
    def items(self) -> Any:
        raise RuntimeError("items() of this result fails")


def test_a_step_result_that_cannot_be_read_fails_the_run_after_one_call(runtimes):
    calls = Calls()

    def weird(state: Any, ctx: Any) -> Any:
        calls.hit("weird", ctx)
        return _BadItems(log=["x"])

    rt = runtimes("memory", workflows=[build("wr", {"f": weird})])
    out = rt.start("wr", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed), out
    assert calls.attempts("weird") == [1], f"the step ran as attempts {calls.attempts('weird')}"
    assert out.error_type != "InternalError", out


# --- 7. close() racing callers ------------------------------------------------------


_PYKKA_THREADS = ("StepActor", "Checkpointer", "WorkflowActor")


def _runtime_threads(baseline: set[threading.Thread]) -> list[str]:
    """Threads of atomr started since ``baseline`` and still alive."""
    return sorted(t.name for t in threading.enumerate()
                  if t not in baseline and t.is_alive()
                  and (t.name.startswith("atomr") or t.name.startswith(_PYKKA_THREADS)))


def _no_threads_left(baseline: set[threading.Thread], timeout: float = PROMPT) -> None:
    deadline = time.monotonic() + timeout
    while _runtime_threads(baseline):
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left alive after close(): {_runtime_threads(baseline)}")
        time.sleep(0.01)


def _quick_chain(wid: str = "c") -> Workflow:
    from workflows import chain

    return chain(wid, 3)


@pytest.mark.parametrize("how", ["start", "start_many"])
def test_close_racing_starts_answers_every_caller_promptly(runtimes, store_kind, how):
    baseline = set(threading.enumerate())
    # a hang would show as ResultTimeout after this many seconds (not the default 30)
    rt = runtimes(store_kind, workflows=[_quick_chain()], timeout=2 * PROMPT)
    n_threads = 4
    first_done = threading.Barrier(n_threads + 1, timeout=T)
    calls: list[tuple[float, Any]] = []
    handles: list[Any] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        i = 0
        while True:
            t0 = time.monotonic()
            try:
                if how == "start":
                    hs = [rt.start("c", {}, run_id=f"t{k}-{i}")]
                else:
                    hs = rt.start_many("c", [{}] * 5, run_ids=[f"t{k}-{i}-{j}" for j in range(5)])
                got: Any = "started"
            except RuntimeClosed:
                hs, got = [], "closed"
            except BaseException as exc:  # noqa: BLE001 - reported below
                hs, got = [], exc
            with lock:
                calls.append((time.monotonic() - t0, got))
                handles.extend(hs)
            if i == 0:
                first_done.wait()
            if got != "started":
                return
            i += 1
            if i > 10_000:
                return

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    first_done.wait()  # every racing thread has started runs: close now, while they go on
    t0 = time.monotonic()
    rt.close()
    assert time.monotonic() - t0 < PROMPT, "close() took too long"
    for t in threads:
        t.join(T)
        assert not t.is_alive(), "a racing start() never returned"
    bad = [(d, g) for d, g in calls if g not in ("started", "closed") or d >= PROMPT]
    assert not bad, f"racing calls that hung or raised something else: {bad[:5]}"
    assert sum(1 for _, g in calls if g == "closed") == n_threads
    for h in handles:
        t1 = time.monotonic()
        try:
            out = h.result(timeout=2 * PROMPT)
            assert isinstance(out, Done), out
        except RuntimeClosed:
            pass
        assert time.monotonic() - t1 < PROMPT, "a handle of a run interrupted by close() was not answered"
    _no_threads_left(baseline)


def _blocking_wf(shape: str, entered: threading.Event, release: threading.Event,
                 wid: str = "blk") -> Workflow:
    def blocked(state: Any, ctx: Any) -> Any:
        entered.set()
        assert release.wait(T), "the test never released the step"
        return {"log": ["late"]}

    async def ablocked(state: Any, ctx: Any) -> Any:
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.005)
        return {"log": ["late"]}

    if shape == "inline":  # a lone sync step: runs in a dispatcher thread
        return build(wid, {"s": blocked})
    if shape == "parallel":  # on the step pool, next to a quick sibling
        return build(wid, {"r": logger("r"), "s": blocked, "q": logger("q")}, [("r", "s"), ("r", "q")])
    return build(wid, {"s": ablocked})


@pytest.mark.parametrize("store_kind,shape", [
    ("memory", "inline"),
    ("memory", "parallel"), ("memory", "async"), ("lmdb", "parallel"), ("lmdb", "async")])
def test_a_handle_of_a_run_interrupted_by_close_is_answered_promptly(runtimes, store_kind, shape):
    baseline = set(threading.enumerate())
    entered, release = threading.Event(), threading.Event()
    rt = runtimes(store_kind, workflows=[_blocking_wf(shape, entered, release)])
    h = rt.start("blk", {}, run_id="r")
    assert entered.wait(T)
    closer = threading.Thread(target=rt.close, daemon=True)
    got: list[Any] = []
    try:
        t0 = time.monotonic()
        closer.start()
        try:
            h.result(timeout=PROMPT)
        except BaseException as exc:  # noqa: BLE001 - checked below
            got.append(exc)
        waited = time.monotonic() - t0
        if not (got and isinstance(got[0], RuntimeClosed)):
            release.set()  # let close() finish before failing
        closer.join(PROMPT)
        assert not closer.is_alive(), "close() did not return promptly"
    finally:
        release.set()  # the step returns: its (daemon) thread ends
        closer.join(T)
    assert got and isinstance(got[0], RuntimeClosed), got
    assert waited < PROMPT
    _no_threads_left(baseline)
    if store_kind == "lmdb":  # the run is kept as last committed: running, recoverable
        rt2 = runtimes("lmdb", path=runtimes._paths[id(rt)],
                       workflows=[_blocking_wf(shape, threading.Event(), release)])
        assert rt2.get_state("blk", "r").status == "running"
        handles = rt2.recover()
        assert [x.run_id for x in handles] == ["r"]
        out = handles[0].result(timeout=T)
        assert isinstance(out, Done) and out.state["log"][-1] == "late", out


def test_close_keeps_a_finished_sibling_s_writes(runtimes):
    """A sibling completed just before close(): its writes are committed, and it
    does not run again after recovery."""
    entered, release = threading.Event(), threading.Event()
    calls = Calls()
    wf = build("keep", {"r": logger("r"), "s": logger("s", before=lambda s, c: (entered.set(), release.wait(T))),
                        "q": logger("q", calls)}, [("r", "s"), ("r", "q")])
    rt = runtimes("lmdb", workflows=[wf])
    h = rt.start("keep", {}, run_id="r")
    try:
        for e in h.events(timeout=T):
            if e.kind == "completed" and e.step == "q":
                break  # the run actor has recorded q's completion
        assert entered.wait(T)
        rt.close()
    finally:
        release.set()
    wf2 = build("keep", {"r": logger("r"), "s": logger("s"), "q": logger("q", calls)},
                [("r", "s"), ("r", "q")])
    rt2 = runtimes("lmdb", path=runtimes._paths[id(rt)], workflows=[wf2])
    done = [e.step for e in journal(rt2, "keep", "r") if type(e) is ev.StepCompleted]
    assert "q" in done, f"close() dropped q's completion: {done}"
    (h2,) = rt2.recover()
    out = h2.result(timeout=T)
    assert isinstance(out, Done), out
    assert calls["q"] == 1, "q ran again after recovery"
    assert sorted(out.state["log"]) == ["q", "r", "s"]


def test_close_ends_recover_s_feeder_thread(runtimes):
    baseline = set(threading.enumerate())
    entered, release = threading.Event(), threading.Event()
    n_runs = 4
    # runs left "running" in the store: async steps blocked when the runtime closed
    first = runtimes("lmdb", workflows=[_blocking_wf("async", threading.Event(), release)])
    path = runtimes._paths[id(first)]
    for i in range(n_runs):
        first.start("blk", {}, run_id=f"r{i}")
    first.close()
    rt = runtimes("lmdb", path=path, workflows=[_blocking_wf("parallel", entered, release)])
    try:
        assert len(rt.runs(status="running")) == n_runs
        handles = rt.recover(max_active=1)
        assert len(handles) == n_runs
        assert entered.wait(T), "no recovered run started"
        assert "atomr-recover" in [t.name for t in threading.enumerate()]
        t0 = time.monotonic()
        rt.close()
        assert time.monotonic() - t0 < PROMPT
        for h in handles:
            t1 = time.monotonic()
            with pytest.raises(RuntimeClosed):
                h.result(timeout=2 * PROMPT)
            assert time.monotonic() - t1 < PROMPT
    finally:
        release.set()
    _no_threads_left(baseline)
    assert "atomr-recover" not in [t.name for t in threading.enumerate() if t not in baseline]


# --- 8. a start whose first commit does not fit the store ------------------------------

_SMALL_MAP = 256 * 1024  # LmdbStore's minimum is 64 KiB
_TOO_BIG = {"log": ["x" * (2 * _SMALL_MAP)]}


def _small_store_rt(runtimes: Any, tmp_path: Path, durability: str = "sync") -> Runtime:
    store = LmdbStore(tmp_path / "small", map_size=_SMALL_MAP, max_map_size=_SMALL_MAP)
    rt = Runtime(store=store, durability=durability)
    runtimes._open.append(rt)  # closed at teardown like the others
    rt.register(build("w", {"a": logger("a")}))
    return rt


def _does_not_exist(rt: Runtime, wid: str, rid: str) -> None:
    with pytest.raises(RunNotFound):
        rt.get_state(wid, rid)
    with pytest.raises(RunNotFound):
        rt.history(wid, rid)
    assert rid not in [s.run_id for s in rt.runs()]
    assert rt.store.summary(wid, rid) is None


def test_a_start_that_does_not_fit_the_map_raises_and_creates_no_run(runtimes, tmp_path):
    rt = _small_store_rt(runtimes, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        rt.start("w", _TOO_BIG, run_id="big")
    assert time.monotonic() - t0 < PROMPT
    assert type(info.value).__name__ == "StoreFull", info.value
    assert "recover" not in str(info.value), "the run does not exist: nothing to recover"
    _does_not_exist(rt, "w", "big")
    assert rt.live_runs() == 0
    # the runtime still works, and the id is free
    out = rt.start("w", {}, run_id="small").result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["a"], out
    out = rt.start("w", {"log": ["fits"]}, run_id="big").result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["fits", "a"], out
    assert sorted(s.run_id for s in rt.runs()) == ["big", "small"]
    assert rt.recover() == []


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_a_first_commit_that_does_not_fit_says_the_run_was_not_created(runtimes, tmp_path, durability,
                                                                       caplog):
    rt = _small_store_rt(runtimes, tmp_path, durability)
    try:
        out = rt.start("w", _TOO_BIG, run_id="big").result(timeout=T)
    except StoreError:
        out = None  # refused at start(): as good as under sync
    rt.flush()
    _does_not_exist(rt, "w", "big")
    out2 = rt.start("w", {}, run_id="small").result(timeout=T)
    assert isinstance(out2, Done), out2
    rt.flush()
    if out is not None:
        assert isinstance(out, Failed) and out.error_type == "StoreFull", out
        assert "recover" not in out.message, out.message
    gaps = [r.getMessage() for r in caplog.records if "journal gap" in r.getMessage()]
    assert not gaps, gaps


# --- 9. the dispatcher: many runs on a few threads ---------------------------------------


@pytest.mark.parametrize("how", ["start_many", "start"])
def test_two_thousand_async_runs_on_a_bounded_number_of_threads(runtimes, how):
    async def first(state: Any, ctx: Any) -> Any:
        await asyncio.sleep(0.2)
        return {"n": state["n"] + 1, "log": [f"first {ctx.run_id}"]}

    async def second(state: Any, ctx: Any) -> Any:
        await asyncio.sleep(0.2)
        return {"n": state["n"] * 10, "log": ["second"]}

    wf = build("io", {"first": first, "second": second}, [("first", "second")])
    rt = runtimes("memory", workflows=[wf])
    n_runs = 2000
    peak = [threading.active_count()]
    stop = threading.Event()

    def monitor() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], threading.active_count())
            stop.wait(0.005)

    m = threading.Thread(target=monitor, daemon=True)
    m.start()
    try:
        t0 = time.monotonic()
        if how == "start_many":
            handles = rt.start_many("io", [{"n": i} for i in range(n_runs)],
                                    run_ids=[f"r{i}" for i in range(n_runs)])
        else:  # one by one: all in flight together all the same
            handles = [rt.start("io", {"n": i}, run_id=f"r{i}") for i in range(n_runs)]
        outs = [h.result(timeout=T) for h in handles]
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        m.join(T)
    assert all(isinstance(o, Done) for o in outs), [o for o in outs if not isinstance(o, Done)][:3]
    for i, o in enumerate(outs):
        assert o.state["n"] == (i + 1) * 10 and o.state["log"] == [f"first r{i}", "second"], o
    assert len(rt.runs(status="done")) == n_runs
    assert peak[0] <= 32, f"{peak[0]} threads at the peak for {n_runs} runs"
    assert elapsed < 20, f"{n_runs} runs of two 0.2 s awaits took {elapsed:.1f}s"
    assert rt.live_runs() == 0
