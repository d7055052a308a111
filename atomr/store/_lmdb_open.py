"""Opening an LMDB store safely: the directory, the lock, the size checks, the format.

Part of :class:`~atomr.store.lmdb.LmdbStore` (a mixin); see that module for
what is checked on open and why.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import lmdb

from atomr._hooks import logger
from atomr.errors import CorruptStore, FormatVersionError, StoreError, StoreLocked
from atomr.store import format as fmt
from atomr.store._verify import run_walk
from atomr.store.base import now_ms

__all__ = ["VERIFY_AUTO_MAX_BYTES", "_Gate", "_Opening"]

log = logger("atomr.store")

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


class _Opening:
    """The open-time checks of :class:`~atomr.store.lmdb.LmdbStore`."""

    _env: lmdb.Environment
    _meta: Any
    _key: tuple[int, int] | None
    _lock_fd: int
    path: str
    readonly: bool

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

    def _check_format(self) -> int | None:
        """The store's format version (None: a new store, now created at the current one)."""
        with self._env.begin(write=not self.readonly) as txn:
            raw = txn.get(b"format_version", db=self._meta)
            if raw is None and self.readonly:
                return None
            if raw is None:
                txn.put(b"format_version", fmt.u32(fmt.FORMAT_VERSION), db=self._meta)
                txn.put(b"created_ms", fmt.u64(now_ms()), db=self._meta)
                return None
            version = fmt.read_u32(raw)
        if version > fmt.FORMAT_VERSION:
            raise FormatVersionError(
                f"store {self.path!r} was written by a newer atomr (format {version}; this "
                f"atomr reads up to {fmt.FORMAT_VERSION}); upgrade atomr to open it"
            )
        return version

    def _migrate(self, version: int | None) -> None:
        """Bring a store made before the run index's order to format 3 (one write
        transaction); read-only, such a store is read by scans."""
        self._has_index = version is None or version >= fmt.INDEX_FORMAT
        if self._has_index or self.readonly:
            return
        with self._env.begin(write=True) as txn:
            n = self._index_build(txn)  # type: ignore[attr-defined]
            txn.put(b"format_version", fmt.u32(fmt.INDEX_FORMAT), db=self._meta)
        log.info("store %s: migrated from format %d to %d (indexed %d runs)", self.path, version,
                 fmt.INDEX_FORMAT, n)
        self._has_index = True
