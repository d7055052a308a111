"""LmdbStore: the embedded, durable default.

One LMDB environment in a directory (layout in :mod:`atomr.store.format`).

Threads: LMDB write transactions belong to the thread that opened them, so
:meth:`write`, :meth:`truncate` and :meth:`delete_run` are called only by the
checkpointer actor's thread once a :class:`~atomr.Runtime` owns the store.
Readers open short read transactions in whatever thread asks.

Safety on open:

* an exclusive ``flock`` on ``atomr.lock`` (holding our pid): a second process
  gets :class:`~atomr.errors.StoreLocked` naming the path and the holder;
* files are created 0600 in a 0700 directory;
* a data file shorter than the environment says it holds (a truncated copy) is
  refused with :class:`~atomr.errors.StoreError` *before* any page is touched
  (reading a missing page of a memory map would kill the process with SIGBUS);
* a store written by a newer format is refused with
  :class:`~atomr.errors.FormatVersionError`.

When the map fills, the write is retried after doubling the map (up to
``max_map_size``); past that :class:`~atomr.errors.StoreFull` says how to grow
it, and the refused write is reported to its run, never half-applied.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import lmdb

from atomr.errors import FormatVersionError, StoreClosed, StoreError, StoreFull, StoreLocked
from atomr.store import format as fmt
from atomr.store.base import AppendBatch, RunSummary, Store, now_ms

__all__ = ["LmdbStore"]

_GiB = 1 << 30
_T = TypeVar("_T")


class _Gate:
    """Readers share, the map resizer excludes (LMDB forbids a resize under a txn)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class LmdbStore(Store):
    """Durable store in directory ``path`` (created if missing).

    ``map_size``: initial LMDB map size (address space, not disk: the file grows
    as data is written). ``max_map_size``: how far the map may grow on its own.
    ``fsync``: what a commit waits for before it counts as committed —

    * ``"commit"`` (default): the commit's data pages are fsynced; the meta
      page is synced with the next commit. A killed process loses nothing
      committed; a power loss can undo only the last commit, never corrupt.
    * ``"full"``: data and meta page fsynced on every commit: a power loss
      loses nothing committed (about 3x the cost per commit).
    * ``"none"``: no fsync: a killed process still loses nothing committed (the
      OS has the pages); a power loss can lose recent commits.

    ``snapshot_every``: snapshot a run every N super-steps (and at every pause
    and end). ``readonly=True``: open for reading only, without the exclusive
    lock, so that ``atomr show`` works while another process runs the store.
    """

    single_writer = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int = _GiB,
        snapshot_every: int = 50,
        *,
        max_map_size: int = 64 * _GiB,
        fsync: str = "commit",
        max_readers: int = 1024,
        readonly: bool = False,
    ) -> None:
        if fsync not in ("commit", "full", "none"):
            raise StoreError(f"fsync must be 'commit', 'full' or 'none', got {fsync!r}; pass one of those")
        if snapshot_every < 1:
            raise StoreError(f"snapshot_every must be >= 1, got {snapshot_every}; pass e.g. 50 (super-steps between snapshots)")
        if map_size < 64 * 1024:
            raise StoreError(f"map_size must be at least 65536 bytes, got {map_size}")
        self.path: str = os.fspath(path)
        self.snapshot_every = snapshot_every
        self.fsync = fsync
        self.max_map_size = max(max_map_size, map_size)
        self._gate = _Gate()
        self._closed = False
        self.readonly = readonly
        if readonly:
            if not os.path.isfile(os.path.join(self.path, "data.mdb")):
                raise StoreError(f"no store at {self.path!r} to open read-only; check the path")
            self._lock_fd = -1
        else:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            self._lock_fd = self._acquire_lock()
        try:
            self._check_not_truncated()
            try:
                self._env = lmdb.open(
                    self.path, map_size=map_size, max_dbs=8, subdir=True, readonly=readonly,
                    sync=fsync != "none", metasync=fsync == "full", mode=0o600, max_readers=max_readers, readahead=False,
                )
            except lmdb.Error as exc:
                raise StoreError(
                    f"cannot open LMDB store {self.path!r}: {exc}; the files may be damaged: "
                    "restore them from a backup or open another path"
                ) from None
            self._check_size_against_env()
            create = not readonly
            # the format is checked before anything else is created or written
            self._meta = self._env.open_db(fmt.DB_META, create=create)
            self._check_format()
            self._journal = self._env.open_db(fmt.DB_JOURNAL, create=create)
            self._snaps = self._env.open_db(fmt.DB_SNAPSHOTS, create=create)
            self._runs = self._env.open_db(fmt.DB_RUNS, create=create)
        except BaseException:
            self._release_lock()
            raise
        self._summaries: dict[bytes, RunSummary] = {}

    def __repr__(self) -> str:
        return f"LmdbStore({self.path!r})"

    # -- opening ----------------------------------------------------------

    def _acquire_lock(self) -> int:
        lock_path = os.path.join(self.path, "atomr.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.pread(fd, 32, 0).decode().strip() or 0) or None
            except ValueError:
                pid = None
            os.close(fd)
            raise StoreLocked(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", -1), -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _check_not_truncated(self) -> None:
        data = os.path.join(self.path, "data.mdb")
        # LMDB writes its two header pages when it creates the file, so an existing
        # data file smaller than that (even empty) was cut short
        if os.path.exists(data) and os.path.getsize(data) < 2 * 4096:
            raise StoreError(
                f"data file {data!r} is truncated ({os.path.getsize(data)} bytes, smaller than "
                "LMDB's two header pages); restore the store from a backup"
            )

    def _check_size_against_env(self) -> None:
        data = os.path.join(self.path, "data.mdb")
        info = self._env.info()
        psize = self._env.stat()["psize"]
        needed = (info["last_pgno"] + 1) * psize
        have = os.path.getsize(data)
        if have < needed:
            self._env.close()
            raise StoreError(
                f"data file {data!r} is truncated: {have} bytes on disk but the environment "
                f"holds {needed}; opening it would crash the process (SIGBUS). Restore the "
                "store from a backup"
            )

    def _check_format(self) -> None:
        with self._env.begin(write=not self.readonly) as txn:
            raw = txn.get(b"format_version", db=self._meta)
            if raw is None and self.readonly:
                return
            if raw is None:
                txn.put(b"format_version", fmt.u32(fmt.FORMAT_VERSION), db=self._meta)
                txn.put(b"created_ms", fmt.u64(now_ms()), db=self._meta)
                return
            version = fmt.read_u32(raw)
        if version > fmt.FORMAT_VERSION:
            self._env.close()
            raise FormatVersionError(
                f"store {self.path!r} was written by a newer atomr (format {version}; this "
                f"atomr reads up to {fmt.FORMAT_VERSION}); upgrade atomr to open it"
            )

    @property
    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._gate.exclusive():
            self._env.close()
        self._release_lock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self.path!r} is closed; open it again to use it")

    # -- writer side (checkpointer thread) ----------------------------------

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StoreError(f"store {self.path!r} was opened read-only; open it without "
                             "readonly=True to write")

    def _write_txn(self, batches: Sequence[AppendBatch]) -> None:
        self._check_writable()
        self._growing(lambda: self._apply(batches))

    def _growing(self, txn_fn: Callable[[], _T]) -> _T:
        """Run a write transaction, growing the map and retrying while it is full
        (deletes need fresh pages too: LMDB copies on write)."""
        while True:
            try:
                return txn_fn()
            except lmdb.MapFullError:
                self._grow()

    def _grow(self) -> None:
        size = self.map_size
        if size >= self.max_map_size:
            raise StoreFull(size, self.path) from None
        with self._gate.exclusive():
            self._env.set_mapsize(min(size * 2, self.max_map_size))

    def _summary_in(self, txn: lmdb.Transaction, rkey: bytes, wf: str, run: str) -> RunSummary | None:
        cached = self._summaries.get(rkey)
        if cached is not None:
            return cached
        raw = txn.get(rkey, db=self._runs)
        return None if raw is None else RunSummary.from_record(wf, run, bytes(raw))

    def _apply(self, batches: Sequence[AppendBatch]) -> None:
        ts = now_ms()
        staged: dict[bytes, RunSummary] = {}
        with self._env.begin(write=True) as txn:
            jcur = txn.cursor(db=self._journal)
            for b in batches:
                rkey = fmt.run_key(b.workflow_id, b.run_id)
                old = staged.get(rkey) or self._summary_in(txn, rkey, b.workflow_id, b.run_id)
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
            for rkey, s in staged.items():
                txn.put(rkey, s.to_record(), db=self._runs)
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
            from dataclasses import replace

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

    # -- readers (any thread) --------------------------------------------

    def summary(self, workflow_id: str, run_id: str) -> RunSummary | None:
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        with self._gate.read(), self._env.begin(db=self._runs) as txn:
            raw = txn.get(rkey)
            return None if raw is None else RunSummary.from_record(workflow_id, run_id, raw)

    def summaries(self) -> Iterator[RunSummary]:
        self._check_open()
        with self._gate.read(), self._env.begin(db=self._runs) as txn:
            rows = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        return iter([RunSummary.from_record(*fmt.parse_run_key(k), v) for k, v in rows])

    def _journal_raw(
        self, workflow_id: str, run_id: str, from_seq: int, to_seq: int | None
    ) -> Iterator[tuple[int, bytes]]:
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        n = len(rkey) + 8
        out: list[tuple[int, bytes]] = []
        with self._gate.read(), self._env.begin(db=self._journal) as txn:
            cur = txn.cursor()
            if cur.set_range(fmt.seq_key(rkey, max(from_seq, 0))):
                for k, v in cur:
                    if len(k) != n or not k.startswith(rkey):
                        break
                    seq = fmt.seq_of(k)
                    if to_seq is not None and seq > to_seq:
                        break
                    out.append((seq, v))
        return iter(out)

    def _snapshots_raw(self, workflow_id: str, run_id: str) -> list[tuple[int, bytes]]:
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        n = len(rkey) + 8
        out: list[tuple[int, bytes]] = []
        with self._gate.read(), self._env.begin(db=self._snaps) as txn:
            cur = txn.cursor()
            if cur.set_range(fmt.seq_key(rkey, 0)):
                for k, v in cur:
                    if len(k) != n or not k.startswith(rkey):
                        break
                    out.append((fmt.seq_of(k), v))
        return out

    def stored_bytes(self) -> int:
        """Bytes of the data file actually in use (pages up to the high-water mark)."""
        info = self._env.info()
        return int((info["last_pgno"] + 1) * self._env.stat()["psize"])

    # test hook: damage one record in place (used by the conformance suite)
    def _corrupt(self, workflow_id: str, run_id: str, seq: int, data: bytes) -> None:
        key = fmt.seq_key(fmt.run_key(workflow_id, run_id), seq)

        def put() -> None:
            with self._env.begin(write=True, db=self._journal) as txn:
                txn.put(key, data)

        self._growing(put)
