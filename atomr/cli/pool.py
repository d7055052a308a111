"""The worker processes of ``atomr serve --workers N``: started, watched, restarted, stopped.

Each is ``python -m atomr worker SPEC...`` on the serving process's store
(passed in ``ATOMR_STORE``, so a DSN's password is not on any command line),
with the serving process's working directory and environment. A watcher
thread restarts any that exits while the pool runs, logging it; one that
keeps dying young (a broken spec, an unreachable store) is restarted after a
growing pause (up to :data:`MAX_BACKOFF_S`). :meth:`WorkerPool.stop` sends
SIGTERM to every worker (each hands its runs over and exits 0) and kills one
that has not exited within its grace. Workers also stop by themselves when
the serving process is gone (:data:`atomr.cli.worker.PARENT_ENV`).

Threads: the watcher (``atomr-serve-workers``); ``start`` / ``stop`` from the caller's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from atomr.cli.worker import PARENT_ENV

__all__ = ["MAX_BACKOFF_S", "WorkerPool"]

#: a worker that lived less than this was "young" when it died: its restart waits
YOUNG_S = 5.0
#: the longest pause before restarting a worker that keeps dying young
MAX_BACKOFF_S = 30.0


@dataclass
class _Slot:
    n: int
    proc: Any = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0


class WorkerPool:
    """``size`` worker processes of ``specs`` on ``store`` (see the module docstring)."""

    def __init__(self, size: int, store: str, specs: Sequence[str], *, debug: bool = False,
                 extra: Sequence[str] = (), log: Callable[[str], None] | None = None,
                 spawn: Callable[[list[str], dict[str, str]], Any] | None = None,
                 poll_s: float = 0.2) -> None:
        self.size = size
        self.store = store
        self.specs = list(specs)
        self.debug = debug
        self.extra = list(extra)
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._spawn = spawn or _popen
        self.poll_s = poll_s
        self.slots = [_Slot(n) for n in range(1, size + 1)]
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of one worker process."""
        argv = [sys.executable, "-m", "atomr", *(["--debug"] if self.debug else []), "worker", *self.specs,
                *self.extra]
        env = dict(os.environ, ATOMR_STORE=self.store)
        env[PARENT_ENV] = str(os.getpid())
        return argv, env

    def start(self) -> None:
        with self._lock:
            for slot in self.slots:
                self._launch(slot)
        self._thread = threading.Thread(target=self._watch, name="atomr-serve-workers", daemon=True)
        self._thread.start()

    def pids(self) -> list[int]:
        with self._lock:
            return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self.slots)

    def _launch(self, slot: _Slot) -> None:
        argv, env = self.command()
        slot.proc = self._spawn(argv, env)
        slot.started = time.monotonic()

    def _watch(self) -> None:
        while not self._stopped.wait(self.poll_s):
            with self._lock:
                if self._stopped.is_set():
                    return
                self.check()

    def check(self) -> None:
        """Restart the workers that exited (once their pause is over); the watcher calls it (lock held)."""
        now = time.monotonic()
        for slot in self.slots:
            proc = slot.proc
            if proc is not None:
                code = proc.poll()
                if code is None:
                    continue
                lived = now - slot.started
                slot.backoff = min(MAX_BACKOFF_S, max(0.5, slot.backoff * 2)) if lived < YOUNG_S else 0.0
                slot.restart_at = now + slot.backoff
                slot.proc = None
                again = f"restarting it in {slot.backoff:g}s" if slot.backoff else "restarting it"
                self.log(f"atomr serve: worker {slot.n} (pid {proc.pid}) exited with code {code} after "
                         f"{lived:.1f}s; {again}")
            if now >= slot.restart_at:
                try:
                    self._launch(slot)
                except OSError as exc:
                    slot.backoff = min(MAX_BACKOFF_S, max(0.5, slot.backoff * 2))
                    slot.restart_at = now + slot.backoff
                    self.log(f"atomr serve: worker {slot.n} could not be started ({exc}); trying again in "
                             f"{slot.backoff:g}s")
                    continue
                slot.restarts += 1

    def stop(self, grace_s: float = 10.0) -> list[int | None]:
        """SIGTERM every worker, wait up to ``grace_s`` for all, kill the rest. Their exit codes."""
        with self._lock:
            self._stopped.set()
            procs = [s.proc for s in self.slots if s.proc is not None]
        if self._thread is not None:
            self._thread.join(timeout=5)
        for p in procs:
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + grace_s
        codes: list[int | None] = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.log(f"atomr serve: worker pid {p.pid} did not stop within {grace_s:g}s; killing it")
                p.kill()
                codes.append(p.wait(timeout=5))
        return codes


def _popen(argv: list[str], env: dict[str, str]) -> Any:
    # its own process group: a Ctrl-C in the terminal reaches the serving process only,
    # which then stops the workers in order (after the server)
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
