"""One generation of the crash harness, run in a subprocess the test kills.

    python child.py STORE SIDE_FILE N_RUNS [--durability D] [--start N] [--pre-commit N] [--in-commit N]

STORE: an LMDB directory or a store URL (``sqlite:///…?synchronous=…``,
``postgresql://…?schema=…``). Opens a Runtime on it (durability "sync" unless
told), recovers, answers paused runs, starts missing runs (of the first
``--start`` of the plan), and carries them on (see ``flows.drive``). Prints:

* ``READY`` once every run is under way;
* ``PRE_COMMIT n`` and then blocks, when the store is about to write its n-th
  transaction (the events of finished steps are queued, not durable yet);
* ``IN_COMMIT n`` and then blocks, inside the n-th write transaction: LMDB —
  records of the first batches put, nothing committed; SQLite — the group's
  journal rows inserted, not committed; Postgres — the group's one statement
  sent and waiting in the server for a table lock this process holds on
  another connection (the kill ends that connection too: the statement then
  completes on its own, in its own transaction, or not at all);
* ``BIG_COMMIT n k`` then ``IN_COMMIT n`` (``--big-commit K``): the same inside
  the first transaction of at least K batches (many runs committing at once);
* ``ALLDONE <commits>`` when nothing is left to do in this generation (it then exits 0).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows  # noqa: E402

from atomr import LmdbStore, PostgresStore, Runtime, SqliteStore, open_store  # noqa: E402
from atomr.store.base import AppendBatch, RunSummary  # noqa: E402

BLOCK_S = 60.0  # the test kills us long before


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def open_target(target: str) -> Any:
    """As ``workflows.open_target``: a store URL, or an LMDB directory."""
    return open_store(target) if "://" in target else LmdbStore(target, map_size=64 << 20)


class Hooks:
    """Stops a store before, or inside, its n-th write transaction (a mixin)."""

    commits = 0
    pre_commit = 0
    in_commit = 0
    big_commit = 0  # stop inside the first transaction of at least this many batches
    _batches_in_txn = 0
    _hook_at = 0

    def _write_txn(self, batches: Sequence[AppendBatch], *args: Any, **kw: Any) -> None:
        self.commits += 1
        self._batches_in_txn = 0
        # stop after the first batch's records are put when there are several (a big
        # group: half of them)
        self._hook_at = min(len(batches), 2) if self.commits == self.in_commit else 0
        if self.big_commit and len(batches) >= self.big_commit:
            self.big_commit = 0
            self._hook_at = len(batches) // 2
            say(f"BIG_COMMIT {self.commits} {len(batches)}")
        elif self.big_commit and self.commits % 10 == 0:
            time.sleep(0.5)  # a slow disk: the runs' batches queue up for the next transaction
        if self.commits == self.pre_commit:
            say(f"PRE_COMMIT {self.commits}")
            time.sleep(BLOCK_S)
        super()._write_txn(batches, *args, **kw)  # type: ignore[misc]

    def _stop_in_commit(self) -> None:
        say(f"IN_COMMIT {self.commits}")
        time.sleep(BLOCK_S)


class HookedLmdb(Hooks, LmdbStore):
    def _next_summary(self, old: RunSummary | None, b: AppendBatch, ts: int) -> RunSummary:
        # called inside the write transaction, once per batch, before its records are put
        self._batches_in_txn += 1
        if self._batches_in_txn == self._hook_at:
            self._stop_in_commit()
        return super()._next_summary(old, b, ts)


class _StopAfterRows:
    """A cursor that stops the process's writer once the group's journal rows are in."""

    def __init__(self, cur: Any, store: Hooks) -> None:
        self._cur, self._store = cur, store

    def executemany(self, query: str, rows: Any) -> Any:
        out = self._cur.executemany(query, rows)
        if "journal" in query:
            self._store._stop_in_commit()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


class HookedSqlite(Hooks, SqliteStore):
    @contextlib.contextmanager
    def _writing(self, pipeline: bool = False, durable: bool = True) -> Iterator[Any]:
        with super()._writing(pipeline, durable) as cur:
            yield _StopAfterRows(cur, self) if self._hook_at else cur


class HookedPostgres(Hooks, PostgresStore):
    def _commit_group(self, stage: Any) -> None:
        if not self._hook_at:
            return super()._commit_group(stage)
        import psycopg

        locker = psycopg.connect(self._dsn)  # a transaction holding the runs table
        locker.execute(f'LOCK TABLE "{self.schema}".runs IN ACCESS EXCLUSIVE MODE')
        writer_pid = self._writer_conn().info.backend_pid

        def announce() -> None:
            with psycopg.connect(self._dsn, autocommit=True) as watch:
                deadline = time.monotonic() + BLOCK_S
                while time.monotonic() < deadline:
                    row = watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                        (writer_pid,)).fetchone()
                    if row is not None and row[0] == "Lock":
                        break
                    time.sleep(0.005)
            self._stop_in_commit()

        threading.Thread(target=announce, daemon=True).start()
        return super()._commit_group(stage)  # waits in the server for the lock


def hooked(target: str, **hooks: int) -> Any:
    store = open_target(target)
    cls = {LmdbStore: HookedLmdb, SqliteStore: HookedSqlite, PostgresStore: HookedPostgres}[type(store)]
    store.__class__ = cls  # the same object, with the hooks
    for k, v in hooks.items():
        setattr(store, k, v)
    return store


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("side")
    ap.add_argument("runs", type=int)
    ap.add_argument("--pre-commit", type=int, default=0)
    ap.add_argument("--in-commit", type=int, default=0)
    ap.add_argument("--big-commit", type=int, default=0)
    ap.add_argument("--durability", default="sync")
    ap.add_argument("--start", type=int, default=None, help="start only the first N runs of the plan")
    args = ap.parse_args(argv)
    flows.SIDE = args.side
    store = hooked(args.store, pre_commit=args.pre_commit, in_commit=args.in_commit, big_commit=args.big_commit)
    rt = Runtime(store=store, durability=args.durability)
    for wf in flows.workflows():
        rt.register(wf)
    flows.drive(rt, flows.plan_runs(args.runs)[:args.start], final=False, say=say)
    say(f"ALLDONE {store.commits}")
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
