"""The JSON API of schedules: list, create, delete (see :mod:`atomr._schedule`).

- ``GET /api/schedules`` (``?workflow_id=`` filters): ``{"schedules": [...]}``,
  by id; each is :meth:`Schedule.to_dict` (times in epoch seconds and ISO 8601
  UTC) with ``last_run_status``, the status of the run it started last (null:
  none yet, or that run was deleted);
- ``POST /api/schedules`` with ``{"id", "workflow", "cron" | "every_s",
  "input"?, "overlap"?, "catch_up"?}``: 201 and the schedule; 400
  ``BadRequest`` / ``ScheduleError`` for a bad body, 404 ``WorkflowNotFound``
  for a workflow this server does not have, 409 ``ScheduleExists`` for an id
  in use (delete it first; ``rt.schedule`` in Python replaces one);
- ``DELETE /api/schedules/{id}``: 204; 404 ``ScheduleNotFound``.

Handlers only await: the runtime's calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from atomr.errors import StoreError
from atomr.server import params
from atomr.server.encode import to_json
from atomr.server.http import JSON, ApiError, field, read_json

__all__ = ["ROUTES", "create_schedule", "delete_schedule", "list_schedules"]

_FIELDS = ("id", "workflow", "cron", "every_s", "input", "overlap", "catch_up")


def _rt(request: Request) -> Any:
    return request.app.state.atomr.rt


def _last_status(rt: Any, workflow_id: str, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        s = rt.store.summary(workflow_id, run_id)
    except StoreError:
        return None  # a damaged run index entry: the schedule is listed all the same
    return None if s is None else str(s.status)


def _docs(rt: Any, items: list[Any]) -> list[dict[str, Any]]:
    """The schedules as JSON, with the status of each one's last run (a worker thread: store reads)."""
    out = []
    for s in items:
        doc = to_json(s.to_dict())
        doc["last_run_status"] = _last_status(rt, s.workflow_id, s.last_run_id)
        out.append(doc)
    return out


async def list_schedules(request: Request) -> JSON:
    rt = _rt(request)
    items = await rt.aschedules(params.query_text(request, "workflow_id"))
    return JSON({"schedules": await asyncio.to_thread(_docs, rt, items)})


def _every_s(doc: dict[str, Any]) -> float | None:
    value = doc.get("every_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"field 'every_s' must be a JSON number of seconds, got {str(value)[:80]}")
    return value


def _required(doc: dict[str, Any], name: str, what: str) -> str:
    value = field(doc, name, "string")
    if not value:
        raise ApiError(400, f"field {name!r} is required: {what}")
    return str(value)


async def create_schedule(request: Request) -> JSON:
    ctx = request.app.state.atomr
    rt = ctx.rt
    doc = await read_json(request, ctx.max_body, _FIELDS)
    sid = _required(doc, "id", "the schedule's id (its runs are named <id>@<due time>)")
    wf_id = _required(doc, "workflow", "the id of the workflow whose runs it starts")
    cron, every_s = field(doc, "cron", "string"), _every_s(doc)
    if (cron is None) == (every_s is None):
        raise ApiError(400, "pass exactly one of the fields 'cron' (e.g. \"*/5 * * * *\", UTC) or "
                            "'every_s' (seconds)")
    data = field(doc, "input", "object")
    overlap = field(doc, "overlap", "string") or "skip"
    catch_up = field(doc, "catch_up", "string") or "none"
    wf = rt.workflow(wf_id)  # 404 WorkflowNotFound: this server could never fire it
    meta = {"module": ctx.modules[wf.id]} if ctx.modules.get(wf.id) else None
    s = await rt.aschedule(sid, wf.id, cron=cron, every_s=every_s, input=data, overlap=overlap,
                           catch_up=catch_up, meta=meta, replace=False)
    [out] = await asyncio.to_thread(_docs, rt, [s])
    return JSON(out, status_code=201)


async def delete_schedule(request: Request) -> Response:
    await _rt(request).aunschedule(params.path_id(request, "id"))
    return Response(status_code=204)


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/api/schedules", list_schedules, ["GET"]),
    ("/api/schedules", create_schedule, ["POST"]),
    ("/api/schedules/{id}", delete_schedule, ["DELETE"]),
]
