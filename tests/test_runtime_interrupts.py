"""Dynamic interrupts (ctx.interrupt), interrupt_before / interrupt_after, and the
pending writes of a layer kept across a pause."""

from __future__ import annotations

import threading

import pytest

from atomr import Command, Done, Paused
from atomr import events as ev
from atomr.errors import AmbiguousResumeError, InterruptError, UnknownInterruptError
from workflows import (  # noqa: F401 - fixtures
    T,
    Calls,
    asker,
    build,
    journal,
    logger,
    runtimes,
    ALL_STORES,
    PERSISTENT,
    store_kinds,
    store_state,
    wait_for,
)

#: every store: the runtime's behaviour must not depend on the backend
store_kind = store_kinds(*ALL_STORES)


def _pause_view(rt, wid, run_id):
    v = rt.get_state(wid, run_id)
    return (v.status, v.super_step, v.values, v.next, v.interrupts, v.pause_reason)


def test_single_interrupt(runtimes, store_kind):
    calls = Calls()
    wf = build("one", {"a": logger("a", calls), "b": asker("b", calls), "c": logger("c", calls)},
               [("a", "b"), ("b", "c")])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("one", {"n": 1}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused), out
    assert out.reason == "interrupt" and out.steps == ["b"] and out.super_step == 1
    assert [(i.id, i.step_id, i.payload) for i in out.interrupts] == [("b:2:0", "b", {"step": "b", "i": 0})]
    v = rt.get_state("one", "r")
    assert v.status == "paused" and v.pause_reason == "interrupt"
    assert v.next == ["b"]
    assert [i.id for i in v.interrupts] == ["b:2:0"]
    assert v.values["log"] == ["a"]
    assert [s.run_id for s in rt.runs(status="paused")] == ["r"]
    out = rt.resume("one", "r", Command(resume={"ok": True})).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == [["b", {"ok": True}]]
    assert out.state["log"] == ["a", "b", "c"]
    assert dict(calls.counts) == {"a": 1, "b": 2, "c": 1}


def test_several_interrupts_in_one_step_match_by_order(runtimes, store_kind):
    calls = Calls()
    wf = build("multi", {"q": asker("q", calls, times=3, payload=lambda i: f"question {i}")})
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("multi", {}, run_id="r").result(timeout=T)
    for i, answer in enumerate(["x", "y"]):
        assert isinstance(out, Paused), out
        assert [(p.id, p.payload) for p in out.interrupts] == [(f"q:1:{i}", f"question {i}")]
        out = rt.resume("multi", "r", Command(resume=answer)).result(timeout=T)
    assert isinstance(out, Paused)
    assert [p.id for p in out.interrupts] == ["q:1:2"]
    out = rt.resume("multi", "r", Command(resume={"q:1:2": "z"})).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == [["q", "x", "y", "z"]]
    assert calls["q"] == 4


def _parallel_askers(calls):
    return build(
        "par",
        {"a": logger("a", calls), "b": asker("b", calls), "c": asker("c", calls), "d": logger("d", calls)},
        [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    )


def test_parallel_interrupts_answered_one_by_one(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_parallel_askers(calls)])
    out = rt.start("par", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused), out
    assert sorted(i.id for i in out.interrupts) == ["b:2:0", "c:2:0"]
    assert sorted(out.steps) == ["b", "c"]

    before = store_state(rt)
    view = _pause_view(rt, "par", "r")
    with pytest.raises(AmbiguousResumeError) as ei:
        rt.resume("par", "r", Command(resume="which?"))
    assert "b:2:0" in str(ei.value) and "c:2:0" in str(ei.value)
    assert ei.value.pending == ["b:2:0", "c:2:0"]
    assert store_state(rt) == before
    assert _pause_view(rt, "par", "r") == view

    out = rt.resume("par", "r", Command(resume={"c:2:0": "C"})).result(timeout=T)
    assert isinstance(out, Paused), out
    assert [i.id for i in out.interrupts] == ["b:2:0"]  # same id as before
    v = rt.get_state("par", "r")
    assert v.next == ["b"]  # c completed: its writes wait in the journal
    assert v.values["log"] == ["a"]
    out = rt.resume("par", "r", Command(resume="B")).result(timeout=T)  # one pending: bare is fine
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "b", "c", "d"]
    assert out.state["answers"] == [["b", "B"], ["c", "C"]]  # topo order, not answer order
    assert dict(calls.counts) == {"a": 1, "b": 2, "c": 2, "d": 1}


