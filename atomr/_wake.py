"""Waking asyncio futures from other threads, a burst at a time.

``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call:
ten thousand runs settling at once would be ten thousand system calls and
loop wake-ups. :func:`resolve` queues ``(future, result)`` for the future's
loop and schedules one drain per burst instead. Any thread; never blocks.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

__all__ = ["resolve"]

_UNSET = object()


class _Waker:
    __slots__ = ("loop", "lock", "queue", "pending", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.queue: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self.pending = False

    def add(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        with self.lock:
            self.queue.append((fut, result, exc))
            if self.pending:
                return
            self.pending = True
        try:
            self.loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # the loop is closed: nobody awaits any more
            with self.lock:
                self.queue.clear()
                self.pending = False

    def drain(self) -> None:
        with self.lock:
            batch, self.queue = self.queue, []
            self.pending = False
        for fut, result, exc in batch:
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def resolve(fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """Set ``fut``'s result (or exception) on its own loop, soon."""
    loop = fut.get_loop()
    w = _wakers.get(loop)
    if w is None:
        with _wakers_lock:
            w = _wakers.get(loop)
            if w is None:
                w = _wakers[loop] = _Waker(loop)
    w.add(fut, result, exc)
