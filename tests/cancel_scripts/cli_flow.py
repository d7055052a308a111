"""A workflow that pauses for an answer, for ``atomr cancel`` from the CLI.

    atomr run cancel_scripts.cli_flow:workflow --run-id c1     (PYTHONPATH=tests)
"""

from __future__ import annotations

from typing import Any

from atomr import AppendList, Dag, LastWriteWins, StateSchema, Workflow

WID = "cancel-cli"


def pre(state: Any, ctx: Any) -> Any:
    return {"log": ["pre"], "n": state["n"] + 1}


def ask(state: Any, ctx: Any) -> Any:
    answer = ctx.interrupt({"question": "go on?"})
    return {"log": [f"ask:{answer}"]}


def post(state: Any, ctx: Any) -> Any:
    return {"log": ["post"]}


workflow = Workflow(
    WID,
    Dag.builder("pre").step("pre", pre).step("ask", ask).step("post", post)
    .edge("pre", "ask").edge("ask", "post").build(),
    StateSchema({"log": AppendList(), "n": (LastWriteWins(), 0)}),
)
