"""The JSON API's handlers: workflows, runs, state, history, wait, resume, fork, cancel, workers.

Each handler only awaits: starts and resumes are the runtime's asyncio API,
store reads go to a worker thread (``asyncio.to_thread``). An atomr error
raised by the runtime becomes its JSON error answer in :mod:`atomr.server.http`;
nothing is sent to the runtime before a request's body has been checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field as dc_field
from typing import Any

from starlette.requests import Request

from atomr._maintain import checkpoint_by_seq
from atomr.errors import ResultTimeout
from atomr.server import progress
from atomr.server.encode import checkpoint_json, outcome_json, summary_json, to_json, view_json
from atomr.server import params
from atomr.server.http import JSON, ApiError, field, read_json
from atomr.server.metrics import Metrics
from atomr.server.shutdown import Shutdown
from atomr.store.base import STATUSES
from atomr.types import Command

__all__ = ["Context", "ROUTES"]

#: the longest a /wait request may hold (seconds)
MAX_WAIT_S = 300.0


@dataclass
class Context:
    """What every handler shares: the runtime and the app's settings."""

    rt: Any
    max_body: int
    modules: dict[str, str] = dc_field(default_factory=dict)
    metrics: Any = None
    heartbeat_s: float = 15.0
    #: ends every long wait (a /wait, an event stream) once the server begins to shut down
    shutdown: Shutdown = dc_field(default_factory=Shutdown)
    _graphs: dict[str, dict[str, Any]] = dc_field(default_factory=dict)
    #: each run's step statuses folded so far (the run page's colours; see progress.Folds)
    folds: progress.Folds = dc_field(default_factory=progress.Folds)

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = Metrics(self.rt)

    def workflow_doc(self, wf: Any) -> dict[str, Any]:
        doc = self._graphs.get(wf.id)
        if doc is None:
            doc = self._graphs[wf.id] = {
                "id": wf.id, "version": to_json(getattr(wf, "version", None)), "mermaid": wf.to_mermaid(),
                "module": self.modules.get(wf.id), "graph": progress.graph_of(wf),
            }
        return doc


def _ctx(request: Request) -> Context:
    return request.app.state.atomr  # type: ignore[no-any-return]


def _ids(request: Request) -> tuple[str, str]:
    return params.ids(request)


def _run_id(doc: dict[str, Any], name: str = "run_id") -> str | None:
    run_id = field(doc, name, "string")
    if run_id is not None and "/" in run_id:
        raise ApiError(400, f"run id {run_id[:80]!r} has a '/': a run served over HTTP is addressed by "
                            "/api/runs/{workflow}/{run}; pick an id without '/'")
    return run_id


# -- workflows -------------------------------------------------------------------


async def list_workflows(request: Request) -> JSON:
    ctx = _ctx(request)
    wfs = sorted(ctx.rt.workflows.values(), key=lambda w: w.id)
    return JSON({"workflows": [ctx.workflow_doc(wf) for wf in wfs]})


async def get_workflow(request: Request) -> JSON:
    ctx = _ctx(request)
    return JSON(ctx.workflow_doc(ctx.rt.workflow(params.path_id(request, "wf"))))


async def start_run(request: Request) -> JSON:
    ctx, rt = _ctx(request), _ctx(request).rt
    doc = await read_json(request, ctx.max_body, ("input", "run_id", "if_exists", "meta", "priority"))
    data, run_id = field(doc, "input", "object"), _run_id(doc)
    if_exists, meta = field(doc, "if_exists", "string"), field(doc, "meta", "object")
    priority = field(doc, "priority", "integer")
    wf = rt.workflow(params.path_id(request, "wf"))
    kwargs: dict[str, Any] = {} if if_exists is None else {"if_exists": if_exists}
    if priority is not None:
        kwargs["priority"] = priority
    meta = dict(meta or {})
    if ctx.modules.get(wf.id):
        meta["module"] = ctx.modules[wf.id]  # `atomr show` / `history` find the workflow by it
    h = await rt.astart(wf.id, data, run_id=run_id, meta=meta or None, **kwargs)
    attached = h.attached  # if_exists="attach" found the run
    if not attached:
        ctx.metrics.track(h, "start")
    status = "running"
    if await asyncio.to_thread(h.done):
        status = str(getattr(await h.aresult(timeout=10), "status", status))
    doc = {"workflow_id": h.workflow_id, "run_id": h.run_id, "status": status}
    if attached:
        doc["attached"] = True
    return JSON(doc, status_code=201)


