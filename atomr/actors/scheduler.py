"""A single timer thread for retries' backoff and step timeouts.

Run actors never sleep: they ask the scheduler to ``tell`` them a message
later. Threads: one daemon thread, started on first use.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any

__all__ = ["Scheduler"]

log = logging.getLogger("atomr.scheduler")


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any, Any]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._cancelled: set[int] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def tell_later(self, delay_s: float, ref: Any, message: Any) -> int:
        """Tell ``ref`` ``message`` after ``delay_s`` seconds; returns a handle."""
        handle = next(self._seq)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="atomr-timers", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (time.monotonic() + max(delay_s, 0.0), handle, ref, message))
            self._cond.notify()
        return handle

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._cancelled.add(handle)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, handle, ref, message = heapq.heappop(self._heap)
                if handle in self._cancelled:
                    self._cancelled.discard(handle)
                    continue
            try:
                ref.tell(message)
            except Exception:  # noqa: BLE001 - a dead actor: nobody waits any more
                pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2)