def test_parallel_interrupts_answered_together(runtimes, store_kind):
    calls = Calls()
    rt = runtimes(store_kind, workflows=[_parallel_askers(calls)])
    out = rt.start("par", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused), out
    out = rt.resume("par", "r", Command(resume={"b:2:0": 1, "c:2:0": 2})).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == [["b", 1], ["c", 2]]
    assert dict(calls.counts) == {"a": 1, "b": 2, "c": 2, "d": 1}


def test_interrupt_ids_stable_until_answered(runtimes, store_kind):
    calls = Calls()
    wf = build("stable", {"a": logger("a", calls), "b": asker("b", calls)}, [("a", "b")])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("stable", {}, run_id="r").result(timeout=T)
    ids = [i.id for i in out.interrupts]
    assert ids == ["b:2:0"]
    for _ in range(2):  # resuming without an answer asks again, with the same id
        out = rt.resume("stable", "r", Command()).result(timeout=T)
        assert isinstance(out, Paused), out
        assert [i.id for i in out.interrupts] == ids
        assert out.super_step == 1
    if store_kind in PERSISTENT:
        rt = runtimes.reopen(rt)
        assert [i.id for i in rt.get_state("stable", "r").interrupts] == ids
    out = rt.resume("stable", "r", Command(resume="finally")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["answers"] == [["b", "finally"]]
    assert calls["a"] == 1 and calls["b"] == 2  # an unanswered interrupt is not re-asked by running b


def test_unknown_interrupt_id_is_refused(runtimes, store_kind):
    wf = build("unk", {"b": asker("b")})
    rt = runtimes(store_kind, workflows=[wf])
    rt.start("unk", {}, run_id="r").result(timeout=T)
    before = store_state(rt)
    view = _pause_view(rt, "unk", "r")
    with pytest.raises(UnknownInterruptError) as ei:
        rt.resume("unk", "r", Command(resume={"b:9:0": "x"}))
    assert ei.value.ids == ["b:9:0"] and ei.value.pending == ["b:1:0"]
    with pytest.raises(UnknownInterruptError):
        rt.resume("unk", "r", Command(resume={"b:1:0": "x", "zz:1:0": "y"}))
    assert store_state(rt) == before
    assert _pause_view(rt, "unk", "r") == view
    wait_for(lambda: rt.live_runs() == 0, what="the refused run's actor to stop")
    out = rt.resume("unk", "r", Command(resume={"b:1:0": "x"})).result(timeout=T)
    assert isinstance(out, Done), out


def test_resume_value_without_pending_interrupt_is_refused(runtimes, store_kind):
    wf = build("bp", {"a": logger("a"), "b": logger("b")}, [("a", "b")], interrupt_before=["b"])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("bp", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "before"
    before = store_state(rt)
    with pytest.raises(InterruptError):
        rt.resume("bp", "r", Command(resume="x"))
    assert store_state(rt) == before


def test_interrupt_before(runtimes, store_kind):
    calls = Calls()
    wf = build("before", {"a": logger("a", calls), "b": logger("b", calls), "c": logger("c", calls)},
               [("a", "b"), ("a", "c")], interrupt_before=["a", "c"])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("before", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "before" and out.steps == ["a"], out
    assert out.super_step == 0 and calls["a"] == 0
    assert rt.get_state("before", "r").next == ["a"]
    out = rt.resume("before", "r", Command()).result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "before" and out.steps == ["c"], out
    assert out.super_step == 1 and calls["b"] == 0 and calls["c"] == 0
    assert rt.get_state("before", "r").next == ["b", "c"]
    out = rt.resume("before", "r", Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["a", "b", "c"]
    assert dict(calls.counts) == {"a": 1, "b": 1, "c": 1}
    hist = [(c.super_step, c.label) for c in rt.history("before", "r")]
    assert hist == [(0, "input"), (0, "before:a"), (1, "layer:1"), (1, "before:c"),
                    (2, "layer:2"), (2, "done")]


def test_interrupt_after(runtimes, store_kind):
    calls = Calls()
    wf = build("after", {"a": logger("a", calls), "b": logger("b", calls), "c": logger("c", calls)},
               [("a", "b"), ("b", "c")], interrupt_after=["b", "c"])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("after", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "after" and out.steps == ["b"], out
    assert out.super_step == 2
    v = rt.get_state("after", "r")
    assert v.values["log"] == ["a", "b"]  # b's super-step is committed
    assert v.next == ["c"] and calls["c"] == 0
    out = rt.resume("after", "r", Command()).result(timeout=T)
    assert isinstance(out, Paused) and out.reason == "after" and out.steps == ["c"], out
    assert out.super_step == 3 and rt.get_state("after", "r").values["log"] == ["a", "b", "c"]
    assert rt.get_state("after", "r").next == []
    out = rt.resume("after", "r", Command()).result(timeout=T)
    assert isinstance(out, Done), out
    assert dict(calls.counts) == {"a": 1, "b": 1, "c": 1}
    hist = [(c.super_step, c.label, c.values["log"]) for c in rt.history("after", "r")]
    assert hist == [
        (0, "input", []), (1, "layer:1", ["a"]), (2, "layer:2", ["a", "b"]),
        (2, "after:b", ["a", "b"]), (3, "layer:3", ["a", "b", "c"]), (3, "after:c", ["a", "b", "c"]),
        (3, "done", ["a", "b", "c"]),
    ]


@pytest.mark.parametrize("reopen", [False, True])
def test_completed_sibling_not_rerun_after_interrupt(runtimes, store_kind, reopen, tmp_path):
    if reopen and store_kind not in PERSISTENT:
        pytest.skip("a MemoryStore does not survive a reopen")
    calls = Calls()
    side = tmp_path / "a-executions.txt"
    gate = threading.Event()

    def a_effect(state, ctx):
        with open(side, "a") as f:
            f.write(ctx.idempotency_key + "\n")
        gate.set()

    def b_wait(state, ctx):
        gate.wait(10)  # interrupt only once a has done its work (order does not matter)

    def b(state, ctx):
        calls.hit("b", ctx)
        b_wait(state, ctx)
        v = ctx.interrupt("b?")
        return {"log": [f"b:{v}"], "winner": "b"}

    wf = build(
        "pend",
        {"root": logger("root", calls), "a": logger("a", calls, a_effect, {"winner": "a", "n": 42}),
         "b": b, "z": logger("z", calls)},
        [("root", "a"), ("root", "b"), ("a", "z"), ("b", "z")],
    )
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("pend", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Paused), out
    v = rt.get_state("pend", "r")
    assert v.next == ["b"]
    assert v.values["log"] == ["root"] and v.values["n"] == 0  # a's writes pending, not merged
    assert any(type(e) is ev.StepCompleted and e.step == "a" for e in journal(rt, "pend", "r"))
    if reopen:
        rt = runtimes.reopen(rt)
        assert rt.get_state("pend", "r").next == ["b"]
    out = rt.resume("pend", "r", Command(resume="yes")).result(timeout=T)
    assert isinstance(out, Done), out
    assert out.state["log"] == ["root", "a", "b:yes", "z"]
    assert out.state["n"] == 42
    assert out.state["winner"] == "b"  # merged in topo order: a, then b
    assert calls["a"] == 1 and calls["b"] == 2
    assert side.read_text().splitlines() == ["pend/r/2/a"]


def test_every_pause_writes_a_checkpoint(runtimes, store_kind):
    wf = build("cp", {"a": asker("a"), "b": logger("b"), "c": logger("c")}, [("a", "b"), ("b", "c")],
               interrupt_before=["c"], interrupt_after=["b"])
    rt = runtimes(store_kind, workflows=[wf])
    out = rt.start("cp", {}, run_id="r").result(timeout=T)
    labels = []
    while isinstance(out, Paused):
        labels.append(rt.history("cp", "r")[-1].label)
        cmd = Command(resume=1) if out.interrupts else Command()
        out = rt.resume("cp", "r", cmd).result(timeout=T)
    assert isinstance(out, Done), out
    assert labels == ["interrupt:a", "after:b", "before:c"]
    pauses = [e for e in journal(rt, "cp", "r") if type(e) is ev.Paused]
    assert [p.reason for p in pauses] == ["interrupt", "after", "before"]
    # every pause is a snapshot point
    snaps = {s for s, _ in rt.store.snapshots("cp", "r")}
    seqs = [s for s, e in rt.store.journal("cp", "r") if type(e) is ev.Paused]
    assert set(seqs) <= snaps
