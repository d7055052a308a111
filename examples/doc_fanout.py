"""Fan-out document processor: one split, four analyses at once, one report.

    split ──┬── stats ─────┐
            ├── keywords ──┤
            ├── outline ───┼── report
            └── todos ─────┘

The four analyses run in the same super-step and each appends one finding to
the ``findings`` channel (an ``AppendList``: parallel writes are concatenated
in step order, so the result does not depend on which thread finished first).
``report`` joins them once all four are merged.

    atomr run examples.doc_fanout:workflow --input '{"doc": "# Title\\n\\nSome text. TODO: more"}'
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

STOPWORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or that the this to todo was with".split()
)


def split(state: Any, ctx: Any) -> dict[str, Any]:
    # a section starts at each "# heading" line (text before the first one is a section too)
    sections = [s.strip() for s in re.split(r"(?m)^(?=#)", state["doc"]) if s.strip()]
    if not sections:
        raise ValueError("the document is empty; pass {\"doc\": \"...\"} as input")
    return {"sections": sections}


def stats(state: Any, ctx: Any) -> dict[str, Any]:
    words = sum(len(s.split()) for s in state["sections"])
    return {"findings": [{"kind": "stats", "sections": len(state["sections"]), "words": words}]}


def keywords(state: Any, ctx: Any) -> dict[str, Any]:
    counts = Counter(
        w for s in state["sections"] for w in re.findall(r"[a-z][a-z']+", s.lower()) if w not in STOPWORDS
    )
    top = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    return {"findings": [{"kind": "keywords", "top": top}]}


def outline(state: Any, ctx: Any) -> dict[str, Any]:
    heads = [s.splitlines()[0].lstrip("# ").strip() for s in state["sections"] if s.startswith("#")]
    return {"findings": [{"kind": "outline", "headings": heads}]}


def todos(state: Any, ctx: Any) -> dict[str, Any]:
    found = [line.split("TODO", 1)[1].lstrip(" :") for s in state["sections"]
             for line in s.splitlines() if "TODO" in line]
    return {"findings": [{"kind": "todos", "items": found}]}


def report(state: Any, ctx: Any) -> dict[str, Any]:
    by_kind = {f["kind"]: f for f in state["findings"]}
    lines = [
        f"{by_kind['stats']['sections']} sections, {by_kind['stats']['words']} words",
        "outline: " + (" / ".join(by_kind["outline"]["headings"]) or "(no headings)"),
        "keywords: " + ", ".join(by_kind["keywords"]["top"]),
        f"open TODOs: {len(by_kind['todos']['items'])}",
    ]
    return {"report": "\n".join(lines)}


ANALYSES = {"stats": stats, "keywords": keywords, "outline": outline, "todos": todos}

schema = StateSchema({
    "doc": (LastWriteWins(), ""),
    "sections": (LastWriteWins(), []),
    "findings": (AppendList(), []),
    "report": LastWriteWins(),
})

_builder = Dag.builder("split").step("split", split).step("report", report)
for _name, _fn in ANALYSES.items():
    _builder.step(_name, _fn).edge("split", _name).edge(_name, "report")
dag = _builder.build()

workflow = Workflow("doc-fanout", dag, schema)

SAMPLE_DOC = """# Durable workflows

A workflow is a graph of steps. Each step reads the state and returns writes.

# Recovery

The journal makes every committed super-step survive a crash of the process.
TODO: describe snapshots

# Tooling

The command line shows runs, state and history. TODO: screenshots
"""


def main() -> None:
    from atomr import MemoryStore, Runtime

    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        out = rt.start("doc-fanout", {"doc": SAMPLE_DOC}).result(timeout=30)
        print(out.state["report"])  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
