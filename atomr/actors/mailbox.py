"""A dispatched actor's inbox (see :mod:`atomr.actors.dispatcher`).

Threads: ``put`` and ``_claim_or_put`` from any thread; the rest from the
thread running the actor's turn (and pykka's teardown).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Any

from pykka._envelope import Envelope

__all__ = ["Mailbox"]


class Mailbox:
    """An actor's inbox: a deque plus the ``scheduled`` flag (changed under
    its lock: an actor is on its dispatcher's ready queue at most once)."""

    __slots__ = ("_q", "_lock", "_scheduled", "_actor", "_dispatcher")

    def __init__(self) -> None:
        self._q: deque[Any] = deque()
        self._lock = threading.Lock()
        #: on the ready queue or being run; a put while unbound only queues
        self._scheduled = True
        self._actor: Any = None  # the DispatchedActor
        self._dispatcher: Any = None  # its Dispatcher

    def put(self, envelope: Any, /, block: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            self._q.append(envelope)
            if self._scheduled:
                return
            self._scheduled = True
        self._dispatcher._ready.put(self._actor)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self._lock:
            if not self._q:
                raise queue.Empty
            return self._q.popleft()

    get_nowait = get

    def empty(self) -> bool:
        return not self._q

    def qsize(self) -> int:
        return len(self._q)

    def _claim_or_put(self, message: Any) -> bool:
        """Deliver ``message`` from a dispatcher thread: True when the actor
        was idle (so its inbox is empty) — it is now scheduled, the message is
        not queued, and the caller runs the actor's turn with it first;
        False: queued like :meth:`put` (the actor is scheduled already)."""
        with self._lock:
            if self._scheduled:
                self._q.append(Envelope(message))
                return False
            self._scheduled = True
            return True

    def _bind(self, actor: Any, dispatcher: Any) -> None:
        self._actor = actor
        self._dispatcher = dispatcher

    def _next_or_idle(self) -> Any:
        """The next envelope, or None after marking the actor idle (atomically)."""
        with self._lock:
            if self._q:
                return self._q.popleft()
            self._scheduled = False
            return None

    def _reschedule_or_idle(self) -> bool:
        """After a full turn: True when more messages wait (stay scheduled)."""
        with self._lock:
            if self._q:
                return True
            self._scheduled = False
            return False
