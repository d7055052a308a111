"""The run index's order and the counts by status in an LMDB store (a mixin of
:class:`~atomr.store.lmdb.LmdbStore`; key layout in :mod:`atomr.store.format`).

Threads: the ``_index_*`` writers run inside the writer's transactions (the
checkpointer's thread); :meth:`_runs_page` and :meth:`run_counts` open short read
transactions in whatever thread asks. A store opened read-only at a format
older than 3 has no index: it is scanned.
"""

from __future__ import annotations

import struct
from typing import Any

import lmdb

from atomr.errors import CodecError
from atomr.store import format as fmt
from atomr.store._page import PageKey, page_of
from atomr.store.base import STATUSES, RunSummary

__all__ = ["_Indexing"]

_I64 = struct.Struct(">q")
#: past every tail (a u64 of created_ms comes first)
_END = b"\xff" * 9


def _seek(prefix: bytes, workflow_id: str | None, key: PageKey | None) -> bytes:
    """The first key past the page: the cursor run's key under ``prefix``. A
    workflow's keys hold only the run id: a cursor of another workflow bounds
    them by its creation time ((t, W, r) < (c, w, x): t <= c if W < w, t < c if W > w)."""
    if key is None:
        return prefix + _END
    created, wf, run = key
    if workflow_id is None or workflow_id == wf:
        return fmt.index_key(prefix, created, wf, run)
    return prefix + fmt.u64(created + 1 if workflow_id < wf else created)


class _Indexing:
    """Keeps and reads the run index's order and the counts by status."""

    _env: lmdb.Environment
    _gate: Any
    _meta: Any
    _runs: Any
    #: False for a read-only store at a format without the index (then: scans)
    _has_index: bool
    #: index entries read by pages and counts (tests check that a page reads a bounded number)
    index_reads: int

    # -- writer side (inside a write transaction) ---------------------------------------

    def _index_move(self, txn: lmdb.Transaction, old: RunSummary | None, new: RunSummary | None,
                    counts: dict[str, int]) -> None:
        """Put ``new``'s keys, drop ``old``'s (the same run; either may be None);
        count the change of status in ``counts``."""
        if old is not None and new is not None and old.status == new.status:
            return
        if old is not None:
            filters = fmt.index_filters(old.workflow_id, old.status)
            for prefix in filters if new is None else (filters[1], filters[3]):
                txn.delete(fmt.index_key(prefix, old.created_ms, old.workflow_id, old.run_id), db=self._meta)
            counts[old.status] = counts.get(old.status, 0) - 1
        if new is not None:
            rkey = fmt.run_key(new.workflow_id, new.run_id)
            filters = fmt.index_filters(new.workflow_id, new.status)
            for prefix in filters if old is None else (filters[1], filters[3]):
                txn.put(fmt.index_key(prefix, new.created_ms, new.workflow_id, new.run_id), rkey, db=self._meta)
            counts[new.status] = counts.get(new.status, 0) + 1

    def _index_count(self, txn: lmdb.Transaction, counts: dict[str, int]) -> None:
        """Add ``counts`` (status -> change) to the stored counts."""
        for status, delta in counts.items():
            if delta:
                key = fmt.count_key(status)
                raw = txn.get(key, db=self._meta)
                n = _I64.unpack(bytes(raw))[0] if raw is not None and len(raw) == 8 else 0
                txn.put(key, _I64.pack(n + delta), db=self._meta)

    def _index_build(self, txn: lmdb.Transaction) -> int:
        """Build the order and the counts from the run index (the migration to
        format 3, in the open's write transaction). Returns the runs indexed."""
        counts: dict[str, int] = {}
        n = 0
        for k, v in txn.cursor(db=self._runs):
            try:
                wf, run = fmt.parse_run_key(bytes(k))
                s = RunSummary.from_record(wf, run, bytes(v))
            except CodecError:
                continue  # damaged: left out of runs() as before (summaries() reports it)
            self._index_move(txn, None, s, counts)
            n += 1
        for status in STATUSES:
            txn.put(fmt.count_key(status), _I64.pack(counts.get(status, 0)), db=self._meta)
        return n

    # -- readers (any thread) ------------------------------------------------------------

    def _runs_page(self, status: str | None, workflow_id: str | None, limit: int | None,
                   key: PageKey | None) -> list[RunSummary]:
        self._check_open()  # type: ignore[attr-defined]
        if not self._has_index:
            return page_of(self.summaries(), status, workflow_id, limit, key)  # type: ignore[attr-defined]
        prefix = fmt.index_prefix(workflow_id, status)
        seek = _seek(prefix, workflow_id, key)
        rows: list[tuple[bytes, bytes | None]] = []
        reads = 0
        with self._gate.read(), self._env.begin() as txn:
            cur = txn.cursor(db=self._meta)
            found = cur.prev() if cur.set_range(seek) else cur.last()  # the last key before seek
            while found:
                k = cur.key()
                if not k.startswith(prefix) or (limit is not None and len(rows) >= limit):
                    break
                reads += 1
                rkey = bytes(cur.value())
                raw = txn.get(rkey, db=self._runs)
                rows.append((rkey, None if raw is None else bytes(raw)))
                found = cur.prev()
        self.index_reads += reads
        out = []
        for rkey, raw in rows:
            try:
                wf, run = fmt.parse_run_key(rkey)
            except CodecError:
                continue
            if workflow_id is not None and wf != workflow_id:
                continue  # (two workflows whose 8-byte hashes meet)
            if raw is None:
                self._skip(rkey, wf, run, f"the run index's order lists run {wf}/{run} but the run index has "  # type: ignore[attr-defined]
                           "no entry for it (its key was damaged)")
                continue
            try:
                out.append(RunSummary.from_record(wf, run, raw))
            except fmt.SOUND as exc:
                self._skip(rkey, wf, run, f"{fmt.corrupt(wf, run, 0, exc)}", damaged=False)  # type: ignore[attr-defined]
            except CodecError as exc:
                self._skip(rkey, wf, run, f"damaged run index entry of run {wf}/{run}: {exc}")  # type: ignore[attr-defined]
        return out

    def run_counts(self) -> dict[str, int]:
        self._check_open()  # type: ignore[attr-defined]
        if not self._has_index:
            return super().run_counts()  # type: ignore[misc,no-any-return]
        counts = dict.fromkeys(STATUSES, 0)
        with self._gate.read(), self._env.begin(db=self._meta) as txn:
            for status in STATUSES:
                raw = txn.get(fmt.count_key(status))
                if raw is not None and len(raw) == 8:
                    counts[status] = _I64.unpack(bytes(raw))[0]
        self.index_reads += len(STATUSES)
        return counts
