"""The writer side of :class:`~atomr.store.lmdb.LmdbStore` (a mixin).

Threads: LMDB write transactions belong to the thread that opened them, so
these methods are called only by the checkpointer actor's thread once a
:class:`~atomr.Runtime` owns the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import lmdb

from atomr.errors import CodecError, StoreError, StoreFull
from atomr.store import format as fmt
from atomr.store.base import AppendBatch, RunSummary, check_import, now_ms

__all__ = ["_Writing"]

_T = TypeVar("_T")


class _Writing:
    """Appends, truncation, deletion; the map grows while a write does not fit."""

    _env: lmdb.Environment
    _gate: Any
    _meta: Any
    _journal: Any
    _snaps: Any
    _runs: Any
    _summaries: dict[bytes, RunSummary]
    _index_move: Callable[..., None]
    _index_count: Callable[..., None]
    readonly: bool
    max_map_size: int
    path: str

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StoreError(f"store {self.path!r} was opened read-only; open it without "
                             "readonly=True to write")

    def _write_txn(self, batches: Sequence[AppendBatch]) -> None:
        self._check_writable()
        # a single batch starting a run: if it does not fit, the run was not created
        new = batches[0] if len(batches) == 1 and batches[0].first_seq == 1 else None
        self._growing(lambda: self._apply(batches),
                      None if new is None else f"{new.workflow_id}/{new.run_id}")

    def _growing(self, txn_fn: Callable[[], _T], new_run: str | None = None) -> _T:
        """Run a write transaction, growing the map and retrying while it is full
        (deletes need fresh pages too: LMDB copies on write). A refused
        transaction was aborted whole: nothing of it is on disk."""
        while True:
            try:
                return txn_fn()
            except lmdb.MapFullError:
                self._grow(new_run)

    def _grow(self, new_run: str | None = None) -> None:
        size = self.map_size
        if size >= self.max_map_size:
            raise StoreFull(size, self.path, new_run) from None
        with self._gate.exclusive():
            self._env.set_mapsize(min(size * 2, self.max_map_size))

    def _summary_in(self, txn: lmdb.Transaction, rkey: bytes, wf: str, run: str) -> RunSummary | None:
        cached = self._summaries.get(rkey)
        if cached is not None:
            return cached
        raw = txn.get(rkey, db=self._runs)
        return None if raw is None else self._decode_summary(wf, run, bytes(raw))

    def _apply(self, batches: Sequence[AppendBatch]) -> None:
        ts = now_ms()
        staged: dict[bytes, RunSummary] = {}
        first: dict[bytes, RunSummary | None] = {}  # each run's entry before this transaction
        with self._env.begin(write=True) as txn:
            jcur = txn.cursor(db=self._journal)
            for b in batches:
                rkey = fmt.run_key(b.workflow_id, b.run_id)
                old = staged.get(rkey)
                if old is None:
                    old = first[rkey] = self._summary_in(txn, rkey, b.workflow_id, b.run_id)
                staged[rkey] = self._next_summary(old, b, ts)
                seq = b.first_seq
                for rec in b.records:
                    if not jcur.put(fmt.seq_key(rkey, seq), rec, overwrite=False):
                        raise StoreError(
                            f"journal of run {b.workflow_id}/{b.run_id} already holds event "
                            f"{seq}; the batch was refused (two writers for one run?)"
                        )
                    seq += 1
                if b.snapshot is not None:
                    txn.put(fmt.seq_key(rkey, b.last_seq), b.snapshot, db=self._snaps)
            counts: dict[str, int] = {}
            for rkey, s in staged.items():
                txn.put(rkey, s.to_record(), db=self._runs)
                self._index_move(txn, first[rkey], s, counts)
            self._index_count(txn, counts)
        # committed: the cache now reflects the disk. Only running runs stay
        # cached (they write again soon); the others are read back if they ever
        # write again, so the cache does not grow with every run ever written.
        cache = self._summaries
        for rkey, s in staged.items():
            if s.status == "running":
                cache[rkey] = s
            else:
                cache.pop(rkey, None)

    def truncate(self, workflow_id: str, run_id: str, upto_seq: int, snapshot: bytes) -> int:
        self._check_writable()
        return self._growing(lambda: self._truncate(workflow_id, run_id, upto_seq, snapshot))

    def _truncate(self, workflow_id: str, run_id: str, upto_seq: int, snapshot: bytes) -> int:
        rkey = fmt.run_key(workflow_id, run_id)
        removed = 0
        with self._env.begin(write=True) as txn:
            old = self._summary_in(txn, rkey, workflow_id, run_id)
            if old is None:
                return 0
            upto = min(upto_seq, old.last_seq)
            txn.put(fmt.seq_key(rkey, upto), snapshot, db=self._snaps)
            for db, limit in ((self._journal, upto + 1), (self._snaps, upto)):
                cur = txn.cursor(db=db)
                if cur.set_range(rkey + fmt.u64(0)):
                    while cur.key().startswith(rkey) and len(cur.key()) == len(rkey) + 8:
                        if fmt.seq_of(cur.key()) >= limit:
                            break
                        cur.delete()
                        removed += 1
                        if not cur.key():
                            break
            new = replace(old, first_seq=max(old.first_seq, upto + 1),
                          snapshot_seq=max(old.snapshot_seq, upto), updated_ms=now_ms())
            txn.put(rkey, new.to_record(), db=self._runs)
        self._summaries.pop(rkey, None)
        return removed

    def delete_run(self, workflow_id: str, run_id: str) -> bool:
        self._check_writable()
        return self._growing(lambda: self._delete_run(workflow_id, run_id))

    def _delete_run(self, workflow_id: str, run_id: str) -> bool:
        rkey = fmt.run_key(workflow_id, run_id)
        with self._env.begin(write=True) as txn:
            raw = txn.get(rkey, db=self._runs)
            try:
                old = None if raw is None else RunSummary.from_record(workflow_id, run_id, bytes(raw))
            except CodecError:
                old = None  # damaged: its index keys cannot be named (a page skips a key without a run)
            counts: dict[str, int] = {}
            self._index_move(txn, old, None, counts)
            self._index_count(txn, counts)
            existed = txn.delete(rkey, db=self._runs)
            for db in (self._journal, self._snaps):
                cur = txn.cursor(db=db)
                if cur.set_range(rkey + fmt.u64(0)):
                    while cur.key().startswith(rkey) and len(cur.key()) == len(rkey) + 8:
                        cur.delete()
                        if not cur.key():
                            break
        self._summaries.pop(rkey, None)
        return bool(existed)

    def import_run(self, summary: RunSummary, journal: Sequence[tuple[int, bytes]],
                   snapshots: Sequence[tuple[int, bytes]]) -> None:
        """Store a whole run as another store holds it (``atomr copy``), in one
        write transaction: the run must be new here (StoreError otherwise, and
        nothing of it is written)."""
        self._check_writable()
        fmt.check_ids(summary.workflow_id, summary.run_id)
        check_import(summary, journal, snapshots)
        self._growing(lambda: self._import(summary, journal, snapshots))

    def _import(self, s: RunSummary, journal: Sequence[tuple[int, bytes]],
                snapshots: Sequence[tuple[int, bytes]]) -> None:
        rkey = fmt.run_key(s.workflow_id, s.run_id)
        with self._env.begin(write=True) as txn:  # an exception aborts it whole
            if txn.get(rkey, db=self._runs) is not None or any(
                    self._holds(txn, db, rkey) for db in (self._journal, self._snaps)):
                raise StoreError(f"run {s.workflow_id}/{s.run_id} already exists in {self.path!r}; "
                                 "nothing of it was imported")
            jcur = txn.cursor(db=self._journal)
            for seq, rec in journal:
                jcur.put(fmt.seq_key(rkey, seq), bytes(rec))
            scur = txn.cursor(db=self._snaps)
            for seq, rec in snapshots:
                scur.put(fmt.seq_key(rkey, seq), bytes(rec))
            txn.put(rkey, s.to_record(), db=self._runs)
            counts: dict[str, int] = {}
            self._index_move(txn, None, s, counts)
            self._index_count(txn, counts)
        self._summaries.pop(rkey, None)

    @staticmethod
    def _holds(txn: lmdb.Transaction, db: Any, rkey: bytes) -> bool:
        """True when ``db`` has a record keyed by this run (run key + sequence number)."""
        cur = txn.cursor(db=db)
        if not cur.set_range(rkey):
            return False
        key = bytes(cur.key())
        return key.startswith(rkey) and len(key) == len(rkey) + 8

    def _put_schedule_raw(self, key: bytes, data: bytes) -> None:
        self._check_writable()

        def put() -> None:
            with self._env.begin(write=True, db=self._meta) as txn:
                raw = txn.get(b"format_version")
                if raw is None or fmt.read_u32(raw) < fmt.SCHEDULES_FORMAT:
                    # a store made before schedules: from now on it holds one
                    txn.put(b"format_version", fmt.u32(fmt.SCHEDULES_FORMAT))
                txn.put(key, data)

        self._growing(put)

    def _delete_schedule_raw(self, key: bytes) -> bool:
        self._check_writable()

        def delete() -> bool:
            with self._env.begin(write=True, db=self._meta) as txn:
                return bool(txn.delete(key))

        return self._growing(delete)

    # test hook: damage one record in place (used by the conformance suite)
    def _corrupt(self, workflow_id: str, run_id: str, seq: int, data: bytes) -> None:
        key = fmt.seq_key(fmt.run_key(workflow_id, run_id), seq)

        def put() -> None:
            with self._env.begin(write=True, db=self._journal) as txn:
                txn.put(key, data)

        self._growing(put)
