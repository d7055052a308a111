"""Map: run one function over every element of a list, a few at a time.

    split ── summarise (map docs → summaries, 4 at once) ── combine

``summarise_one(doc, ctx)`` runs once per document, at most four at the same
time; the summaries land in ``summaries`` in input order, whatever order they
finished in. Each finished element is journaled, so after a crash or a pause
only the unfinished ones run again.

    atomr run examples.kinds_map:workflow --input '{"text": "First doc.\\n\\nSecond doc."}'
"""

from __future__ import annotations

from typing import Any

from atomr import AppendList, Dag, LastWriteWins, Map, StateSchema, Workflow


def split(state: Any, ctx: Any) -> dict[str, Any]:
    docs = [d.strip() for d in state["text"].split("\n\n") if d.strip()]
    return {"docs": docs, "log": [f"split into {len(docs)} doc(s)"]}


def summarise_one(doc: str, ctx: Any) -> str:
    # ctx.item is the element's index; ctx.idempotency_key is unique per element
    words = doc.split()
    head = " ".join(words[:4])
    return f"#{ctx.item}: {head}{'…' if len(words) > 4 else ''} ({len(words)} words)"


def combine(state: Any, ctx: Any) -> dict[str, Any]:
    return {"report": "\n".join(state["summaries"]), "log": ["combined"]}


schema = StateSchema({
    "text": (LastWriteWins(), ""),
    "docs": (LastWriteWins(), []),
    "summaries": (LastWriteWins(), []),
    "report": (LastWriteWins(), ""),
    "log": (AppendList(), []),
})

dag = (
    Dag.builder("split")
    .step("split", split)
    .step("summarise", Map(summarise_one, items="docs", into="summaries", max_concurrency=4))
    .step("combine", combine)
    .edge("split", "summarise")
    .edge("summarise", "combine")
    .build()
)

workflow = Workflow("kinds-map", dag, schema)

SAMPLE = """Durable runs survive a crash of the process.

Each super-step is committed to the journal before the next one starts.

A paused run holds no thread at all.

Maps run their elements a few at a time and keep them in order.

Forks start a new run from any checkpoint."""


def main() -> Any:
    from atomr import MemoryStore, Runtime

    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        out = rt.start("kinds-map", {"text": SAMPLE}).result(timeout=30)
        print(out.state["report"])  # type: ignore[union-attr]
    return out


if __name__ == "__main__":
    main()
