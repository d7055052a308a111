"""Step limits: at most N executions of a step at once (and at most R starts
per second) across every run of a runtime — the typical LLM or API quota.

Executions over the limit wait in a FIFO queue here, holding no thread; a
finished, timed-out or cancelled one frees its slot and the next is sent.
Threads: any (run actors' turns, the timer thread); one lock.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Limit

__all__ = ["Limiter"]


class _Lane:
    __slots__ = ("limit", "running", "queue", "next_at", "timer")

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.running = 0
        self.queue: collections.deque[Any] = collections.deque()
        self.next_at = 0.0  # monotonic: the earliest next start under per_second
        self.timer = False


class Limiter:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._lock = threading.Lock()
        self._lanes: dict[tuple[str, str], _Lane] = {}
        #: token -> lane of executions sent and not finished
        self._admitted: dict[int, tuple[str, str]] = {}
        self._forgotten: set[int] = set()
        #: the lanes of limits with scope="global" (lazy)
        self._global: Any = None

    def close(self) -> None:
        if self._global is not None:
            self._global.close()

    def submit(self, key: tuple[str, str], limit: Limit, msg: Any) -> None:
        """Send ``msg`` (an Execute) now if its step's limit allows, else queue it."""
        if limit.scope == "global":
            if self._global is None:
                from atomr.actors.global_limits import GlobalLanes

                self._global = GlobalLanes(self.core.store, self.core.executor.submit)
            self._global.submit(key, limit, msg)
            return
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(limit)
            lane.queue.append(msg)
            ready = self._take(key, lane)
        self._send(ready)

    def done(self, token: int) -> None:
        """An execution ended (or was abandoned): free its slot."""
        g = self._global
        if g is not None and token in g.tokens:
            g.done(token)
            return
        with self._lock:
            key = self._admitted.pop(token, None)
            if key is None:
                self._forgotten.add(token)  # still queued: it will be dropped
                return
            lane = self._lanes[key]
            lane.running -= 1
            ready = self._take(key, lane)
        self._send(ready)

    def tell(self, key: tuple[str, str]) -> None:
        """The per-second spacing elapsed (timer thread)."""
        with self._lock:
            lane = self._lanes[key]
            lane.timer = False
            ready = self._take(key, lane)
        self._send(ready)

    def _take(self, key: tuple[str, str], lane: _Lane) -> list[Any]:
        out: list[Any] = []
        limit = lane.limit
        while lane.queue and (limit.concurrency is None or lane.running < limit.concurrency):
            if limit.per_second is not None:
                now = time.monotonic()
                if now < lane.next_at:
                    if not lane.timer:
                        lane.timer = True
                        self.core.scheduler.tell_later(lane.next_at - now, self, key)
                    break
                lane.next_at = max(now, lane.next_at) + 1.0 / limit.per_second
            msg = lane.queue.popleft()
            if msg.token in self._forgotten:
                self._forgotten.discard(msg.token)
                continue
            lane.running += 1
            self._admitted[msg.token] = key
            out.append(msg)
        return out

    def _send(self, ready: list[Any]) -> None:
        for msg in ready:
            self.core.executor.submit(msg)

    def waiting(self) -> int:
        with self._lock:
            return sum(len(lane.queue) for lane in self._lanes.values())
