"""Helpers of tests/test_workers_processes.py: worker processes, and what the
store and the side file (see :mod:`worker_scripts.worker`) say."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from atomr import Done
from atomr import events as ev
from worker_scripts import worker as W

ROOT = Path(__file__).resolve().parents[2]
STEPS = [f"s{i}" for i in range(W.N_STEPS)]


class Proc:
    """A worker process: its stdout lines in a queue, its stderr in a file."""

    def __init__(self, url: str, worker_id: str, lease_s: float, side: Path, concurrency: int, logdir: Path,
                 own: int = 0):
        self.worker_id = worker_id
        self.err_path = logdir / f"{worker_id}-{time.monotonic_ns()}.err"
        self._err = open(self.err_path, "w")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_scripts.worker", url, worker_id, str(lease_s), str(side),
             str(concurrency), str(own)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._err, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.pid = self.p.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def line(self, timeout: float = 30.0) -> str:
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker {self.worker_id}: no output in {timeout}s; stderr:\n{self.stderr()}")
        if got is None:
            raise AssertionError(f"worker {self.worker_id} exited ({self.p.wait(5)}); stderr:\n{self.stderr()}")
        return got

    def ready(self) -> Proc:
        line = self.line()
        assert line.startswith("ready"), (line, self.stderr())
        return self

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text()

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGCONT)
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self._err.close()


def executions(side: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(run_id, step) -> its executions in start order: pid, token, start, end (None: never ended)."""
    by_token: dict[str, dict[str, Any]] = {}
    for line in side.read_text().splitlines():
        kind, pid, token, run_id, step, _ss, at = line.split()
        x = by_token.setdefault(token, {"pid": int(pid), "token": token, "run": run_id, "step": step,
                                        "start": None, "end": None})
        x[kind] = float(at)
    out: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for x in sorted(by_token.values(), key=lambda x: x["start"]):
        out[(x["run"], x["step"])].append(x)
    return out


def check_journal(store: Any, run_id: str) -> dict[str, str]:
    """Each layer committed exactly once, one event per seq, a clean ending;
    returns step -> token of the execution whose completion was committed."""
    entries = list(store.journal(W.WID, run_id))
    seqs = [s for s, _ in entries]
    assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: journal positions {seqs}"
    committed = [e.super_step for _, e in entries if type(e) is ev.SuperStepCommitted]
    assert committed == list(range(1, W.N_STEPS + 1)), f"{run_id}: super-steps committed {committed}"
    assert [type(e) for _, e in entries].count(ev.RunCompleted) == 1
    assert type(entries[-1][1]) is ev.RunCompleted
    tokens: dict[str, str] = {}
    for _, e in entries:
        if type(e) is ev.StepCompleted:
            assert e.step not in tokens, f"{run_id}: {e.step} completed twice in the journal"
            tokens[e.step] = dict(e.writes)["who"]
    assert sorted(tokens) == STEPS
    return tokens


def check_done(out: Any) -> None:
    assert isinstance(out, Done), out
    assert out.state["n"] == W.N_STEPS and out.state["trail"] == STEPS, out.state


def owners(store: Any, run_ids: list[str]) -> dict[str, str | None]:
    return {r: (store.owner_of(W.WID, r) or (None,))[0] for r in run_ids}


def wait_for(cond: Any, timeout: float, what: str, every: float = 0.02) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(every)
    return time.monotonic() - t0


def committed_layers(store: Any, run_id: str) -> int:
    s = store.summary(W.WID, run_id)
    return 0 if s is None else s.super_step


def writing_stuck(url: str) -> bool:
    """True when some process has held a write transaction on the store for a while
    (the stopped worker was stopped inside one: it would hold up every worker)."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url[len("sqlite:///"):], timeout=1.0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    time.sleep(0.3)
    with psycopg.connect(url.split("?")[0], autocommit=True) as c:
        n = c.execute(
            "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_class k ON k.oid = l.relation "
            "JOIN pg_namespace s ON s.oid = k.relnamespace JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE s.nspname = %s AND l.mode = 'RowExclusiveLock' "
            "AND a.xact_start < now() - interval '250 milliseconds'", (schema,)).fetchone()[0]
    return bool(n)
