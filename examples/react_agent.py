"""A ReAct agent: the model calls tools until it answers (no network, a fake model).

    agent = Loop(while no answer):   model ──tools?──> tools
                                          └─answer──> respond

LangGraph writes this agent as a cycle, ``model → tools → model``; atomr keeps
the DAG acyclic and puts the cycle in a ``Loop`` whose body is the one turn:
``model`` (an ``async def``), a branch, and ``tools`` (an ``async def``). Each
turn is a child run of its own, so each body step is journaled on its own:
after a crash the turn goes on from the step that was cut off, and a tool that
already ran is not called again. A failing tool is retried by the workflow's
RetryPolicy; the model's tokens reach a "custom" stream through ``ctx.emit``.

    atomr run examples.react_agent:workflow --input '{"messages": [{"role": "user", "content": "Is it warmer in Lisbon than in Oslo?"}]}'
"""

from __future__ import annotations

import asyncio
from typing import Any

from atomr import AppendMessages, Dag, LastWriteWins, Loop, RetryPolicy, StateSchema, Workflow

# -- tools -------------------------------------------------------------------

WEATHER_C = {"lisbon": 21, "oslo": -3, "nairobi": 25}
#: calls of each tool in this process (the tests read it)
CALLS: list[str] = []


async def get_weather(city: str) -> str:
    CALLS.append(f"get_weather({city})")
    await asyncio.sleep(0)  # a real tool would await an HTTP call here
    c = WEATHER_C.get(city.lower())
    return f"{c}°C in {city}" if c is not None else f"no station in {city}"


TOOLS = {"get_weather": get_weather}


# -- the fake model ----------------------------------------------------------


def fake_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """A deterministic stand-in for a chat model: asks for the weather of each
    city of the question it has no result for, then answers."""
    question = next(m["content"] for m in messages if m["role"] == "user")
    known = {m["name"]: m["content"] for m in messages if m["role"] == "tool"}
    cities = [c.capitalize() for c in WEATHER_C if c in question.lower()]
    turn = sum(1 for m in messages if m["role"] == "assistant")
    for city in cities:
        if f"get_weather:{city}" not in known:
            return {"id": f"ai-{turn}", "role": "assistant", "content": "",
                    "tool_calls": [{"id": f"call-{turn}", "name": "get_weather", "args": {"city": city}}]}
    if not cities:
        text = "Which city do you mean?"
    else:
        temps = {city: int(known[f"get_weather:{city}"].split("°")[0]) for city in cities}
        warmest = max(temps, key=lambda c: temps[c])
        text = f"{warmest} is the warmest: " + ", ".join(f"{c} {t}°C" for c, t in temps.items()) + "."
    return {"id": f"ai-{turn}", "role": "assistant", "content": text}


# -- the turn: model, then tools or the answer ---------------------------------


async def call_model(state: Any, ctx: Any) -> dict[str, Any]:
    reply = fake_model(state["messages"])
    for token in reply["content"].split(" ") if reply["content"] else ():
        ctx.emit(token)  # live to "custom" streams, not journaled
    return {"messages": [reply]}


def route(state: Any) -> str:
    return "tools" if state["messages"][-1].get("tool_calls") else "respond"


async def call_tools(state: Any, ctx: Any) -> dict[str, Any]:
    calls = state["messages"][-1]["tool_calls"]
    results = await asyncio.gather(*(TOOLS[c["name"]](**c["args"]) for c in calls))
    return {"messages": [{"id": f"tool-{c['id']}", "role": "tool", "name": f"{c['name']}:{c['args']['city']}",
                          "content": r} for c, r in zip(calls, results)]}


def respond(state: Any, ctx: Any) -> dict[str, Any]:
    return {"answer": state["messages"][-1]["content"]}


schema = StateSchema({"messages": (AppendMessages(), []), "answer": LastWriteWins()})

turn = (Dag.builder("model")
        .step("model", call_model)
        .step("tools", call_tools)
        .step("respond", respond)
        .branch("model", route, {"tools": "tools", "respond": "respond"})
        .build())

workflow = Workflow(
    "react_agent",
    Dag.builder("agent").step("agent", Loop(turn, while_=lambda s: s["answer"] is None, max_iterations=10)).build(),
    schema,
    retry=RetryPolicy(max_attempts=3, backoff_s=0.05),
)


def main() -> None:
    from atomr import MemoryStore, Runtime

    question = {"role": "user", "content": "Is it warmer in Lisbon than in Oslo?"}
    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        h = rt.start("react_agent", {"messages": [question]})
        for item in h.stream(["updates", "custom"], timeout=30):
            if item.mode == "custom":
                print(f"  {item.data['step']}: {item.data['payload']}")
            elif item.mode == "updates":
                print(f"[{item.super_step}] {item.step}")
        out = h.result(timeout=30)
        print(out.state["answer"])  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
