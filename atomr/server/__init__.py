"""``atomr serve``: an HTTP API, ``/metrics`` and a web UI over one Runtime (the ``server`` extra).

    from atomr.server import create_app
    app = create_app(rt, token="s3cret")          # any ASGI server: uvicorn, hypercorn...

Modules: ``app`` (create_app, /healthz, /metrics), ``api`` (the JSON routes),
``sse`` (a run's events as server-sent events), ``http`` (errors, bodies, auth),
``encode`` (values to JSON), ``progress`` (drawing and step statuses),
``metrics`` (Prometheus), ``ui`` (pages; assets in ``static/``).

Only ``atomr serve`` and code that asks for it import this package: the rest
of atomr does not need Starlette.
"""

from __future__ import annotations

from atomr.server.app import DEFAULT_MAX_BODY, create_app

__all__ = ["DEFAULT_MAX_BODY", "create_app"]
