"""Subgraph: a whole workflow used as one step of another.

    plan ── research (subgraph: gather ── write) ── publish

The child workflow ``kinds-research`` gets a copy of ``topic`` and ``sources``
(``inputs``); when it is done its ``report`` is merged back into the parent
(``outputs``, through the parent's reducer). Its other channels (``notes``)
stay private. The child run is stored on its own, under run id
``"<parent workflow>/<parent run>/research"``, with its own history. When the
child asks a question (``ctx.interrupt``), the parent pauses with the child's
payload; resuming the parent forwards the answer to the child.

    atomr run examples.kinds_subgraph:workflow --input '{"topic": "actors"}'
"""

from __future__ import annotations

from typing import Any

from atomr import AppendList, Dag, LastWriteWins, StateSchema, Subgraph, Workflow


# -- the child workflow ------------------------------------------------------


def gather(state: Any, ctx: Any) -> dict[str, Any]:
    return {"notes": [f"{state['topic']} in {src}" for src in state["sources"]]}


def write(state: Any, ctx: Any) -> dict[str, Any]:
    tone = ctx.interrupt({"question": "Which tone for the report?", "notes": len(state["notes"])})
    return {"report": [f"[{tone}] {state['topic']}: " + "; ".join(state["notes"])]}


child = Workflow(
    "kinds-research",
    Dag.builder("gather").step("gather", gather).step("write", write).edge("gather", "write").build(),
    StateSchema({
        "topic": (LastWriteWins(), ""),
        "sources": (LastWriteWins(), []),
        "notes": (AppendList(), []),
        "report": (AppendList(), []),
    }),
)


# -- the parent workflow -----------------------------------------------------


def plan(state: Any, ctx: Any) -> dict[str, Any]:
    return {"sources": ["the docs", "the code", "the issues"], "log": ["planned"]}


def publish(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": [f"published {len(state['report'])} report(s)"]}


schema = StateSchema({
    "topic": (LastWriteWins(), ""),
    "sources": (LastWriteWins(), []),
    "report": (AppendList(), []),
    "log": (AppendList(), []),
})

dag = (
    Dag.builder("plan")
    .step("plan", plan)
    .step("research", Subgraph(child, inputs=["topic", "sources"], outputs=["report"]))
    .step("publish", publish)
    .edge("plan", "research")
    .edge("research", "publish")
    .build()
)

workflow = Workflow("kinds-subgraph", dag, schema)


def main() -> Any:
    from atomr import Command, MemoryStore, Runtime

    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)  # registers the child workflow too
        paused = rt.start("kinds-subgraph", {"topic": "actors"}, run_id="brief-1").result(timeout=30)
        [question] = paused.interrupts  # type: ignore[union-attr]
        print(f"the child asks: {question.payload['question']}")
        out = rt.resume("kinds-subgraph", "brief-1", Command(resume="plain")).result(timeout=30)
        print(out.state["report"][0])  # type: ignore[union-attr]
        child_history = rt.history("kinds-research", "kinds-subgraph/brief-1/research")
        print(f"child run: {len(child_history)} checkpoints, last {child_history[-1].label!r}")
    return out


if __name__ == "__main__":
    main()
