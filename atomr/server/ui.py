"""The web UI: five server-rendered page shells, one script, one style sheet.

The pages hold no run data: the script (``static/app.js``) reads everything
from the JSON API with the token the person gave (kept in the tab's
``sessionStorage``), so a page is served without auth and shows nothing
without the token. Nothing is loaded from elsewhere: no CDN, no build step.

- ``/``: the runs, newest first, filtered by status and workflow, refreshed
  every two seconds while "live" is on;
- ``/runs/{wf}/{run}``: a run: its DAG coloured by step status, pending
  interrupts with a JSON form that answers them, the history as a timeline
  (the state at a checkpoint and what changed from the one before), fork
  from a checkpoint, cancel;
- ``/workflows``: each workflow's drawing, a form to start a run, its runs;
- ``/workers``: the worker processes of a shared store (SQLite, Postgres):
  id, host, pid, started, last heartbeat, runs owned, alive; refreshed every
  two seconds. A run's page names the worker executing it.
- ``/schedules``: the stored schedules: workflow, rule (cron or interval),
  next due time, the last run with its status, fired / skipped counts, the
  last error; a delete button each (asks first); refreshed every two seconds.
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from atomr.server import params

__all__ = ["STATIC", "page_runs", "page_run", "page_schedules", "page_workers", "page_workflows", "static_file"]

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

_SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · atomr</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
</head>
<body data-page="{page}"{data}>
<header class="top">
  <a class="brand" href="/">atomr</a>
  <nav><a href="/"{runs_cur}>Runs</a> <a href="/workflows"{wfs_cur}>Workflows</a>
    <a href="/workers"{wks_cur}>Workers</a> <a href="/schedules"{sch_cur}>Schedules</a></nav>
  <span id="flash" role="status"></span>
</header>
<main>
{body}
</main>
<form id="login" hidden>
  <div class="card">
    <h2>Token</h2>
    <p>This server needs the token it was started with (<code>atomr serve --token</code>).
       It is kept in this tab only.</p>
    <input id="login-token" type="password" autocomplete="off" placeholder="token" required>
    <button type="submit">Use token</button>
  </div>
</form>
<script src="/static/app.js"></script>
</body>
</html>
"""

_RUNS = """<h1>Runs</h1>
<form id="filters" class="bar">
  <label>Status <select id="f-status" name="status"><option value="">any</option>
    <option>running</option><option>paused</option><option>done</option><option>failed</option>
    <option>cancelled</option></select></label>
  <label>Workflow <select id="f-workflow" name="workflow_id"><option value="">any</option></select></label>
  <label><input id="f-live" type="checkbox" checked> live</label>
  <span id="count" class="muted"></span>
</form>
<table class="runs">
  <thead><tr><th>Status</th><th>Workflow</th><th>Run</th><th>Super-step</th><th>Updated</th>
  <th>Created</th></tr></thead>
  <tbody id="runs-body"><tr><td colspan="6" class="muted">loading…</td></tr></tbody>
</table>
<p><button id="more" type="button" hidden>More</button></p>
"""

_RUN = """<h1><a href="/workflows#{wf_attr}" class="muted">{wf}</a> / <span id="run-id">{run}</span>
  <span id="run-status" class="badge">…</span></h1>
<div class="bar" id="run-facts"></div>
<div class="bar">
  <button id="btn-continue" type="button" hidden>Continue</button>
  <button id="btn-cancel" type="button" class="danger" hidden>Cancel run</button>
  <span id="run-error" class="error"></span>
</div>
<details id="run-traceback-box" hidden><summary>Traceback of the failed step</summary>
  <pre id="run-traceback" class="traceback"></pre></details>
<section id="interrupts-box" hidden>
  <h2>Waiting for an answer</h2>
  <div id="interrupts"></div>
</section>
<div class="cols">
  <section class="card">
    <h2>Steps</h2>
    <div id="graph" class="graph"></div>
    <p class="legend"><span class="st st-done">done</span> <span class="st st-running">running</span>
      <span class="st st-waiting">waiting</span> <span class="st st-failed">failed</span>
      <span class="st st-skipped">skipped</span> <span class="st st-cancelled">cancelled</span>
      <span class="st st-pending">pending</span></p>
  </section>
  <section class="card">
    <h2>History</h2>
    <ol id="timeline" class="timeline"></ol>
  </section>
</div>
<section class="card">
  <h2>State at <span id="cp-title">…</span>
    <button id="btn-fork" type="button" hidden>Fork from here</button></h2>
  <div class="cols">
    <div><h3>Values</h3><pre id="cp-values" class="json"></pre></div>
    <div><h3>Changed from the checkpoint before</h3><table id="cp-diff" class="diff"></table></div>
  </div>
</section>
"""

