"""SqliteStore: runs in one SQLite database file (the standard library's sqlite3).

The tables are those of :mod:`atomr.store.sql.schema` (prefixed ``atomr_``),
so the file may be one the application already keeps other tables in.

Threads: one writer connection, used by one thread at a time (the
checkpointer's once a Runtime owns the store); readers take a connection of
a small pool, each in its own read transaction (WAL: readers never wait for
the writer, nor the writer for them).

Processes: any number on one machine open the file for writing; each
:class:`~atomr.Runtime` is a worker (:mod:`atomr.store.sql._owners`) whose
liveness lock is an ``flock`` on ``<path>-atomr-worker-<hash>.lock`` (the
kernel drops it when the process dies). SQLite lets one write transaction
in at a time: the others wait (``busy_timeout``, 10 s). A process stopped
*inside* a write transaction (SIGSTOP) holds the file for every worker.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from atomr._check import check_int
from atomr.errors import CorruptStore, StoreError, StoreFull, WorkerIdInUse
from atomr.store.sql.base import SqlStore
from atomr.store.sql.schema import SQLITE, create_statements

__all__ = ["SqliteStore", "SYNCHRONOUS"]

#: synchronous= values and the PRAGMA each sets.
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}

_BUSY_MS = 10_000
#: how a damaged SQLite store is restored (CorruptStore's advice)
_RESTORE = "made with `atomr backup`, SQLite's online backup; or `sqlite3 FILE .recover` to salvage it"


def _same_file(fd: int, path: str) -> bool:
    """``fd`` is the file ``path`` names now (not one unlinked or replaced since it was opened)."""
    try:
        st, own = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

class SqliteStore(SqlStore):
    """Durable store in the SQLite database file ``path`` (created if missing),
    in WAL mode.

    ``synchronous`` — when a commit counts as committed, in SQLite's terms:

    * ``"full"`` (default): ``PRAGMA synchronous=FULL``: the WAL is fsynced at
      every commit, so a committed transaction survives a power loss or an
      operating system crash, as well as a crash of the process.
    * ``"normal"``: ``PRAGMA synchronous=NORMAL``: the WAL is fsynced only at
      checkpoints. A committed transaction survives a crash of the process
      (``kill -9``): it is in the operating system's cache. A power loss or an
      OS crash may roll back the last commits (never corrupt the database).

    ``max_size``: the most bytes the database may grow to (None: no limit but
    the disk's); past it a write is refused with
    :class:`~atomr.errors.StoreFull` and nothing of it is stored.
    ``snapshot_every``: snapshot a run every N super-steps (and at pauses and
    ends). ``readonly=True``: open an existing store for reading only,
    without the writer's lock (``atomr show`` while another process runs it).
    ``readers``: how many reader connections the pool keeps at most.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        max_size: int | None = None,
        snapshot_every: int = 50,
        readonly: bool = False,
        readers: int = 8,
    ) -> None:
        self._init_sql(SQLITE)
        self._closed = True  # until fully open
        if not isinstance(synchronous, str) or synchronous not in SYNCHRONOUS:
            raise StoreError(f"synchronous must be 'full' or 'normal', got {synchronous!r}; pass one of those")
        if not isinstance(readonly, bool):
            raise StoreError(f"readonly must be True or False, got {readonly!r}; pass a bool")
        self.snapshot_every = check_int(snapshot_every, "snapshot_every", lo=1, hi=1 << 31, error=StoreError,
                                        hint="pass e.g. 50 (super-steps between snapshots)")
        self._readers_max = check_int(readers, "readers", lo=1, hi=1024, error=StoreError,
                                      hint="pass how many reader connections to keep, e.g. 8")
        if max_size is not None:
            max_size = check_int(max_size, "max_size", lo=1 << 16, hi=1 << 50, error=StoreError,
                                 hint="pass a size in bytes, e.g. 1 << 30 (1 GiB), or None for no limit")
        if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
            raise StoreError(f"path must be a file path, got {path!r}; pass e.g. 'runs.db'")
        if "\x00" in str(os.fspath(path)):
            raise StoreError(f"store path {str(os.fspath(path))!r} holds a NUL character; pass a path without one")
        self.path = os.path.abspath(os.fspath(path))
        if os.path.isdir(self.path):
            raise StoreError(f"store path {self.path!r} is a directory, not a file; pass a file path, e.g. "
                             f"{os.path.join(self.path, 'runs.db')!r}")
        self._label = f"store {self.path!r}"
        self.synchronous = synchronous
        self.max_size = max_size
        self.readonly = readonly
        self._lock_fd = -1
        self._lock_path = ""
        self._turn_fd = -1  # <path>-atomr-write.lock: the writers' turns (see _writing)
        self._writer: sqlite3.Connection | None = None
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._made = 0
        self._pool_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._cursors: dict[sqlite3.Connection, sqlite3.Cursor] = {}
        self._side: sqlite3.Cursor | None = None
        try:
            if readonly:
                if not os.path.isfile(self.path):
                    raise StoreError(f"no atomr store at {self.path!r}; check the path (a read-only open "
                                     "creates nothing)")
                with self._reading() as cur:
                    self._check_format(cur, write=False)
            else:
                self._open_writer()
        except sqlite3.Error as exc:
            self._abandon()
            raise self._db_error(exc, "opening") from None
        except OSError as exc:  # its directory, its file or its lock file cannot be made
            self._abandon()
            raise StoreError(f"cannot create SQLite store {self.path!r}: {exc.strerror or exc}; pass a path "
                             "you may create files at, or check its permissions") from None
        except BaseException:
            self._abandon()
            raise
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # -- opening ---------------------------------------------------------------------------

    def _open_writer(self) -> None:
        parent = os.path.dirname(self.path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        if not os.path.exists(self.path):  # created 0600; SQLite gives -wal and -shm the same mode
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._turn_fd = os.open(self.path + "-atomr-write.lock", os.O_RDWR | os.O_CREAT, 0o600)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_MS / 1000)
        self._writer = conn
        self._all.append(conn)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot put SQLite store {self.path!r} in WAL mode (it stays {mode!r}); "
                             "use a local file system")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.synchronous]}")
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        if self.max_size is not None:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(1, self.max_size // page)}")
        with self._writing() as cur:
            for stmt in create_statements(SQLITE):
                cur.execute(stmt)
            self._check_format(cur, write=True)

    def _check_tables(self, cur: Any) -> None:
        cur.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'atomr_meta'")
        if not cur.fetchone()[0]:
            raise StoreError(f"{self.path!r} is an SQLite database without atomr's tables; open it "
                             "for writing once to create them, or check the path")

    # -- workers: liveness locks (see atomr.store.sql._owners) -----------------------------------

    def _now_sql(self) -> str:
        # the clock of the machine all of an SQLite store's workers run on
        return "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

    def _poll_connect(self) -> Any:
        return self._new_reader()

    def _worker_lock_path(self, worker_id: str) -> str:
        return f"{self.path}-atomr-worker-{hashlib.sha1(worker_id.encode()).hexdigest()[:16]}.lock"

    def _hold_worker(self, worker_id: str) -> None:
        path = self._worker_lock_path(worker_id)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise WorkerIdInUse(worker_id, self.path) from None
                raise
            # a reaper may have found the file unlocked between our open and our lock, and
            # unlinked it: a lock on a file nobody can find says "dead" to every checker
            if _same_file(fd, path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {worker_id}".encode(), 0)
        self._lock_fd = fd
        self._lock_path = path

    def _drop_worker(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)  # still holding it: a checker finds the file gone (dead)
            try:
                os.close(self._lock_fd)
            finally:
                self._lock_fd = -1

    def _worker_dead(self, cur: Any, worker_id: str) -> bool:
        path = self._worker_lock_path(worker_id)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # held: its process lives
            with contextlib.suppress(OSError):
                os.unlink(path)  # holding it: a worker of that id starting now makes a new one
            return True
        finally:
            os.close(fd)

    # -- connections ---------------------------------------------------------------------------

    def _new_reader(self) -> sqlite3.Connection:
        if self.readonly:
            uri = "file:" + self.path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=_BUSY_MS / 1000)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=_BUSY_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        return conn

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            with self._pool_lock:
                grow = self._made < self._readers_max
                if grow:
                    self._made += 1
            if grow:
                try:
                    conn = self._new_reader()
                except BaseException:
                    with self._pool_lock:
                        self._made -= 1
                    raise
                with self._pool_lock:
                    self._all.append(conn)
            else:
                try:
                    conn = self._pool.get(timeout=60)
                except queue.Empty:
                    raise StoreError(f"no reader connection of {self!r} came free in 60 s; pass "
                                     "readers= a larger pool") from None
        try:
            yield conn
        finally:
            if self._closed:
                conn.close()
            else:
                self._pool.put(conn)

    @contextlib.contextmanager
    def _reading(self, consistent: bool = True) -> Iterator[Any]:
        try:
            with self._reader() as conn:
                # one cursor per connection, reused: sqlite3 keeps a weak reference to every
                # cursor a connection made and drops the dead ones only every 200 cursors
                cur = self._cursors.get(conn)
                if cur is None:
                    cur = self._cursors[conn] = conn.cursor()
                if not consistent:
                    yield cur
                    return
                cur.execute("BEGIN")
                try:
                    yield cur
                finally:
                    cur.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._db_error(exc, "reading") from None

    def _db_error(self, exc: sqlite3.Error, what: str) -> StoreError:
        """A named error for an SQLite error of an open or a read."""
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_CORRUPT:
            return CorruptStore(self.path, f"SQLite reports {exc} while {what} it", restore=_RESTORE)
        if code == sqlite3.SQLITE_NOTADB:
            return StoreError(f"{self.path!r} is not an SQLite database ({exc}); check the path")
        if what == "opening":
            return StoreError(f"cannot open SQLite store {self.path!r}: {exc}; check the path and its permissions")
        return StoreError(f"{what} SQLite store {self.path!r} failed ({exc}); check the file and its disk")

    @contextlib.contextmanager
    def _writing(self, pipeline: bool = False, durable: bool = True) -> Iterator[Any]:
        conn = self._writer
        if conn is None:
            raise self._not_writable()
        cur = self._cursors.get(conn)
        if cur is None:
            cur = self._cursors[conn] = conn.cursor()
        # processes take turns on a kernel lock: a waiter wakes the moment the writer is done,
        # where SQLite's busy handler would sleep and retry (1, 2, 5, 10... ms)
        fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
        relaxed = not durable and self.synchronous == "full"
        try:
            if relaxed:  # fsynced by the next durable commit, which writes the WAL after it
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        finally:
            if relaxed:
                cur.execute("PRAGMA synchronous=FULL")
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def _side_cursor(self, cur: Any) -> Any:
        if self._side is None or self._side.connection is not cur.connection:
            self._side = cur.connection.cursor()  # the writer's second cursor, reused (see _reading)
        return self._side

    def _is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def _write_error(self, exc: BaseException, new_run: str | None) -> BaseException:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL and self.max_size is not None:
            return StoreFull(self.max_size, self.path, new_run, limit="size limit", option="max_size", more="")
        if code == sqlite3.SQLITE_FULL:
            return StoreError(f"the disk holding {self.path!r} is full; free space, then call rt.recover() "
                              "to carry the runs on: nothing committed was lost")
        if code == sqlite3.SQLITE_CORRUPT:
            return CorruptStore(self.path, f"SQLite reports {exc} while writing it (nothing of the write was stored)",
                                restore=_RESTORE)
        return StoreError(f"the write to SQLite store {self.path!r} failed ({exc}); nothing of it was stored")

    # -- size, verify, backup, close ---------------------------------------------------------

    def stored_bytes(self) -> int:
        """Bytes of the database file in use (pages times page size), without the WAL."""
        self._check_open()
        with self._reading(consistent=False) as cur:
            pages = cur.execute("PRAGMA page_count").fetchone()[0]
            free = cur.execute("PRAGMA freelist_count").fetchone()[0]
            size = cur.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._abandon()

    def _abandon(self) -> None:
        with self._wlock:
            if self._writer is not None:
                try:
                    self._writer.close()
                except sqlite3.Error:
                    pass
                self._writer = None
        with self._pool_lock:
            conns, self._all = self._all, []
            self._cursors.clear()
            self._side = None
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._drop_worker()
        self._close_polling()
        if self._turn_fd >= 0:
            os.close(self._turn_fd)
            self._turn_fd = -1
