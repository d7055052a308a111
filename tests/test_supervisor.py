"""The supervisor restarts a run actor that died of an internal error."""

import threading

import pykka
import pytest

from atomr import Command, Dag, Done, Failed, LastWriteWins, Runtime, StateSchema, Workflow
from atomr._run import actor as wmod
from workflows import ALL_STORES, reopeners

T = 30


def _wf():
    b = Dag.builder("s0")
    for i in range(6):
        b.step(f"s{i}", lambda s, c: {"n": s["n"] + 1})
    for i in range(5):
        b.edge(f"s{i}", f"s{i + 1}")
    return Workflow("chain", b.build(), StateSchema({"n": (LastWriteWins(), 0)}))


#: a crashed run actor is rehydrated from the store: every store
any_store = reopeners(*ALL_STORES)


@pytest.fixture
def rt(any_store):
    with Runtime(store=any_store()) as rt:
        rt.register(_wf())
        yield rt


def test_a_crashed_run_actor_is_restarted_and_finishes(rt, monkeypatch):
    real = wmod.WorkflowActor._dispatch
    crashes = []
    lock = threading.Lock()

    def flaky(self, steps):
        with lock:
            if not crashes and self.p.super_step == 3:
                crashes.append(steps)
                raise RuntimeError("injected bug")
        return real(self, steps)

    monkeypatch.setattr(wmod.WorkflowActor, "_dispatch", flaky)
    out = rt.start("chain", {"n": 0}, run_id="r").result(timeout=T)
    assert crashes, "the fault was not injected"
    assert isinstance(out, Done), out
    assert out.state["n"] == 6
    # nothing committed ran twice: one StepCompleted per step
    done = [e.step for _, e in rt.store.journal("chain", "r") if type(e).__name__ == "StepCompleted"]
    assert sorted(done) == [f"s{i}" for i in range(6)]


def test_a_run_actor_crashing_again_and_again_is_failed_not_looping(rt, monkeypatch):
    def broken(self, steps):
        raise RuntimeError("always broken")

    monkeypatch.setattr(wmod.WorkflowActor, "_dispatch", broken)
    out = rt.start("chain", {"n": 0}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed)
    assert out.error_type == "InternalError"
    assert "resume it with Command()" in out.message
    # the store says so too: never a run stuck in "running" that nothing can move
    view = rt.get_state("chain", "r")
    assert view.status == "failed" and view.error[1] == "InternalError"
    assert rt.recover() == []
    monkeypatch.undo()
    # failed as last committed: a resume finishes it once the cause is fixed
    assert isinstance(rt.resume("chain", "r", Command()).result(timeout=T), Done)


def test_base_exception_in_our_code_does_not_stop_other_actors(rt, monkeypatch):
    real = wmod.WorkflowActor._dispatch

    def kb(self, steps):
        if self.key[1] == "bad" and self.p.super_step == 1:
            raise KeyboardInterrupt
        return real(self, steps)

    monkeypatch.setattr(wmod.WorkflowActor, "_dispatch", kb)
    good = rt.start("chain", {"n": 0}, run_id="good")
    bad = rt.start("chain", {"n": 0}, run_id="bad")
    assert isinstance(good.result(timeout=T), Done)
    bad.result(timeout=T)
    assert pykka.ActorRegistry.get_by_class_name("Checkpointer") or rt.store.single_writer is False
    assert pykka.ActorRegistry.get_by_class_name("StepActor")
