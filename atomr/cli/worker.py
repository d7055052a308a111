"""``atomr worker MODULE:WORKFLOW...``: execute runs of a shared store until SIGTERM.

A worker is a :class:`~atomr.Runtime` on an SQLite or Postgres store that
executes the given workflows' runs: those clients start or resume (any
``atomr`` command, ``atomr serve --workers``, an application's
``Runtime(execute=False)``), and those a dead or hung worker left. Start as many
as you like, on as many machines as reach the store. An LMDB or in-memory
store is refused (:class:`~atomr.errors.StoreNotShared`).

SIGTERM or Ctrl-C stops it gracefully: it takes no new run, gives the runs in
flight up to :data:`DRAIN_S` seconds to settle (finish, pause, sleep), then
closes its runtime, which hands the runs still executing to the other workers
at once. It exits 0. Started by ``atomr serve --workers`` it also stops when
that process is gone (:data:`PARENT_ENV`).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from typing import Any

from atomr._worker import check_worker_args
from atomr.cli.base import EXIT_OK, CliError, load_workflow
from atomr.cli.stores import refuse_unshared, runtime, shown
from atomr.workflow import Workflow

__all__ = ["DRAIN_S", "PARENT_ENV", "add_worker_command", "cmd_worker", "drain", "load_specs"]

#: seconds the runs in flight get to settle at SIGTERM before the worker hands them over
DRAIN_S = 5.0
#: set by ``atomr serve --workers`` to its pid: the worker stops when that process is gone
PARENT_ENV = "ATOMR_WORKER_PARENT"


def add_worker_command(add: Any) -> None:
    """Register ``worker`` with the parser's ``add`` helper."""
    p = add("worker", cmd_worker, "execute runs of MODULE:WORKFLOW... on a shared store until SIGTERM",
            "Join the store (SQLite or Postgres) as a worker and execute the given workflows' runs: those "
            "clients start or resume, and those a dead worker left. Run as many workers as you like. "
            "SIGTERM or Ctrl-C stops it gracefully (runs in flight get a few seconds, the rest go to "
            "the other workers at once; exit 0).", durable=True)
    p.add_argument("workflows", metavar="MODULE:WORKFLOW", nargs="+", help="the workflows to execute")
    p.add_argument("--id", dest="worker_id", metavar="ID",
                   help="this worker's id (default: host-pid-random); unique among the live workers")
    p.add_argument("--lease-s", metavar="S", type=float, default=10.0,
                   help="seconds without a heartbeat after which others take this worker's runs (default: 10)")
    p.add_argument("--concurrency", metavar="N", type=int, default=1000,
                   help="runs this worker executes at once, at most (default: 1000)")


def load_specs(specs: list[str], command: str) -> tuple[dict[str, str], list[Workflow]]:
    """``({workflow id: spec}, workflows)`` of MODULE:WORKFLOW specs (two defining one id: CliError)."""
    ids: dict[str, str] = {}
    workflows = []
    for spec in specs:
        wf = load_workflow(spec)
        if wf.id in ids:
            if ids[wf.id] == spec:
                continue
            raise CliError(f"{spec} and {ids[wf.id]} both define workflow {wf.id!r}; {command} one of them")
        ids[wf.id] = spec
        workflows.append(wf)
    return ids, workflows


def drain(rt: Any, seconds: float) -> int:
    """Take no new run; wait up to ``seconds`` for the runs in flight to settle. Returns how many still execute."""
    rt.drain()  # claims no more runs (heartbeats go on)
    deadline = time.monotonic() + seconds
    while rt.live_runs() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(rt.live_runs())


def _parent_gone(parent: int | None) -> bool:
    return parent is not None and os.getppid() != parent


class _Signals:
    """SIGTERM / SIGINT recorded from ``with`` on (also while the worker starts up); ``wait()`` for one."""

    def __init__(self, parent: int | None) -> None:
        self.parent = parent
        self.got: list[str] = []
        self._stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.got.append(signal.Signals(signum).name)
        self._stop.set()

    def wait(self) -> str:
        """Block until a signal came (or the parent process is gone); what stopped the worker."""
        while not self._stop.wait(0.5):
            if _parent_gone(self.parent):
                return "its atomr serve is gone"
        return self.got[0]


def _parent() -> int | None:
    text = os.environ.get(PARENT_ENV, "").strip()
    return int(text) if text.isdigit() else None


def cmd_worker(args: argparse.Namespace) -> int:
    refuse_unshared(args.store, "atomr worker")
    if args.worker_id is not None and not args.worker_id.strip():
        raise CliError("--id must not be empty; leave it out for a fresh worker id")
    check_worker_args(None, True, args.worker_id, args.lease_s, True, args.concurrency)  # before the store opens
    ids, workflows = load_specs(args.workflows, "execute")
    parent = _parent()
    with _Signals(parent) as signals, runtime(args, execute=True, worker_id=args.worker_id, lease_s=args.lease_s,
                                             concurrency=args.concurrency) as rt:
        for wf in workflows:
            rt.register(wf)
        print(f"atomr worker: {rt.worker_id} executing {', '.join(sorted(ids))} on store {shown(args.store)!r} "
              f"(lease {args.lease_s:g}s, up to {args.concurrency} runs at once); SIGTERM stops", flush=True)
        why = "its atomr serve is gone" if _parent_gone(parent) else signals.wait()
        left = drain(rt, DRAIN_S)
    handed = f"; {left} run(s) in flight handed to the other workers" if left else ""
    print(f"atomr worker: {rt.worker_id} stopped ({why}){handed}", flush=True)
    return EXIT_OK
