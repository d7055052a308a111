"""Step attempts in flight: what a run actor is waiting for.

Runs in the run actor's turn (one dispatcher thread at a time).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from atomr.actors.dispatcher import StopFlag

__all__ = ["Attempt", "InFlight", "CancelFlag", "Deadline", "next_token"]

#: step tokens, unique across the runs of the process (executors key steps by token)
next_token = itertools.count(1).__next__


@dataclass(slots=True)
class Attempt:
    """One unit of work in flight: a step, a Map element (``step[i]``) or a
    Loop iteration (``step#n``)."""

    #: the executor's token; None while a retry waits for its backoff timer
    token: int | None
    attempt: int
    #: the scheduler handle of its timeout or retry timer, if any
    timer: int | None
    #: the DAG step it belongs to
    step: str
    #: the Map element index / Loop iteration number (0 for a plain step)
    index: int
    #: time.perf_counter() when it was sent (0: not sent yet)
    sent: float = 0.0


class InFlight:
    """Attempts by unit, with a count per DAG step so that "which steps are
    busy" costs O(1) however many Map elements run."""

    __slots__ = ("_units", "_per_step", "limited", "release")

    def __init__(self) -> None:
        self._units: dict[str, Attempt] = {}
        self._per_step: dict[str, int] = {}
        #: tokens sent through a step limit; ``release(token)`` frees their slot
        self.limited: set[int] = set()
        self.release: Any = None

    def __len__(self) -> int:
        return len(self._units)

    def __bool__(self) -> bool:
        return bool(self._units)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(list(self._units.values()))

    def get(self, unit: str) -> Attempt | None:
        return self._units.get(unit)

    def add(self, unit: str, a: Attempt) -> None:
        if unit not in self._units:
            self._per_step[a.step] = self._per_step.get(a.step, 0) + 1
        self._units[unit] = a

    def pop(self, unit: str) -> Attempt | None:
        a = self._units.pop(unit, None)
        if a is not None and a.token is not None and a.token in self.limited:
            self.limited.discard(a.token)
            self.release(a.token)  # a finished, timed-out or abandoned execution frees its slot
        if a is not None:
            n = self._per_step[a.step] - 1
            if n:
                self._per_step[a.step] = n
            else:
                del self._per_step[a.step]
        return a

    def units(self) -> list[str]:
        return list(self._units)

    def units_of(self, step: str) -> list[str]:
        return [u for u, a in self._units.items() if a.step == step]

    def steps(self) -> Any:
        """The DAG steps with work in flight (a live view)."""
        return self._per_step.keys()


class CancelFlag(StopFlag):
    """A run's cancel flag: set (with its reason) by ``rt.cancel`` from any
    thread; steps read it as ``ctx.cancelled``, the run's turn checks it."""

    __slots__ = ("reason", "fail")

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""
        #: (error_type, message) when the run must end Failed, not Cancelled (a deadline)
        self.fail: tuple[str, str] | None = None


class Deadline:
    """The timer's target for a run's ``run_timeout_s``: it sets the run's flag
    at once (a step polling ``ctx.cancelled`` sees it even mid-step), then
    wakes the run actor."""

    __slots__ = ("flag", "ref", "message")

    def __init__(self, flag: CancelFlag, ref: Any, message: str) -> None:
        self.flag, self.ref, self.message = flag, ref, message

    def tell(self, msg: Any) -> None:
        if not self.flag.is_set():
            self.flag.reason = "run timeout"
            self.flag.fail = ("RunTimeout", self.message)
            self.flag.set()
        self.ref.tell(msg)
