"""atomr inside an ASGI app (Starlette): start a run, stream it to a browser as
server-sent events, answer its interrupt.

    pip install "atomr[server]"
    uvicorn examples.asgi_app:app

    curl -X POST localhost:8000/runs -d '{"topic": "lmdb"}'        -> {"run_id": ...}
    curl -N localhost:8000/runs/<run_id>/events                     (SSE; Last-Event-ID resumes)
    curl -X POST localhost:8000/runs/<run_id>/answer -d '"yes"'

The draft step is an ``async def`` that streams "tokens" with ``ctx.emit``; it
runs on atomr's own event loop, not uvicorn's. Handlers only ``await``: none
blocks the server's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from atomr import AppendList, Command, Dag, LastWriteWins, LmdbStore, MemoryStore, Runtime, StateSchema, Workflow
from atomr.errors import AtomrError, RunNotFound


async def draft(state: Any, ctx: Any) -> dict[str, Any]:
    words = f"a short note about {state['topic']}".split()
    for w in words:
        ctx.emit(w)  # live to "custom" streams, not journaled
        await asyncio.sleep(0.01)  # an LLM would be here
    return {"draft": " ".join(words)}


def review(state: Any, ctx: Any) -> dict[str, Any]:
    verdict = ctx.interrupt({"question": "publish this draft?", "draft": state["draft"]})
    return {"log": [f"review: {verdict}"], "published": verdict == "yes"}


workflow = Workflow(
    "notes",
    Dag.builder("draft").step("draft", draft).step("review", review).edge("draft", "review").build(),
    StateSchema({"topic": LastWriteWins(), "draft": LastWriteWins(), "published": (LastWriteWins(), False),
                 "log": AppendList()}),
)


def make_app(rt: Runtime) -> Starlette:
    async def start(request: Request) -> JSONResponse:
        body = await request.json()
        h = await rt.astart("notes", {"topic": str(body.get("topic", "atomr"))})
        return JSONResponse({"run_id": h.run_id}, status_code=201)

    async def events(request: Request) -> StreamingResponse:
        run_id = request.path_params["run_id"]
        last = request.headers.get("last-event-id")
        h = rt.handle("notes", run_id)

        async def sse() -> AsyncIterator[str]:
            # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
            after = int(last) if last and last.isascii() and last.isdigit() and len(last) < 20 else None
            async for item in h.astream(["updates", "custom"], after=after, timeout=60):
                data = {"mode": item.mode, "data": _plain(item.data)}
                yield f"id: {item.cursor}\nevent: {item.mode}\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def answer(request: Request) -> JSONResponse:
        run_id = request.path_params["run_id"]
        h = await rt.aresume("notes", run_id, Command(resume=await request.json()))
        out = await h.aresult(timeout=30)
        return JSONResponse({"outcome": type(out).__name__.lower(), "state": _plain(getattr(out, "state", None))})

    async def atomr_error(request: Request, exc: Exception) -> JSONResponse:
        status = 404 if isinstance(exc, RunNotFound) else 400
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=status)

    return Starlette(
        routes=[Route("/runs", start, methods=["POST"]),
                Route("/runs/{run_id}/events", events),
                Route("/runs/{run_id}/answer", answer, methods=["POST"])],
        exception_handlers={AtomrError: atomr_error},
    )


def _plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@contextlib.contextmanager
def _runtime() -> Any:
    path = os.environ.get("ATOMR_STORE")
    with Runtime(store=LmdbStore(path) if path else MemoryStore()) as rt:
        rt.register(workflow)
        yield rt


_rt_cm = _runtime()
app = make_app(_rt_cm.__enter__())
