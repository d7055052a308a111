"""Human: pause until a person approves or rejects.

    prepare ── approve (human: "Ship it?") ──approved──▶ ship
                                          └─rejected──▶ revise

``approve`` pauses the run with an interrupt whose payload holds the prompt.
Resume it with ``Command(resume={"approved": True, "by": "alice"})``: the answer
is written to ``approval``, ``HumanApproved`` is journaled and the run goes on.
With ``on_reject="continue"`` a rejection (``{"approved": False, "reason":
...}``) is written to ``approval`` too, so the branch after it can route on it
(with the default ``on_reject="fail"`` the run would fail with ``Rejected``).
The wait is durable: a paused run survives a restart of the process.

    atomr run examples.kinds_human:workflow --input '{"release": "v1.2"}'
    atomr resume kinds-human <run-id> --resume '{"approved": true, "by": "alice"}'
"""

from __future__ import annotations

from typing import Any

from atomr import AppendList, Dag, Human, LastWriteWins, StateSchema, Workflow


def prepare(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": [f"prepared {state['release']}"]}


def decided(state: Any) -> str:
    return "approved" if state["approval"]["approved"] else "rejected"


def ship(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": [f"shipped {state['release']} (approved by {state['approval'].get('by')})"]}


def revise(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": [f"back to work: {state['approval'].get('reason', 'no reason given')}"]}


schema = StateSchema({
    "release": (LastWriteWins(), ""),
    "approval": LastWriteWins(),
    "log": (AppendList(), []),
})

dag = (
    Dag.builder("prepare")
    .step("prepare", prepare)
    .step("approve", Human("Ship it?", into="approval", on_reject="continue"))
    .step("ship", ship)
    .step("revise", revise)
    .edge("prepare", "approve")
    .branch("approve", decided, {"approved": "ship", "rejected": "revise"})
    .build()
)

workflow = Workflow("kinds-human", dag, schema)


def main() -> list[Any]:
    from atomr import Command, MemoryStore, Runtime

    answers = [{"approved": True, "by": "alice"}, {"approved": False, "by": "bob", "reason": "tests are red"}]
    outcomes = []
    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        for i, answer in enumerate(answers):
            run_id = f"release-{i}"
            paused = rt.start("kinds-human", {"release": f"v1.{i}"}, run_id=run_id).result(timeout=30)
            print(f"{run_id}: {paused.interrupts[0].payload['prompt']}")  # type: ignore[union-attr]
            out = rt.resume("kinds-human", run_id, Command(resume=answer)).result(timeout=30)
            print(f"{run_id}: {out.state['log'][-1]}")  # type: ignore[union-attr]
            outcomes.append(out)
    return outcomes


if __name__ == "__main__":
    main()
