"""Waking asyncio futures from other threads, a burst at a time.

``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call:
ten thousand runs settling at once would be ten thousand system calls and
loop wake-ups. :func:`resolve` queues ``(future, result)`` for the future's
loop and schedules one drain per burst instead. Any thread; never blocks.

Each loop's queue lives *on the loop* (an attribute), so it goes when the loop
goes: an application that runs a loop per request (``asyncio.run`` in each of
many threads) keeps none of them alive. A loop that takes no attributes
(uvloop's) has its queue in a weak-keyed table instead, whose values hold the
loop only weakly and drop their queued futures once the loop is closed.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

__all__ = ["resolve"]

_ATTR = "_atomr_waker"


class _Waker:
    __slots__ = ("_loop", "lock", "queue", "pending", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # weak: a waker in the fallback table must not keep its key alive
        self._loop = weakref.ref(loop)
        self.lock = threading.Lock()
        self.queue: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self.pending = False

    def add(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        loop = self._loop()
        with self.lock:
            if loop is None or loop.is_closed():  # nobody awaits any more
                self.queue.clear()
                self.pending = False
                return
            self.queue.append((fut, result, exc))
            if self.pending:
                return
            self.pending = True
        try:
            loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # the loop closed meanwhile
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


#: wakers of loops that take no attribute (values hold their loop weakly)
_fallback: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _waker(loop: asyncio.AbstractEventLoop) -> _Waker:
    w = getattr(loop, _ATTR, None)
    if w is not None:
        return w  # type: ignore[no-any-return]
    with _lock:
        w = getattr(loop, _ATTR, None) or _fallback.get(loop)
        if w is None:
            w = _Waker(loop)
            try:
                setattr(loop, _ATTR, w)
            except (AttributeError, TypeError):
                _fallback[loop] = w
    return w


def resolve(fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """Set ``fut``'s result (or exception) on its own loop, soon."""
    _waker(fut.get_loop()).add(fut, result, exc)
