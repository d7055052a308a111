"""A Loop whose body is a sub-DAG run layer by layer within each iteration."""

import pytest

from atomr import AppendList, Dag, Done, LastWriteWins, Loop, Map, MemoryStore, Paused, Runtime, StateSchema, Workflow
from atomr.errors import GraphError
from atomr.types import Command

T = 30


def _schema():
    return StateSchema({"n": (LastWriteWins(), 0), "log": AppendList()})


def _body():
    # draft -> (check, score) : check and score see draft's write
    return (Dag.builder("draft")
            .step("draft", lambda s, c: {"n": s["n"] + 1, "log": [f"draft{s['n'] + 1}"]})
            .step("check", lambda s, c: {"log": [f"check{s['n']}"]})
            .step("score", lambda s, c: {"log": [f"score{s['n']}"]})
            .edge("draft", "check").edge("draft", "score").build())


def test_dag_body_runs_each_iteration_layer_by_layer():
    wf = Workflow("w", Dag.builder("loop").step("loop", Loop(_body(), while_=lambda s: s["n"] < 2,
                                                             max_iterations=5)).build(), _schema())
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        out = rt.start("w", {}, run_id="r").result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["n"] == 2
        assert out.state["log"] == ["draft1", "check1", "score1", "draft2", "check2", "score2"]
        labels = [c.label for c in rt.history("w", "r")]
        assert labels.count("loop:loop:1") == 1 and labels.count("loop:loop:2") == 1


def test_dag_body_interrupts_and_resumes():
    def ask(s, c):
        return {"log": [f"answer {c.interrupt({'q': s['n']})}"]}

    body = Dag.builder("inc").step("inc", lambda s, c: {"n": s["n"] + 1}).step("ask", ask).edge("inc", "ask").build()
    wf = Workflow("w", Dag.builder("loop").step("loop", Loop(body, while_=lambda s: s["n"] < 1)).build(), _schema())
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        out = rt.start("w", {}, run_id="r").result(timeout=T)
        assert isinstance(out, Paused) and out.interrupts[0].payload == {"q": 1}
        out = rt.resume("w", "r", Command(resume="yes")).result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["answer yes"] and out.state["n"] == 1


def test_dag_body_steps_are_checked_against_the_workflow_schema():
    body = Dag.builder("m").step("m", Map(lambda x, c: x, items="nope", into="log")).build()
    with pytest.raises(GraphError, match="nope"):
        Workflow("w", Dag.builder("loop").step("loop", Loop(body, while_=lambda s: False)).build(), _schema())
    with pytest.raises(GraphError, match="Loop body must be callable"):
        Loop(42, while_=lambda s: False)


def test_a_cycle_is_refused_with_a_pointer_to_a_loop_with_a_dag_body():
    from atomr.errors import CycleError

    with pytest.raises(CycleError, match="Loop step instead .*body may be a Dag"):
        (Dag.builder("model").step("model", lambda s, c: None).step("tools", lambda s, c: None)
         .edge("model", "tools").edge("tools", "model").build())
