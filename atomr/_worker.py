"""This runtime as a worker of a shared store (SQLite, Postgres).

Every :class:`~atomr.Runtime` on a shared store that executes runs is a
worker (:mod:`atomr.store.sql._owners` says how ownership, leases and fencing
work in the database). :class:`Worker` keeps this one going:

* heartbeats every third of ``lease_s`` (the database's clock times the lease);
* reaps dead workers every ``reap_s`` (their liveness lock is free: the process
  died), so their runs are taken over within about a second on one machine;
* takes over claimable runs — started by a client, orphaned by a dead worker,
  or held by a worker whose lease expired — of the workflows registered here,
  at most ``concurrency`` executing at once, those waiting longest first;
* carries out cancels asked by other processes for the runs it owns.

It looks every ``poll_s`` (50 ms) while it finds runs to take, less often
while it finds none (up to ``IDLE_S``); registering a workflow looks at once.

Threads: one daemon thread, ``atomr-worker``; ``close()`` from the caller's.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from atomr._check import check_int, check_number
from atomr._hooks import logger
from atomr.errors import AtomrError
from atomr.messages import Recover

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["Worker", "new_worker_id"]

log = logger("atomr.worker")

#: the longest a worker with nothing to take waits before it looks again (unless poked)
IDLE_S = 0.4


def new_worker_id() -> str:
    """A fresh worker id: host, pid and a random suffix."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """Heartbeats, reaping, takeovers and remote cancels (see the module docstring)."""

    def __init__(self, rt: Runtime, worker_id: str, lease_s: float, concurrency: int,
                 poll_s: float = 0.05) -> None:
        self.rt = rt
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.reap_s = min(1.0, lease_s / 4)
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        #: runs taken over by this worker (for tests and rt.workers())
        self.taken = 0
        self._own_seen = False  # the runs an earlier process of this id left were looked for
        #: remote cancels being carried out (asked again until the run settles)
        self._cancelling: set[tuple[str, str]] = set()

    def start(self) -> None:
        self.rt.store.join(self.worker_id, self.lease_s)  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._loop, name="atomr-worker", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Look for runs to take now (a workflow was registered, a NOTIFY came)."""
        self._wake.set()

    def drain(self) -> None:
        """Take no more runs from the store (heartbeats and remote cancels go on)."""
        self.concurrency = 0

    def stop(self) -> None:
        """Stop looking (the runtime is closing)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop looking, and give up every run this worker owns (others take them at once)."""
        self.stop()
        try:
            self.rt.store.leave()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - their leases expire anyway
            log.warning("worker %s could not give up its runs; others take them once its lease expires",
                        self.worker_id, exc_info=True)

    # -- the worker's thread --------------------------------------------------------------------

    def _loop(self) -> None:
        store = self.rt.store
        beat_every = max(0.05, self.lease_s / 3)
        next_beat = next_reap = 0.0
        idle = self.poll_s
        while not self._stopped.is_set():
            now = time.monotonic()
            busy = False
            taken_before = self.taken
            try:
                if now >= next_beat:
                    store.heartbeat()  # type: ignore[attr-defined]
                    next_beat = now + beat_every
                if now >= next_reap:
                    gone = store.reap()  # type: ignore[attr-defined]
                    if gone:
                        log.warning("workers %s died; taking over their runs", ", ".join(gone))
                    next_reap = now + self.reap_s * (0.75 + random.random() / 2)
                busy = self._take()
                self._cancels()
            except Exception:  # noqa: BLE001 - the store may be away a while: try again
                if self._stopped.is_set():
                    return
                log.warning("worker %s: a store operation failed; trying again", self.worker_id, exc_info=True)
                self._stopped.wait(0.5)
            if not busy:  # a full batch: look again at once (a backlog is waiting)
                # nothing to take: look less often (up to IDLE_S); a run taken, a poke resets it
                idle = self.poll_s if self.taken != taken_before else min(idle * 2, IDLE_S)
                if self._wake.wait(idle):
                    idle = self.poll_s
                self._wake.clear()

    def _take(self) -> bool:
        """Claim runs to execute here; True when it took a full batch (look again at once)."""
        rt = self.rt
        if rt._closed:
            return False
        room = self.concurrency - rt.live_runs()
        if room <= 0:
            return False
        workflows = rt._core.workflows
        want = min(room, 64)
        # runs this worker's id owns are asked for once (an earlier process of it died): afterwards
        # they are the ones it executes, and would crowd out the orphans it looks for
        found = rt.store.claimable(list(workflows), want, own=not self._own_seen)  # type: ignore[attr-defined]
        self._own_seen = True
        sup = rt._core.supervisor
        mine = rt.store._owned  # type: ignore[attr-defined]
        todo = [(w, r, e) for w, r, e in found if w in workflows and (w, r) not in mine
                and not sup.is_driving(w, r)]  # ours already: one the store refused waits for rt.recover()
        won = rt.store.claim_many(todo)  # type: ignore[attr-defined]
        took = len(won)
        self.taken += took
        for wf_id, run_id in won:
            try:  # a cancel asked before we took it is carried out by _cancels, next
                sup.route(workflows[wf_id], run_id, Recover(None, None))
            except Exception:  # noqa: BLE001
                log.exception("worker %s: could not carry on run %s/%s", self.worker_id, wf_id, run_id)
        return len(found) >= want and took > 0

    def _cancels(self) -> None:
        rt = self.rt
        asked = rt.store.cancels_asked()  # type: ignore[attr-defined]
        self._cancelling &= {(w, r) for w, r, _ in asked}
        for wf_id, run_id, reason in asked:
            if (wf_id, run_id) in self._cancelling:
                continue
            self._cancelling.add((wf_id, run_id))
            try:
                rt._send_cancel(wf_id, run_id, reason, local=True)
            except Exception:  # noqa: BLE001
                log.warning("worker %s: could not cancel run %s/%s", self.worker_id, wf_id, run_id, exc_info=True)


def check_worker_args(store: object, shared: bool, worker_id: object, lease_s: object, execute: object,
                      concurrency: object) -> tuple[str, float, int]:
    """Runtime's worker arguments, checked (AtomrError naming the bad one); a fresh id for None."""
    if not isinstance(execute, bool):
        raise AtomrError(f"execute must be True or False, got {execute!r}")
    if worker_id is None:
        worker_id = new_worker_id()
    elif not isinstance(worker_id, str) or not worker_id.strip() or len(worker_id) > 200 or "\x00" in worker_id:
        raise AtomrError(f"worker_id must be a non-empty str of at most 200 characters, got {worker_id!r}; "
                         "or leave it None for a fresh one")
    lease = check_number(lease_s, "lease_s", lo=0.5, hi=86400, error=AtomrError,
                         hint="pass seconds, e.g. lease_s=10 (a hung worker loses its runs after that long)")
    n = check_int(concurrency, "concurrency", lo=1, hi=1_000_000, error=AtomrError,
                  hint="pass how many runs this worker may execute at once, e.g. 1000")
    if not execute and not shared:
        raise AtomrError(f"execute=False makes a client of a store that several processes share; "
                         f"{type(store).__name__} is opened by one process: use an SqliteStore or a "
                         "PostgresStore (workers execute the runs), or execute=True")
    return worker_id, float(lease), n
