"""``atomr serve MODULE:WORKFLOW...``: the HTTP API, /metrics and the web UI on one store.

One runtime on the ``--store`` (a directory or a store URL) runs the given workflows behind
uvicorn (the ``server`` extra). Runs a crash left "running" are carried on
first. SIGTERM / Ctrl-C stop it gracefully: no new connection is accepted,
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
from atomr.cli.stores import runtime, shown

__all__ = ["DEFAULT_PORT", "add_serve_args", "cmd_serve", "is_loopback"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY = 16 * 2**20
#: seconds requests in flight (event streams too) get at shutdown
GRACE_S = 5


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
    p.add_argument("--shards", metavar="N", type=int, help="front N sharded runtimes (not supported yet)")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost: it may resolve to anything


def cmd_serve(args: argparse.Namespace) -> int:
    if args.shards is not None:
        raise CliError("atomr serve --shards is not supported yet: it fronts one runtime on one store; "
                       "leave --shards out")
    token = args.token if args.token is not None else os.environ.get("ATOMR_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise CliError(f"refusing to listen on {args.host!r} without a token: pass --token TOKEN (or set "
                       "ATOMR_TOKEN), or listen on a loopback address such as 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be 0..65535, got {args.port}")
    if args.max_body < 1:
        raise CliError(f"--max-body must be a positive number of bytes, got {args.max_body}")
    try:
        import uvicorn

        from atomr.server import create_app
    except ImportError as exc:
        raise CliError(f"atomr serve needs the server extra (missing: {exc.name}): "
                       "pip install 'atomr[server]'") from None
    specs = {}
    workflows = []
    for spec in args.workflows:
        wf = load_workflow(spec)
        if wf.id in specs and specs[wf.id] != spec:
            raise CliError(f"{spec} and {specs[wf.id]} both define workflow {wf.id!r}; serve one of them")
        specs[wf.id] = spec
        workflows.append(wf)
    with runtime(args) as rt:
        for wf in workflows:
            rt.register(wf)
        recovered = rt.recover(list(specs))
        if recovered:
            print(f"atomr serve: carrying on {len(recovered)} run(s) left running", flush=True)
        app = create_app(rt, token=token, max_body=args.max_body, modules=specs)
        config = uvicorn.Config(app, host=args.host, port=args.port, lifespan="on",
                                log_level="info" if args.debug else "warning",
                                timeout_graceful_shutdown=GRACE_S, server_header=False)
        server = _server_class(uvicorn)(config, app.state.atomr.shutdown.begin)
        auth = "token required" if token else "no auth"
        print(f"atomr serve: {', '.join(sorted(specs))} on http://{args.host}:{args.port} "
              f"(store {shown(args.store)!r}, {auth}); Ctrl-C stops", flush=True)
        stopped_by = _run_until_signalled(server)
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
