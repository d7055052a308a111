"""Threads: a done run takes another turn (start(..., if_exists="continue")), on
every store; fork at a Checkpoint; the handles of a resume and of a turn stream
from their own request."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from atomr import (AppendList, Command, Dag, Done, LastWriteWins, Loop, Paused, Runtime, StateSchema,
                   Subgraph, Workflow)
from atomr import events as ev
from atomr.errors import AtomrError, CheckpointNotFound, RunNotContinuable, RunNotPaused, UnknownChannelError
from workflows import ALL_STORES, PERSISTENT, T, runtimes, store_kinds  # noqa: F401 - fixtures

store_kind = store_kinds(*ALL_STORES)

S = StateSchema({"log": AppendList(), "msg": LastWriteWins(), "n": (LastWriteWins(), 0)})


def talker(wid: str = "talk", seen: list[tuple[str, int, str]] | None = None, **kw: Any) -> Workflow:
    """hear -> reply: each step logs what it saw, with its super-step."""

    def hear(state: Any, ctx: Any) -> Any:
        if seen is not None:
            seen.append(("hear", ctx.super_step, state["msg"]))
        return {"log": [f"heard {state['msg']}@{ctx.super_step}"], "n": state["n"] + 1}

    def reply(state: Any, ctx: Any) -> Any:
        if seen is not None:
            seen.append(("reply", ctx.super_step, state["msg"]))
        return {"log": [f"replied {state['n']}@{ctx.super_step}"]}

    dag = Dag.builder("hear").step("hear", hear).step("reply", reply).edge("hear", "reply").build()
    return Workflow(wid, dag, S, **kw)


def test_a_done_run_takes_turns_on_every_store(runtimes, store_kind):
    seen: list[tuple[str, int, str]] = []
    rt = runtimes(store_kind, workflows=[talker(seen=seen)])
    first = rt.start("talk", {"msg": "hi"}, run_id="th").result(timeout=T)
    assert isinstance(first, Done) and first.state["log"] == ["heard hi@1", "replied 1@2"]
    h = rt.start("talk", {"msg": "again"}, run_id="th", if_exists="continue")
    out = h.result(timeout=T)
    # the input went through the reducers (log appended to, msg replaced); super-steps go on counting
    assert isinstance(out, Done) and out.run_id == "th"
    assert out.state == {"log": ["heard hi@1", "replied 1@2", "heard again@3", "replied 2@4"],
                         "msg": "again", "n": 2}
    assert seen == [("hear", 1, "hi"), ("reply", 2, "hi"), ("hear", 3, "again"), ("reply", 4, "again")]
    view = rt.get_state("talk", "th")
    assert view.status == "done" and view.super_step == 4
    labels = [(c.super_step, c.label) for c in rt.history("talk", "th")]
    assert labels == [(0, "input"), (1, "layer:1"), (2, "layer:2"), (2, "done"),
                      (2, "turn:1"), (3, "layer:1"), (4, "layer:2"), (4, "done")]
    # a third turn; the run stays one run (one index row), its journal goes on
    rt.start("talk", {"msg": "third"}, run_id="th", if_exists="continue").result(timeout=T)
    assert [s.run_id for s in rt.runs(workflow_id="talk")] == ["th"]
    turns = [e for _, e in rt.store.journal("talk", "th") if type(e) is ev.TurnStarted]
    assert [(t.turn, t.input) for t in turns] == [(1, {"msg": "again"}), (2, {"msg": "third"})]
    assert rt.get_state("talk", "th").super_step == 6


def test_the_handle_of_a_turn_streams_that_turn_and_streams_of_the_run_see_every_turn(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[talker()])
    rt.start("talk", {"msg": "hi"}, run_id="th").result(timeout=T)
    h = rt.start("talk", {"msg": "again"}, run_id="th", if_exists="continue")
    items = list(h.stream("values", timeout=T))
    turn_seq = next(c.seq for c in rt.history("talk", "th") if c.label == "turn:1")
    assert items[0].cursor == turn_seq and items[0].data["msg"] == "again"
    assert [i.super_step for i in items[:-1]] == [2, 3, 4] and items[-1].mode == "outcome"
    events = [e for e in h.events(timeout=T) if e.kind == "completed"]
    assert [(e.step, e.super_step) for e in events] == [("hear", 3), ("reply", 4)]
    # after=0, and a handle that watches, see both turns
    every = [i for i in h.stream("updates", after=0, timeout=T) if i.mode == "updates"]
    assert [(i.step, i.super_step) for i in every] == [("hear", 1), ("reply", 2), ("hear", 3), ("reply", 4)]
    watched = [i.data["msg"] for i in rt.handle("talk", "th").stream("values", timeout=T) if i.mode == "values"]
    assert watched[0] == "hi" and watched[-1] == "again"


def test_continue_starts_a_run_that_does_not_exist(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[talker()])
    out = rt.start("talk", {"msg": "new"}, run_id="fresh", if_exists="continue").result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["heard new@1", "replied 1@2"]
    assert [c.label for c in rt.history("talk", "fresh")][0] == "input"
    [h] = rt.start_many("talk", [{"msg": "x"}], if_exists="continue")  # no run id: a new run
    assert isinstance(h.result(timeout=T), Done)


def _wait_status(rt: Runtime, wid: str, run: str, status: str) -> None:
    deadline = time.monotonic() + T
    while rt.get_state(wid, run).status != status:
        assert time.monotonic() < deadline, rt.get_state(wid, run)
        time.sleep(0.01)


def test_a_run_that_is_not_done_is_refused_with_what_to_do(runtimes, store_kind):
    gate = threading.Event()

    def ask(state: Any, ctx: Any) -> Any:
        return {"log": [ctx.interrupt("ok?")]}

    def boom(state: Any, ctx: Any) -> Any:
        raise ValueError("bad")

    def slow(state: Any, ctx: Any) -> Any:
        gate.wait(T)
        return {"log": ["slow"]}

    def nap(state: Any, ctx: Any) -> Any:
        ctx.sleep(600)

    wfs = [Workflow(w, Dag.builder("a").step("a", fn).build(), S)
           for w, fn in (("ask", ask), ("boom", boom), ("slow", slow), ("nap", nap))]
    rt = runtimes(store_kind, workflows=wfs)
    assert isinstance(rt.start("ask", {}, run_id="r").result(timeout=T), Paused)
    assert rt.start("boom", {}, run_id="r").result(timeout=T).status == "failed"
    running = rt.start("slow", {}, run_id="r")
    rt.start("nap", {}, run_id="r")
    _wait_status(rt, "nap", "r", "sleeping")
    rt.start("ask", {}, run_id="c")
    _wait_status(rt, "ask", "c", "paused")
    rt.cancel("ask", "c", timeout=T)
    cases = [("ask", "r", "paused", "resume it"), ("boom", "r", "failed", "fork it"),
             ("slow", "r", "running", "wait for its outcome"), ("nap", "r", "sleeping", "wake it"),
             ("ask", "c", "cancelled", "fork it")]
    for wid, run, status, hint in cases:
        before = rt.store.summary(wid, run).last_seq
        with pytest.raises(RunNotContinuable, match=hint) as got:
            rt.start(wid, {"msg": "more"}, run_id=run, if_exists="continue", timeout=T)
        assert got.value.status == status and f"it is {status}" in str(got.value)
        assert rt.store.summary(wid, run).last_seq == before  # nothing written
    gate.set()
    assert isinstance(running.result(timeout=T), Done)
    # a bad input is refused before anything is written; so is a bad if_exists
    with pytest.raises(UnknownChannelError):
        rt.start("slow", {"nope": 1}, run_id="r", if_exists="continue")
    with pytest.raises(AtomrError, match="'error', 'attach' or 'continue'"):
        rt.start("slow", {}, run_id="r", if_exists="again")
    # and a done run still cannot be resumed: the message names both ways on
    with pytest.raises(RunNotPaused, match="another turn"):
        rt.resume("slow", "r")


def test_a_turn_pauses_and_resumes_like_any_run_and_survives_a_reopen(runtimes, store_kind):
    if store_kind not in PERSISTENT:
        pytest.skip("a reopen needs a persistent store")

    def ask(state: Any, ctx: Any) -> Any:
        answer = ctx.interrupt({"about": state["msg"]})
        return {"log": [f"{state['msg']}={answer}"]}

    wf = Workflow("ask", Dag.builder("a").step("a", ask).build(), S)
    rt = runtimes(store_kind, workflows=[wf])
    assert isinstance(rt.start("ask", {"msg": "one"}, run_id="r").result(timeout=T), Paused)
    out = rt.resume("ask", "r", Command(resume="yes")).result(timeout=T)
    assert out.state["log"] == ["one=yes"]
    paused = rt.start("ask", {"msg": "two"}, run_id="r", if_exists="continue").result(timeout=T)
    # Paused.super_step counts committed super-steps; the interrupt id names the one the step runs in
    assert isinstance(paused, Paused) and paused.super_step == 1
    assert [i.id for i in paused.interrupts] == ["a:2:0"]
    rt = runtimes.reopen(rt)
    h = rt.resume("ask", "r", Command(resume="no"))
    assert h.result(timeout=T).state["log"] == ["one=yes", "two=no"]
    # the resume's handle streams from the resume on; after=0 replays the whole run
    mine = [i for i in h.stream("updates", timeout=T) if i.mode == "updates"]
    assert [i.data for i in mine] == [{"a": {"log": ["two=no"]}}]
    every = [i for i in h.stream("updates", after=0, timeout=T) if i.mode == "updates"]
    assert [i.data for i in every] == [{"a": {"log": ["one=yes"]}}, {"a": {"log": ["two=no"]}}]
    # the turn count came back from the store (a snapshot, then the journal): the next is turn 2
    rt = runtimes.reopen(rt)
    assert isinstance(rt.start("ask", {"msg": "3"}, run_id="r", if_exists="continue").result(timeout=T), Paused)
    assert [c.label for c in rt.history("ask", "r")].count("turn:2") == 1


def test_a_subgraph_step_gets_a_child_run_of_its_own_in_each_turn(runtimes, store_kind):
    child = Workflow("child", Dag.builder("c").step(
        "c", lambda s, c: {"log": [f"{s['msg']} in {c.run_id}"]}).build(), S)
    dag = Dag.builder("sub").step("sub", Subgraph(child, inputs=["msg"], outputs=["log"])).build()
    rt = runtimes(store_kind, workflows=[Workflow("par", dag, S)])
    rt.start("par", {"msg": "one"}, run_id="r").result(timeout=T)
    out = rt.start("par", {"msg": "two"}, run_id="r", if_exists="continue").result(timeout=T)
    assert out.state["log"] == ["one in par/r/sub", "two in par/r/sub/2"]
    kids = sorted((s.run_id, s.status) for s in rt.runs(workflow_id="child"))
    assert kids == [("par/r/sub", "done"), ("par/r/sub/2", "done")]


def test_turns_wait_in_line_under_max_concurrent_runs(runtimes, store_kind):
    gate = threading.Event()

    def step(state: Any, ctx: Any) -> Any:
        if state["msg"] == "hold":
            gate.wait(T)
        return {"log": [state["msg"]]}

    wf = Workflow("q", Dag.builder("a").step("a", step).build(), S, max_concurrent_runs=1)
    rt = runtimes(store_kind, workflows=[wf])
    rt.start("q", {"msg": "one"}, run_id="done1").result(timeout=T)
    holder = rt.start("q", {"msg": "hold"}, run_id="holder")
    _wait_status(rt, "q", "holder", "running")
    h = rt.start("q", {"msg": "two"}, run_id="done1", if_exists="continue")
    _wait_status(rt, "q", "done1", "queued")
    with pytest.raises(RunNotContinuable, match="it is queued.*waits for a slot"):
        rt.start("q", {"msg": "three"}, run_id="done1", if_exists="continue")
    gate.set()
    assert holder.result(timeout=T).state["log"] == ["hold"]
    assert h.result(timeout=T).state["log"] == ["one", "two"]
    items = list(h.stream("values", timeout=T))  # from its own turn, queued first
    assert items[0].data["msg"] == "two" and items[0].data["log"] == ["one"]


def loop_workflow() -> Workflow:
    def it(state: Any, ctx: Any) -> Any:
        return {"log": [f"it{state['n']}"], "n": state["n"] + 1}

    dag = (Dag.builder("plan").step("plan", lambda s, c: {"log": ["plan"]})
           .step("loop", Loop(it, lambda s: s["n"] < 3)).step("side", lambda s, c: {"log": ["side"]})
           .step("end", lambda s, c: {"log": [f"end{s['n']}"]})
           .edge("plan", "loop").edge("plan", "side").edge("loop", "end").edge("side", "end").build())
    return Workflow("lp", dag, S)


def test_fork_at_a_checkpoint_inside_a_loop_is_exactly_that_one(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[loop_workflow()])
    rt.start("lp", {}, run_id="src").result(timeout=T)
    hist = rt.history("lp", "src")
    iterations = [c for c in hist if c.label.startswith("loop:")]
    assert [c.super_step for c in iterations] == [1, 1, 1]  # a Loop's iterations share a super-step
    cp = iterations[0]  # after iteration 0, before the others
    new = rt.fork("lp", "src", cp, new_run_id="f1")
    view = rt.get_state("lp", new)
    assert view.status == "paused" and view.values == cp.values and view.meta["forked_from_seq"] == cp.seq
    out = rt.resume("lp", new).result(timeout=T)
    assert out.state["log"] == ["plan", "it0", "it1", "it2", "side", "end3"]
    fh = rt.history("lp", new)
    assert [c.label for c in fh[:3]] == ["fork-of:src@1", "loop:loop:1", "fork"]
    its = [e.iteration for _, e in rt.store.journal("lp", new) if type(e) is ev.LoopIterated]
    assert its == [1, 2, 3]  # the copied first, then the Loop went on with the next
    # with edits, through the reducers, on top of exactly that checkpoint
    other = rt.fork("lp", "src", iterations[1], {"n": 5}, new_run_id="f2")
    out = rt.resume("lp", other).result(timeout=T)
    assert out.state["log"] == ["plan", "it0", "it1", "side", "end5"]
    # a super-step keeps working (positionally and by keyword): the state after it
    for new_id in (rt.fork("lp", "src", 2), rt.fork("lp", "src", super_step=2)):
        assert rt.get_state("lp", new_id).values == next(c.values for c in hist if c.label == "layer:2")
    with pytest.raises(AtomrError, match="not both"):
        rt.fork("lp", "src", 2, super_step=2)
    with pytest.raises(CheckpointNotFound, match="seq 999"):
        rt.fork("lp", "src", type(cp)(1, "x", {}, 0, 999))
    with pytest.raises(CheckpointNotFound, match=f"seq {cp.seq}"):  # not this run's checkpoint there
        rt.fork("lp", "src", type(cp)(cp.super_step, "layer:9", {}, 0, cp.seq))


def test_fork_at_a_checkpoint_of_a_later_turn(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[talker()])
    rt.start("talk", {"msg": "hi"}, run_id="th").result(timeout=T)
    rt.start("talk", {"msg": "again"}, run_id="th", if_exists="continue").result(timeout=T)
    cp = next(c for c in rt.history("talk", "th") if c.label == "turn:1")
    new = rt.fork("talk", "th", cp, {"msg": "instead"})
    out = rt.resume("talk", new).result(timeout=T)
    assert out.state["log"] == ["heard hi@1", "replied 1@2", "heard instead@3", "replied 2@4"]


async def test_astart_continue_and_afork_at_a_checkpoint(runtimes):
    rt = runtimes("memory", workflows=[talker()])
    await (await rt.astart("talk", {"msg": "hi"}, run_id="th")).aresult(timeout=T)
    h = await rt.astart("talk", {"msg": "again"}, run_id="th", if_exists="continue")
    out = await h.aresult(timeout=T)
    assert out.state["n"] == 2
    cp = (await rt.ahistory("talk", "th"))[-1]
    new = await rt.afork("talk", "th", cp)
    assert (await rt.aget_state("talk", new)).values == out.state


# --- workers on a shared store --------------------------------------------------------------------------

from workflows import CrashTarget, crash_targets  # noqa: E402

sql_target = crash_targets("sqlite-full", "postgres")


def test_a_client_gives_a_done_run_a_turn_and_a_worker_executes_it(sql_target: CrashTarget) -> None:
    seen: list[tuple[str, int, str]] = []
    with Runtime(sql_target.open(), worker_id="w") as worker, \
            Runtime(sql_target.open(), execute=False) as client:
        worker.register(talker(seen=seen))
        client.register(talker())
        assert isinstance(client.start("talk", {"msg": "hi"}, run_id="th").result(timeout=T), Done)
        h = client.start("talk", {"msg": "again"}, run_id="th", if_exists="continue")
        out = h.result(timeout=T)
        assert isinstance(out, Done) and out.state["log"][-2:] == ["heard again@3", "replied 2@4"]
        assert client.live_runs() == 0 and seen[-1] == ("reply", 4, "again")  # the worker ran the turn
        items = [i for i in h.stream("values", timeout=T)]
        assert items[0].data["msg"] == "again" and items[-1].mode == "outcome"
        gate = threading.Event()
        worker.register(Workflow("slow", Dag.builder("a").step("a", lambda s, c: gate.wait(T) and None).build(), S))
        client.register(Workflow("slow", Dag.builder("a").step("a", lambda s, c: None).build(), S))
        h = client.start("slow", {}, run_id="s")
        _wait_status(client, "slow", "s", "running")
        with pytest.raises(RunNotContinuable, match="it is running"):  # a worker executes it
            client.start("slow", {}, run_id="s", if_exists="continue")
        gate.set()
        assert isinstance(h.result(timeout=T), Done)


@pytest.mark.parametrize("who", ["workers", "workers-async", "clients"])
def test_concurrent_continues_of_one_done_run_make_exactly_one_turn(sql_target: CrashTarget, who: str) -> None:
    gate = threading.Event()

    def hold(state: Any, ctx: Any) -> Any:
        if state["msg"] != "hi":
            gate.wait(T)  # the turn lasts until both continues are answered
        return {"log": [state["msg"]]}

    def wf() -> Workflow:
        return Workflow("hold", Dag.builder("a").step("a", hold).build(), S)

    mode = "async" if who == "workers-async" else "sync"  # a turn is claimed durably in any mode
    a = Runtime(sql_target.open(), worker_id="A", durability=mode)  # executes the runs
    if who != "clients":  # each continue is written (and its turn executed) by a worker
        b, c = a, Runtime(sql_target.open(), worker_id="B", durability=mode)
    else:  # each is written by a client
        b, c = Runtime(sql_target.open(), execute=False), Runtime(sql_target.open(), execute=False)
    try:
        for rt in {id(r): r for r in (a, b, c)}.values():
            rt.register(wf())
        assert isinstance(a.start("hold", {"msg": "hi"}, run_id="th").result(timeout=T), Done)
        answers: list[Any] = []
        barrier = threading.Barrier(2)

        def go(rt: Runtime, msg: str) -> None:
            barrier.wait(T)
            try:
                answers.append(rt.start("hold", {"msg": msg}, run_id="th", if_exists="continue"))
            except Exception as exc:  # noqa: BLE001
                answers.append(exc)

        threads = [threading.Thread(target=go, args=(rt, m)) for rt, m in ((b, "from-b"), (c, "from-c"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T)
        gate.set()
        handles = [h for h in answers if not isinstance(h, BaseException)]
        lost = [e for e in answers if isinstance(e, BaseException)]
        # refused, named: the other continue got there first (the run is running its turn)
        assert len(handles) == 1 and len(lost) == 1 and isinstance(lost[0], RunNotContinuable), answers
        out = handles[0].result(timeout=T)
        turns = [e for _, e in a.store.journal("hold", "th") if type(e) is ev.TurnStarted]
        assert len(turns) == 1 and out.state["log"] == ["hi", turns[0].input["msg"]]
        assert a.get_state("hold", "th").status == "done"
    finally:
        gate.set()
        for rt in {id(r): r for r in (a, b, c)}.values():
            rt.close()


def test_fork_at_a_pause_inside_a_layer_keeps_the_siblings_that_finished(runtimes, store_kind):
    ran: list[str] = []

    def sib(state: Any, ctx: Any) -> Any:
        ran.append("sib")
        return {"log": ["sib"]}

    def ask(state: Any, ctx: Any) -> Any:
        ran.append("ask")
        return {"log": [f"ask={ctx.interrupt('ok?')}"]}

    dag = Dag.builder("sib").step("sib", sib).step("ask", ask).build()  # one layer of two roots
    rt = runtimes(store_kind, workflows=[Workflow("mid", dag, S)])
    assert isinstance(rt.start("mid", {}, run_id="src").result(timeout=T), Paused)
    pause = rt.history("mid", "src")[-1]
    assert pause.label == "interrupt:ask" and pause.super_step == 0
    assert rt.state_at("mid", "src", 0).label == "interrupt:ask"
    new = rt.fork("mid", "src", pause)
    ran.clear()
    out = rt.resume("mid", new).result(timeout=T)  # ask asks again; sib's result was copied
    assert isinstance(out, Paused) and ran == ["ask"]
    out = rt.resume("mid", new, Command(resume="yes")).result(timeout=T)
    assert sorted(out.state["log"]) == ["ask=yes", "sib"] and ran == ["ask", "ask"]
    # a fork at super-step 0 runs that layer from its start, as before
    ran.clear()
    other = rt.fork("mid", "src", 0)
    assert isinstance(rt.resume("mid", other).result(timeout=T), Paused) and sorted(ran) == ["ask", "sib"]
