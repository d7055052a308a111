"""One event-loop thread shared by all ``async def`` steps of a runtime.

Threads: the loop's own thread runs every async step as a task; any thread
may submit or abandon. A KeyboardInterrupt / SystemExit escaping a step
never stops the loop: every outcome becomes a StepDone.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

from atomr import _trace
from atomr.actors.step import call as _call
from atomr.actors.step import finish
from atomr.actors.step import tell_done as _tell
from atomr.messages import Execute

__all__ = ["AsyncLoop"]


async def _settle(aw: Any) -> tuple[bool, Any]:
    """(True, result) or (False, exception): a KeyboardInterrupt / SystemExit
    escaping a task would stop the shared loop, so none escapes."""
    try:
        return True, await aw
    except BaseException as exc:  # noqa: BLE001 - re-raised in the step's thread
        return False, exc


class AsyncLoop:
    """One event-loop thread shared by all ``async def`` steps.

    Steps are handed over in batches: :meth:`submit` appends to a queue and
    wakes the loop only when no drain is pending, so a burst of steps costs
    one wake-up, not one each. Each step is a task on the loop (no thread).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._queue: collections.deque[Execute] = collections.deque()
        self._lock = threading.Lock()
        self._drain_pending = False
        self._closing = False
        #: token -> task of the steps running now
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: tokens the executor cancelled (timeout, any-join): their end is silent
        self._abandoned: set[int] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="atomr-async", daemon=True)
        self._thread.start()

    def submit(self, msg: Execute) -> None:
        """Any thread: run ``msg`` as a task on the loop."""
        with self._lock:
            self._queue.append(msg)
            if self._drain_pending:
                return
            self._drain_pending = True
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._drain_pending = False
        create = self.loop.create_task
        for msg in batch:
            if msg.token in self._abandoned:
                self._abandoned.discard(msg.token)
                continue
            if msg.cancelled is not None and msg.cancelled.is_set():
                continue  # its run is being cancelled: it must not start
            self._tasks[msg.token] = create(self._run(msg))

    def abandon(self, token: int) -> None:
        """Any thread: cancel the step's task; its end is not reported."""
        self.loop.call_soon_threadsafe(self._abandon, token)

    def _abandon(self, token: int) -> None:
        task = self._tasks.pop(token, None)
        if task is not None:
            self._abandoned.add(token)
            task.cancel()
        elif any(m.token == token for m in self._queue):
            self._abandoned.add(token)

    async def _run(self, msg: Execute) -> None:
        if _trace.enabled:
            _trace.enter(msg)  # this task's own context: user spans nest under the step's
        try:
            result = await _call(msg)
            done = finish(msg, result)
        except asyncio.CancelledError as exc:
            if msg.token in self._abandoned or self._closing:
                self._abandoned.discard(msg.token)
                return  # we cancelled it: the run already counted the attempt (or we close)
            done = finish(msg, exc=exc)  # the step cancelled itself: a failed attempt
        except BaseException as exc:  # noqa: BLE001
            done = finish(msg, exc=exc)
        finally:
            self._tasks.pop(msg.token, None)
        _tell(msg.reply_to, done)

    def run(self, aw: Any) -> Any:
        ok, value = asyncio.run_coroutine_threadsafe(_settle(aw), self.loop).result()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        def stop() -> None:
            self._closing = True
            tasks = list(self._tasks.values())
            for t in tasks:
                t.cancel()
            if tasks:
                # let the cancelled tasks finish before the loop stops
                fut = asyncio.gather(*tasks, return_exceptions=True)
                fut.add_done_callback(lambda _f: self.loop.stop())
            else:
                self.loop.stop()

        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:
            return  # already closed
        self._thread.join(timeout=2)