# -- runs -----------------------------------------------------------------------------


async def list_runs(request: Request) -> JSON:
    """Newest first (by creation); ``next_cursor`` pages on (null on the last page).
    One page is read through the store's indexes (``rt.aruns``): its cost does not
    grow with the number of runs in the store."""
    ctx = _ctx(request)
    status = params.query_choice(request, "status", STATUSES, "a run status")
    limit = params.query_int(request, "limit", 100, 1, 1000)
    before = params.page_cursor(request)
    page = await ctx.rt.aruns(status, params.query_text(request, "workflow_id"), limit + 1, before)
    more = len(page) > limit
    page = page[:limit]
    return JSON({"runs": [summary_json(s) for s in page],
                 "next_cursor": page[-1].cursor if more else None})


async def get_run(request: Request) -> JSON:
    """The run's state, and ``owner``: the worker executing it (null: none, or a store without workers)."""
    rt = _ctx(request).rt
    wf, run = _ids(request)
    doc = view_json(await rt.aget_state(wf, run))
    doc["owner"] = await asyncio.to_thread(run_owner, rt, wf, run)
    return JSON(doc)


def run_owner(rt: Any, workflow_id: str, run_id: str) -> str | None:
    """The worker that owns the run (``store.owner_of``) on a shared store; None otherwise."""
    store = rt.store
    found = store.owner_of(workflow_id, run_id) if store.shared else None
    return None if found is None or found[0] is None else str(found[0])


async def list_workers(request: Request) -> JSON:
    """The live workers of a shared store (``rt.workers()``); [] for a store one process opens."""
    rt = _ctx(request).rt
    found = await asyncio.to_thread(rt.workers)
    return JSON({"workers": [w.to_dict() for w in found]})


async def get_history(request: Request) -> JSON:
    points = await _ctx(request).rt.ahistory(*_ids(request))
    return JSON({"checkpoints": [checkpoint_json(c) for c in points]})


async def get_steps(request: Request) -> JSON:
    """Each step's status for the run page's drawing (see :mod:`atomr.server.progress`)."""
    ctx = _ctx(request)
    return JSON(await progress.step_statuses(ctx.rt, *_ids(request), ctx.folds))


#: statuses a run stays in until a request moves it
SETTLED = ("paused", "done", "failed", "cancelled")


def settled_outcome(v: Any) -> dict[str, Any] | None:
    """The outcome a settled run's state describes (as ``outcome_json`` gives it); None otherwise."""
    doc: dict[str, Any] = {"outcome": v.status, "workflow_id": v.workflow_id, "run_id": v.run_id}
    if v.status == "done":
        doc["state"] = to_json(v.values)
    elif v.status == "paused":
        doc.update(super_step=v.super_step, reason=v.pause_reason or "", interrupts=view_json(v)["interrupts"],
                   steps=list(v.next))
    elif v.status == "failed":
        step, etype, message = (list(v.error or ()) + [None, "RunError", ""])[:3]
        doc.update(step_id=step, super_step=v.super_step, error_type=etype, message=message,
                   traceback=getattr(v, "traceback", None))
    elif v.status == "cancelled":
        doc.update(super_step=v.super_step, reason=str(getattr(v, "cancel_reason", None) or ""))
    else:
        return None
    return doc


