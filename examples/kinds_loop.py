"""Loop: repeat a step while a condition holds.

    draft ── refine (loop: while score < 0.9, at most 10 times) ── publish

``refine`` runs ``improve`` again and again; ``while_`` is checked before each
iteration (so a draft that is already good enough is not touched), and each
iteration's writes are merged at once and make a checkpoint of their own
(``loop:refine:<n>`` in ``rt.history``). If the condition still holds after
``max_iterations`` the run fails with ``LoopLimitError``.

    atomr run examples.kinds_loop:workflow --input '{"topic": "durable workflows"}'
"""

from __future__ import annotations

from typing import Any

from atomr import AppendList, Dag, LastWriteWins, Loop, StateSchema, Workflow

TARGET = 0.9
EDITS = ["add an example", "cut the jargon", "fix the title", "tighten the ending", "check the facts"]


def draft(state: Any, ctx: Any) -> dict[str, Any]:
    return {"text": f"A note on {state['topic']}.", "score": 0.5, "log": ["drafted"]}


def improve(state: Any, ctx: Any) -> dict[str, Any]:
    n = len(state["edits"])
    edit = EDITS[n % len(EDITS)]
    return {
        "text": f"{state['text']} ({edit})",
        "score": round(state["score"] + 0.15, 2),
        "edits": [edit],
    }


def good_enough(state: Any) -> bool:
    return state["score"] >= TARGET


def publish(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": [f"published after {len(state['edits'])} edit(s), score {state['score']}"]}


schema = StateSchema({
    "topic": (LastWriteWins(), ""),
    "text": (LastWriteWins(), ""),
    "score": (LastWriteWins(), 0.0),
    "edits": (AppendList(), []),
    "log": (AppendList(), []),
})

dag = (
    Dag.builder("draft")
    .step("draft", draft)
    .step("refine", Loop(improve, while_=lambda s: not good_enough(s), max_iterations=10))
    .step("publish", publish)
    .edge("draft", "refine")
    .edge("refine", "publish")
    .build()
)

workflow = Workflow("kinds-loop", dag, schema)


def main() -> Any:
    from atomr import MemoryStore, Runtime

    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        out = rt.start("kinds-loop", {"topic": "durable workflows"}, run_id="note-1").result(timeout=30)
        for c in rt.history("kinds-loop", "note-1"):
            print(f"{c.super_step} {c.label:<16} score={c.values['score']}")
        print(out.state["log"][-1])  # type: ignore[union-attr]
    return out


if __name__ == "__main__":
    main()
