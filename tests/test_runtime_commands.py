"""Every Command form, fork and history, and the errors of a refused resume."""

from __future__ import annotations

import threading

import pytest

from atomr import Command, Done, MergeMap, Paused
from atomr import events as ev
from atomr.errors import (
    AtomrError,
    CheckpointNotFound,
    ReducerError,
    RunExists,
    RunNotFound,
    RunNotPaused,
    UnknownChannelError,
    UnknownStepError,
    WorkflowNotFound,
)
from workflows import (  # noqa: F401 - fixtures
    T,
    Calls,
    build,
    counting_step,
    journal,
    logger,
    runtimes,
    schema,
    ALL_STORES,
    PERSISTENT,
    store_kinds,
    store_state,
    wait_for,
)

#: every store: the runtime's behaviour must not depend on the backend
store_kind = store_kinds(*ALL_STORES)


def _abc(calls=None, **kw):
    """a -> b -> c, each appending its name and incrementing n."""
    return build("abc", {s: counting_step(s, calls) for s in "abc"}, [("a", "b"), ("b", "c")],
                 sch=schema(m=MergeMap()), **kw)


def _view(rt, wid, run_id):
    v = rt.get_state(wid, run_id)
    return (v.status, v.super_step, v.values, v.next, v.interrupts, v.pause_reason, v.error)


def _asking(calls=None):
    def b(state, ctx):
        if calls is not None:
            calls.hit("b", ctx)
        v = ctx.interrupt("b?")
        return {"log": ["b"], "answers": [[v, state["n"]]]}

    return build("ask", {"a": logger("a", calls), "b": b, "c": logger("c", calls)},
                 [("a", "b"), ("b", "c")], sch=schema(m=MergeMap()))


def test_bare_command_continues(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_abc(interrupt_before=["b"])])
    out = rt.start("abc", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "before"
    out = rt.resume("abc", "r").result(timeout=T)  # command defaults to Command()
    assert isinstance(out, Done), out
    assert out.state["n"] == 3


def test_resume_value(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_asking()])
    out = rt.start("ask", {"n": 4}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused)
    out = rt.resume("ask", "r", Command(resume=[1, "two"])).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == [[[1, "two"], 4]]
    resumed = [e for e in journal(rt, "ask", "r") if type(e) is ev.Resumed]
    assert [r.answers for r in resumed] == [{"b:2:0": [1, "two"]}]


def test_update_goes_through_reducers_and_is_journaled(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_abc(calls, interrupt_before=["c"])])
    out = rt.start("abc", {"m": {"x": 1}}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.super_step == 2
    out = rt.resume("abc", "r", Command(update={"log": ["edit"], "m": {"y": 2}, "n": 40})).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "b", "edit", "c"]  # AppendList appended, not replaced
    assert out.state["m"] == {"x": 1, "y": 2}  # MergeMap merged
    assert out.state["n"] == 41
    updates = [e for e in journal(rt, "abc", "r") if type(e) is ev.StateUpdated]
    assert len(updates) == 1 and updates[0].by == "command"
    assert dict(updates[0].edits) == {"log": ["edit"], "m": {"y": 2}, "n": 40}
    hist = rt.history("abc", "r")
    upd = [c for c in hist if c.label == "update"]
    assert len(upd) == 1 and upd[0].super_step == 2
    assert upd[0].values["log"] == ["a", "b", "edit"] and upd[0].values["n"] == 40
    assert calls.counts == {"a": 1, "b": 1, "c": 1}


def test_bad_update_is_refused_and_run_untouched(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_abc(interrupt_before=["c"])])
    rt.start("abc", {}, run_id="r").result(timeout=T)
    before, view = store_state(rt), _view(rt, "abc", "r")
    with pytest.raises(UnknownChannelError):
        rt.resume("abc", "r", Command(update={"nope": 1}))
    with pytest.raises(ReducerError):
        rt.resume("abc", "r", Command(update={"m": "not a dict"}))
    assert store_state(rt) == before and _view(rt, "abc", "r") == view
    assert isinstance(rt.resume("abc", "r", Command()).result(timeout=T), Done)


