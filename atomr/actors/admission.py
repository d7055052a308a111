"""Run limits: ``Workflow(max_concurrent_runs=N)``.

A start beyond the limit journals its run as "queued" (durable, in order) and
holds nothing; when an executing run of the workflow settles, the queued run
of highest priority (``start(..., priority=N)``; the oldest start first within
a priority) is admitted (told ``Admit``) and starts. A resumed paused run takes
a slot as a start does, and waits queued when none is free. Queued runs survive
a restart: registering the workflow admits them again up to the limit, in the
same order (the priority and the start's order are kept in the run's meta
under :data:`QUEUE_KEY`). On a shared store the limit counts the runs every
worker executes (read from the store at each admission).

The line of each workflow is kept here (a heap, best first): a run joins it the
moment it is refused a slot, before its queued record is committed, so a slot
freed in between admits it (read from the store, it would be missed and wait
for the next release). A release pops the line: O(log n), not a read of every
queued run. The line is read from the store when the workflow registers and,
on a shared store (other workers queue runs too), at each admission. A run
popped that is no longer queued (cancelled meanwhile) gives its slot back when
it hears ``Admit``.
Threads: run actors' turns and the caller's; one lock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from atomr._check import check_int
from atomr.errors import AtomrError, RuntimeClosed
from atomr.messages import Admit

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["Admission", "QUEUE_KEY", "check_priority", "order_of", "queue_meta", "queue_order", "priority_of"]

#: the reserved meta key holding ``[priority, start order (ns)]`` of a run
QUEUE_KEY = "atomr_queue"
#: priorities are ints within +-PRIORITY_MAX
PRIORITY_MAX = 2**31 - 1

_stamp_lock = threading.Lock()
_last_stamp = 0


def _stamp() -> int:
    """Wall-clock nanoseconds, strictly increasing within the process: the start order."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


def check_priority(priority: Any) -> int:
    """``priority`` as an int; AtomrError for anything else (a bool, a float, a str)."""
    return check_int(priority, "priority", lo=-PRIORITY_MAX, hi=PRIORITY_MAX, error=AtomrError,
                     hint="pass an int: higher starts first among queued runs (default 0)")


def queue_meta(wf: Workflow, meta: dict[str, Any] | None, priority: Any) -> dict[str, Any] | None:
    """``meta`` with the run's place in the queue of ``wf`` (caller's thread):
    recorded when the workflow has ``max_concurrent_runs`` or the priority is not 0.
    Raises AtomrError for a priority that is not an int."""
    priority = check_priority(priority)
    if wf.max_concurrent_runs is None and priority == 0:
        return meta
    return {**(meta or {}), QUEUE_KEY: [priority, _stamp()]}


def priority_of(meta: Mapping[str, Any]) -> int:
    """The priority a run was started with (0 when none was recorded)."""
    q = meta.get(QUEUE_KEY)
    return int(q[0]) if isinstance(q, list) and len(q) == 2 and isinstance(q[0], int) else 0


def queue_order(s: Any) -> tuple[int, int, str]:
    """Sort key of a queued run's summary: higher priority first, then first started."""
    return order_of(s.meta, s.run_id, s.created_ms * 1_000_000)


def order_of(meta: Mapping[str, Any] | None, run_id: str, started_ns: int | None = None) -> tuple[int, int, str]:
    """Sort key of a run with ``meta``: higher priority first, then first started (its
    stamp; else ``started_ns``, else now)."""
    q = (meta or {}).get(QUEUE_KEY)
    if isinstance(q, list) and len(q) == 2 and isinstance(q[0], int) and isinstance(q[1], int):
        return -q[0], q[1], run_id
    return 0, time.time_ns() if started_ns is None else started_ns, run_id


class _Line:
    """The queued runs of one workflow, best first: a heap of sort keys; a key
    replaced or taken meanwhile is skipped when it comes up."""

    __slots__ = ("heap", "keys", "unseen")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, str]] = []
        self.keys: dict[str, tuple[int, int, str]] = {}
        #: runs queued here whose record a store read has not shown yet
        self.unseen: set[str] = set()

    def push(self, order: tuple[int, int, str]) -> None:
        if self.keys.get(order[2]) != order:
            self.keys[order[2]] = order
            heapq.heappush(self.heap, order)

    def pop(self) -> str | None:
        while self.heap:
            order = heapq.heappop(self.heap)
            if self.keys.get(order[2]) == order:
                del self.keys[order[2]]
                self.unseen.discard(order[2])
                return order[2]
        return None

    def refill(self, stored: list[Any]) -> None:
        """The line is what the store shows queued, and the runs queued here it does not show yet."""
        ids = {s.run_id for s in stored}
        kept = [self.keys[r] for r in self.unseen - ids if r in self.keys]
        self.unseen &= {o[2] for o in kept}
        self.heap = [queue_order(s) for s in stored] + kept
        heapq.heapify(self.heap)
        self.keys = {o[2]: o for o in self.heap}


