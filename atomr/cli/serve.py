"""``atomr serve MODULE:WORKFLOW...``: the HTTP API, /metrics and the web UI on one store.

One runtime on the ``--store`` (a directory or a store URL) runs the given workflows behind
uvicorn (the ``server`` extra). Runs a crash left "running" are carried on
first. With ``--workers N`` (SQLite, Postgres) this runtime is a client that
executes nothing: N ``atomr worker`` processes (:mod:`atomr.cli.pool`) execute
the runs, restarted when one dies, stopped after the server. SIGTERM / Ctrl-C stop it gracefully: no new connection is accepted,
long polls (``/wait``) and event streams end at once, other requests in
flight get up to :data:`GRACE_S` seconds, then the runtime
closes (what is queued is committed; runs still executing are carried on
at the next start) and the command exits 0. A non-loopback ``--host`` needs a token (``--token`` or
the ``ATOMR_TOKEN`` environment variable).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
from typing import Any

from atomr.cli.base import EXIT_FAILED, EXIT_OK, CliError, load_workflow
from atomr.cli.pool import WorkerPool
from atomr.cli.stores import refuse_unshared, runtime, shown
from atomr.cli.worker import DRAIN_S, load_specs

__all__ = ["DEFAULT_PORT", "add_serve_args", "cmd_serve", "is_loopback"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY = 16 * 2**20
#: seconds requests in flight (event streams too) get at shutdown
GRACE_S = 5
#: the most worker processes --workers starts
MAX_WORKERS = 256
#: seconds a worker process gets to stop at shutdown (it drains for DRAIN_S) before it is killed
WORKER_GRACE_S = DRAIN_S + 10


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflows", metavar="MODULE:WORKFLOW", nargs="+", help="the workflows to serve")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"the address to listen on (default: {DEFAULT_HOST}; another than a loopback "
                        "address needs a token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port (default: {DEFAULT_PORT})")
    p.add_argument("--token", metavar="TOKEN",
                   help="require Authorization: Bearer TOKEN on /api and /metrics (default: $ATOMR_TOKEN)")
    p.add_argument("--max-body", metavar="BYTES", type=int, default=DEFAULT_MAX_BODY,
                   help=f"the request body limit (default: {DEFAULT_MAX_BODY}, 16 MiB)")
    p.add_argument("--workers", metavar="N", type=int,
                   help="run N worker processes (atomr worker) on the store, restarted when one dies; this "
                        "process then only serves (SQLite or Postgres stores)")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost: it may resolve to anything


def cmd_serve(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else os.environ.get("ATOMR_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise CliError(f"refusing to listen on {args.host!r} without a token: pass --token TOKEN (or set "
                       "ATOMR_TOKEN), or listen on a loopback address such as 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be 0..65535, got {args.port}")
    if args.max_body < 1:
        raise CliError(f"--max-body must be a positive number of bytes, got {args.max_body}")
    if args.workers is not None:
        if not 0 <= args.workers <= MAX_WORKERS:
            raise CliError(f"--workers must be 0..{MAX_WORKERS}, got {args.workers}")
        refuse_unshared(args.store, "atomr serve --workers")
    try:
        import uvicorn

        from atomr.server import create_app
    except ImportError as exc:
        raise CliError(f"atomr serve needs the server extra (missing: {exc.name}): "
                       "pip install 'atomr[server]'") from None
    specs, workflows = load_specs(args.workflows, "serve")
    pool = None
    # with --workers this process is a client: the worker processes execute the runs
    with runtime(args, execute=None if args.workers is None else False) as rt:
        for wf in workflows:
            rt.register(wf)
        if rt.execute:
            recovered = rt.recover(list(specs))
            if recovered:
                print(f"atomr serve: carrying on {len(recovered)} run(s) left running", flush=True)
        app = create_app(rt, token=token, max_body=args.max_body, modules=specs)
        config = uvicorn.Config(app, host=args.host, port=args.port, lifespan="on",
                                log_level="info" if args.debug else "warning",
                                timeout_graceful_shutdown=GRACE_S, server_header=False)
        server = _server_class(uvicorn)(config, app.state.atomr.shutdown.begin)
        if args.workers:
            durability = getattr(args, "durability", None) or "sync"
            pool = WorkerPool(args.workers, args.store, list(specs.values()), debug=args.debug,
                              extra=["--durability", durability])
            pool.start()
        try:
            auth = "token required" if token else "no auth"
            workers = f", {args.workers} worker process(es)" if args.workers is not None else ""
            print(f"atomr serve: {', '.join(sorted(specs))} on http://{args.host}:{args.port} "
                  f"(store {shown(args.store)!r}, {auth}{workers}); Ctrl-C stops", flush=True)
            stopped_by = _run_until_signalled(server)
        finally:
            if pool is not None:
                pool.stop(WORKER_GRACE_S)
        if not server.started:
            return EXIT_FAILED
    print(f"atomr serve: stopped{f' ({stopped_by})' if stopped_by else ''}; the store is closed", flush=True)
    return EXIT_OK


def _server_class(uvicorn: Any) -> Any:
    """uvicorn's Server, that ends the app's long polls and event streams as soon as
    its graceful shutdown begins: they end within the grace, not at its expiry."""

    class Server(uvicorn.Server):  # type: ignore[misc,name-defined]
        def __init__(self, config: Any, on_shutdown: Any) -> None:
            super().__init__(config)
            self._on_shutdown = on_shutdown

        async def shutdown(self, *args: Any, **kwargs: Any) -> None:
            self._on_shutdown()
            await super().shutdown(*args, **kwargs)

    return Server


def _run_until_signalled(server: Any) -> str | None:
    """``server.run()``; the name of the signal that stopped it, if any.

    uvicorn handles SIGINT / SIGTERM itself (a graceful shutdown), then sends
    the signal again to the handler it found: ours records it, so the command
    ends with its own message and exit code instead of dying of the signal."""
    got: list[str] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda n, _f: got.append(signal.Signals(n).name))
        except ValueError:  # not the main thread: uvicorn does not handle signals either
            break
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return got[0] if got else None