def test_goto_jumps_back(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_abc(calls, interrupt_before=["c"])])
    out = rt.start("abc", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.super_step == 2
    out = rt.resume("abc", "r", Command(goto="a")).result(timeout=T)
    # a and b run again (super-steps 3 and 4), then the breakpoint before c again
    assert isinstance(out, Paused) and out.reason == "before" and out.steps == ["c"], out
    assert out.super_step == 4
    assert rt.get_state("abc", "r").values["log"] == ["a", "b", "a", "b"]
    out = rt.resume("abc", "r", Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["n"] == 5
    assert calls.counts == {"a": 2, "b": 2, "c": 1}
    resumed = [e for e in journal(rt, "abc", "r") if type(e) is ev.Resumed]
    assert [r.goto for r in resumed] == ["a", None]


def test_goto_forward_skips_steps(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_abc(calls, interrupt_before=["b"])])
    out = rt.start("abc", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.steps == ["b"]
    out = rt.resume("abc", "r", Command(goto="c")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "c"]
    assert calls.counts == {"a": 1, "c": 1}


def test_goto_unknown_step_is_refused(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_abc(interrupt_before=["c"])])
    rt.start("abc", {}, run_id="r").result(timeout=T)
    before, view = store_state(rt), _view(rt, "abc", "r")
    with pytest.raises(UnknownStepError) as ei:
        rt.resume("abc", "r", Command(goto="zzz"))
    assert "zzz" in str(ei.value)
    with pytest.raises(UnknownStepError):  # a valid update does not sneak in
        rt.resume("abc", "r", Command(update={"n": 99}, goto="zzz"))
    assert store_state(rt) == before and _view(rt, "abc", "r") == view
    out = rt.resume("abc", "r", Command()).result(timeout=T)
    assert isinstance(out, Done) and out.state["n"] == 3


def test_update_and_resume(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_asking()])
    rt.start("ask", {"n": 1}, run_id="r").result(timeout=T)
    out = rt.resume("ask", "r", Command(update={"n": 9}, resume="yes")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == [["yes", 9]]  # b saw the update: applied first
    kinds = [type(e).__name__ for e in journal(rt, "ask", "r")]
    i = kinds.index("StateUpdated")
    assert kinds[i + 1] == "Resumed"


def test_update_and_goto(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_abc(calls, interrupt_before=["c"])])
    rt.start("abc", {}, run_id="r").result(timeout=T)
    out = rt.resume("abc", "r", Command(update={"n": 100}, goto="b")).result(timeout=T)
    assert isinstance(out, Paused) and out.steps == ["c"], out
    assert rt.get_state("abc", "r").values["n"] == 101  # b read the updated n
    out = rt.resume("abc", "r", Command()).result(timeout=T)
    assert isinstance(out, Done) and out.state["n"] == 102
    assert out.state["log"] == ["a", "b", "b", "c"]
    assert calls.counts == {"a": 1, "b": 2, "c": 1}


# --- history and fork ---------------------------------------------------------


def test_history_and_fork(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_abc(calls)])
    out = rt.start("abc", {"n": 10}, run_id="src", meta={"k": "v"}).result(timeout=T)
    assert isinstance(out, Done) and out.state["n"] == 13
    hist = rt.history("abc", "src")
    assert (hist[0].super_step, hist[0].label) == (0, "input")
    assert hist[0].values["n"] == 10 and hist[0].next == ["a"]
    assert [(c.super_step, c.label) for c in hist] == [
        (0, "input"), (1, "layer:1"), (2, "layer:2"), (3, "layer:3"), (3, "done")]
    assert [c.seq for c in hist] == sorted(c.seq for c in hist)
    assert rt.state_at("abc", "src", 3).label == "done"  # the last checkpoint of 3
    assert rt.state_at("abc", "src", 1).values["log"] == ["a"]

    # fork at 0: a paused copy of the input that runs everything again
    f0 = rt.fork("abc", "src", 0)
    v = rt.get_state("abc", f0)
    assert v.status == "paused" and v.pause_reason == "fork" and v.super_step == 0
    assert v.values == hist[0].values and v.next == ["a"]
    assert v.meta["forked_from"] == "src@0" and v.meta["k"] == "v"
    assert f0 in {s.run_id for s in rt.runs(status="paused")}
    out = rt.resume("abc", f0, Command()).result(timeout=T)
    assert isinstance(out, Done) and out.state == rt.get_state("abc", "src").values

    # fork at 2 with edits through the reducers: c runs on the edited state
    f2 = rt.fork("abc", "src", 2, edits={"log": ["edit"], "n": 50}, new_run_id="f2")
    assert f2 == "f2"
    fh = rt.history("abc", f2)
    assert fh[0].label == "fork-of:src@2" and fh[0].values["log"] == ["a", "b"]
    assert fh[-1].values["log"] == ["a", "b", "edit"]  # appended, not replaced
    assert rt.get_state("abc", f2).next == ["c"]
    out = rt.resume("abc", f2, Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "b", "edit", "c"] and out.state["n"] == 51

    # fork at the last super-step: nothing left to run
    f3 = rt.fork("abc", "src", 3)
    out = rt.resume("abc", f3, Command()).result(timeout=T)
    assert isinstance(out, Done) and out.state == rt.get_state("abc", "src").values

    assert calls.counts == {"a": 2, "b": 2, "c": 3}
    # the source is untouched
    assert [(c.super_step, c.label) for c in rt.history("abc", "src")] == [
        (c.super_step, c.label) for c in hist]