_WORKERS = """<h1>Workers</h1>
<p class="muted" id="workers-note">The processes executing runs on this store (atomr worker, atomr serve --workers).</p>
<table class="runs" id="workers-table">
  <thead><tr><th>Worker</th><th>Host</th><th>PID</th><th>Started</th><th>Last heartbeat</th><th>Runs owned</th>
  <th>Alive</th></tr></thead>
  <tbody id="workers-body"><tr><td colspan="7" class="muted">loading…</td></tr></tbody>
</table>
"""

_SCHEDULES = """<h1>Schedules</h1>
<p class="muted">Runs started on a cron expression (UTC) or every N seconds while a runtime with the workflow
  registered has the store open (<code>rt.schedule</code>, <code>atomr schedule add</code>,
  <code>POST /api/schedules</code>).</p>
<table class="runs" id="schedules-table">
  <thead><tr><th>Schedule</th><th>Workflow</th><th>Rule</th><th>Next due</th><th>Last run</th>
  <th>Fired / skipped</th><th></th></tr></thead>
  <tbody id="schedules-body"><tr><td colspan="7" class="muted">loading…</td></tr></tbody>
</table>
"""

_WORKFLOWS = """<h1>Workflows</h1>
<div id="workflows"><p class="muted">loading…</p></div>
"""


def _shell(title: str, page: str, body: str, data: dict[str, str] | None = None) -> HTMLResponse:
    attrs = "".join(f' data-{k}="{html.escape(v, quote=True)}"' for k, v in (data or {}).items())
    text = _SHELL.format(title=html.escape(title), page=page, data=attrs, body=body,
                         runs_cur=' aria-current="page"' if page in ("runs", "run") else "",
                         wfs_cur=' aria-current="page"' if page == "workflows" else "",
                         wks_cur=' aria-current="page"' if page == "workers" else "",
                         sch_cur=' aria-current="page"' if page == "schedules" else "")
    return HTMLResponse(text, headers={"Cache-Control": "no-store",
                                       "Content-Security-Policy": "default-src 'self'; style-src 'self' "
                                       "'unsafe-inline'; img-src 'self' data:"})


async def page_runs(request: Request) -> HTMLResponse:
    return _shell("Runs", "runs", _RUNS)


async def page_run(request: Request) -> HTMLResponse:
    wf, run = params.ids(request)
    body = _RUN.format(wf=html.escape(wf), run=html.escape(run), wf_attr=html.escape(wf, quote=True))
    return _shell(f"{wf}/{run}", "run", body, {"wf": wf, "run": run})


async def page_workflows(request: Request) -> HTMLResponse:
    return _shell("Workflows", "workflows", _WORKFLOWS)


async def page_workers(request: Request) -> HTMLResponse:
    return _shell("Workers", "workers", _WORKERS)


async def page_schedules(request: Request) -> HTMLResponse:
    return _shell("Schedules", "schedules", _SCHEDULES)


async def static_file(request: Request) -> Response:
    name = params.path_id(request, "name")
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(await asyncio.to_thread(path.read_bytes), media_type=_TYPES[path.suffix],
                    headers={"Cache-Control": "no-cache"})
