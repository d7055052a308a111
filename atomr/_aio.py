"""The asyncio face of :class:`~atomr.Runtime`: ``astart``, ``aresume``, ``aget_state``...

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
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from atomr.errors import ResultTimeout
from atomr.handle import RunHandle
from atomr.messages import Rejected
from atomr.store.base import RunSummary
from atomr.types import Checkpoint, Command, StateView

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["AsyncAPI"]


class AsyncAPI:
    """Mixin of :class:`~atomr.Runtime`: its blocking calls, awaitable."""

    async def astart(self: Runtime, workflow_id: str, input: Mapping[str, Any] | None = None,
                     run_id: str | None = None, *, meta: Mapping[str, Any] | None = None,
                     timeout: float | None = None) -> RunHandle:
        """:meth:`Runtime.start`, awaited: durable before it returns, as start()."""
        return (await self.astart_many(workflow_id, [input], [run_id] if run_id is not None else None,
                                       meta=meta, timeout=timeout))[0]

    async def astart_many(self: Runtime, workflow_id: str, inputs: Iterable[Mapping[str, Any] | None],
                          run_ids: Iterable[str] | None = None, *, meta: Mapping[str, Any] | None = None,
                          timeout: float | None = None) -> list[RunHandle]:
        """:meth:`Runtime.start_many`, awaited. The checks and sends run in a
        worker thread, so a thousand concurrent starts never hold the loop."""
        self._check_open()
        t = self._wait_s(timeout)
        wf, pending = await asyncio.get_running_loop().run_in_executor(
            self._starter(), self._send_starts, workflow_id, inputs, run_ids, meta)
        got = await asyncio.gather(*(inbox.await_attr("accepted", t) for _, inbox in pending))
        return [self._handle(wf.id, rid, inbox, g, t) for (rid, inbox), g in zip(pending, got)]

    async def aresume(self: Runtime, workflow_id: str, run_id: str, command: Command | None = None, *,
                      timeout: float | None = None) -> RunHandle:
        """:meth:`Runtime.resume`, awaited."""
        t = self._wait_s(timeout)
        wf, inbox = await asyncio.get_running_loop().run_in_executor(
            self._starter(), self._send_resume, workflow_id, run_id, command)
        return self._handle(wf.id, run_id, inbox, await inbox.await_attr("accepted", t), t)

    async def aget_state(self: Runtime, workflow_id: str, run_id: str) -> StateView:
        return await asyncio.to_thread(self.get_state, workflow_id, run_id)

    async def ahistory(self: Runtime, workflow_id: str, run_id: str) -> list[Checkpoint]:
        return await asyncio.to_thread(self.history, workflow_id, run_id)

    async def afork(self: Runtime, workflow_id: str, run_id: str, super_step: int,
                    edits: Mapping[str, Any] | None = None, new_run_id: str | None = None) -> str:
        return await asyncio.to_thread(self.fork, workflow_id, run_id, super_step, edits, new_run_id)

    async def aruns(self: Runtime, status: str | None = None, workflow_id: str | None = None) -> list[RunSummary]:
        return await asyncio.to_thread(self.runs, status, workflow_id)

    def _starter(self: Runtime) -> ThreadPoolExecutor:
        """One thread that checks and sends the starts of asyncio callers (lazy)."""
        with self._lock:
            if self._starts is None:
                self._starts = ThreadPoolExecutor(1, thread_name_prefix="atomr-starts")
            return self._starts

    def _handle(self: Runtime, workflow_id: str, run_id: str, inbox: Any, got: Any, t: float) -> RunHandle:
        if got is None:
            raise ResultTimeout(
                f"run {workflow_id}/{run_id} was not confirmed within {t}s; the request was sent and "
                f"may still take effect: look at rt.get_state({workflow_id!r}, {run_id!r}) before "
                "sending it again")
        if isinstance(got, Rejected):
            raise got.error
        return RunHandle(self, workflow_id, run_id, inbox)
