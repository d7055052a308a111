"""A tool-using agent with a fake, deterministic model (no network).

    think_1 ── act_1 ── think_2 ── act_2 ── think_3 ── act_3 ── answer

The DAG has a fixed number of think/act rounds. ``think_k`` asks the model what
to do next given the conversation so far; ``act_k`` runs the tool it asked for.
Once the model answers, the remaining rounds have nothing to do and write
nothing. Each round is a committed super-step, so a crash mid-conversation
resumes at the round it reached, without calling the tools already called.

The weather tool fails on its first attempt (a simulated transient outage);
the workflow's RetryPolicy runs it again.

    atomr run examples.agent_loop:workflow --input '{"question": "How warm is it in Lisbon, in Fahrenheit?"}'
"""

from __future__ import annotations

import re
from typing import Any

from atomr import AppendMessages, Dag, LastWriteWins, RetryPolicy, StateSchema, Workflow

ROUNDS = 3

WEATHER_C = {"lisbon": 21, "oslo": -3, "nairobi": 25, "lima": 18}


# -- tools -------------------------------------------------------------------


def weather(args: dict[str, Any], attempt: int) -> dict[str, Any]:
    if attempt == 1:
        raise TimeoutError("weather service did not answer in time")
    city = args["city"].lower()
    if city not in WEATHER_C:
        return {"error": f"no station in {args['city']}"}
    return {"city": args["city"], "celsius": WEATHER_C[city]}


def c_to_f(args: dict[str, Any], attempt: int) -> dict[str, Any]:
    return {"fahrenheit": round(args["celsius"] * 9 / 5 + 32, 1)}


TOOLS = {"weather": weather, "c_to_f": c_to_f}


# -- the fake model ----------------------------------------------------------


def fake_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Deterministic stand-in for a chat model: returns a tool call or a final answer."""
    question = next(m["content"] for m in messages if m["role"] == "user")
    results = {m["tool"]: m["content"] for m in messages if m["role"] == "tool"}
    if "weather" not in results:
        found = re.search(r"\bin ([A-Z][a-z]+)", question)
        if not found:
            return {"final": "Which city do you mean?"}
        return {"tool": "weather", "args": {"city": found.group(1)}}
    w = results["weather"]
    if "error" in w:
        return {"final": f"Sorry: {w['error']}."}
    if "fahrenheit" in question.lower() and "c_to_f" not in results:
        return {"tool": "c_to_f", "args": {"celsius": w["celsius"]}}
    if "c_to_f" in results:
        return {"final": f"It is {results['c_to_f']['fahrenheit']}°F ({w['celsius']}°C) in {w['city']}."}
    return {"final": f"It is {w['celsius']}°C in {w['city']}."}


# -- steps -------------------------------------------------------------------


def _pending_call(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    last = messages[-1] if messages else None
    if last and last["role"] == "assistant" and "tool" in last:
        return last
    return None


def think(state: Any, ctx: Any) -> dict[str, Any] | None:
    if state["answer"] is not None:
        return None
    messages = list(state["messages"])
    if not messages:
        messages = [{"id": "user", "role": "user", "content": state["question"]}]
    reply = fake_model(messages)
    new = [] if state["messages"] else [messages[0]]
    if "final" in reply:
        new.append({"id": ctx.step_id, "role": "assistant", "content": reply["final"]})
        return {"messages": new, "answer": reply["final"]}
    new.append({"id": ctx.step_id, "role": "assistant", "tool": reply["tool"], "args": reply["args"]})
    return {"messages": new}


def act(state: Any, ctx: Any) -> dict[str, Any] | None:
    call = _pending_call(state["messages"])
    if call is None:
        return None
    result = TOOLS[call["tool"]](call["args"], ctx.attempt)
    return {"messages": [{"id": ctx.step_id, "role": "tool", "tool": call["tool"], "content": result}],
            "tool_calls": state["tool_calls"] + 1}


def answer(state: Any, ctx: Any) -> dict[str, Any]:
    if state["answer"] is not None:
        return {}
    reply = fake_model(list(state["messages"]))
    return {"answer": reply.get("final", f"gave up after {ROUNDS} rounds")}


schema = StateSchema({
    "question": (LastWriteWins(), ""),
    "messages": (AppendMessages(), []),
    "answer": LastWriteWins(),
    "tool_calls": (LastWriteWins(), 0),
})

_builder = Dag.builder("think_1")
_prev = None
for _k in range(1, ROUNDS + 1):
    _builder.step(f"think_{_k}", think).step(f"act_{_k}", act).edge(f"think_{_k}", f"act_{_k}")
    if _prev:
        _builder.edge(_prev, f"think_{_k}")
    _prev = f"act_{_k}"
dag = _builder.step("answer", answer).edge(_prev, "answer").build()

workflow = Workflow(
    "agent",
    dag,
    schema,
    retry=RetryPolicy(max_attempts=3, backoff_s=0.01, retry_on=(TimeoutError, ConnectionError)),
)


def main() -> None:
    from atomr import MemoryStore, Runtime

    with Runtime(store=MemoryStore()) as rt:
        rt.register(workflow)
        h = rt.start("agent", {"question": "How warm is it in Lisbon, in Fahrenheit?"})
        for e in h.events(timeout=30):
            if e.kind in ("completed", "retrying"):
                print(f"[{e.super_step}] {e.kind} {e.step}")
        out = h.result(timeout=30)
        print(out.state["answer"])  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
