"""``GET /api/runs/{wf}/{run}/events``: a run's stream as server-sent events.

Each event is ``id: <cursor>`` (the journal position of the item),
``event: <mode>`` ("events", "updates", ... and last "outcome") and ``data:``
one JSON object ``{"mode", "cursor", "super_step", "step", "data"}``. A client
that reconnects with ``Last-Event-ID: <cursor>`` (or ``?after=<cursor>``) gets
what came after that item; the stream replays the journal first, then follows
the run live, and ends with the outcome (a settled run's at once). Several
items can share a cursor (a step's completion is an "events" and an "updates"
item): they are sent together, before anything that comes after them.
While nothing happens a comment line (``: keep-alive``) is sent every
``heartbeat_s`` seconds. ``?modes=events,updates`` (the default) picks the modes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from atomr.errors import AtomrError, ResultTimeout, StreamOverflow
from atomr.server.encode import dumps, outcome_json, to_json
from atomr.server.http import ApiError

__all__ = ["run_events", "MODES"]

MODES = ("events", "updates", "values", "custom")
DEFAULT_MODES = ("events", "updates")


def _after(request: Request) -> int | None:
    text = request.headers.get("last-event-id") or request.query_params.get("after")
    if text is None or not text.strip():
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 19:
        raise ApiError(400, f"Last-Event-ID {text[:40]!r} is not a cursor this server sent (an id: line)")
    return int(text)


def _modes(request: Request) -> list[str]:
    text = request.query_params.get("modes")
    if not text:
        return list(DEFAULT_MODES)
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ApiError(400, f"modes={text[:60]!r}: use a comma-separated list of {', '.join(MODES)}")
    return modes


def frame(item: Any) -> str:
    data = outcome_json(item.data) if item.mode == "outcome" else to_json(item.data)
    doc = {"mode": item.mode, "cursor": item.cursor, "super_step": item.super_step, "step": item.step,
           "data": data}
    return f"id: {item.cursor}\nevent: {item.mode}\ndata: {dumps(doc)}\n\n"


async def run_events(request: Request) -> StreamingResponse:
    ctx = request.app.state.atomr
    wf, run = request.path_params["wf"], request.path_params["run"]
    after, modes = _after(request), _modes(request)
    handle = await asyncio.to_thread(ctx.rt.handle, wf, run)  # 404 before the stream starts
    heartbeat = ctx.heartbeat_s

    async def sse() -> AsyncIterator[str]:
        cursor = after
        yield f"retry: 2000\n: {handle.workflow_id}/{handle.run_id}\n\n"
        while True:
            try:
                async for item in handle.astream(modes, after=cursor, timeout=heartbeat):
                    if item.mode != "custom":
                        cursor = item.cursor
                    yield frame(item)
                    if item.mode == "outcome":
                        return
                return
            except ResultTimeout:
                yield ": keep-alive\n\n"  # then reopen after the last item sent
            except StreamOverflow:
                continue
            except AtomrError as exc:
                doc = {"error": type(exc).__name__, "message": " ".join(str(exc).split())}
                yield f"event: error\ndata: {dumps(doc)}\n\n"
                return

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
