"""Typed state: the channels declared once, as a TypedDict that type checkers read.

    ask ── answer ── summarize

``StateSchema.from_type(State)`` reads the channels from the class: a reducer
in ``Annotated[type, reducer]`` (an atomr reducer or any ``(current,
incoming) -> merged`` callable such as ``operator.add``), LastWriteWins for a
plain key, and a ``NotRequired`` key starts absent. Steps take ``State`` and
return ``Update`` (the channels they may write), so mypy checks every channel
name and value type in the steps (``tests/test_typed_state.py`` runs it).
``Message`` is a dataclass: ``from_type`` registers it with
``atomr.codec.register`` so messages are stored as they are, without pickle,
and ``AppendMessages`` replaces a message by its ``id``.

    python -m examples.typed_state
    atomr run examples.typed_state:workflow --input '{"topic": "durable workflows"}'
"""

from __future__ import annotations

import operator
import sys
from dataclasses import dataclass
from typing import Annotated, TypedDict

from atomr import AppendMessages, Dag, Done, MemoryStore, Runtime, StateSchema, StepContext, Workflow

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover
    from typing_extensions import NotRequired


@dataclass(frozen=True)
class Message:
    id: str
    role: str
    text: str


class State(TypedDict):
    messages: Annotated[list[Message], AppendMessages()]  # merged by id
    tokens: Annotated[int, operator.add]                  # summed; starts at 0
    topic: str                                            # last write wins
    summary: NotRequired[str]                             # absent until written


class Update(TypedDict, total=False):
    """What a step may write: any of the channels, each with its type."""

    messages: list[Message]
    tokens: int
    summary: str


def ask(state: State, ctx: StepContext) -> Update:
    question = Message("q", "user", f"What is {state['topic']}?")
    return {"messages": [question], "tokens": len(question.text.split())}


def answer(state: State, ctx: StepContext) -> Update:
    question = state["messages"][-1]
    reply = Message("a", "assistant", f"{state['topic'].capitalize()} survive crashes.")
    return {"messages": [reply], "tokens": len(question.text.split()) + len(reply.text.split())}


def summarize(state: State, ctx: StepContext) -> Update:
    first = state["messages"][0]
    edited = Message(first.id, first.role, first.text.rstrip("?") + ", in one line?")
    return {"summary": f"{len(state['messages'])} messages, {state['tokens']} tokens",
            "messages": [edited]}  # same id: replaces the question in place


schema = StateSchema.from_type(State)
dag = (Dag.builder("ask").step("ask", ask).step("answer", answer).step("summarize", summarize)
       .edge("ask", "answer").edge("answer", "summarize").build())
workflow = Workflow("typed_chat", dag, schema)


def main() -> Done:
    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        out = rt.start("typed_chat", {"topic": "durable workflows"}).result(timeout=30)
        assert isinstance(out, Done), out
        for m in out.state["messages"]:
            print(f"{m.role:>9}: {m.text}")
        print(out.state["summary"])
        return out


if __name__ == "__main__":
    main()
