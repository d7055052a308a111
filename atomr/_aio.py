"""The asyncio face of :class:`~atomr.Runtime`: ``astart``, ``aresume``, ``aget_state``, ``aschedule``...

Threads: the caller's event loop, any loop in any thread (uvicorn's too). No
method blocks the loop: a start is checked in the loop (a few store reads),
sent to its run actor, and its durable acceptance is *awaited* (the run
actor's turn wakes the loop with ``call_soon_threadsafe``); reads that may
take long go to a worker thread. ``async def`` steps never run on the
caller's loop: they run on atomr's own loop. Starts from many concurrent
tasks share commits exactly as ``start_many`` does (group commit).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from atomr._wake import resolve
from atomr.actors.cron_rules import Schedule
from atomr.errors import ResultTimeout, RunExists
from atomr.handle import RunHandle
from atomr.messages import Rejected
from atomr.store.base import RunSummary
from atomr.types import Checkpoint, Command, StateView

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["AsyncAPI"]


class _Starter:
    """One thread that runs the checks and sends of asyncio callers' requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[tuple[asyncio.Future[Any], Any, tuple[Any, ...]]] = []
        self._draining = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="atomr-starts")

    def submit(self, fut: asyncio.Future[Any], fn: Any, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._queue.append((fut, fn, args))
            if self._draining:
                return
            self._draining = True
        self._pool.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            for fut, fn, args in batch:
                try:
                    resolve(fut, fn(*args))
                except BaseException as exc:  # noqa: BLE001 - the caller gets it
                    resolve(fut, exc=exc)

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait)


class AsyncAPI:
    """Mixin of :class:`~atomr.Runtime`: its blocking calls, awaitable."""

    async def astart(self: Runtime, workflow_id: str, input: Mapping[str, Any] | None = None,
                     run_id: str | None = None, *, meta: Mapping[str, Any] | None = None,
                     timeout: float | None = None, if_exists: str = "error", priority: int = 0) -> RunHandle:
        """:meth:`Runtime.start`, awaited: durable before it returns, as start()."""
        self._check_open()
        t = self._wait_s(timeout)
        wf, pending = await self._on_starter(self._send_starts, workflow_id, [input],
                                             [run_id] if run_id is not None else None, meta, if_exists, priority)
        rid, inbox = pending[0]
        got = await inbox.await_attr("accepted", t) if inbox is not None else None
        return self._handle(wf.id, rid, inbox, got, t)

    async def astart_many(self: Runtime, workflow_id: str, inputs: Iterable[Mapping[str, Any] | None],
                          run_ids: Iterable[str] | None = None, *, meta: Mapping[str, Any] | None = None,
                          timeout: float | None = None, if_exists: str = "error",
                          priority: int = 0) -> list[RunHandle]:
        """:meth:`Runtime.start_many`, awaited (all or nothing, as start_many()). The checks
        and sends run in a worker thread, so a thousand concurrent starts never hold the loop."""
        self._check_open()
        t = self._wait_s(timeout)
        wf, pending = await self._on_starter(self._send_starts, workflow_id, inputs, run_ids, meta,
                                             if_exists, priority)
        got = await asyncio.gather(*(inbox.await_attr("accepted", t) for _, inbox in pending if inbox is not None))
        it = iter(got)
        got = [next(it) if inbox is not None else None for _, inbox in pending]
        return [self._handle(wf.id, rid, inbox, g, t) for (rid, inbox), g in zip(pending, got)]

    async def aresume(self: Runtime, workflow_id: str, run_id: str, command: Command | None = None, *,
                      timeout: float | None = None) -> RunHandle:
        """:meth:`Runtime.resume`, awaited."""
        t = self._wait_s(timeout)
        wf, inbox = await self._on_starter(self._send_resume, workflow_id, run_id, command)
        return self._handle(wf.id, run_id, inbox, await inbox.await_attr("accepted", t), t)

    async def aget_state(self: Runtime, workflow_id: str, run_id: str) -> StateView:
        return await asyncio.to_thread(self.get_state, workflow_id, run_id)

    async def ahistory(self: Runtime, workflow_id: str, run_id: str) -> list[Checkpoint]:
        return await asyncio.to_thread(self.history, workflow_id, run_id)

    async def afork(self: Runtime, workflow_id: str, run_id: str, at: int | Checkpoint | None = None,
                    edits: Mapping[str, Any] | None = None, new_run_id: str | None = None, *,
                    super_step: int | None = None) -> str:
        return await asyncio.to_thread(self.fork, workflow_id, run_id, at, edits, new_run_id,
                                       super_step=super_step)

    async def aruns(self: Runtime, status: str | None = None, workflow_id: str | None = None,
                    limit: int | None = None, before: str | None = None) -> list[RunSummary]:
        return await asyncio.to_thread(self.runs, status, workflow_id, limit, before)

    async def aschedule(self: Runtime, schedule_id: str, workflow_id: str, *, cron: str | None = None,
                        every_s: float | None = None, input: Mapping[str, Any] | None = None,
                        overlap: str = "skip", catch_up: str = "none",
                        meta: Mapping[str, Any] | None = None, replace: bool = True) -> Schedule:
        """:meth:`Runtime.schedule`, awaited (in a worker thread: it waits for the store)."""
        return await asyncio.to_thread(self.schedule, schedule_id, workflow_id, cron=cron, every_s=every_s,
                                       input=input, overlap=overlap, catch_up=catch_up, meta=meta,
                                       replace=replace)

    async def aunschedule(self: Runtime, schedule_id: str) -> None:
        """:meth:`Runtime.unschedule`, awaited (a firing under way is waited for in a worker thread)."""
        await asyncio.to_thread(self.unschedule, schedule_id)

    async def aschedules(self: Runtime, workflow_id: str | None = None) -> list[Schedule]:
        """:meth:`Runtime.schedules`, awaited."""
        return await asyncio.to_thread(self.schedules, workflow_id)

    def _on_starter(self: Runtime, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` on the runtime's starter thread; a future on this loop.

        Calls queue up; the starter drains the queue in bursts and the
        results wake each loop once per burst, so ten thousand concurrent
        ``astart`` s cost ten thousand checks but not ten thousand hand-offs."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._starts is None:
                self._starts = _Starter()
            starter = self._starts
        starter.submit(fut, fn, args)
        return fut

    def _handle(self: Runtime, workflow_id: str, run_id: str, inbox: Any, got: Any, t: float) -> RunHandle:
        if inbox is None:  # attached to an existing run
            return RunHandle(self, workflow_id, run_id, None)
        if isinstance(got, Rejected) and isinstance(got.error, RunExists) and inbox.attach:
            return RunHandle(self, workflow_id, run_id, None)  # a concurrent start made it first
        self._check_reply(workflow_id, run_id, got, t)
        return RunHandle(self, workflow_id, run_id, inbox)

    def _check_reply(self: Runtime, workflow_id: str, run_id: str, got: Any, t: float) -> None:
        """Raise the refusal in ``got``, or ResultTimeout when nothing came."""
        if got is None:
            raise ResultTimeout(
                f"run {workflow_id}/{run_id} was not confirmed within {t}s; the request was sent and "
                f"may still take effect: look at rt.get_state({workflow_id!r}, {run_id!r}) before "
                "sending it again")
        if isinstance(got, Rejected):
            raise got.error
