"""PostgresStore: runs in a Postgres schema, on psycopg 3 (the ``postgres`` extra).

Every table of :mod:`atomr.store.sql.schema` lives in one schema (default
``atomr``), created on first use.

Connections say who they are (``application_name``, default ``atomr``):
one writer connection, used by one thread at a time (the checkpointer's
once a Runtime owns the store), and a bounded pool of reader connections
(``psycopg_pool``; at most ``pool_size``). A group commit is one statement
in autocommit (base.PG_GROUP): the journal rows, snapshots and run index rows
of many runs in one round trip. When the server ends the writer's session,
the next write connects again (see :mod:`atomr.store.sql._writes` for the
retries); a reader it ended is replaced when the pool hands it out.

Processes: any number, on any machines, open one schema for writing; each
:class:`~atomr.Runtime` is a worker (:mod:`atomr.store.sql._owners`) whose
liveness lock is a session-level advisory lock held by its writer
connection: the server releases it when that session ends, also when its
process is killed or its machine vanishes (once TCP keepalive or the server
notices). A worker id in use waits LOCK_GRACE_S for a lock whose session is
ending before :class:`~atomr.errors.WorkerIdInUse`.

A password in the DSN is never printed: ``repr()``, errors and logs show the
DSN with it masked (:func:`atomr.store.url.redact`).
"""

from __future__ import annotations

import contextlib
import re
import select
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from atomr._check import check_int, check_number
from atomr._hooks import logger
from atomr.errors import StoreError, StoreUnavailable, StoreUrlError, WorkerIdInUse
from atomr.store.sql._pgnotify import Emitter
from atomr.store.sql.base import PG_GROUP, SqlStore
from atomr.store.sql.schema import create_statements, postgres_dialect
from atomr.store.url import redact, scrub, split_schema

__all__ = ["PostgresStore", "SCHEMA_NAME"]

log = logger("atomr.store")

#: What a schema name may be: a lower-case SQL identifier (never quoted user text).
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: First key of atomr's advisory locks ("atom").
_LOCK_SPACE = 0x61746F6D
#: How long a worker id's lock held by another session is waited for (the server drops the
#: lock of a session whose process died once that backend has noticed: usually milliseconds)
LOCK_GRACE_S = 2.0


def _check_reader(conn: Any) -> None:
    """The pool's check of a reader it hands out: a connection the server ended (a
    restart, pg_terminate_backend) is replaced instead of failing the read. A
    healthy idle connection has nothing to read, so it costs no round trip; one
    the server ended has its goodbye (or EOF) waiting, and fails the check."""
    if select.select([conn.fileno()], [], [], 0)[0]:
        import psycopg_pool

        psycopg_pool.ConnectionPool.check_connection(conn)


def _import_psycopg() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise StoreError("PostgresStore needs psycopg 3 and psycopg-pool: pip install 'atomr[postgres]'") from None
    return psycopg, psycopg_pool


def check_schema(schema: object) -> str:
    """``schema`` if it is a plain lower-case identifier; StoreUrlError otherwise."""
    if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_"):
        shown = repr(schema)[:80]
        raise StoreUrlError(f"schema name {shown} is not allowed; use 1 to 63 lower-case letters, digits and "
                            "underscores, starting with a letter or underscore (and not 'pg_')")
    return schema


