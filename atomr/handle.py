"""RunHandle: watch a started or resumed run; its inbox is what the run actor tells.

Threads: the run actor's turn tells the inbox (:meth:`_Inbox.tell`); any
caller thread waits on it, always with a timeout.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from atomr.errors import ResultTimeout
from atomr.messages import Accepted, Rejected
from atomr.types import Outcome, StepEvent

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["RunHandle", "DEFAULT_TIMEOUT"]

#: how long a blocking call waits unless told otherwise (seconds)
DEFAULT_TIMEOUT = 30.0


class _Inbox:
    """A thread-safe mailbox with a pykka-like ``tell`` for one RunHandle.

    Step events are appended without a lock (a deque append is atomic); the
    condition is touched only when a reader is waiting, or for the rare
    Accepted/outcome messages.
    """

    __slots__ = ("_cond", "accepted", "outcome", "events", "_waiting", "on_outcome", "key", "__weakref__")

    def __init__(self, key: tuple[str, str] = ("", "")) -> None:
        self.key = key
        self._cond = threading.Condition()
        self.accepted: Any = None  # Accepted | Rejected
        self.outcome: Any = None
        self.events: collections.deque[StepEvent] = collections.deque(maxlen=100_000)
        self._waiting = 0
        self.on_outcome: Any = None  # called once when the outcome arrives

    def tell(self, message: Any) -> None:
        if type(message) is StepEvent:
            self.events.append(message)
            if self._waiting:
                with self._cond:
                    self._cond.notify_all()
            return
        with self._cond:
            t = type(message)
            if t is Accepted:
                if self.accepted is None:
                    self.accepted = message
            elif t is Rejected:
                if self.accepted is None:
                    self.accepted = message
                self.outcome = self.outcome or message
            else:
                if self.accepted is None:
                    self.accepted = message
                self.outcome = message
            self._cond.notify_all()
            if self.outcome is not None and self.on_outcome is not None:
                callback, self.on_outcome = self.on_outcome, None
                callback()

    def wait(self, attr: str, timeout: float | None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: getattr(self, attr) is not None, timeout):
                return None
            return getattr(self, attr)

    def next_event(self, timeout: float | None) -> StepEvent | None:
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self.events or self.outcome is not None, timeout)
            finally:
                self._waiting -= 1
            if self.events:
                return self.events.popleft()
            return None


class RunHandle:
    """A started or resumed run: wait for its outcome, or stream its events."""

    def __init__(self, runtime: Runtime, workflow_id: str, run_id: str, inbox: _Inbox) -> None:
        self.runtime = runtime
        self.workflow_id = workflow_id
        self.run_id = run_id
        self._inbox = inbox

    def __repr__(self) -> str:
        return f"RunHandle({self.workflow_id!r}, {self.run_id!r}, done={self.done()})"

    def done(self) -> bool:
        return self._inbox.outcome is not None

    def result(self, timeout: float | None = DEFAULT_TIMEOUT) -> Outcome:
        """Wait for the outcome: Done, Paused or Failed. Raises ResultTimeout."""
        out = self._inbox.wait("outcome", timeout)
        if out is None:
            raise ResultTimeout(
                f"run {self.workflow_id}/{self.run_id} has no outcome after {timeout}s; it is "
                "still running: wait longer (handle.result(timeout=...)) or inspect it with "
                "rt.get_state()"
            )
        if isinstance(out, Rejected):
            raise out.error
        return out  # type: ignore[no-any-return]

    def events(self, timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[StepEvent]:
        """Step events as they happen (started, completed, failed, retrying,
        interrupted, committed), ending with one "outcome" event.

        ``timeout`` bounds the wait for each next event (ResultTimeout).
        """
        while True:
            e = self._inbox.next_event(timeout)
            if e is None:
                out = self._inbox.outcome
                if out is None:
                    raise ResultTimeout(f"no event from run {self.workflow_id}/{self.run_id} in {timeout}s")
                if isinstance(out, Rejected):
                    raise out.error
                yield StepEvent("outcome", self.workflow_id, self.run_id,
                                getattr(out, "super_step", -1), None, 0, out)
                return
            yield e
            if e.kind == "outcome":
                return
