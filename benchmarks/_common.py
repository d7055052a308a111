"""Shared pieces of the benchmark harness: the run context, sampling, statistics, rows."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

SYSTEMS = ("atomr", "langgraph")
RESULT_TIMEOUT = 600.0  # seconds any single wait may take (the box may be loaded)

# Targets: "advantage" is always oriented so that > 1 means atomr is better.
# From issue 13 section 3 (both engines in one run, medians): the like-for-like
# durable chain (LMDB fsync="full" vs SQLite FULL) is the headline.
TARGETS = {
    "chain_durable_full": 2.5,
    "chain_memory": 10.0,
    "chain_durable": 2.5,
    "concurrent_durable": 15.0,
    "fanout_node_runs": 10.0,
    "store_size": 30.0,
    "recovery": 10.0,
    "agents": 20.0,
    # the SQL stores, like for like (same engine and durability on both sides)
    "sql_chain_sqlite": 3.0,
    "sql_chain_postgres": 3.0,
    "sql_concurrent_sqlite": 10.0,
    "sql_concurrent_postgres": 12.0,
    "pg_size": 10.0,
}
# Limits on an absolute atomr figure (the row meets it when atomr's value <= limit).
LIMITS = {
    "agents_threads": 32,
    "loop_gap_ms": 20.0,
}
#: raw samples kept per side of a row in the JSON; beyond this only the statistics
#: (and a few percentiles) are written, so result files stay small
MAX_SAMPLES_KEPT = 50


def langgraph_available() -> tuple[bool, str]:
    """Whether LangGraph and its SQLite checkpointer import here (and why not)."""
    try:
        import langgraph.checkpoint.memory  # noqa: F401
        import langgraph.checkpoint.sqlite  # noqa: F401
        import langgraph.checkpoint.sqlite.aio  # noqa: F401 - AsyncSqliteSaver (aiosqlite), agents
        import langgraph.graph  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return False, f"{type(e).__name__}: {e}"
    return True, ""


@dataclass
class Ctx:
    """What a workload needs to know about this invocation."""

    quick: bool
    reps: int
    lg: bool
    scratch: str
    progress: Progress
    notes: list[str] = field(default_factory=list)

    def systems(self) -> tuple[str, ...]:
        return SYSTEMS if self.lg else ("atomr",)

    @contextlib.contextmanager
    def tmpdir(self, prefix: str) -> Iterator[str]:
        """A fresh directory under the scratch dir, removed afterwards."""
        path = tempfile.mkdtemp(prefix=prefix + "-", dir=self.scratch)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


class Progress:
    """A rich progress bar on a TTY; one plain line per step on stderr otherwise."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self._rich: Any = None
        self._task: Any = None
        tty = sys.stdout.isatty() if enabled is None else enabled
        if tty:
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress as RichProgress,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self._rich = RichProgress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    transient=False,
                )
            except ImportError:
                self._rich = None

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.__enter__()
            self._task = self._rich.add_task("benchmarks", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def step(self, label: str) -> None:
        """One sample (or one phase) finished."""
        self.done += 1
        if self._rich is not None:
            self._rich.update(self._task, advance=1, description=label)
        else:
            print(f"[bench {self.done}/{self.total}] {label}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def python_defaults() -> Iterator[None]:
    """Run the block (a LangGraph sample) with Python's own collector and GIL
    settings, not those the first atomr Runtime set for the whole process
    (atomr._tuning: frozen heap, thresholds (700, 10, 100), 1 ms switch
    interval); they are put back afterwards for atomr's samples."""
    import gc

    frozen = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    interval = sys.getswitchinterval()
    if frozen:
        gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    sys.setswitchinterval(0.005)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
        if frozen:
            gc.collect()
            gc.freeze()


def sample_loop(
    ctx: Ctx, label: str, fns: dict[str, Callable[[], float | list[float]]], reps: int | None = None
) -> dict[str, list[float]]:
    """Call each system's sampler ``reps`` times, alternating which goes first.

    Each sampler sets up its own fresh store, does its own warm-up, times only
    the measured section and returns one number (or a list of them). LangGraph's
    samples run with Python's default collector and GIL settings
    (:func:`python_defaults`).
    """
    reps = ctx.reps if reps is None else reps
    out: dict[str, list[float]] = {s: [] for s in fns}
    order = list(fns)
    for rep in range(reps):
        for system in order if rep % 2 == 0 else order[::-1]:
            if system == "langgraph":
                with python_defaults():
                    got = fns[system]()
            else:
                got = fns[system]()
            if isinstance(got, list):
                out[system].extend(float(x) for x in got)
            else:
                out[system].append(float(got))
            ctx.progress.step(f"{label}: {system} {rep + 1}/{reps}")
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def summarize(samples: Sequence[float], stat: str = "median") -> dict[str, Any]:
    """The figures of one side of a row: headline ``value`` plus median/min/max and raw samples
    (at most :data:`MAX_SAMPLES_KEPT` of them; more are summed up as percentiles)."""
    vals = [float(x) for x in samples]
    if not vals:
        return {"value": None, "samples": []}
    if stat == "median":
        value = statistics.median(vals)
    elif stat == "p50":
        value = percentile(vals, 50)
    elif stat == "p99":
        value = percentile(vals, 99)
    elif stat == "value":
        value = vals[0]
    elif stat == "max":
        value = max(vals)
    else:  # pragma: no cover - programming error
        raise ValueError(stat)
    out = {
        "value": value,
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }
    if len(vals) <= MAX_SAMPLES_KEPT:
        out["samples"] = vals
    else:
        out["samples"] = []
        out["samples_dropped"] = len(vals)
        out["percentiles"] = {str(q): percentile(vals, q) for q in (1, 5, 25, 50, 75, 90, 95, 99)}
    return out


def make_row(
    row_id: str,
    label: str,
    unit: str,
    better: str,
    samples: dict[str, list[float]],
    *,
    stat: str = "median",
    target: float | None = None,
    limit: float | None = None,
    headline: bool = False,
    note: str = "",
) -> dict[str, Any]:
    """One comparison row. ``advantage`` > 1 means atomr is better (throughput:
    atomr/LangGraph; latency and size: LangGraph/atomr).

    ``target`` is a bar for the advantage; ``limit`` instead bounds atomr's own
    figure (``better == "lower"``: met when atomr's value <= limit) and such a
    row has no advantage (e.g. a thread count). ``headline`` marks the row the
    summary leads with."""
    a = summarize(samples["atomr"], stat)
    lg = summarize(samples["langgraph"], stat) if samples.get("langgraph") else None
    adv = None
    if limit is None and lg is not None and a["value"] and lg["value"]:
        adv = a["value"] / lg["value"] if better == "higher" else lg["value"] / a["value"]
    if limit is not None:
        met = None if a["value"] is None else (
            a["value"] <= limit if better == "lower" else a["value"] >= limit)
    else:
        met = None if (adv is None or target is None) else adv >= target
    return {
        "id": row_id,
        "label": label,
        "unit": unit,
        "better": better,
        "stat": stat,
        "advantage_formula": "atomr/langgraph" if better == "higher" else "langgraph/atomr",
        "atomr": a,
        "langgraph": lg,
        "advantage": adv,
        "target": target,
        "limit": limit,
        "meets_target": met,
        "headline": headline,
        "note": note,
    }


class ThreadPeak:
    """A monitor thread sampling ``threading.active_count()`` every ``interval`` s;
    ``peak`` is the largest count seen (the monitor itself included), ``peak_os``
    the largest number of the process's OS threads (``/proc/self/task``; None
    where there is no /proc)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = threading.active_count()
        self.peak_os = _os_threads()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-thread-peak", daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, threading.active_count())
        n = _os_threads()
        if n is not None:
            self.peak_os = max(self.peak_os or 0, n)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> ThreadPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()


def _os_threads() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``."""
    t0 = time.perf_counter()
    res = fn()
    return time.perf_counter() - t0, res


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def fs_type(path: str) -> str:
    """The file-system type holding ``path`` (from /proc/mounts; "" if unknown)."""
    try:
        real = os.path.realpath(path)
        best, kind = "", ""
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")):
                    if len(parts[1]) >= len(best):
                        best, kind = parts[1], parts[2]
        return kind
    except OSError:
        return ""


class BenchError(AssertionError):
    """A run produced the wrong result: the figures of that workload are void."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise BenchError(what)