async def wait_run(request: Request) -> JSON:
    """Long poll: the run's outcome once there is one (at once for a settled
    run); after ``timeout`` seconds without one, or as soon as the server begins
    to shut down, 200 ``{"outcome": null, "status"}``."""
    ctx = _ctx(request)
    timeout = params.query_seconds(request, "timeout", 30.0, MAX_WAIT_S)
    wf, run = _ids(request)
    rt = ctx.rt
    # the cursor before the state: an outcome committed after it is streamed, one before it is
    # in the state read next (a run another worker executes may settle between the two reads)
    summary = await asyncio.to_thread(rt.store.summary, wf, run)
    if not rt.is_live(wf, run):
        # no actor holds the run: the store is the whole truth, no need to wake it
        view = await rt.aget_state(wf, run)
        if view.status in SETTLED:
            return JSON(settled_outcome(view))
    h = await asyncio.to_thread(rt.handle, wf, run)
    out = None

    async def watch() -> None:
        nonlocal out
        after = summary.last_seq if summary is not None else 0
        async for item in h.astream("events", after=after, timeout=timeout + 1):
            if item.mode == "outcome":
                out = item.data

    try:  # until the outcome, the timeout, or the server's shutdown: then what is known now
        await ctx.shutdown.wait(watch(), max(timeout, 0.001))
    except ResultTimeout:
        pass
    if out is not None:
        return JSON(outcome_json(out))
    view = await rt.aget_state(wf, run)
    return JSON({"outcome": None, "status": view.status, "super_step": view.super_step})


async def resume_run(request: Request) -> JSON:
    ctx = _ctx(request)
    doc = await read_json(request, ctx.max_body, ("resume", "update", "goto"))
    command = Command(resume=doc.get("resume"), update=field(doc, "update", "object"),
                      goto=field(doc, "goto", "string"))
    h = await ctx.rt.aresume(*_ids(request), command)
    ctx.metrics.track(h, "resume")
    return JSON({"workflow_id": h.workflow_id, "run_id": h.run_id, "status": "running"}, status_code=202)


async def fork_run(request: Request) -> JSON:
    ctx = _ctx(request)
    doc = await read_json(request, ctx.max_body, ("super_step", "seq", "edits", "run_id"))
    super_step, seq = field(doc, "super_step", "integer"), field(doc, "seq", "integer")
    if (super_step is None) == (seq is None):
        raise ApiError(400, "pass one of 'super_step' (the state after that super-step) or 'seq' (exactly the "
                            "checkpoint with that seq): the point to fork from (see /history)")
    edits, new_id = field(doc, "edits", "object"), _run_id(doc)
    wf, run = _ids(request)
    at: Any = super_step
    if seq is not None:
        at = checkpoint_by_seq(await ctx.rt.ahistory(wf, run), wf, run, seq)
    new = await ctx.rt.afork(wf, run, at, edits, new_id)
    out = {"workflow_id": wf, "run_id": new, "forked_from": f"{run}@{getattr(at, 'super_step', at)}",
           "status": "paused"}
    if seq is not None:
        out["forked_from_seq"] = seq
    return JSON(out, status_code=201)


async def cancel_run(request: Request) -> JSON:
    ctx = _ctx(request)
    doc = await read_json(request, ctx.max_body, ("reason",))
    reason = field(doc, "reason", "string") or ""
    wf, run = _ids(request)
    out = await ctx.rt.acancel(wf, run, reason=reason)
    doc = {"workflow_id": wf, "run_id": run, "status": "cancelled"}
    if out is not None and hasattr(out, "status"):
        doc.update(outcome_json(out))
        doc["status"] = doc["outcome"]
    return JSON(doc, status_code=202)


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/api/workflows", list_workflows, ["GET"]),
    ("/api/workflows/{wf}", get_workflow, ["GET"]),
    ("/api/workflows/{wf}/runs", start_run, ["POST"]),
    ("/api/runs", list_runs, ["GET"]),
    ("/api/runs/{wf}/{run}", get_run, ["GET"]),
    ("/api/runs/{wf}/{run}/history", get_history, ["GET"]),
    ("/api/runs/{wf}/{run}/steps", get_steps, ["GET"]),
    ("/api/runs/{wf}/{run}/wait", wait_run, ["GET"]),
    ("/api/runs/{wf}/{run}/resume", resume_run, ["POST"]),
    ("/api/runs/{wf}/{run}/fork", fork_run, ["POST"]),
    ("/api/runs/{wf}/{run}/cancel", cancel_run, ["POST"]),
    ("/api/workers", list_workers, ["GET"]),
]
