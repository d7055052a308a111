"""The runtime's public observation API: ``rt.stats()``, ``rt.closed``, ``rt.is_live()``
(a mixin of :class:`~atomr.Runtime`).

What the server's ``/metrics``, the CLI and the workers read about a runtime,
without reaching into it. Threads: the caller's; every read is a copy of
counters kept as the runtime works (no run index walk: a call costs the same
with 100 runs or a million).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from atomr.actors.observe import Histogram, Observer

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["Histogram", "Observation", "RuntimeStats"]


@dataclass(frozen=True)
class RuntimeStats:
    """What a runtime and its store are doing, as :meth:`Runtime.stats` reads it.

    Fields:

    - ``live_runs``: runs holding an actor in this runtime (executing, or about to).
    - ``queued_runs``: run actors waiting for a dispatcher thread (the dispatcher's queue).
    - ``writes_queued``: run batches handed to the store's writer and not written yet.
    - ``commits``: write transactions of the store made by this runtime (group
      commits and lone runs' own), since it started; ``batches``: run batches
      they held.
    - ``commit_seconds``: histogram of those transactions' seconds (commit and
      sync), recorded by the writer itself; ``batch_sizes``: of their batches.
    - ``runs_by_status``: runs in the store by status (every status, 0 included),
      as the store keeps the counts: changed in the transaction that changes a
      run's status, by every process writing the store, right after a restart.
    - ``workflows``: workflows registered here.
    - ``step_executions``: ``{(workflow_id, step, outcome): n}``, step executions
      whose result reached their run in this runtime; outcome ``completed``,
      ``failed`` (every failed attempt, retried or not), ``interrupted`` or
      ``timed_out`` (abandoned at its ``step_timeout_s``).
    - ``step_seconds``: ``{(workflow_id, step): Histogram}`` of their seconds,
      from sending the step to its result reaching the run.
    - ``run_seconds``: ``{(workflow_id, outcome): Histogram}``: seconds of the
      executions that ended in each outcome (``done``, ``paused``, ``failed``,
      ``cancelled``), from the run's start (or resume, or rehydration) here to it.
    """

    live_runs: int
    queued_runs: int
    writes_queued: int
    commits: int
    batches: int
    commit_seconds: Histogram
    batch_sizes: Histogram
    runs_by_status: Mapping[str, int]
    workflows: int
    step_executions: Mapping[tuple[str, str, str], int]
    step_seconds: Mapping[tuple[str, str], Histogram]
    run_seconds: Mapping[tuple[str, str], Histogram]


class Observation:
    """Mixin of :class:`~atomr.Runtime`: its public observation API."""

    @property
    def closed(self: Runtime) -> bool:
        """True once :meth:`~atomr.Runtime.close` was called."""
        return self._closed

    def is_live(self: Runtime, workflow_id: str, run_id: str) -> bool:
        """True while an actor of this runtime holds the run (executing it, or
        about to); False for a run that only the store holds (settled, paused,
        asleep, queued, or executed by another worker)."""
        return self._core.supervisor.is_live(workflow_id, run_id)

    def stats(self: Runtime) -> RuntimeStats:
        """What this runtime and its store are doing now (:class:`RuntimeStats`):
        a copy of counters kept as it works, plus the store's counts of runs by
        status (a handful of rows). RuntimeClosed after close()."""
        self._check_open()
        core = self._core
        obs: Observer = core.observer
        seen = obs.read()
        return RuntimeStats(
            live_runs=self.live_runs(), queued_runs=core.dispatcher.depth(),
            writes_queued=core.gate.queued if core.gate is not None else 0,
            commits=seen["commits"], batches=seen["batches"],  # type: ignore[arg-type]
            commit_seconds=seen["commit_seconds"], batch_sizes=seen["batch_sizes"],  # type: ignore[arg-type]
            runs_by_status=self.store.run_counts(), workflows=len(core.workflows),
            step_executions=seen["step_executions"], step_seconds=seen["step_seconds"],  # type: ignore[arg-type]
            run_seconds=seen["run_seconds"],  # type: ignore[arg-type]
        )
