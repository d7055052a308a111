"""Branch: a router picks which step runs next.

    triage ──urgent──▶ page ──┐
           └─normal──▶ queue ─┴── close

``triage`` scores a ticket; once its super-step is merged the router reads the
state and returns a label ("urgent" or "normal"), or a list of labels. The
untaken step is skipped; ``close`` waits only for the step that ran. The
decision is journaled (``BranchTaken``), so a recovered run follows it again
instead of asking the router twice.

    atomr run examples.kinds_branch:workflow --input '{"ticket": "Checkout is DOWN for everyone"}'
"""

from __future__ import annotations

from typing import Any

from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

URGENT_WORDS = ("down", "outage", "breach", "data loss")


def triage(state: Any, ctx: Any) -> dict[str, Any]:
    text = state["ticket"].lower()
    score = sum(word in text for word in URGENT_WORDS) + text.count("!")
    return {"priority": score, "log": [f"triaged (priority {score})"]}


def route(state: Any) -> str | list[str]:
    if state["priority"] >= 2:
        return ["urgent", "normal"]  # page someone now, and keep it in the queue
    return "urgent" if state["priority"] == 1 else "normal"


def page(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": ["paged the on-call engineer"]}


def queue(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": ["queued for the support team"]}


def close(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": ["closed the triage"]}


schema = StateSchema({
    "ticket": (LastWriteWins(), ""),
    "priority": (LastWriteWins(), 0),
    "log": (AppendList(), []),
})

dag = (
    Dag.builder("triage")
    .step("triage", triage)
    .step("page", page)
    .step("queue", queue)
    .step("close", close)
    .branch("triage", route, {"urgent": "page", "normal": "queue"})
    .edge("page", "close")
    .edge("queue", "close")
    .build()
)

workflow = Workflow("kinds-branch", dag, schema)

TICKETS = ["The export button is a bit slow", "Checkout is down", "Checkout is DOWN for everyone!!"]


def main() -> list[Any]:
    from atomr import MemoryStore, Runtime

    outcomes = []
    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        for ticket in TICKETS:
            out = rt.start("kinds-branch", {"ticket": ticket}).result(timeout=30)
            print(f"{ticket!r}: {out.state['log']}")  # type: ignore[union-attr]
            outcomes.append(out)
    return outcomes


if __name__ == "__main__":
    main()
