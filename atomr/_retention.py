"""Retention: ``Workflow(retention_s=...)`` deletes finished runs in the background.

A finished run (done, failed or cancelled) whose end (its last write: the end
of its last turn) is older than its workflow's ``retention_s`` is deleted, a
bounded batch at a time (:data:`BATCH` runs per tick), never a run that is
running, paused, sleeping or queued, and never a Subgraph child while its
parent run is still stored (the parent goes first; the child at a later tick).

Threads: one daemon thread per runtime (``atomr-retention``), started when
the first workflow with a ``retention_s`` is registered; it lists runs (store
reads) and deletes them in the store's writer thread (:func:`atomr._maintain.purge_batch`),
which checks each run again — status final and end old enough — right before
deleting it, so two workers purging one shared store never delete a run that
moved on (a resumed failed run is "running" again and is left alone).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from atomr._hooks import logger
from atomr._maintain import purge_batch
from atomr.store.base import run_cursor

if TYPE_CHECKING:
    from atomr.runtime import Runtime
    from atomr.workflow import Workflow

__all__ = ["BATCH", "CHUNK", "FINAL", "Retention"]

log = logger("atomr.retention")

#: at most this many runs are deleted per tick
BATCH = 100
#: runs deleted per visit to the writer thread: run commits interleave between chunks
CHUNK = 20
#: the statuses retention deletes
FINAL = ("done", "failed", "cancelled")
#: index entries one tick reads per workflow and status at most (a large store is walked over several ticks)
SCAN = 1000
#: the longest time between two ticks (seconds)
MAX_TICK_S = 30.0
#: the shortest time between two ticks (seconds)
MIN_TICK_S = 0.05


class Retention:
    """The background purge of one runtime. Threads: its own, plus the caller's
    for :meth:`watch` / :meth:`close`."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._wfs: dict[str, Workflow] = {}
        self._lock = threading.Lock()
        self._cursors: dict[tuple[str, str], str] = {}  # where the next tick's scan goes on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: runs deleted so far (for tests and stats)
        self.purged = 0

    def watch(self, wf: Workflow) -> None:
        """Keep ``wf``'s finished runs for ``wf.retention_s`` only (caller's thread)."""
        if wf.retention_s is None:
            return
        with self._lock:
            self._wfs[wf.id] = wf
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="atomr-retention", daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)

    def _interval(self) -> float:
        with self._lock:
            shortest = min((wf.retention_s or MAX_TICK_S for wf in self._wfs.values()), default=MAX_TICK_S)
        return max(MIN_TICK_S, min(MAX_TICK_S, shortest / 4))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                while self.tick() >= BATCH and not self._stop.wait(MIN_TICK_S):
                    pass  # a full batch: more may be due, go on soon
            except Exception:  # noqa: BLE001 - retried at the next tick
                if self._stop.is_set() or self.rt._closed:
                    return
                log.exception("retention: a purge failed; trying again at the next tick")

    def due(self) -> list[tuple[str, str, int]]:
        """At most :data:`BATCH` runs whose retention is over: ``(workflow, run, end limit ms)``,
        oldest end first; a Subgraph child whose parent is still stored is left for later."""
        store = self.rt.store
        now = time.time() * 1000
        with self._lock:
            wfs = list(self._wfs.values())
        found = []
        for wf in wfs:
            limit = int(now - (wf.retention_s or 0) * 1000)
            for status in FINAL:
                # only runs created before the limit can have ended before it: start there (newest
                # first), read SCAN entries, and go on from the last one at the next tick
                key = (wf.id, status)
                page = store.runs(status=status, workflow_id=wf.id, limit=SCAN,
                                  before=self._cursors.get(key) or run_cursor(max(limit, 0), "", ""))
                if len(page) == SCAN:
                    self._cursors[key] = page[-1].cursor
                else:
                    self._cursors.pop(key, None)  # the end: from the top again
                for s in page:
                    if s.updated_ms < limit:
                        found.append((s.updated_ms, s.workflow_id, s.run_id, limit, s.meta.get("parent")))
        found.sort()
        out: list[tuple[str, str, int]] = []
        for _, wid, rid, limit, parent in found:
            if len(out) >= BATCH:
                break
            if isinstance(parent, (list, tuple)) and len(parent) >= 2 \
                    and store.summary(str(parent[0]), str(parent[1])) is not None:
                continue  # its parent first
            out.append((wid, rid, limit))
        return out

    def tick(self) -> int:
        """Delete one batch of runs whose retention is over; returns how many were deleted."""
        if self.rt._closed:
            return 0
        victims = self.due()
        if not victims:
            return 0
        n = 0
        for i in range(0, len(victims), CHUNK):
            if self._stop.is_set():
                break
            done = purge_batch(self.rt, victims[i:i + CHUNK], FINAL)
            n += done
            self.purged += done
        return n
