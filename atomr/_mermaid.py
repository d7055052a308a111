"""Mermaid flowchart text of a workflow's DAG (``Workflow.to_mermaid()``, ``atomr graph``).

One node per step, in topological order, then one line per edge. Branch edges
carry their labels; step kinds get their own shapes (a Loop has a self-loop
edge, a Subgraph is a subroutine box, a Human step a hexagon, a Map a
parallelogram); steps with a breakpoint (``interrupt_before`` /
``interrupt_after``) are marked in their label and styled with a class.
"""

from __future__ import annotations

import re
from typing import Any

from atomr.graph.dag import StepKind

__all__ = ["to_mermaid"]

_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# words mermaid reads as syntax when they stand alone as a node id
_RESERVED = frozenset(
    "end graph subgraph flowchart direction style classdef class click linkstyle call href "
    "default td tb bt rl lr".split()
)

# shape (open, close) per step kind: type(fn).__name__ of a StepKind instance
_SHAPES = {
    "Loop": ("(", ")"),
    "Map": ("[/", "/]"),
    "Human": ("{{", "}}"),
    "Subgraph": ("[[", "]]"),
}

_CLASS_DEFS = {
    "pauseBefore": "stroke:#d9480f,stroke-width:3px,stroke-dasharray:6 3",
    "pauseAfter": "stroke:#1c7ed6,stroke-width:3px,stroke-dasharray:6 3",
    "pauseBoth": "stroke:#862e9c,stroke-width:3px,stroke-dasharray:6 3",
}


def _text(s: object) -> str:
    """Escape text for a quoted mermaid label (entity codes, one line)."""
    out = str(s).replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    out = out.replace("`", "#96;").replace("|", "#124;")
    return " ".join(out.split())


def _node_ids(steps: list[str]) -> dict[str, str]:
    """A mermaid-safe, unique id per step: the step id itself when it is a plain
    identifier, otherwise ``step_<n>``."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for s in steps:
        if _SAFE_ID.match(s) and s.lower() not in _RESERVED and not s.startswith("step_"):
            ids[s] = s
            used.add(s)
    n = 0
    for s in steps:
        if s in ids:
            continue
        while f"step_{n}" in used:
            n += 1
        ids[s] = f"step_{n}"
        used.add(ids[s])
    return ids


def _kind_note(kind: str, fn: Any) -> str | None:
    """A short description of a step kind for its label (None for plain steps)."""
    if kind == "Loop":
        n = getattr(fn, "max_iterations", None)
        return "loop" if n is None else f"loop, max {n}"
    if kind == "Map":
        items, into = getattr(fn, "items", None), getattr(fn, "into", None)
        if isinstance(items, str) and isinstance(into, str):
            return f"map {items} → {into}"
        return "map"
    if kind == "Human":
        prompt = getattr(fn, "prompt", None)
        return f"human: {prompt}" if isinstance(prompt, str) and prompt else "human"
    if kind == "Subgraph":
        child = getattr(getattr(fn, "workflow", None), "id", None)
        return f"subgraph {child}" if isinstance(child, str) else "subgraph"
    return None


def to_mermaid(workflow: Any) -> str:
    """Mermaid ``flowchart TD`` text of ``workflow`` (a Workflow, or a bare Dag)."""
    dag = getattr(workflow, "dag", workflow)
    before = set(getattr(workflow, "interrupt_before", ()))
    after = set(getattr(workflow, "interrupt_after", ()))
    order = dag.topo_sort()
    ids = _node_ids(order)
    lines = ["flowchart TD"]
    loops: list[tuple[str, str]] = []
    classes: dict[str, list[str]] = {}
    for s in order:
        fn = dag.steps[s]
        kind = type(fn).__name__ if isinstance(fn, StepKind) else ""
        label = [_text(s)]
        note = _kind_note(kind, fn)
        if note:
            label.append(f"<i>{_text(note)}</i>")
        if dag.join_policy.get(s) == "any":
            label.append("<i>join: any</i>")
        if s in before:
            label.append("⏸ before")
        if s in after:
            label.append("⏸ after")
        open_, close = _SHAPES.get(kind, ("[", "]"))
        lines.append(f'    {ids[s]}{open_}"{"<br/>".join(label)}"{close}')
        if kind == "Loop":
            n = getattr(fn, "max_iterations", None)
            loops.append((s, "repeat" if n is None else f"≤ {n}×"))
        if s in before or s in after:
            cls = "pauseBoth" if s in before and s in after else "pauseBefore" if s in before else "pauseAfter"
            classes.setdefault(cls, []).append(ids[s])
    for a in order:
        spec = dag.branches.get(a)
        for b in dag.edges[a]:
            labels = [lbl for lbl, target in spec.targets.items() if target == b] if spec else []
            if labels:
                lines.append(f'    {ids[a]} -->|"{_text(" / ".join(labels))}"| {ids[b]}')
            else:
                lines.append(f"    {ids[a]} --> {ids[b]}")
    for s, text in loops:
        lines.append(f'    {ids[s]} -->|"{_text(text)}"| {ids[s]}')
    for cls, members in classes.items():
        lines.append(f"    classDef {cls} {_CLASS_DEFS[cls]}")
        lines.append(f"    class {','.join(members)} {cls}")
    return "\n".join(lines) + "\n"
