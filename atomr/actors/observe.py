"""What a runtime records about itself as it works: commits, steps, runs.

One :class:`Observer` per runtime. The store's writer records each write
transaction (its seconds and batches) as it commits; a run actor records
each step execution whose result reaches it and each outcome it reports.
``rt.stats()`` reads a copy (:class:`~atomr.RuntimeStats`).

Threads: any; one lock around a few additions (a step or a commit costs far
more than taking it).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

__all__ = ["Histogram", "Observer", "LATENCY_BOUNDS", "BATCH_BOUNDS", "DURATION_BOUNDS"]

#: bucket bounds (seconds) of commit latency
LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: bucket bounds of run batches per write transaction
BATCH_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
#: bucket bounds (seconds) of step and run durations
DURATION_BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                   900.0, 3600.0)


@dataclass(frozen=True)
class Histogram:
    """Observations by bucket, as Prometheus keeps them.

    ``bounds``: the buckets' upper bounds, ascending. ``counts``: how many
    observations fell in each bucket (not cumulative): ``counts[i]`` those
    ``<= bounds[i]`` and above the bound before; one more count at the end for
    those above every bound. ``sum`` and ``count``: of every observation.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` per bucket, ending with ``(inf, count)``."""
        out, n = [], 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts):
            n += c
            out.append((bound, n))
        return out


class _Hist:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def frozen(self) -> Histogram:
        return Histogram(self.bounds, tuple(self.counts), self.sum, self.count)


class Observer:
    """The runtime's own counters and histograms (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commits = 0
        self.batches = 0
        self._commit_s = _Hist(LATENCY_BOUNDS)
        self._batch_n = _Hist(BATCH_BOUNDS)
        self._steps: dict[tuple[str, str, str], int] = {}
        self._step_s: dict[tuple[str, str], _Hist] = {}
        self._run_s: dict[tuple[str, str], _Hist] = {}

    def commit(self, seconds: float, batches: int) -> None:
        """A write transaction of ``batches`` run batches took ``seconds`` (the writer's thread)."""
        with self._lock:
            self.commits += 1
            self.batches += batches
            self._commit_s.add(seconds)
            self._batch_n.add(batches)

    def step(self, workflow_id: str, step: str, outcome: str, seconds: float) -> None:
        """A step execution ended with ``outcome`` (completed, failed, interrupted)
        ``seconds`` after it was sent (a run actor's turn)."""
        with self._lock:
            key = (workflow_id, step, outcome)
            self._steps[key] = self._steps.get(key, 0) + 1
            h = self._step_s.get((workflow_id, step))
            if h is None:
                h = self._step_s[(workflow_id, step)] = _Hist(DURATION_BOUNDS)
            h.add(seconds)

    def run(self, workflow_id: str, outcome: str, seconds: float) -> None:
        """A run's execution ended with ``outcome`` after ``seconds`` (a run actor's turn)."""
        with self._lock:
            h = self._run_s.get((workflow_id, outcome))
            if h is None:
                h = self._run_s[(workflow_id, outcome)] = _Hist(DURATION_BOUNDS)
            h.add(seconds)

    def read(self) -> dict[str, object]:
        """A consistent copy of everything recorded."""
        with self._lock:
            return {
                "commits": self.commits, "batches": self.batches,
                "commit_seconds": self._commit_s.frozen(), "batch_sizes": self._batch_n.frozen(),
                "step_executions": dict(self._steps),
                "step_seconds": {k: h.frozen() for k, h in self._step_s.items()},
                "run_seconds": {k: h.frozen() for k, h in self._run_s.items()},
            }