def test_fork_errors(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_abc()])
    rt.start("abc", {}, run_id="src").result(timeout=T)
    before = store_state(rt)
    with pytest.raises(CheckpointNotFound):
        rt.fork("abc", "src", 99)
    with pytest.raises(CheckpointNotFound):
        rt.state_at("abc", "src", 4)
    with pytest.raises(RunNotFound):
        rt.fork("abc", "nope", 0)
    with pytest.raises(UnknownChannelError):
        rt.fork("abc", "src", 1, edits={"zz": 1})
    with pytest.raises(RunExists):
        rt.fork("abc", "src", 1, new_run_id="src")
    assert store_state(rt) == before


def test_fork_of_a_paused_interrupt_checkpoint(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_asking(calls)])
    rt.start("ask", {"n": 2}, run_id="src").result(timeout=T)
    assert [c.label for c in rt.history("ask", "src") if c.super_step == 1] == ["layer:1", "interrupt:b"]
    f = rt.fork("ask", "src", 1, edits={"n": 7})
    out = rt.resume("ask", f, Command()).result(timeout=T)
    assert isinstance(out, Paused) and [i.id for i in out.interrupts] == ["b:2:0"], out
    out = rt.resume("ask", f, Command(resume="f")).result(timeout=T)
    assert isinstance(out, Done) and out.state["answers"] == [["f", 7]]
    assert rt.get_state("ask", "src").status == "paused"  # the source still waits


# --- refused resumes ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "exit"])
def test_resume_errors_leave_store_unchanged(runtimes, store_kind, mode):
    entered, release = threading.Event(), threading.Event()

    def block(state, ctx):
        entered.set()
        assert release.wait(T)

    wf_done = _abc()
    wf_block = build("blk", {"a": logger("a", before=block)})
    rt = runtimes(store_kind, mode, workflows=[wf_done, wf_block])
    assert isinstance(rt.start("abc", {}, run_id="done").result(timeout=T), Done)
    h = rt.start("blk", {}, run_id="running")
    assert entered.wait(T)
    before = store_state(rt)

    with pytest.raises(RunNotPaused) as ei:
        rt.resume("abc", "done", Command())
    assert ei.value.status == "done"
    with pytest.raises(RunNotPaused) as ei:  # at once, though its step runs in the run's thread
        rt.resume("blk", "running", Command(), timeout=T)
    assert ei.value.status == "running"
    with pytest.raises(RunNotFound):
        rt.resume("abc", "missing", Command())
    with pytest.raises(WorkflowNotFound):
        rt.resume("nope", "done", Command())
    with pytest.raises(AtomrError):
        rt.resume("abc", "done", {"resume": 1})  # not a Command
    assert store_state(rt) == before

    release.set()
    assert isinstance(h.result(timeout=T), Done)
    wait_for(lambda: rt.live_runs() == 0, what="run actors to stop")
    with pytest.raises(RunNotPaused):
        rt.resume("blk", "running", Command())
