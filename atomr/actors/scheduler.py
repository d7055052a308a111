"""A single timer thread for retries' backoff and step timeouts.

Run actors never sleep: they ask the scheduler to ``tell`` them a message
later. Threads: one daemon thread, started on first use.

The thread is shared by every run of a runtime, so nothing one run does may
stop it: a delay that is not a number (or NaN) is refused in the caller's
thread with :class:`~atomr.errors.RunError`; a negative delay fires at once;
an infinite (or huge) one never fires; anything a ``tell`` raises is logged
and the loop goes on; and should the thread end anyway, the next
``tell_later`` starts a new one.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from typing import Any

from atomr._hooks import logger
from atomr.errors import RunError

__all__ = ["Scheduler"]

log = logger("atomr.scheduler")

#: Longest single wait of the timer thread (a later deadline is waited for in steps).
_MAX_WAIT = min(threading.TIMEOUT_MAX, 3600.0)


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any, Any]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._pending: set[int] = set()  # handles in the heap, not cancelled
        self._thread: threading.Thread | None = None
        self._closed = False

    def tell_later(self, delay_s: float, ref: Any, message: Any) -> int:
        """Tell ``ref`` ``message`` after ``delay_s`` seconds; returns a handle.

        ``delay_s`` <= 0 fires at once, ``math.inf`` never; NaN or a non-number
        raises :class:`~atomr.errors.RunError`.
        """
        if isinstance(delay_s, bool) or not isinstance(delay_s, (int, float)) or delay_s != delay_s:
            raise RunError(f"timer delay must be a number of seconds, got {delay_s!r}; pass a finite "
                           "number (math.inf: never)")
        delay = max(float(delay_s), 0.0)
        handle = next(self._seq)
        with self._cond:
            if self._closed:
                return handle
            if math.isinf(delay):
                return handle  # never fires: nothing to keep
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="atomr-timers", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (time.monotonic() + delay, handle, ref, message))
            self._pending.add(handle)
            self._cond.notify()
        return handle

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._pending.discard(handle)

    def _run(self) -> None:
        while True:
            try:
                if not self._fire_next():
                    return
            except BaseException:  # noqa: BLE001 - the shared timer must not die
                log.exception("timer thread: unexpected error (ignored, timers go on)")

    def _fire_next(self) -> bool:
        """Wait for the next due timer and tell it; False once closed."""
        with self._cond:
            while not self._closed:
                heap = self._heap
                while heap and heap[0][1] not in self._pending:
                    heapq.heappop(heap)  # cancelled
                if heap:
                    wait = heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(min(wait, _MAX_WAIT))
                else:
                    self._cond.wait(_MAX_WAIT)
            if self._closed:
                return False
            _, handle, ref, message = heapq.heappop(self._heap)
            self._pending.discard(handle)
        try:
            ref.tell(message)
        except Exception:  # noqa: BLE001 - a dead actor: nobody waits any more
            log.debug("timer: could not tell %r (its actor stopped)", ref, exc_info=True)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._pending.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
