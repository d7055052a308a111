"""``/metrics``: Prometheus' text format, with prometheus-client when it is installed.

What is measured, and where:

- at the server's edge: ``atomr_runs_started_total`` / ``atomr_runs_resumed_total``
  (requests this server accepted) and ``atomr_runs_finished_total{outcome}``
  (the outcome of each of those, done / paused / failed / cancelled);
- at each scrape, from the runtime: ``atomr_runs{status}`` (the run index:
  running = executing, paused, ...), ``atomr_runs_live`` (runs holding an actor),
  ``atomr_dispatcher_queue_depth`` (run actors waiting for a dispatcher thread:
  the queued runs), ``atomr_super_steps`` (committed super-steps of the runs in
  the store), ``atomr_checkpointer_commits_total`` / ``_batches_total``;
- around the store's write (one transaction: the commit and its fsync, in the
  writer thread): ``atomr_commit_seconds`` and ``atomr_commit_batch_size`` (run
  batches per transaction: the group commit), histograms.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from atomr import _hooks
from atomr.store.base import STATUSES
from atomr.store.url import redact

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["Metrics"]

log = _hooks.logger("atomr.server")
#: the name failures of these metrics are logged and counted under (atomr._hooks.failures)
HOOK = "metrics (prometheus-client)"

_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _RuntimeCollector:
    """Gauges read from the runtime at each scrape (a worker thread: they read the store)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def describe(self) -> list[Any]:
        return []  # families are known only when collected

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rt = self.rt
        if rt._closed:
            return
        by_status = GaugeMetricFamily("atomr_runs", "Runs in the store by status", labels=["status"])
        counts = dict.fromkeys(STATUSES, 0)
        steps = 0
        for s in rt.runs():
            counts[s.status] = counts.get(s.status, 0) + 1
            steps += s.super_step
        for status, n in counts.items():
            by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily("atomr_super_steps", "Committed super-steps of the runs in the store "
                                "(the sum of their super_step)", value=steps)
        yield GaugeMetricFamily("atomr_runs_live", "Runs holding an actor (executing or about to)",
                                value=rt.live_runs())
        depth = getattr(rt._core.dispatcher, "depth", None)
        if callable(depth):
            yield GaugeMetricFamily("atomr_dispatcher_queue_depth",
                                    "Run actors waiting for a dispatcher thread (queued runs)", value=depth())
        yield GaugeMetricFamily("atomr_workflows", "Registered workflows", value=len(rt.workflows))
        workers = rt.workers()  # every worker of a shared store, as recorded in the store (any process)
        if workers:
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
        info = GaugeMetricFamily("atomr_store_info", "The store this server runs on: its class and where it is "
                                 "(a password in a DSN masked)", labels=["backend", "location"])
        info.add_metric([type(rt.store).__name__, redact(str(getattr(rt.store, "path", None) or ""))], 1)
        yield info
        cp = _checkpointer(rt)
        if cp is not None:
            # a lone run's inline commit (WriterGate) is a transaction of one batch
            inline = getattr(rt._core.gate, "inline_writes", 0)
            yield CounterMetricFamily("atomr_checkpointer_commits", "Write transactions of the store's writer "
                                      "(group commits, and lone runs' own)", value=getattr(cp, "commits", 0) + inline)
            yield CounterMetricFamily("atomr_checkpointer_batches",
                                      "Run batches written (over all transactions)",
                                      value=getattr(cp, "batches", 0) + inline)


def _observe(seconds: Any, sizes: Any, elapsed: float, n: int) -> None:
    seconds.observe(elapsed)
    sizes.observe(n)


def _checkpointer(rt: Runtime) -> Any:
    """The checkpointer actor object, read directly: asking it through its inbox
    would delay its group commit."""
    ref = getattr(rt._core, "checkpointer", None)
    get = getattr(ref, "_actor_weakref", None)
    return get() if callable(get) else None


class Metrics:
    """The registry of one app. ``available`` is False without prometheus-client."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._tasks: set[asyncio.Task[None]] = set()
        self._undo: Any = None
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
        self.commit_seconds = pc.Histogram("atomr_commit_seconds", "Store write transactions (commit "
                                           "and fsync), seconds", buckets=_LATENCY, registry=reg)
        self.batch_size = pc.Histogram("atomr_commit_batch_size", "Run batches per store write "
                                       "transaction (group commit)", buckets=_BATCHES, registry=reg)
        reg.register(_RuntimeCollector(rt))
        self._instrument()

    def _instrument(self) -> None:
        """Time the store's write (called by its one writer thread)."""
        store = self.rt.store
        write = store.write
        if getattr(write, "_atomr_timed", False):
            return
        seconds, sizes = self.commit_seconds, self.batch_size

        def timed(batches: Any, groups: Any = None) -> Any:
            t0 = time.perf_counter()
            try:
                return write(batches) if groups is None else write(batches, groups=groups)
            finally:  # the write's result or error stands, whatever the histograms do
                _hooks.call(HOOK, _observe, seconds, sizes, time.perf_counter() - t0, len(batches))

        timed._atomr_timed = True  # type: ignore[attr-defined]
        try:
            store.write = timed  # type: ignore[method-assign]
        except AttributeError:  # a store with __slots__: no histograms
            return
        self._undo = lambda: vars(store).pop("write", None)

    def close(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
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
