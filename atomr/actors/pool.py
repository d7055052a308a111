"""The local step executor: a bounded pool of step actors, plus the async loop.

Threads: each :class:`StepActor` is one pykka thread running sync steps one
at a time from one shared queue (``workers`` of them: blocking steps need
threads, a bounded number); ``async def`` steps all run on one
:class:`~atomr.actors.asyncloop.AsyncLoop`. A step actor never lets an
exception escape: every outcome — even ``KeyboardInterrupt`` /
``SystemExit`` (which would make pykka stop *all* actors) — becomes a
:class:`~atomr.messages.StepDone` told to the run actor.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import pykka

from atomr.actors.asyncloop import AsyncLoop
from atomr.actors.step import execute_sync, finish
from atomr.actors.step import tell_done as _tell
from atomr.errors import AtomrError
from atomr.messages import Execute

__all__ = ["StepActor", "LocalExecutor"]


class _Wake:
    """Tells an idle step actor that work is queued."""

    __slots__ = ()


_WAKE = _Wake()


class StepActor(pykka.ThreadingActor):
    """Runs sync steps from the executor's shared queue, one at a time.

    A wake-up makes it drain the queue. Each result is told to its run actor
    as soon as the step returns: holding results back to batch them would make
    a run wait on an unrelated step (and deadlock steps that wait for each other).
    """

    use_daemon_thread = True

    def __init__(self, executor: LocalExecutor, index: int) -> None:
        super().__init__()
        self._executor = executor
        self._index = index

    def on_receive(self, message: Any) -> Any:
        if message is not _WAKE:
            return None
        ex = self._executor
        while True:
            msg = ex._take(self._index, self.actor_ref)
            if msg is None:
                return None
            try:
                done = execute_sync(msg, ex._loop)
            except BaseException as exc:  # noqa: BLE001 - never let pykka see it
                done = finish(msg, exc=exc)
            ex._done(msg.token)
            _tell(msg.reply_to, done)


class LocalExecutor:
    """Runs steps on a pool of step actors (and one async loop thread).

    Sync steps go to one shared queue; idle step actors are woken to drain it,
    so a slow step never holds up others queued behind it. Called from run
    actors' threads; thread-safe.
    """

    def __init__(self, workers: int = 4) -> None:
        if workers < 1:
            raise AtomrError(f"step_workers must be >= 1, got {workers}; pass Runtime(step_workers=4) or more")
        self.workers = workers
        self._lock = threading.Lock()
        self._refs: list[pykka.ActorRef[Any]] = []
        self._idle: list[int] = []
        self._queue: collections.deque[Execute] = collections.deque()
        self._cancelled: set[int] = set()
        self._running: dict[int, int] = {}  # token -> worker slot
        self._loop: AsyncLoop | None = None
        self._closed = False

    def start(self) -> None:
        with self._lock:
            for i in range(self.workers):
                self._refs.append(StepActor.start(self, i))
                self._idle.append(i)

    def submit(self, msg: Execute) -> None:
        if msg.is_async:
            with self._lock:
                if self._loop is None:
                    self._loop = AsyncLoop()
                loop = self._loop
            loop.submit(msg)
            return
        with self._lock:
            self._queue.append(msg)
            if not self._idle:
                return  # a busy worker takes it when it is done
            ref = self._refs[self._idle.pop()]
        ref.tell(_WAKE)

    def _take(self, index: int, ref: Any) -> Execute | None:
        """The next queued step for worker ``index``, or None (it goes idle)."""
        with self._lock:
            if self._closed or index >= len(self._refs) or self._refs[index] is not ref:
                return None  # a retired (replaced) worker takes nothing more
            q = self._queue
            while q:
                msg = q.popleft()
                if msg.token in self._cancelled:
                    self._cancelled.discard(msg.token)
                    continue
                if msg.cancelled is not None and msg.cancelled.is_set():
                    continue  # its run is being cancelled: it must not start
                self._running[msg.token] = index
                return msg
            self._idle.append(index)
            return None

    def _done(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)

    def abandon(self, token: int) -> None:
        """A step overran its timeout (or lost an any-join): cancel it if it is
        queued or async; if it is running, a fresh worker takes its slot and the
        stuck one stops once the step returns."""
        self.abandon_many([token])

    def abandon_many(self, tokens: list[int]) -> None:
        """Abandon several steps at once (a cancel): the queued ones are dropped
        before any slot is refilled, so none of them starts afterwards."""
        loop = None
        fresh: list[tuple[Any, Any]] = []
        wake = False
        with self._lock:
            if self._closed:
                return
            queued = {m.token for m in self._queue}
            running = []
            for token in tokens:
                if token in self._running:
                    running.append(token)
                elif token in queued:
                    self._cancelled.add(token)
                else:
                    loop = self._loop  # an async step (or one that just ended: harmless)
            for token in running:
                i = self._running.pop(token)
                old = self._refs[i]
                new = self._refs[i] = StepActor.start(self, i)
                fresh.append((old, new))
                if self._queue:
                    wake = True
                else:
                    self._idle.append(i)
        if loop is not None:
            for token in tokens:
                loop.abandon(token)
        for old, new in fresh:
            if wake:
                new.tell(_WAKE)
            old.stop(block=False)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            refs, self._refs = self._refs, []
            self._queue.clear()
        for r in refs:
            r.stop(block=False)
        if self._loop is not None:
            self._loop.close()
