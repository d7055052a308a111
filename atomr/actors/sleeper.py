"""Durable timers: wakes sleeping runs (``ctx.sleep``) on time.

The sleep itself is in the journal (an interrupt whose payload holds its wake
time); this only keeps one timer per pending sleep on the runtime's timer
heap, so ten thousand sleeping runs hold no thread and no actor. A run that
was sleeping when its process died is armed again when its workflow is
registered in the next runtime; an overdue timer fires at once. Waking is a
Resume that answers the sleep (``ctx.sleep`` then returns).

Threads: ``arm`` from run actors' turns and the caller's; ``tell`` from the
timer thread. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from atomr.errors import RuntimeClosed
from atomr.messages import Resume
from atomr.types import Command

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["Sleeper"]


@dataclass(frozen=True, slots=True)
class _Wake:
    wf: Any
    run_id: str
    ids: tuple[str, ...]


class Sleeper:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._lock = threading.Lock()
        #: (workflow id, run id, interrupt id) -> timer handle
        self._armed: dict[tuple[str, str, str], int] = {}

    def arm(self, wf: Workflow, run_id: str, sleeps: dict[str, float]) -> None:
        """One timer per sleep not armed yet (interrupt id -> wake time, epoch s)."""
        now = time.time()
        with self._lock:
            for iid, at in sleeps.items():
                key = (wf.id, run_id, iid)
                if key not in self._armed:
                    self._armed[key] = self.core.scheduler.tell_later(
                        max(0.0, at - now), self, _Wake(wf, run_id, (iid,)))

    def wake_now(self, wf: Workflow, run_id: str, ids: list[str]) -> None:
        """Answer these sleeps now (``rt.wake``)."""
        with self._lock:
            for iid in ids:
                handle = self._armed.pop((wf.id, run_id, iid), None)
                if handle is not None:
                    self.core.scheduler.cancel(handle)
        self._resume(_Wake(wf, run_id, tuple(ids)))

    def tell(self, msg: _Wake) -> None:
        """The timer fired (timer thread)."""
        with self._lock:
            for iid in msg.ids:
                self._armed.pop((msg.wf.id, msg.run_id, iid), None)
        self._resume(msg)

    def _resume(self, msg: _Wake) -> None:
        # no reply_to: whoever watches the run streams it; a run woken
        # meanwhile (or cancelled) refuses this, which is fine
        try:
            self.core.supervisor.route(msg.wf, msg.run_id, Resume(Command(resume={i: None for i in msg.ids})))
        except RuntimeClosed:
            pass

    def armed(self) -> int:
        with self._lock:
            return len(self._armed)