class PostgresStore(SqlStore):
    """Durable store in schema ``schema`` of the Postgres database at ``dsn``.

    ``dsn``: a ``postgresql://user:password@host:port/db`` URL or a libpq
    ``key=value`` string; a ``schema=NAME`` query parameter of a URL is taken
    out and used when ``schema`` is left at its default. A commit counts as
    committed when the server says so: with the server's default
    ``synchronous_commit=on`` it is flushed to the server's WAL, so it
    survives a crash of atomr's process or of the server.

    ``pool_size``: reader connections at most (plus one writer).
    ``connect_timeout``: seconds to wait for the server before
    :class:`~atomr.errors.StoreUnavailable` (a write whose connection broke
    goes on trying on new ones that long). ``readonly=True``: read an
    existing store without taking the writer's lock.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "atomr",
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        application_name: str = "atomr",
        snapshot_every: int = 50,
        readonly: bool = False,
    ) -> None:
        self._closed = True  # until fully open
        self._writer: Any = None
        self._pool: Any = None
        self._pipe: Any = None
        if not isinstance(dsn, str) or not dsn.strip():
            raise StoreUrlError(f"dsn must be a Postgres URL or key=value string, got {type(dsn).__name__}; "
                                "pass e.g. 'postgresql://user@localhost:5432/db'")
        dsn, url_schema = split_schema(dsn)
        if url_schema is not None and schema == "atomr":
            schema = url_schema
        self.schema = check_schema(schema)
        self._init_sql(postgres_dialect(self.schema))
        self._closed = True
        self._q_group = self.dialect.sql(PG_GROUP)
        self._shown = redact(dsn)
        self.path = f"{self._shown} schema {self.schema}"
        self._label = f"schema {self.schema!r} of {self._shown!r}"
        if not isinstance(readonly, bool):
            raise StoreError(f"readonly must be True or False, got {readonly!r}; pass a bool")
        if not isinstance(application_name, str) or len(application_name) > 63:
            raise StoreError("application_name must be a str of at most 63 characters")
        self.readonly = readonly
        self.snapshot_every = check_int(snapshot_every, "snapshot_every", lo=1, hi=1 << 31, error=StoreError,
                                        hint="pass e.g. 50 (super-steps between snapshots)")
        pool_size = check_int(pool_size, "pool_size", lo=1, hi=1024, error=StoreError,
                              hint="pass how many reader connections to keep at most, e.g. 4")
        self.connect_timeout = check_number(connect_timeout, "connect_timeout", lo=0.1, hi=3600, error=StoreError,
                                            hint="pass seconds, e.g. 10")
        self._lost_retry_s = self.connect_timeout  # a write waits that long for the server to come back
        psycopg, psycopg_pool = _import_psycopg()
        self._psycopg = psycopg
        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise StoreUrlError(f"malformed Postgres DSN {self._shown!r}: {scrub(str(exc), dsn)}") from None
        self._secret = str(params.get("password") or "")
        self._dsn = dsn
        self._connect_kw = {"autocommit": True, "application_name": application_name,
                            "connect_timeout": max(1, int(round(self.connect_timeout)))}
        k2 = zlib.crc32(self.schema.encode()) - (1 << 31)
        self._worker_space = zlib.crc32(b"atomr-worker:" + self.schema.encode()) - (1 << 31)
        #: the NOTIFY channel of this schema's commits and ctx.emit items (atomr._follow listens to it)
        self.channel = f"atomr_{zlib.crc32(self.schema.encode()):08x}"
        self.emitter = Emitter(self._connect, self.channel)
        try:
            first = self._connect()
            if readonly:
                try:
                    with first.cursor() as cur:
                        self._check_format(cur, write=False)
                finally:
                    first.close()
            else:
                self._writer = first
                with self._writing() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE + 1, k2))
                    cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    for stmt in create_statements(self.dialect):
                        cur.execute(stmt)
                    self._check_format(cur, write=True)
            self._pool = psycopg_pool.ConnectionPool(
                dsn, min_size=1, max_size=pool_size, kwargs=dict(self._connect_kw), configure=self._configure,
                check=_check_reader, name=f"atomr-{self.schema}", timeout=60, open=True)
        except psycopg.Error as exc:
            self._abandon()
            raise self._error(exc, "open") from None
        except BaseException:
            self._abandon()
            raise
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown!r}, schema={self.schema!r})"

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._dsn, **self._connect_kw)
        except self._psycopg.OperationalError as exc:
            err = StoreUnavailable(
                f"cannot connect to Postgres at {self._shown!r}: {self._reason(exc)}; check that the server "
                "runs and the DSN is right")
            err.unreachable = True  # type: ignore[attr-defined]
            raise err from None

    def _unreachable(self, exc: BaseException) -> bool:
        return bool(getattr(exc, "unreachable", False))

    def _reason(self, exc: BaseException) -> str:
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        return scrub(text, self._dsn, self._secret)[:400]

    def _configure(self, conn: Any) -> None:
        conn.isolation_level = self._psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True

    def _poll_connect(self) -> Any:
        return self._connect()

    def _lock_lane(self, cur: Any, lane: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._worker_key("lane:" + lane))

    def listener(self) -> Any:
        """A new connection that LISTENs to this schema's commits (its owner closes it)."""
        conn = self._connect()
        conn.execute(f'LISTEN "{self.channel}"')
        return conn

    # -- workers: liveness locks (see atomr.store.sql._owners) -----------------------------------

    def _now_sql(self) -> str:
        return "(extract(epoch from clock_timestamp()) * 1000)::bigint"

    def _worker_key(self, worker_id: str) -> tuple[int, int]:
        return (self._worker_space, zlib.crc32(worker_id.encode()) - (1 << 31))

    def _hold_worker(self, worker_id: str) -> None:
        """Win the worker's advisory lock on the writer's session, or WorkerIdInUse."""
        with self._wlock:
            self._hold_worker_on(self._writer_conn(), worker_id)

    def _drop_worker(self) -> None:
        conn = self._writer
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                # at once: ending the session drops it too, but only once the server has noticed
                conn.execute("SELECT pg_advisory_unlock_all()")

    def _worker_dead(self, cur: Any, worker_id: str) -> bool:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", self._worker_key(worker_id))
        return bool(cur.fetchone()[0])

    def _lose_writer(self, conn: Any) -> None:
        """Forget the writer connection (closed, or broken: the next write connects again)."""
        self._writer = None
        with contextlib.suppress(Exception):
            conn.close()

    def _writer_conn(self) -> Any:
        conn = self._writer
        if conn is None and not self.readonly and not self._closed:
            # the connection broke (server restart, network): a new one must hold the worker's lock again
            conn = self._connect()
            if self.worker_id is not None:
                try:
                    self._hold_worker_on(conn, self.worker_id)
                except BaseException:
                    conn.close()
                    raise
            self._writer = conn
        if conn is None:
            raise self._not_writable()
        return conn

    def _hold_worker_on(self, conn: Any, worker_id: str) -> None:
        deadline = time.monotonic() + LOCK_GRACE_S
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._worker_key(worker_id)).fetchone()
            if row[0]:
                return
            if time.monotonic() >= deadline:
                raise WorkerIdInUse(worker_id, self._label)
            time.sleep(0.02)

    @contextlib.contextmanager
    def _writing(self, pipeline: bool = False, durable: bool = True) -> Iterator[Any]:
        conn = self._writer_conn()
        try:
            with (conn.pipeline() if pipeline else contextlib.nullcontext()) as self._pipe, conn.transaction():
                cur = conn.cursor()
                if not durable:  # flushed by the next durable commit, whose WAL comes after it
                    cur.execute("SET LOCAL synchronous_commit TO OFF")
                yield cur
        except self._psycopg.OperationalError as exc:
            if self._dead(conn, exc):
                self._lose_writer(conn)
            raise

    def _dead(self, conn: Any, exc: BaseException) -> bool:
        """True when the writer connection is of no more use (the server went away or
        ended the session): the next write connects again and wins the lock again."""
        return bool(conn.broken or conn.closed or isinstance(self._error(exc, "write"), StoreUnavailable))

    @contextlib.contextmanager
    def _reading(self, consistent: bool = True) -> Iterator[Any]:
        pool = self._pool
        if pool is None:  # still opening
            conn = self._connect()
            try:
                yield conn.cursor()
            finally:
                conn.close()
            return
        try:
            with pool.connection() as conn:
                if consistent:
                    with conn.transaction():
                        yield conn.cursor(binary=True)
                else:
                    yield conn.cursor(binary=True)
        except self._psycopg.Error as exc:
            raise self._error(exc, "read") from None

    def _check_tables(self, cur: Any) -> None:
        cur.execute("SELECT to_regclass(%s)", (f'"{self.schema}".meta',))
        if cur.fetchone()[0] is None:
            raise StoreError(f"no atomr store in schema {self.schema!r} of {self._shown!r}; check the schema "
                             "name (a read-only open creates nothing)")

    # -- errors ----------------------------------------------------------------------------------

    def _commit_group(self, stage: Callable[[Callable[[tuple[str, str]], Any]], Any]) -> None:
        """One group commit as ONE statement in autocommit: one round trip, one
        transaction. Its data-modifying CTEs append the journal rows, put the
        snapshots, insert new runs' index rows and update the others where
        ``last_seq`` is still what this store last wrote; when an update matches
        fewer rows than it should, ``1 / 0`` fails the statement, so nothing of
        it is stored (reported as "index row changed")."""
        conn = self._writer_conn()
        try:
            g = stage(lambda key: self._summary_in(conn.cursor(), key), lambda key: self._owner_in(conn.cursor(), key))
            conn.execute(self._q_group, g.pg_params(self.count_writer, self.channel), prepare=True)
        except self._psycopg.errors.DivisionByZero:
            raise StoreError("a run's index row changed under this store (another writer?); the group was "
                             "refused and nothing of it was stored") from None
        except self._psycopg.OperationalError as exc:
            if self._dead(conn, exc):
                self._lose_writer(conn)
            raise

    def _count(self, cur: Any) -> int:
        if self._pipe is not None:
            self._pipe.sync()  # a pipelined statement's row count is known once its results are in
        return int(cur.rowcount)

    def _is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.errors.UniqueViolation)

    def _error(self, exc: BaseException, what: str) -> BaseException:
        state = getattr(exc, "sqlstate", None) or ""  # a lost connection: none, 08xxx or 57Pxx
        if isinstance(exc, self._psycopg.OperationalError) and (not state or state[:2] == "08" or state[:3] == "57P"):
            return StoreUnavailable(f"lost the connection to Postgres at {self._shown!r} during a {what}: "
                                    f"{self._reason(exc)}")
        return StoreError(f"Postgres refused a {what} of {self!r}: {self._reason(exc)}")

    def _write_error(self, exc: BaseException, new_run: str | None) -> BaseException:
        if isinstance(exc, self._psycopg.errors.DiskFull):
            return StoreError(f"the Postgres server of {self._shown!r} is out of disk; free space, then call "
                              "rt.recover() to carry the runs on: nothing committed was lost")
        err = self._error(exc, "write")
        return type(err)(f"{err}; nothing of the write was stored")

    # -- size, close ------------------------------------------------------------------------------

    def stored_bytes(self) -> int:
        """Bytes the schema's tables take in the database (with indexes and TOAST)."""
        self._check_open()
        with self._reading(consistent=False) as cur:
            cur.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                        (self.schema,))
            return int(cur.fetchone()[0])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._abandon()

    def _abandon(self) -> None:
        with self._wlock if hasattr(self, "_wlock") else contextlib.nullcontext():
            if self._writer is not None:
                self._drop_worker()
                self._lose_writer(self._writer)
        if getattr(self, "emitter", None) is not None:
            self.emitter.close()
            self._close_polling()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close(timeout=5)
            self._pool = None
