"""Step limits across every worker of a shared store: ``Limit(..., scope="global")``.

A global lane's slots are rows in the store (:meth:`~atomr.store.sql._slots.Slots.take_slot`):
an execution starts once it holds one — at most ``concurrency`` rows of a lane
held by live workers, and starts spaced by ``1 / per_second`` by the
database's clock. A dead worker's slots stop counting with its lease (or at
once, when it is reaped); a worker's own are dropped when it leaves.

Executions over the limit wait here in a FIFO queue per lane, holding no
thread. One daemon thread (``atomr-limits``, lazy) takes and frees the slots,
so no run actor's turn waits for the database; it looks again every
``poll_s`` while executions wait for a slot another worker holds. While they
wait, every ``tidy_s`` it gives back any slot row of this worker that no
execution here holds (the rows of a lane and worker are this thread's to
write, so such a row is a leftover: kept, it would hold the lane for ever);
the last execution of a lane here gives back all of them.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atomr._hooks import logger

if TYPE_CHECKING:
    from atomr.store.base import Store
    from atomr.workflow import Limit

__all__ = ["GlobalLanes", "lane_name"]

log = logger("atomr.limits")


def lane_name(key: tuple[str, str]) -> str:
    """The store's name of the lane of step ``key[1]`` of workflow ``key[0]``."""
    return f"{key[0]}\x1f{key[1]}"


class GlobalLanes:
    """The waiting executions of global lanes, and the thread that admits them."""

    def __init__(self, store: Store, send: Callable[[Any], None], poll_s: float = 0.05,
                 tidy_s: float = 1.0) -> None:
        self.store = store
        self.send = send
        self.poll_s = poll_s
        self.tidy_s = tidy_s
        self._cond = threading.Condition()
        self._queues: dict[tuple[str, str], collections.deque[Any]] = {}
        self._limits: dict[tuple[str, str], Limit] = {}
        #: token -> lane of executions holding a slot
        self._held: dict[int, tuple[str, str]] = {}
        #: tokens submitted here and not done (Limiter.done routes them here)
        self.tokens: set[int] = set()
        self._forgotten: set[int] = set()
        self._to_free: list[tuple[tuple[str, str], int]] = []
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._new = False  # an execution was submitted since the loop last looked

    def submit(self, key: tuple[str, str], limit: Limit, msg: Any) -> None:
        with self._cond:
            self.tokens.add(msg.token)
            self._limits[key] = limit
            self._queues.setdefault(key, collections.deque()).append(msg)
            self._new = True  # seen by the loop even if it is busy now (not waiting on the condition)
            self._cond.notify()
        self._start()

    def done(self, token: int) -> None:
        """An execution ended or was abandoned: give its slot back (or drop it from its queue)."""
        with self._cond:
            self.tokens.discard(token)
            key = self._held.pop(token, None)
            if key is None:
                self._forgotten.add(token)
            else:
                self._to_free.append((key, token))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _start(self) -> None:
        if self._thread is None:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="atomr-limits", daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
        waiting = False
        tidied = time.monotonic()
        while True:
            with self._cond:
                if not self._to_free and not self._new and not self._stopped:
                    self._cond.wait(self.poll_s if waiting else None)
                if self._stopped:
                    return
                self._new = False
                frees, self._to_free = self._to_free, []
                lanes = [(k, q) for k, q in self._queues.items() if q]
            try:
                for key, token in frees:
                    self._free(key, token)
                waiting = False
                for key, queue in lanes:
                    waiting |= self._admit(key, queue)
                if waiting and time.monotonic() - tidied >= self.tidy_s:
                    tidied = time.monotonic()
                    self._tidy([key for key, queue in lanes if queue])
            except Exception:  # noqa: BLE001 - the store may be away a while: try again
                log.warning("global step limits: a store operation failed; trying again", exc_info=True)
                with self._cond:
                    self._to_free[:0] = frees
                waiting = True

    def _admit(self, key: tuple[str, str], queue: collections.deque[Any]) -> bool:
        """Send the lane's executions while slots are free; True when some still wait."""
        limit = self._limits[key]
        while True:
            with self._cond:
                while queue and queue[0].token in self._forgotten:
                    self._forgotten.discard(queue.popleft().token)
                if not queue:
                    return False
                msg = queue[0]
            if not self.store.take_slot(lane_name(key), msg.token, limit.concurrency,  # type: ignore[attr-defined]
                                        limit.per_second):
                return True
            with self._cond:
                queue.popleft()
                if msg.token in self._forgotten:  # abandoned while its slot was taken
                    self._forgotten.discard(msg.token)
                    self._to_free.append((key, msg.token))
                    continue
                self._held[msg.token] = key
            self.send(msg)

    def _free(self, key: tuple[str, str], token: int) -> None:
        """Give back ``token``'s slot; the last execution of a lane here gives back every
        row of this worker in it (one statement all the same), so a leftover never outlives it."""
        with self._cond:
            last = key not in self._held.values() and not self._queues.get(key)
        if not last:
            self.store.free_slot(lane_name(key), token)  # type: ignore[attr-defined]
        elif self.store.free_slots_except(lane_name(key), ()) > 1:  # type: ignore[attr-defined]
            log.warning("global step limits: slots of step %r of workflow %r were held by no execution "
                        "of this worker; given back", key[1], key[0])

    def _tidy(self, keys: list[tuple[str, str]]) -> None:
        """Executions have waited a while: give back this worker's slot rows of their lanes
        that no execution here holds (this thread alone takes this worker's slots)."""
        for key in keys:
            with self._cond:
                held = [token for token, k in self._held.items() if k == key]
            n = self.store.free_slots_except(lane_name(key), held)  # type: ignore[attr-defined]
            if n:
                log.warning("global step limits: %d slot(s) of step %r of workflow %r were held by no "
                            "execution of this worker; given back", n, key[1], key[0])
