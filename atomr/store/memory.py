"""MemoryStore: the same records as the LMDB store, kept in this process only.

Thread-safe (one lock); writes may come from any thread, so runs on a
MemoryStore commit inline without a checkpointer actor hop.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from atomr._check import check_int
from atomr.errors import StoreError
from atomr.store import format as fmt
from atomr.store._page import SortedIndex
from atomr.store.base import STATUSES, AppendBatch, RunSummary, Store, check_import, now_ms

__all__ = ["MemoryStore"]


class _Run:
    __slots__ = ("summary", "first_seq", "records", "snap_seqs", "snaps")

    def __init__(self) -> None:
        self.summary: RunSummary | None = None
        self.first_seq = 1
        self.records: list[bytes] = []
        self.snap_seqs: list[int] = []
        self.snaps: dict[int, bytes] = {}


class MemoryStore(Store):
    """An in-process store with the LMDB store's interface and behaviour."""

    def __init__(self, snapshot_every: int = 50) -> None:
        self.snapshot_every = check_int(snapshot_every, "snapshot_every", lo=1, hi=1 << 31, error=StoreError,
                                        hint="pass e.g. 50 (super-steps between snapshots)")
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], _Run] = {}
        self._schedules: dict[bytes, bytes] = {}  # meta key -> framed record, as LMDB keeps them
        self._index = SortedIndex()  # the run index's order, by status and by workflow
        self._counts = dict.fromkeys(STATUSES, 0)

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)})"

    def _write_txn(self, batches: Sequence[AppendBatch]) -> None:
        ts = now_ms()
        with self._lock:
            # validate every batch first: all or nothing
            staged: dict[tuple[str, str], RunSummary] = {}
            for b in batches:
                key = (b.workflow_id, b.run_id)
                old = staged.get(key)
                if old is None:
                    run = self._runs.get(key)
                    old = run.summary if run is not None else None
                staged[key] = self._next_summary(old, b, ts)
            for key, new in staged.items():
                run = self._runs.get(key)
                self._indexed(run.summary if run is not None else None, new)
            for b in batches:
                key = (b.workflow_id, b.run_id)
                run = self._runs.get(key)
                if run is None:
                    run = self._runs[key] = _Run()
                run.records.extend(b.records)
                if b.snapshot is not None:
                    if b.last_seq not in run.snaps:
                        run.snap_seqs.append(b.last_seq)
                    run.snaps[b.last_seq] = bytes(b.snapshot)
                run.summary = staged[key]

    def _indexed(self, old: RunSummary | None, new: RunSummary | None) -> None:
        """Move a run in the index and the counts (under the lock)."""
        if old is not None and (new is None or old.status != new.status):
            self._index.remove((old.created_ms, old.workflow_id, old.run_id), old.status)
            self._counts[old.status] -= 1
        if new is not None and (old is None or old.status != new.status):
            self._index.add((new.created_ms, new.workflow_id, new.run_id), new.status)
            self._counts[new.status] += 1

    def _runs_page(self, status: str | None, workflow_id: str | None, limit: int | None,
                   key: tuple[int, str, str] | None) -> list[RunSummary]:
        with self._lock:
            out = []
            for _, wf, run in self._index.page(status, workflow_id, limit, key):
                s = self._runs[(wf, run)].summary
                if s is not None:
                    out.append(s)
            return out

    def run_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def truncate(self, workflow_id: str, run_id: str, upto_seq: int, snapshot: bytes) -> int:
        with self._lock:
            run = self._runs.get((workflow_id, run_id))
            if run is None or run.summary is None:
                return 0
            upto_seq = min(upto_seq, run.summary.last_seq)  # as the LMDB store does
            n = max(0, upto_seq - run.first_seq + 1)
            del run.records[:n]
            run.first_seq += n
            dropped = [s for s in run.snap_seqs if s < upto_seq]
            for s in dropped:
                del run.snaps[s]
            run.snap_seqs = [s for s in run.snap_seqs if s >= upto_seq]
            if upto_seq not in run.snaps:
                bisect.insort(run.snap_seqs, upto_seq)
            run.snaps[upto_seq] = bytes(snapshot)
            from dataclasses import replace

            run.summary = replace(
                run.summary,
                first_seq=run.first_seq,
                snapshot_seq=max(run.summary.snapshot_seq, upto_seq),
                updated_ms=now_ms(),
            )
            return n + len(dropped)

    def delete_run(self, workflow_id: str, run_id: str) -> bool:
        with self._lock:
            run = self._runs.pop((workflow_id, run_id), None)
            if run is not None:
                self._indexed(run.summary, None)
            return run is not None

    def import_run(self, summary: RunSummary, journal: Sequence[tuple[int, bytes]],
                   snapshots: Sequence[tuple[int, bytes]]) -> None:
        """Store a whole run as another store holds it (``atomr copy``); the run
        must be new here (StoreError otherwise, and nothing of it is written)."""
        fmt.check_ids(summary.workflow_id, summary.run_id)
        check_import(summary, journal, snapshots)
        run = _Run()
        run.summary = summary
        run.first_seq = summary.first_seq
        run.records = [bytes(rec) for _, rec in journal]
        run.snap_seqs = [seq for seq, _ in snapshots]
        run.snaps = {seq: bytes(rec) for seq, rec in snapshots}
        key = (summary.workflow_id, summary.run_id)
        with self._lock:
            if key in self._runs:
                raise StoreError(f"run {key[0]}/{key[1]} already exists in this MemoryStore; nothing of it "
                                 "was imported")
            self._runs[key] = run
            self._indexed(None, summary)

    def summary(self, workflow_id: str, run_id: str) -> RunSummary | None:
        run = self._runs.get((workflow_id, run_id))
        return run.summary if run is not None else None

    def summaries(self) -> Iterator[RunSummary]:
        with self._lock:
            out = [r.summary for r in self._runs.values() if r.summary is not None]
        return iter(out)

    def _journal_raw(
        self, workflow_id: str, run_id: str, from_seq: int, to_seq: int | None
    ) -> Iterator[tuple[int, bytes]]:
        with self._lock:
            run = self._runs.get((workflow_id, run_id))
            if run is None:
                return iter(())
            start = max(from_seq, run.first_seq)
            last = run.first_seq + len(run.records) - 1
            end = last if to_seq is None else min(to_seq, last)
            items = [(s, run.records[s - run.first_seq]) for s in range(start, end + 1)]
        return iter(items)

    def _snapshots_raw(self, workflow_id: str, run_id: str) -> list[tuple[int, bytes]]:
        with self._lock:
            run = self._runs.get((workflow_id, run_id))
            if run is None:
                return []
            return [(s, run.snaps[s]) for s in run.snap_seqs]

    def _put_schedule_raw(self, key: bytes, data: bytes) -> None:
        with self._lock:
            self._schedules[key] = bytes(data)

    def _delete_schedule_raw(self, key: bytes) -> bool:
        with self._lock:
            return self._schedules.pop(key, None) is not None

    def _get_schedule_raw(self, key: bytes) -> bytes | None:
        with self._lock:
            return self._schedules.get(key)

    def _schedules_raw(self) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return sorted(self._schedules.items())

    # test hook: used by the conformance suite to damage a record
    def _corrupt(self, workflow_id: str, run_id: str, seq: int, data: bytes) -> None:
        with self._lock:
            run = self._runs[(workflow_id, run_id)]
            run.records[seq - run.first_seq] = data
