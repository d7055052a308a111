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
When the server begins to shut down the stream ends at once, after a comment
line (``: the server is shutting down``): the client reconnects where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from atomr.errors import AtomrError, ResultTimeout, StreamOverflow
from atomr.server.encode import dumps, outcome_json, to_json
from atomr.server import params
from atomr.server.http import error_response

__all__ = ["run_events", "MODES"]

MODES = ("events", "updates", "values", "custom")
DEFAULT_MODES = ("events", "updates")


def frame(item: Any) -> str:
    data = outcome_json(item.data) if item.mode == "outcome" else to_json(item.data)
    doc = {"mode": item.mode, "cursor": item.cursor, "super_step": item.super_step, "step": item.step,
           "data": data}
    return f"id: {item.cursor}\nevent: {item.mode}\ndata: {dumps(doc)}\n\n"


async def run_events(request: Request) -> StreamingResponse:
    ctx = request.app.state.atomr
    wf, run = params.ids(request)
    after, modes = params.last_event_id(request), params.modes(request, MODES, DEFAULT_MODES)
    handle = await asyncio.to_thread(ctx.rt.handle, wf, run)  # 404 before the stream starts
    heartbeat, shutdown = ctx.heartbeat_s, ctx.shutdown

    async def sse() -> AsyncIterator[str]:
        cursor = after
        yield f"retry: 2000\n: {handle.workflow_id}/{handle.run_id}\n\n"
        while not shutdown.begun:
            try:
                items = shutdown.iterate(handle.astream(modes, after=cursor, timeout=heartbeat))
                async with contextlib.aclosing(items):  # closed also when the client goes away
                    async for item in items:
                        if item.mode != "custom":
                            cursor = item.cursor
                        yield frame(item)
                        if item.mode == "outcome":
                            return
                break  # ended without an outcome: the shutdown began
            except ResultTimeout:
                yield ": keep-alive\n\n"  # then reopen after the last item sent
            except StreamOverflow:
                continue
            except AtomrError as exc:  # as an error answer says it (a server-side one: no details)
                yield f"event: error\ndata: {error_response(exc, request.scope).body.decode()}\n\n"
                return
        if shutdown.begun:
            yield ": the server is shutting down; reconnect with Last-Event-ID\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
