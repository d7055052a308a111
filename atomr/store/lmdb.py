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

* ``verify``: the B-tree is walked in a child process before first use
  (:mod:`atomr.store._verify`): a damaged file raises
  :class:`~atomr.errors.CorruptStore` instead of killing this process;
* a second open of one store in this process is refused with
  :class:`~atomr.errors.StoreLocked` (LMDB forbids it: closing one of the two
  would drop the other's locks).

Damage found while reading is reported per run: a damaged run-index entry is
skipped by :meth:`~LmdbStore.summaries` (and so by ``runs()``), logged once as
a warning on the ``atomr.store`` logger and listed by
:meth:`~LmdbStore.damaged_entries`; reading that run raises
:class:`~atomr.errors.CorruptRecord`. A journal whose keys do not run
gap-free from the run's first to its last event (a damaged key) raises
``CorruptRecord`` rather than a shorter history. Other runs stay readable.

When the map fills, the write is retried after doubling the map (up to
``max_map_size``); past that :class:`~atomr.errors.StoreFull` says how to grow
it, and the refused write is reported to its run, never half-applied (a run
whose first commit does not fit was not created: the error says to start it
again).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import lmdb

from atomr._check import check_int
from atomr.errors import (
    CodecError,
    CorruptRecord,
    CorruptStore,
    FormatVersionError,
    StoreClosed,
    StoreError,
    StoreFull,
    StoreLocked,
)
from atomr.store import format as fmt
from atomr.store._verify import (
    BackupReport,
    Damage,
    VerifyReport,
    backup_store,
    check_path,
    run_walk,
    verify_store,
)
from atomr.store.base import AppendBatch, RunSummary, Store, now_ms

__all__ = ["LmdbStore", "VerifyReport", "BackupReport", "Damage", "verify_store", "backup_store",
           "VERIFY_AUTO_MAX_BYTES"]

log = logging.getLogger("atomr.store")

_GiB = 1 << 30
_T = TypeVar("_T")
#: verify="auto" checks a data file up to this size on open (0.15-0.5 s at most).
VERIFY_AUTO_MAX_BYTES = 64 << 20
#: Largest map LMDB can reserve in a 47-bit user address space, with room to spare.
_MAX_MAP = 1 << 46
_MIN_MAP = 64 * 1024

# stores open in this process, by (device, inode) of their directory
_OPEN: dict[tuple[int, int], str] = {}
_OPEN_LOCK = threading.Lock()


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
    Both are ints from 64 KiB to 64 TiB. ``fsync``: what a commit waits for
    before it counts as committed —

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

    ``verify``: check the existing data file's B-tree in a child process before
    first use, so that a damaged file raises :class:`~atomr.errors.CorruptStore`
    instead of killing this process with SIGBUS/SIGSEGV. ``"auto"`` (default):
    when the data file is at most 64 MiB (VERIFY_AUTO_MAX_BYTES); ``True``:
    always; ``False``: never (then run :func:`verify_store` / ``atomr verify``
    from time to time). Cost, measured (2-core VM, file in the page cache):
    about 0.1 s to start the child, then ~0.8 s per GB of data file with 1 KB
    records (~0.7 µs per record plus ~0.3 s per GB; ~5.5 s per GB of 100-byte
    records); reading a file not in the page cache adds the disk's read time.
    Under "auto" that is at most ~0.5 s. A new store is never checked.
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
        verify: bool | str = "auto",
    ) -> None:
        self._closed = True  # until fully open (close() is then a no-op)
        self._lock_fd = -1
        self._key: tuple[int, int] | None = None
        if not isinstance(fsync, str) or fsync not in ("commit", "full", "none"):
            raise StoreError(f"fsync must be 'commit', 'full' or 'none', got {fsync!r}; pass one of those")
        snapshot_every = check_int(snapshot_every, "snapshot_every", lo=1, hi=1 << 31, error=StoreError,
                                   hint="pass e.g. 50 (super-steps between snapshots)")
        map_size = check_int(map_size, "map_size", lo=_MIN_MAP, hi=_MAX_MAP, error=StoreError,
                             hint="pass a size in bytes, e.g. 1 << 30 (1 GiB); the file grows as needed")
        max_map_size = check_int(max_map_size, "max_map_size", lo=_MIN_MAP, hi=_MAX_MAP, error=StoreError,
                                 hint="pass the most bytes the map may grow to, e.g. 64 << 30")
        max_readers = check_int(max_readers, "max_readers", lo=1, hi=1 << 16, error=StoreError,
                                hint="pass how many read transactions may be open at once, e.g. 1024")
        if not isinstance(readonly, bool):
            raise StoreError(f"readonly must be True or False, got {readonly!r}; pass a bool")
        if verify not in (True, False, "auto") or (not isinstance(verify, (bool, str))):
            raise StoreError(f"verify must be True, False or 'auto', got {verify!r}; pass one of those")
        self.path: str = check_path(path)
        self.snapshot_every = snapshot_every
        self.fsync = fsync
        self.max_map_size = max(max_map_size, map_size)
        self._gate = _Gate()
        self.readonly = readonly
        self._damaged: dict[bytes, tuple[str | None, str | None, str]] = {}
        self._summaries: dict[bytes, RunSummary] = {}
        self._prepare_dir()
        try:
            self._register()
            if not readonly:
                self._lock_fd = self._acquire_lock()
            self._check_not_truncated()
            existed = self._data_size() > 0
            # opening reads only the two header pages: safe on a damaged file
            self._env = self._open_env(map_size, fsync, max_readers)
            self._check_size_against_env()
            if existed and (verify is True or (verify == "auto" and self._data_size() <= VERIFY_AUTO_MAX_BYTES)):
                self._verify_on_open(verify is True)
            create = not readonly
            # the format is checked before anything else is created or written
            self._meta = self._env.open_db(fmt.DB_META, create=create)
            self._check_format()
            self._journal = self._env.open_db(fmt.DB_JOURNAL, create=create)
            self._snaps = self._env.open_db(fmt.DB_SNAPSHOTS, create=create)
            self._runs = self._env.open_db(fmt.DB_RUNS, create=create)
        except lmdb.Error as exc:
            self._abandon()
            raise StoreError(f"cannot open LMDB store {self.path!r}: {exc}; check the path and its "
                             "permissions (`atomr verify` tells whether the files are damaged)") from None
        except BaseException:
            self._abandon()
            raise
        self._closed = False

    def __repr__(self) -> str:
        return f"LmdbStore({self.path!r})"

    # -- opening ----------------------------------------------------------

    def _prepare_dir(self) -> None:
        p = self.path
        if os.path.exists(p) and not os.path.isdir(p):
            raise StoreError(f"store path {p!r} is a file, not a directory; pass a directory path "
                             "(it is created if missing)")
        if self.readonly:
            if not os.path.isfile(os.path.join(p, "data.mdb")):
                raise StoreError(f"no store at {p!r} to open read-only; check the path")
            return
        try:
            os.makedirs(p, mode=0o700, exist_ok=True)
        except OSError as exc:
            why = "a part of it is a file" if exc.errno in (errno.ENOTDIR, errno.EEXIST) else exc.strerror
            raise StoreError(f"cannot create store directory {p!r}: {why}; pass a path you may "
                             "create a directory at") from None

    def _register(self) -> None:
        st = os.stat(self.path)
        key = (st.st_dev, st.st_ino)
        with _OPEN_LOCK:
            if key in _OPEN:
                raise StoreLocked(self.path, os.getpid(), same_process=True)
            _OPEN[key] = self.path
            self._key = key

    def _abandon(self) -> None:
        env = self.__dict__.pop("_env", None)
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
        self._release_lock()
        self._unregister()

    def _unregister(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            with _OPEN_LOCK:
                _OPEN.pop(key, None)

    def _data_size(self) -> int:
        try:
            return os.path.getsize(os.path.join(self.path, "data.mdb"))
        except OSError:
            return 0

    def _verify_on_open(self, required: bool) -> None:
        """Walk the B-tree in a child process; CorruptStore on damage. A check that
        cannot run at all (no Python executable to start, ...) fails the open only
        when ``verify=True``; under "auto" it is logged and skipped."""
        try:
            if not sys.executable:
                raise StoreError(f"cannot check store {self.path!r}: no Python executable to run "
                                 "the check in (sys.executable is empty); open it with verify=False")
            report = run_walk(self.path, deep=False, lock=self.readonly)
        except CorruptStore:
            raise
        except StoreError as exc:
            if required:
                raise
            log.warning("store %s: not checked before use: %s", self.path, exc)
            return
        report.raise_if_damaged()

    def _open_env(self, map_size: int, fsync: str, max_readers: int) -> lmdb.Environment:
        try:
            return lmdb.open(
                self.path, map_size=map_size, max_dbs=8, subdir=True, readonly=self.readonly,
                sync=fsync != "none", metasync=fsync == "full", mode=0o600, max_readers=max_readers,
                readahead=False,
            )
        except MemoryError:
            raise StoreError(f"cannot map {map_size} bytes for store {self.path!r}: the address space "
                             "is too small; pass a smaller map_size") from None
        except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError) as exc:
            raise CorruptStore(self.path, f"LMDB refuses its files ({exc})") from None
        except lmdb.Error as exc:
            if "already open" in str(exc):
                raise StoreLocked(self.path, os.getpid(), same_process=True) from None
            raise

    def _acquire_lock(self) -> int:
        lock_path = os.path.join(self.path, "atomr.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the lock file {lock_path!r}: {exc.strerror}; check the "
                             "store directory's permissions, or open it with readonly=True") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.pread(fd, 32, 0).decode().strip() or 0) or None
            except ValueError:
                pid = None
            os.close(fd)
            raise StoreLocked(self.path, pid, same_process=pid == os.getpid()) from None
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
        self._unregister()

    def verify(self, deep: bool = True) -> VerifyReport:
        """Check this store's files now (in a child process; see :func:`verify_store`)."""
        self._check_open()
        return run_walk(self.path, deep=deep, lock=True)

    def backup(self, dst: str | os.PathLike[str], compact: bool = True) -> BackupReport:
        """Copy this store to the new directory ``dst`` (see :func:`backup_store`);
        safe while runs write to it."""
        self._check_open()
        return backup_store(self.path, dst, compact=compact)

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

    @staticmethod
    def _decode_summary(wf: str, run: str, raw: bytes) -> RunSummary:
        try:
            return RunSummary.from_record(wf, run, raw)
        except CodecError as exc:
            raise CorruptRecord(wf, run, 0, f"its run index entry is damaged ({exc})") from None

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
        """The run's index entry; None for an unknown run. CorruptRecord when
        the entry is damaged, or missing while the run's journal exists."""
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        with self._gate.read(), self._env.begin() as txn:
            return self._summary_checked(txn, rkey, workflow_id, run_id)

    def _summary_checked(self, txn: lmdb.Transaction, rkey: bytes, wf: str, run: str) -> RunSummary | None:
        raw = txn.get(rkey, db=self._runs)
        if raw is not None:
            return self._decode_summary(wf, run, bytes(raw))
        cur = txn.cursor(db=self._journal)
        if cur.set_range(rkey) and cur.key().startswith(rkey):
            k = bytes(cur.key())
            seq = fmt.seq_of(k) if len(k) == len(rkey) + 8 else 0
            raise CorruptRecord(wf, run, seq, "the run index has no entry for this run but its journal "
                                "holds events (the index key was damaged)")
        return None

    def summaries(self) -> Iterator[RunSummary]:
        """Every readable run index entry; damaged ones are skipped (logged once
        and listed by :meth:`damaged_entries`)."""
        self._check_open()
        with self._gate.read(), self._env.begin(db=self._runs) as txn:
            rows = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        out = []
        for k, v in rows:
            try:
                wf, run = fmt.parse_run_key(k)
            except CodecError as exc:
                self._skip(k, None, None, f"damaged run index key {k.hex()}: {exc}")
                continue
            try:
                out.append(RunSummary.from_record(wf, run, v))
            except CodecError as exc:
                self._skip(k, wf, run, f"damaged run index entry of run {wf}/{run}: {exc}")
        return iter(out)

    def _skip(self, key: bytes, wf: str | None, run: str | None, what: str) -> None:
        if key not in self._damaged:
            self._damaged[key] = (wf, run, what)
            log.warning("store %s: %s; the run is left out of runs() (`atomr verify` reports every "
                        "damaged entry)", self.path, what)

    def damaged_entries(self) -> list[tuple[str | None, str | None, str]]:
        return list(self._damaged.values())

    def _journal_raw(
        self, workflow_id: str, run_id: str, from_seq: int, to_seq: int | None
    ) -> Iterator[tuple[int, bytes]]:
        """The run's raw events ``from_seq..to_seq``, checked against the run index
        (read in the same transaction): CorruptRecord unless they run gap-free
        from the first event kept to the last one committed."""
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        n = len(rkey) + 8
        out: list[tuple[int, bytes]] = []
        with self._gate.read(), self._env.begin() as txn:
            summary = self._summary_checked(txn, rkey, workflow_id, run_id)
            if summary is None:
                return iter(out)
            expect = max(from_seq, summary.first_seq, 1)
            end = summary.last_seq if to_seq is None else min(to_seq, summary.last_seq)
            if expect > end:
                return iter(out)
            cur = txn.cursor(db=self._journal)
            if cur.set_range(fmt.seq_key(rkey, expect)):
                for k, v in cur:
                    if not k.startswith(rkey):
                        break
                    if len(k) != n:
                        raise CorruptRecord(workflow_id, run_id, expect, f"the journal key after event "
                                            f"{expect - 1} is damaged ({len(k)} bytes, not {n})")
                    seq = fmt.seq_of(k)
                    if seq != expect:
                        raise CorruptRecord(workflow_id, run_id, expect, f"event {expect} is missing from "
                                            f"the journal (next is {seq}): a journal key was damaged")
                    out.append((seq, v))
                    expect += 1
                    if expect > end:
                        break
            if expect <= end:
                raise CorruptRecord(workflow_id, run_id, expect, f"the journal ends before event {expect}, "
                                    f"but the run index says it holds events up to {summary.last_seq}: "
                                    "a journal key was damaged")
        return iter(out)

    def _snapshots_raw(self, workflow_id: str, run_id: str) -> list[tuple[int, bytes]]:
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        n = len(rkey) + 8
        out: list[tuple[int, bytes]] = []
        with self._gate.read(), self._env.begin() as txn:
            summary = self._summary_checked(txn, rkey, workflow_id, run_id)
            cur = txn.cursor(db=self._snaps)
            if cur.set_range(fmt.seq_key(rkey, 0)):
                for k, v in cur:
                    if not k.startswith(rkey):
                        break
                    if len(k) != n:
                        raise CorruptRecord(workflow_id, run_id, 0, f"a snapshot key is damaged ({len(k)} "
                                            f"bytes, not {n})")
                    out.append((fmt.seq_of(k), v))
        if summary is not None and summary.snapshot_seq > 0 and summary.snapshot_seq not in {q for q, _ in out}:
            raise CorruptRecord(workflow_id, run_id, summary.snapshot_seq, f"the snapshot at event "
                                f"{summary.snapshot_seq} is missing (its key was damaged)")
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
