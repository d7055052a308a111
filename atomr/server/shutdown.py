"""The server's long waits end at once when it begins to shut down.

A ``/wait`` long poll may hold a request for minutes and an event stream for
the run's whole life; an ASGI server that shuts down gracefully waits for
requests in flight (``atomr serve``: up to 5 s), then cancels them. So every
long wait registers here, and :meth:`Shutdown.begin` (any thread: ``atomr
serve`` calls it as soon as SIGTERM or Ctrl-C arrives, the app's lifespan at
the latest) wakes them all: a long poll answers what it knows now
(``{"outcome": null, ...}``), a stream ends after a comment line (a client
reconnects with ``Last-Event-ID``). What they were awaiting is cancelled, and
a stream still opening is closed, so no worker thread stays blocked on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from atomr._wake import resolve

__all__ = ["Shutdown"]

T = TypeVar("T")


class Shutdown:
    """The long waits of one app, and whether it is shutting down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: set[asyncio.Future[None]] = set()
        #: True once :meth:`begin` was called
        self.begun = False

    def begin(self) -> None:
        """Any thread, any number of times: end every long wait now, and any that starts later."""
        with self._lock:
            self.begun = True
            futures, self._futures = list(self._futures), set()
        for fut in futures:
            resolve(fut)

    def _future(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if not self.begun:
                self._futures.add(fut)
                return fut
        fut.set_result(None)
        return fut

    def _forget(self, fut: asyncio.Future[None]) -> None:
        with self._lock:
            self._futures.discard(fut)

    async def wait(self, aw: Awaitable[T], timeout: float) -> tuple[bool, T | None]:
        """Await ``aw`` for at most ``timeout`` seconds: ``(True, result)`` when it
        finished, ``(False, None)`` when the time ran out or the shutdown began
        (then ``aw`` is cancelled and has unwound). Its exception is raised."""
        closing = self._future()
        task = asyncio.ensure_future(aw)
        try:
            await asyncio.wait((task, closing), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._forget(closing)
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))  # let it unwind: a stream it opened closes
        if task.cancelled():
            return False, None
        return True, task.result()

    async def iterate(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items`` until they end, or until the shutdown begins (then they are closed)."""
        closing = self._future()
        try:
            while True:
                nxt: asyncio.Future[Any] = asyncio.ensure_future(items.__anext__())
                try:
                    await asyncio.wait((nxt, closing), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not nxt.done():
                        nxt.cancel()
                        await asyncio.wait((nxt,))
                if nxt.cancelled():
                    return
                try:
                    item = nxt.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self._forget(closing)
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except RuntimeError:  # cancelled while it ran: it unwound already
                    pass
