"""``create_app``: the Starlette application over one Runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from atomr._hooks import logger
from atomr.errors import AtomrError
from atomr.server import api, schedules, ui
from atomr.server.http import JSON, ApiError, AuthMiddleware, ErrorsMiddleware, error_response
from atomr.server.sse import run_events

__all__ = ["DEFAULT_MAX_BODY", "create_app"]

log = logger("atomr.server")

#: the default request body limit (bytes)
DEFAULT_MAX_BODY = 16 * 2**20
#: threads of the event loop's default executor (asyncio.to_thread)
WORKER_THREADS = 64


async def healthz(request: Request) -> JSON:
    rt = request.app.state.atomr.rt
    if rt.closed:
        return JSON({"ok": False, "message": "the runtime is closed"}, status_code=503)
    return JSON({"ok": True})


async def metrics(request: Request) -> Response:
    m = request.app.state.atomr.metrics
    if not m.available:
        raise ApiError(501, "metrics need prometheus-client: pip install 'atomr[server]' "
                            "(or pip install prometheus-client)")
    body, content_type = await m.render()
    return Response(body, media_type=content_type)


async def _error(request: Request, exc: Exception) -> Response:
    return error_response(exc, request.scope)


def create_app(runtime: Any, token: str | None = None, max_body: int = DEFAULT_MAX_BODY, *,
               modules: Mapping[str, str] | None = None, close_runtime: bool = True,
               heartbeat_s: float = 15.0) -> Starlette:
    """The ASGI app (API, ``/metrics``, ``/healthz``, web UI) over ``runtime``.

    ``token``: when set, every ``/api`` and ``/metrics`` request needs
    ``Authorization: Bearer <token>``. ``max_body``: request bodies over this
    many bytes get 413. ``modules``: workflow id -> ``MODULE:WORKFLOW`` spec,
    recorded in the meta of the runs this app starts (so ``atomr show`` and
    ``atomr history`` find their workflow). ``close_runtime``: close the
    runtime when the server shuts down (its lifespan ends): what is queued is
    committed, runs still executing are carried on by ``recover()`` at the
    next start. ``heartbeat_s``: the keep-alive period of event streams.

    Shutting down: ``app.state.atomr.shutdown.begin()`` (any thread) ends every
    ``/wait`` long poll and event stream at once; call it when your server
    begins its graceful shutdown (``atomr serve`` does, on SIGTERM / Ctrl-C),
    else they end when the lifespan ends.
    """
    if not isinstance(max_body, int) or isinstance(max_body, bool) or max_body < 1:
        raise AtomrError(f"max_body must be a positive number of bytes, got {max_body!r}")
    if token is not None and (not isinstance(token, str) or not token):
        raise AtomrError("token must be a non-empty str, or None for no auth")
    ctx = api.Context(runtime, max_body, dict(modules or {}), heartbeat_s=heartbeat_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # store reads and stream openings wait in worker threads (to_thread): a
        # few slow ones must not hold up every other request
        pool = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="atomr-serve")
        asyncio.get_running_loop().set_default_executor(pool)
        try:
            yield
        finally:
            ctx.shutdown.begin()  # long polls and streams still open end now
            ctx.metrics.close()
            if close_runtime:
                await asyncio.to_thread(runtime.close)

    routes = [Route(path, fn, methods=methods) for path, fn, methods in api.ROUTES + schedules.ROUTES]
    routes += [
        Route("/api/runs/{wf}/{run}/events", run_events, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/", ui.page_runs, methods=["GET"]),
        Route("/workflows", ui.page_workflows, methods=["GET"]),
        Route("/workers", ui.page_workers, methods=["GET"]),
        Route("/schedules", ui.page_schedules, methods=["GET"]),
        Route("/runs/{wf}/{run}", ui.page_run, methods=["GET"]),
        Route("/static/{name}", ui.static_file, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, token=token), Middleware(ErrorsMiddleware)],
        exception_handlers={AtomrError: _error, ApiError: _error, HTTPException: _error},
        lifespan=lifespan,
    )
    app.state.atomr = ctx
    return app
