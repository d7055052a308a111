"""The shard actor: one Runtime on its own LmdbStore, in its own (Ray actor) process."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import os
import time
from typing import Any

from atomr import _specs
from atomr.ray import RayExecutor
from atomr.runtime import Runtime
from atomr.sharding.wire import export_exc, outcome_from_view
from atomr.store.lmdb import LmdbStore
from atomr.types import Command
from atomr.workflow import Workflow

__all__ = ["ShardHost", "load_workflow"]


def load_workflow(spec: str) -> Workflow:
    """Import the Workflow named by ``"package.module:attr"`` (``attr`` may be
    dotted, and may be a function returning the Workflow)."""
    return _specs.load_workflow(
        spec, hint="the module must be importable in every shard process "
                   "(install it, or put it on PYTHONPATH / a Ray runtime_env)")


class ShardHost:
    """Hosts one Runtime on its own LmdbStore (runs as an async Ray actor).

    Blocking Runtime calls run on a small thread pool; waits for outcomes poll
    handles from the event loop, so any number of waiters cost no thread.
    Every method returns ``(True, value)`` or ``(False, exported exception)``.
    """

    def __init__(self, index: int, path: str, specs: list[str], durability: str,
                 step_workers: int, step_executor: str, store_options: dict[str, Any],
                 timeout: float) -> None:
        executor = RayExecutor() if step_executor == "ray" else None
        self.index = index
        self.rt = Runtime(store=LmdbStore(path, **store_options), durability=durability,
                          step_workers=step_workers, executor=executor, timeout=timeout)
        for spec in specs:
            self.rt.register(load_workflow(spec))
        self._pool = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"atomr-shard{index}")
        self._tickets = itertools.count(1)
        self._handles: dict[int, Any] = {}
        self._latest: dict[tuple[str, str], int] = {}
        # a restarted shard carries on what its previous process was executing
        self.recovered = [self._keep(h) for h in self.rt.recover()]

    def _keep(self, handle: Any) -> int:
        t = next(self._tickets)
        self._handles[t] = handle
        self._latest[(handle.workflow_id, handle.run_id)] = t
        return t

    async def _call(self, fn: Any, *args: Any) -> tuple[bool, Any]:
        try:
            return True, await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except BaseException as exc:  # noqa: BLE001 - sent back to the caller
            return False, export_exc(exc)

    async def ping(self) -> tuple[bool, Any]:
        return True, {"index": self.index, "pid": os.getpid(), "workflows": sorted(self.rt.workflows),
                      "recovered": len(self.recovered)}

    async def start_many(self, workflow_id: str, inputs: list[Any], run_ids: list[str],
                         meta: Any, timeout: float | None) -> tuple[bool, Any]:
        def go() -> list[int]:
            hs = self.rt.start_many(workflow_id, inputs, run_ids, meta=meta, timeout=timeout)
            return [self._keep(h) for h in hs]

        return await self._call(go)

    async def resume(self, workflow_id: str, run_id: str, command: Command,
                     timeout: float | None) -> tuple[bool, Any]:
        return await self._call(lambda: self._keep(self.rt.resume(workflow_id, run_id, command, timeout=timeout)))

    async def recover(self, workflow_ids: list[str] | None) -> tuple[bool, Any]:
        def go() -> list[tuple[str, str, int]]:
            return [(h.workflow_id, h.run_id, self._keep(h)) for h in self.rt.recover(workflow_ids)]

        return await self._call(go)

    async def wait(self, ticket: int | None, workflow_id: str, run_id: str, timeout: float) -> tuple[bool, Any]:
        """The outcome of the run (None when it has none within ``timeout``)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        key = (workflow_id, run_id)
        h = self._handles.get(ticket) if ticket is not None else None
        if h is None or (h.workflow_id, h.run_id) != key:
            # e.g. asked again after this shard restarted: its tickets start over
            ticket = self._latest.get(key)
            h = self._handles.get(ticket) if ticket is not None else None
        delay = 0.002
        if h is not None:
            while not h.done():
                if time.monotonic() >= deadline:
                    return True, None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            self._handles.pop(ticket, None)
            if self._latest.get(key) == ticket:
                del self._latest[key]
            try:
                return True, h.result(timeout=0)
            except BaseException as exc:  # noqa: BLE001 - a rejection
                return False, export_exc(exc)
        while True:  # no handle here: the run's outcome is in the store
            ok, view = await self._call(self.rt.get_state, workflow_id, run_id)
            if not ok:
                return ok, view
            out = outcome_from_view(view)
            if out is not None or time.monotonic() >= deadline:
                return True, out
            await asyncio.sleep(0.05)

    async def get_state(self, workflow_id: str, run_id: str) -> tuple[bool, Any]:
        return await self._call(self.rt.get_state, workflow_id, run_id)

    async def history(self, workflow_id: str, run_id: str) -> tuple[bool, Any]:
        return await self._call(self.rt.history, workflow_id, run_id)

    async def runs(self, status: str | None, workflow_id: str | None) -> tuple[bool, Any]:
        return await self._call(self.rt.runs, status, workflow_id)

    async def flush(self) -> tuple[bool, Any]:
        return await self._call(self.rt.flush)

    async def live_runs(self) -> tuple[bool, Any]:
        return True, self.rt.live_runs()

    async def close(self) -> tuple[bool, Any]:
        out = await self._call(self.rt.close)
        self._pool.shutdown(wait=False)
        return out
