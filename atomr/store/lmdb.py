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

The class is assembled from mixins: opening checks (:mod:`._lmdb_open`), readers
(:mod:`._lmdb_read`), the writer side (:mod:`._lmdb_write`) and the run index's
order and counts (:mod:`._lmdb_index`).
"""

from __future__ import annotations

import os

import lmdb

from atomr._check import check_int
from atomr.errors import StoreClosed, StoreError
from atomr.store import format as fmt
from atomr.store._lmdb_index import _Indexing
from atomr.store._lmdb_open import _MAX_MAP, _MIN_MAP, VERIFY_AUTO_MAX_BYTES, _Gate, _Opening
from atomr.store._lmdb_read import _Reading
from atomr.store._lmdb_write import _Writing
from atomr.store._verify import (
    BackupReport,
    Damage,
    VerifyReport,
    backup_store,
    check_path,
    run_walk,
    verify_store,
)
from atomr.store.base import RunSummary, Store

__all__ = ["LmdbStore", "VerifyReport", "BackupReport", "Damage", "verify_store", "backup_store",
           "VERIFY_AUTO_MAX_BYTES"]

_GiB = 1 << 30


class LmdbStore(_Opening, _Reading, _Writing, _Indexing, Store):
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
        self._has_index = True
        self.index_reads = 0
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
            version = self._check_format()
            self._journal = self._env.open_db(fmt.DB_JOURNAL, create=create)
            self._snaps = self._env.open_db(fmt.DB_SNAPSHOTS, create=create)
            self._runs = self._env.open_db(fmt.DB_RUNS, create=create)
            self._migrate(version)
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
