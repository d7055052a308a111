"""Workflow.to_mermaid(): nodes, edges, branch labels, step-kind shapes, breakpoints."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from atomr import Dag, LastWriteWins, StateSchema, StepKind, Workflow
from atomr._mermaid import to_mermaid


def noop(state, ctx):
    return None


SCHEMA = StateSchema({"x": LastWriteWins()})


def node_lines(text: str) -> dict[str, str]:
    """node id -> its declaration line."""
    out = {}
    for line in text.splitlines()[1:]:
        m = re.match(r"\s+([A-Za-z][A-Za-z0-9_]*)[\[\(\{]", line)
        if m and "-->" not in line:
            out[m.group(1)] = line.strip()
    return out


def test_plain_dag_nodes_and_edges_in_topological_order():
    dag = (Dag.builder("a").step("a", noop).step("b", noop).step("c", noop).step("d", noop)
           .edge("a", "b").edge("a", "c").edge("b", "d").edge("c", "d").build())
    text = Workflow("w", dag, SCHEMA).to_mermaid()
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert lines[1:5] == ['    a["a"]', '    b["b"]', '    c["c"]', '    d["d"]']
    assert lines[5:] == ["    a --> b", "    a --> c", "    b --> d", "    c --> d"]
    assert text.endswith("\n")
    assert to_mermaid(dag) == text  # a bare Dag works too


def test_odd_step_ids_get_safe_unique_node_ids_and_escaped_labels():
    ids = ["end", 'say "hi"', "a-b", "step_0", "x<y>#1", "graph"]
    b = Dag.builder(ids[0])
    for s in ids:
        b.step(s, noop)
    for x, y in zip(ids, ids[1:]):
        b.edge(x, y)
    text = to_mermaid(b.build())
    nodes = node_lines(text)
    assert len(nodes) == len(ids)  # one node per step, ids unique
    for nid in nodes:
        assert nid.lower() not in {"end", "graph"}
    body = "\n".join(nodes.values())
    assert "#quot;hi#quot;" in body and 'say "hi"' not in body
    assert "x#lt;y#gt;#35;1" in body
    assert '"a-b"' in body
    assert len([ln for ln in text.splitlines() if "-->" in ln]) == len(ids) - 1


def test_branch_edges_carry_their_labels():
    dag = (Dag.builder("triage").step("triage", noop).step("page", noop).step("queue", noop)
           .step("close", noop)
           .branch("triage", lambda s: "urgent", {"urgent": "page", "normal": "queue", "later": "queue"})
           .edge("page", "close").edge("queue", "close").build())
    text = to_mermaid(dag)
    assert '    triage -->|"urgent"| page' in text
    assert '    triage -->|"normal / later"| queue' in text
    assert "    page --> close" in text


def test_breakpoints_are_marked_with_a_class_and_in_the_label():
    dag = (Dag.builder("a").step("a", noop).step("b", noop).step("c", noop)
           .edge("a", "b").edge("b", "c").build())
    wf = Workflow("w", dag, SCHEMA, interrupt_before=["b", "c"], interrupt_after=["c"])
    text = wf.to_mermaid()
    nodes = node_lines(text)
    assert "before" in nodes["b"] and "after" not in nodes["b"]
    assert "before" in nodes["c"] and "after" in nodes["c"]
    assert "classDef pauseBefore" in text and "    class b pauseBefore" in text
    assert "classDef pauseBoth" in text and "    class c pauseBoth" in text
    assert "before" not in nodes["a"]


def test_join_any_is_noted():
    dag = (Dag.builder("a").step("a", noop).step("b", noop).step("c", noop)
           .edge("a", "b").edge("a", "c").edge("b", "c").join("c", "any").build())
    assert "join: any" in node_lines(to_mermaid(dag))["c"]


# Stand-ins with the names of the real step kinds: the drawing keys on the class name.
class Loop(StepKind):
    def __init__(self, max_iterations=None):
        self.max_iterations = max_iterations


class Map(StepKind):
    items = "docs"
    into = "summaries"


class Human(StepKind):
    prompt = 'Ship "it"?'


class Subgraph(StepKind):
    class workflow:  # noqa: N801 - mimics an object with an id
        id = "child"


def test_step_kinds_get_their_shapes():
    dag = (Dag.builder("refine").step("refine", Loop(10)).step("again", Loop())
           .step("summarise", Map()).step("approve", Human()).step("child", Subgraph())
           .edge("refine", "again").edge("again", "summarise").edge("summarise", "approve")
           .edge("approve", "child").build())
    text = to_mermaid(dag)
    nodes = node_lines(text)
    assert nodes["refine"].startswith('refine("refine') and nodes["refine"].endswith('")')
    assert "max 10" in nodes["refine"]
    assert '    refine -->|"≤ 10×"| refine' in text
    assert '    again -->|"repeat"| again' in text
    assert nodes["summarise"].startswith('summarise[/"') and nodes["summarise"].endswith('"/]')
    assert "docs → summaries" in nodes["summarise"]
    assert nodes["approve"].startswith('approve{{"') and nodes["approve"].endswith('"}}')
    assert "Ship #quot;it#quot;?" in nodes["approve"]
    assert nodes["child"].startswith('child[["') and nodes["child"].endswith('"]]')
    assert "subgraph child" in nodes["child"]


def test_examples_draw():
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from examples import agent_loop, doc_fanout, order_pipeline

    fan = doc_fanout.workflow.to_mermaid()
    for name in doc_fanout.ANALYSES:
        assert f"    split --> {name}" in fan and f"    {name} --> report" in fan
    assert "    act_3 --> answer" in agent_loop.workflow.to_mermaid()
    assert "    approve --> fulfil" in order_pipeline.workflow.to_mermaid()


def test_real_step_kinds_draw_like_their_stand_ins():
    kinds = pytest.importorskip("atomr.kinds")
    schema = StateSchema({"docs": LastWriteWins(), "report": LastWriteWins()})
    child = Workflow("child", Dag.builder("c").step("c", noop).build(), schema)
    dag = (Dag.builder("refine")
           .step("refine", kinds.Loop(noop, while_=lambda s: False, max_iterations=3))
           .step("summarise", kinds.Map(noop, items="docs", into="report", max_concurrency=2))
           .step("approve", kinds.Human("Ship it?", into="report"))
           .step("child", kinds.Subgraph(child, inputs=["docs"], outputs=["report"]))
           .edge("refine", "summarise").edge("summarise", "approve").edge("approve", "child").build())
    text = to_mermaid(Workflow("w", dag, schema))
    nodes = node_lines(text)
    assert '    refine -->|"≤ 3×"| refine' in text
    assert nodes["summarise"].startswith('summarise[/"') and "docs → report" in nodes["summarise"]
    assert nodes["approve"].startswith('approve{{"') and "Ship it?" in nodes["approve"]
    assert nodes["child"].startswith('child[["') and "subgraph child" in nodes["child"]
