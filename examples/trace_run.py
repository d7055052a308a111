"""Trace a run with OpenTelemetry and print its spans as a tree.

    fetch ─┐
           ├─ ship (flaky once, then asks a person)
    price ─┘  (async)

``atomr.otel.instrument(tracer_provider=...)`` turns tracing on: one span per
run execution (start to pause, resume to done: the second links to the
first), one per super-step and one per step attempt (the flaky attempt of
``ship`` is a span of its own, with ``error.type``). Each step runs with its
span current, so the spans the step's own code opens (here an HTTP call and
an LLM call, faked) nest under it, for plain and ``async def`` steps alike.

Needs the ``otel`` extra and the OpenTelemetry SDK, which exports the spans
(here to memory, to print them; in production to an OTLP collector):

    pip install 'atomr[otel]' opentelemetry-sdk
    python -m examples.trace_run
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import atomr.otel
from atomr import (AppendList, Command, Dag, Done, LastWriteWins, MemoryStore, Paused, RetryPolicy, Runtime,
                   StateSchema, Workflow)

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("examples.trace_run")  # what an HTTP client or an LLM SDK would use

_flaky = {"left": 1}


def fetch(state: Any, ctx: Any) -> dict[str, Any]:
    with tracer.start_as_current_span("GET /inventory", attributes={"http.method": "GET"}):
        return {"log": [f"fetched {state['sku']}"]}


async def price(state: Any, ctx: Any) -> dict[str, Any]:
    with tracer.start_as_current_span("llm.complete", attributes={"llm.model": "fake-1"}):
        await asyncio.sleep(0.001)
        return {"log": ["priced"]}


def ship(state: Any, ctx: Any) -> dict[str, Any]:
    if _flaky["left"]:
        _flaky["left"] -= 1
        raise ConnectionError("carrier API timed out")  # retried: a new span
    answer = ctx.interrupt({"question": "ship it?"})
    return {"log": [f"shipped ({answer})"]}


dag = (Dag.builder("fetch").step("fetch", fetch).step("price", price).step("ship", ship)
       .edge("fetch", "ship").edge("price", "ship").build())
workflow = Workflow("traced", dag, StateSchema({"log": AppendList(), "sku": LastWriteWins()}),
                    retry=RetryPolicy(max_attempts=2))


def render(spans: list[ReadableSpan]) -> str:
    """The spans as indented trees, one per run execution, in start order."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        children.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    lines: list[str] = []

    def show(s: ReadableSpan, depth: int) -> None:
        a = s.attributes or {}
        ms = ((s.end_time or 0) - (s.start_time or 0)) / 1e6
        bits = [f"{a['atomr.super_step']}" if s.name == "atomr.super_step" else "",
                f"attempt {a['atomr.attempt']}" if "atomr.attempt" in a else "",
                f"[{a['atomr.outcome']}]" if "atomr.outcome" in a else "",
                f"error.type={a['error.type']}" if "error.type" in a else "",
                "linked to the paused execution" if s.links else ""]
        lines.append("  " * depth + f"{s.name} " + " ".join(b for b in bits if b) + f"  {ms:.1f} ms")
        for c in children.get(s.context.span_id, []):
            show(c, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    return "\n".join(lines)


def main() -> str:
    exporter.clear()
    _flaky["left"] = 1
    atomr.otel.instrument(tracer_provider=provider)
    try:
        with Runtime(store=MemoryStore()) as rt:
            rt.register(workflow)
            out = rt.start("traced", {"sku": "desk"}, run_id="r1").result(timeout=30)
            assert isinstance(out, Paused), out
            out = rt.resume("traced", "r1", Command(resume="yes")).result(timeout=30)
            assert isinstance(out, Done), out
    finally:
        atomr.otel.uninstrument()
    text = render(list(exporter.get_finished_spans()))
    print(text)
    return text


if __name__ == "__main__":
    main()
