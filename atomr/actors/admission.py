"""Run limits: ``Workflow(max_concurrent_runs=N)``.

A start beyond the limit journals its run as "queued" (durable, in order) and
holds nothing; when an executing run of the workflow settles, the oldest
queued run is admitted (told ``Admit``) and starts. Queued runs survive a
restart: registering the workflow admits them again up to the limit. On a
shared store the limit counts the runs every worker executes (read from the
store at each admission).
Threads: run actors' turns and the caller's; one lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from atomr.errors import RuntimeClosed
from atomr.messages import Admit

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["Admission"]


class Admission:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._lock = threading.Lock()
        #: workflow id -> run ids holding a slot (executing, or admitted and starting)
        self._holders: dict[str, set[str]] = {}

    def enter(self, wf: Workflow, run_id: str) -> bool:
        """May this new run execute now? (True: it holds a slot.)"""
        limit = wf.max_concurrent_runs
        if limit is None:
            return True
        elsewhere = self._elsewhere(wf)
        with self._lock:
            holders = self._holders.setdefault(wf.id, set())
            if run_id in holders or len(holders | elsewhere) < limit:
                holders.add(run_id)
                return True
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
        """Admit queued runs of ``wf`` (oldest first) while slots are free."""
        limit = wf.max_concurrent_runs
        if limit is None:
            return
        chosen: list[str] = []
        elsewhere = self._elsewhere(wf)
        with self._lock:
            holders = self._holders.setdefault(wf.id, set())
            busy = holders | elsewhere
            if len(busy) >= limit:
                return
            for s in reversed(self.core.store.runs(status="queued", workflow_id=wf.id)):  # oldest first
                if len(busy) >= limit:
                    break
                if s.run_id not in busy:
                    holders.add(s.run_id)
                    busy.add(s.run_id)
                    chosen.append(s.run_id)
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
        with self._lock:
            self._holders.setdefault(wf.id, set()).update(running)
        self.admit(wf)

    def holding(self, workflow_id: str) -> int:
        with self._lock:
            return len(self._holders.get(workflow_id, ()))

    def __repr__(self) -> str:
        return f"Admission({ {k: len(v) for k, v in self._holders.items()}!r})"