class Admission:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._lock = threading.Lock()
        #: workflow id -> run ids holding a slot (executing, or admitted and starting)
        self._holders: dict[str, set[str]] = {}
        #: workflow id -> its queued runs, best first
        self._lines: dict[str, _Line] = {}

    def enter(self, wf: Workflow, run_id: str, child: bool = False,
              meta: Mapping[str, Any] | None = None) -> bool:
        """May this new run execute now? (True: it holds a slot; False: it joined the
        line, by the priority and stamp in ``meta``, and must journal itself queued.)
        ``child``: a Subgraph's or a Loop iteration's run: it counts, but never waits
        in line (its parent is executing; a parent paused on a queued child would hear
        of it no more)."""
        limit = wf.max_concurrent_runs
        if limit is None:
            return True
        elsewhere = self._elsewhere(wf)
        with self._lock:
            holders = self._holders.setdefault(wf.id, set())
            if run_id in holders or child or len(holders | elsewhere) < limit:
                holders.add(run_id)
                return True
            line = self._lines.setdefault(wf.id, _Line())
            line.push(order_of(meta, run_id))
            line.unseen.add(run_id)
            return False

    def _elsewhere(self, wf: Workflow) -> set[str]:
        """On a shared store, the runs of ``wf`` executing in any worker (the limit counts
        every worker's). Workers admitting at the same instant may each count a slot
        that the other takes: the limit is then exceeded for a moment, by at most one
        run per other worker admitting at once."""
        if self.core.follow is None:
            return set()
        return {s.run_id for s in self.core.store.runs(status="running", workflow_id=wf.id)}

    def leave(self, wf: Workflow, run_id: str) -> None:
        """A run stopped executing: free its slot and admit the next queued run."""
        if wf.max_concurrent_runs is None:
            return
        with self._lock:
            self._holders.get(wf.id, set()).discard(run_id)
        self.admit(wf)

    def admit(self, wf: Workflow) -> None:
        """Admit queued runs of ``wf`` (highest priority, then oldest, first) while slots are free."""
        limit = wf.max_concurrent_runs
        if limit is None:
            return
        chosen: list[str] = []
        elsewhere = self._elsewhere(wf)
        # a shared store: other workers queue runs too, so the line is read again
        stored = self._queued(wf) if self.core.follow is not None and len(elsewhere) < limit else None
        with self._lock:
            holders = self._holders.setdefault(wf.id, set())
            busy = holders | elsewhere
            if len(busy) >= limit:
                return
            line = self._lines.setdefault(wf.id, _Line())
            if stored is not None:
                line.refill(stored)
            while len(busy) < limit:
                run_id = line.pop()
                if run_id is None:
                    break
                if run_id not in busy:
                    holders.add(run_id)
                    busy.add(run_id)
                    chosen.append(run_id)
        for run_id in chosen:
            try:
                self.core.supervisor.route(wf, run_id, Admit())
            except RuntimeClosed:
                return

    def on_register(self, wf: Workflow) -> None:
        """A runtime opened the store: runs left running hold slots; admit the queue."""
        if wf.max_concurrent_runs is None:
            return
        running = {s.run_id for s in self.core.store.runs(status="running", workflow_id=wf.id)}
        stored = self._queued(wf)
        with self._lock:
            self._holders.setdefault(wf.id, set()).update(running)
            self._lines.setdefault(wf.id, _Line()).refill(stored)
        self.admit(wf)

    def _queued(self, wf: Workflow) -> list[Any]:
        return self.core.store.runs(status="queued", workflow_id=wf.id)

    def holding(self, workflow_id: str) -> int:
        with self._lock:
            return len(self._holders.get(workflow_id, ()))

    def __repr__(self) -> str:
        return f"Admission({ {k: len(v) for k, v in self._holders.items()}!r})"


