"""``/metrics``: Prometheus' text format, with prometheus-client when it is installed.

What is measured, and where:

- at the server's edge: ``atomr_runs_started_total`` / ``atomr_runs_resumed_total``
  (requests this server accepted) and ``atomr_runs_finished_total{outcome}``
  (the outcome of each of those, done / paused / failed / cancelled);
- at each scrape, from the runtime's public observation API (``rt.stats()``, no
  run index walk: a scrape costs the same with 100 runs or a million):
  ``atomr_runs{status}`` (the store's counts of runs by status, right after a
  restart), ``atomr_runs_live`` (runs holding an actor), ``atomr_dispatcher_queue_depth``
  (run actors waiting for a dispatcher thread: the queued runs),
  ``atomr_checkpointer_queue_depth`` (batches waiting for the writer),
  ``atomr_checkpointer_commits_total`` / ``_batches_total``, and the histograms
  the writer records as it commits: ``atomr_commit_seconds`` and
  ``atomr_commit_batch_size`` (run batches per transaction: the group commit);
- steps and runs, as the run actors record them: ``atomr_step_executions_total
  {workflow,step,outcome}``, ``atomr_step_duration_seconds{workflow,step}`` and
  ``atomr_run_duration_seconds{workflow,outcome}`` (histograms).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from atomr import _hooks
from atomr.store.base import STATUSES
from atomr.store.url import redact

if TYPE_CHECKING:
    from atomr import Histogram
    from atomr.runtime import Runtime

__all__ = ["Metrics"]

log = _hooks.logger("atomr.server")
#: the name failures of these metrics are logged and counted under (atomr._hooks.failures)
HOOK = "metrics (prometheus-client)"


class _RuntimeCollector:
    """Families read at each scrape (a worker thread) from the runtime's public
    observation API, ``rt.stats()``: counters it keeps as it works and the store's
    counts of runs by status. A scrape reads no run index: it costs the same with
    100 runs or a million."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def describe(self) -> list[Any]:
        return []  # families are known only when collected

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rt = self.rt
        if rt.closed:
            return
        st = rt.stats()
        by_status = GaugeMetricFamily("atomr_runs", "Runs in the store by status (the store's counts, kept as "
                                      "runs change status)", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], st.runs_by_status.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("atomr_runs_live", "Runs holding an actor (executing or about to)",
                                value=st.live_runs)
        yield GaugeMetricFamily("atomr_dispatcher_queue_depth",
                                "Run actors waiting for a dispatcher thread (queued runs)", value=st.queued_runs)
        yield GaugeMetricFamily("atomr_checkpointer_queue_depth",
                                "Run batches waiting for the store's writer", value=st.writes_queued)
        yield GaugeMetricFamily("atomr_workflows", "Registered workflows", value=st.workflows)
        yield from self._workers(rt)
        info = GaugeMetricFamily("atomr_store_info", "The store this server runs on: its class and where it is "
                                 "(a password in a DSN masked)", labels=["backend", "location"])
        info.add_metric([type(rt.store).__name__, redact(str(getattr(rt.store, "path", None) or ""))], 1)
        yield info
        yield CounterMetricFamily("atomr_checkpointer_commits", "Write transactions of the store's writer "
                                  "(group commits, and lone runs' own)", value=st.commits)
        yield CounterMetricFamily("atomr_checkpointer_batches", "Run batches written (over all transactions)",
                                  value=st.batches)
        yield _histogram("atomr_commit_seconds", "Store write transactions (commit and sync), seconds, as "
                         "the writer records them", [], {(): st.commit_seconds})
        yield _histogram("atomr_commit_batch_size", "Run batches per store write transaction (group commit)",
                         [], {(): st.batch_sizes})
        steps = CounterMetricFamily("atomr_step_executions", "Step executions whose result reached their run, by "
                                    "outcome (completed, failed: every failed attempt, interrupted, timed_out)",
                                    labels=["workflow", "step", "outcome"])
        for (wf, step, outcome), n in sorted(st.step_executions.items()):
            steps.add_metric([wf, step, outcome], n)
        yield steps
        yield _histogram("atomr_step_duration_seconds", "Step executions, seconds from sending the step to its "
                         "result reaching the run", ["workflow", "step"], st.step_seconds)
        yield _histogram("atomr_run_duration_seconds", "Run executions here (from the start, resume or "
                         "rehydration to the outcome), seconds, by outcome", ["workflow", "outcome"],
                         st.run_seconds)

    def _workers(self, rt: Runtime) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        workers = rt.workers()  # every worker of a shared store, as recorded in the store (any process)
        if not workers:
            return
        owned = GaugeMetricFamily("atomr_worker_runs", "Runs each live worker of the store executes",
                                  labels=["worker_id", "host"])
        age = GaugeMetricFamily("atomr_worker_heartbeat_age_seconds", "Seconds since each worker's last "
                                "heartbeat (by the database's clock; past its lease its runs are taken over)",
                                labels=["worker_id", "host"])
        now = rt.store.db_now_ms()  # type: ignore[attr-defined]
        for w in workers:
            owned.add_metric([w.worker_id, w.host], w.runs)
            age.add_metric([w.worker_id, w.host], max(0, now - w.heartbeat_ms) / 1000)
        yield owned
        yield age
        yield GaugeMetricFamily("atomr_workers", "Live workers of the store", value=sum(w.alive for w in workers))


def _histogram(name: str, doc: str, labels: list[str], series: Mapping[Any, Histogram]) -> Any:
    """A histogram family from the runtime's histograms (one per label tuple)."""
    from prometheus_client.core import HistogramMetricFamily

    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key, h in sorted(series.items()):
        buckets = [("+Inf" if b == float("inf") else repr(float(b)), n) for b, n in h.cumulative()]
        fam.add_metric(list(key), buckets, h.sum)
    return fam


class Metrics:
    """The registry of one app. ``available`` is False without prometheus-client."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._tasks: set[asyncio.Task[None]] = set()
        try:
            import prometheus_client as pc
        except ImportError:
            self.available = False
            return
        self.available = True
        self.registry = reg = pc.CollectorRegistry()
        self.started = pc.Counter("atomr_runs_started", "Runs started through this server",
                                  ["workflow_id"], registry=reg)
        self.resumed = pc.Counter("atomr_runs_resumed", "Resumes accepted by this server",
                                  ["workflow_id"], registry=reg)
        self.finished = pc.Counter("atomr_runs_finished", "Outcomes of the runs started or resumed "
                                   "through this server", ["workflow_id", "outcome"], registry=reg)
        reg.register(_RuntimeCollector(rt))

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- the server's edge ------------------------------------------------------

    def track(self, handle: Any, kind: str) -> None:
        """Count a start or resume, and its outcome when it comes (a metric that
        raises is logged once and dropped: the request and the run go on)."""
        if not self.available:
            return
        _hooks.call(HOOK, lambda: (self.started if kind == "start" else self.resumed)
                    .labels(handle.workflow_id).inc())
        task = asyncio.get_running_loop().create_task(self._outcome(handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _outcome(self, handle: Any) -> None:
        try:
            out = await handle.aresult(timeout=None)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the runtime closed: no outcome to count
            return
        status = str(getattr(out, "status", type(out).__name__.lower()))
        _hooks.call(HOOK, lambda: self.finished.labels(handle.workflow_id, status).inc())

    async def render(self) -> tuple[bytes, str]:
        import prometheus_client as pc

        body = await asyncio.to_thread(pc.generate_latest, self.registry)
        return body, pc.CONTENT_TYPE_LATEST
