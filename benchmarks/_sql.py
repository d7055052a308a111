"""Shared pieces of the SQL workloads (``sql_chain``, ``sql_concurrent``, ``pg_size``).

Both engines run on the same database engine with the same durability:

* SQLite: atomr's ``SqliteStore(path, synchronous="full")`` (WAL) against
  LangGraph's ``SqliteSaver`` (WAL; ``PRAGMA synchronous=FULL`` set and checked
  on its connection), each on its own file in a fresh directory;
* Postgres: atomr's ``PostgresStore(dsn, schema=...)`` against LangGraph's
  ``PostgresSaver`` / ``AsyncPostgresSaver`` (the server's default
  ``synchronous_commit``), each in a fresh schema ``bench_<random>`` that is
  dropped (``DROP SCHEMA ... CASCADE``) after the measurement. LangGraph's
  connections get ``options=-csearch_path=<schema>`` so its ``setup()``
  creates its tables there.

The server comes from ``$ATOMR_BENCH_PG_DSN`` (else the tests'
``$ATOMR_TEST_PG_DSN``, else ``postgresql://postgres@127.0.0.1:5432/test``).
When it cannot be reached (or psycopg is not installed) the Postgres cases
are skipped with the reason, and the rest of the harness runs on.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

PG_DSN_ENV = "ATOMR_BENCH_PG_DSN"
TEST_PG_DSN_ENV = "ATOMR_TEST_PG_DSN"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 3

#: bytes of every table (with its TOAST table and indexes) in one schema
SCHEMA_BYTES_SQL = (
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')"
)
TABLE_BYTES_SQL = (
    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relkind IN ('r', 'm') ORDER BY 2 DESC"
)

_pg_probe: tuple[bool, str] | None = None

#: Called with "begin" just before and "end" just after each timed section of the SQL
#: workloads, outside the timing: :mod:`benchmarks.sql_counts` counts commits and fsyncs
#: between the two; None (the harness) does nothing.
MARK: Callable[[str], None] | None = None


def mark(which: str) -> None:
    if MARK is not None:
        MARK(which)


def pg_dsn() -> str:
    """``$ATOMR_BENCH_PG_DSN``, else the tests' ``$ATOMR_TEST_PG_DSN`` (what CI sets), else the default."""
    return os.environ.get(PG_DSN_ENV) or os.environ.get(TEST_PG_DSN_ENV) or DEFAULT_PG_DSN


def masked_dsn(dsn: str | None = None) -> str:
    """The DSN with any password replaced by ``***`` (what the JSON records)."""
    dsn = dsn or pg_dsn()
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - psycopg missing or an odd DSN: record nothing secret
        return "<unparsed>"
    if parts.get("password"):
        parts["password"] = "***"
    return " ".join(f"{k}={v}" for k, v in sorted(parts.items()))


def _where() -> str:
    """host:port/dbname of the DSN, for a short message."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        p = conninfo_to_dict(pg_dsn())
    except Exception:  # noqa: BLE001
        return "<unparsed DSN>"
    return f"{p.get('host') or 'localhost'}:{p.get('port') or 5432}/{p.get('dbname') or ''}"


def _connect(dsn: str | None = None, **kwargs: Any) -> Any:
    import psycopg

    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    return psycopg.connect(dsn or pg_dsn(), autocommit=True, **kwargs)


def pg_available() -> tuple[bool, str]:
    """Whether the benchmark Postgres server answers here (and why not); probed once."""
    global _pg_probe
    if _pg_probe is None:
        try:
            with _connect() as conn:
                conn.execute("SELECT 1").fetchone()
            _pg_probe = (True, "")
        except ImportError as e:
            _pg_probe = (False, f"psycopg is not installed ({e}); pip install 'atomr[bench]'")
        except Exception as e:  # noqa: BLE001 - any failure to connect means "skip Postgres"
            text = " ".join(str(e).split())
            _pg_probe = (False, f"no Postgres at {_where()} (set ${PG_DSN_ENV}): {type(e).__name__}: {text}")
    return _pg_probe


def lg_postgres_available() -> tuple[bool, str]:
    """Whether LangGraph's Postgres checkpointer (and psycopg_pool) import here."""
    try:
        import langgraph.checkpoint.postgres  # noqa: F401
        import langgraph.checkpoint.postgres.aio  # noqa: F401
        import psycopg_pool  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return False, f"langgraph-checkpoint-postgres not importable ({type(e).__name__}: {e})"
    return True, ""


def atomr_store_available(name: str) -> tuple[bool, str]:
    """Whether this atomr has the store class ``name`` (``SqliteStore``, ``PostgresStore``)."""
    import atomr

    if getattr(atomr, name, None) is None:
        return False, f"atomr.{name} does not exist in this atomr"
    return True, ""


def pg_server() -> dict[str, Any]:
    """The server's version and the settings that decide commit cost (recorded in the JSON)."""
    with _connect() as conn:
        out: dict[str, Any] = {"dsn": masked_dsn()}
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
                     "commit_delay", "shared_buffers", "max_connections"):
            out[name] = conn.execute(f"SHOW {name}").fetchone()[0]
        out["local"] = conn.info.host in ("127.0.0.1", "localhost", "::1") or conn.info.host.startswith("/")
    return out


def new_schema_name() -> str:
    return "bench_" + uuid.uuid4().hex[:12]


def drop_schema(schema: str) -> None:
    with _connect() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def fresh_schema(create: bool) -> Iterator[str]:
    """A new schema name (created first when ``create``), dropped with everything in it afterwards.

    atomr's PostgresStore creates its schema itself (``create=False``);
    LangGraph's tables go to a schema made here (``create=True``)."""
    schema = new_schema_name()
    if create:
        with _connect() as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        drop_schema(schema)


def schema_bytes(schema: str) -> tuple[int, dict[str, int]]:
    """(total bytes, bytes per table) of every table in ``schema``, TOAST and indexes included."""
    with _connect() as conn:
        total = int(conn.execute(SCHEMA_BYTES_SQL, (schema,)).fetchone()[0])
        tables = {name: int(size) for name, size in conn.execute(TABLE_BYTES_SQL, (schema,)).fetchall()}
    return total, tables


def pg_counters() -> dict[str, int]:
    """Server counters that show the commit cost: transactions committed in this database
    (``pg_stat_database.xact_commit``; read-only ones count too), WAL flushes (fsyncs) and
    writes (``pg_stat_wal``, cluster-wide) and the WAL position in bytes.

    Backends report their statistics when idle (at most once a second) and when
    they exit: read these after closing the connections you measure."""
    with _connect() as conn:
        xact = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
        wal_sync, wal_write = conn.execute("SELECT wal_sync, wal_write FROM pg_stat_wal").fetchone()
        lsn = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]
    return {"xact_commit": int(xact), "wal_sync": int(wal_sync), "wal_write": int(wal_write),
            "wal_bytes": int(lsn)}


# -- LangGraph's Postgres checkpointers ---------------------------------------------------------


def _lg_conn_kwargs(schema: str) -> dict[str, Any]:
    """What ``PostgresSaver.from_conn_string`` gives its connection, plus the schema."""
    from psycopg.rows import dict_row

    return {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row,
            "options": f"-csearch_path={schema}", "connect_timeout": CONNECT_TIMEOUT_S}


@contextlib.contextmanager
def lg_postgres_saver(schema: str) -> Iterator[Any]:
    """A set-up PostgresSaver on one connection whose tables live in ``schema``
    (as ``PostgresSaver.from_conn_string`` makes it)."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    with psycopg.Connection.connect(pg_dsn(), **_lg_conn_kwargs(schema)) as conn:
        saver = PostgresSaver(conn)
        saver.setup()
        yield saver


@contextlib.contextmanager
def lg_postgres_pool_saver(schema: str, size: int) -> Iterator[Any]:
    """A set-up PostgresSaver over a psycopg ConnectionPool of ``size`` connections."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg_pool import ConnectionPool

    with ConnectionPool(pg_dsn(), min_size=size, max_size=size, kwargs=_lg_conn_kwargs(schema),
                        open=True) as pool:
        saver = PostgresSaver(pool)
        saver.setup()
        yield saver


@contextlib.asynccontextmanager
async def lg_async_postgres_pool_saver(schema: str, size: int) -> AsyncIterator[Any]:
    """A set-up AsyncPostgresSaver over a psycopg AsyncConnectionPool of ``size`` connections."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(pg_dsn(), min_size=size, max_size=size, kwargs=_lg_conn_kwargs(schema),
                                   open=False) as pool:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        yield saver



# -- atomr's SQL stores ----------------------------------------------------------------------------

BACKENDS = ("sqlite", "postgres")


def skip_reason(backend: str) -> str | None:
    """Why ``backend``'s cases cannot run here (None: they can)."""
    ok, why = atomr_store_available("SqliteStore" if backend == "sqlite" else "PostgresStore")
    if not ok:
        return why
    if backend == "postgres":
        ok, why = pg_available()
        if not ok:
            return why
    return None


def lg_backend_available(backend: str) -> tuple[bool, str]:
    """Whether LangGraph's checkpointer for ``backend`` imports (SqliteSaver is checked by the harness)."""
    return (True, "") if backend == "sqlite" else lg_postgres_available()


def runnable(ctx: Any, backends: Any) -> dict[str, tuple[str, ...]]:
    """backend -> the systems that run it (a backend that cannot run here is left out)."""
    out = {}
    for backend in backends:
        if skip_reason(backend) is None:
            lg = ctx.lg and lg_backend_available(backend)[0]
            out[backend] = ("atomr", "langgraph") if lg else ("atomr",)
    return out


def samples_count(ctx: Any, backends: Any) -> int:
    return sum(ctx.reps * len(systems) for systems in runnable(ctx, backends).values())


def run_cases(ctx: Any, name: str, cases: dict[str, tuple[str, str]], atomr_fn: Callable[[str], float],
              lg_fn: Callable[[str], float], describe: Callable[[str], str], extra_notes: tuple[str, ...] = (),
              params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sample both systems on every runnable backend of ``cases`` (backend -> (what,
    target key)); a row per backend, a skipped entry (with the reason) per other one."""
    from benchmarks._common import TARGETS, make_row, sample_loop

    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    can = runnable(ctx, cases)
    for backend, (what, target_key) in cases.items():
        row_id = f"{name}.{backend}"
        if backend not in can:
            skipped.append({"id": row_id, "reason": skip_reason(backend) or "not runnable"})
            continue
        fns = {"atomr": lambda b=backend: atomr_fn(b)}
        notes = []
        if "langgraph" in can[backend]:
            fns["langgraph"] = lambda b=backend: lg_fn(b)
        elif ctx.lg:
            notes.append(lg_backend_available(backend)[1])
        notes.extend(extra_notes)
        samples = sample_loop(ctx, f"{name} {backend}", fns)
        rows.append(make_row(row_id, describe(what), "super-steps/s", "higher", samples,
                             target=TARGETS[target_key], note="; ".join(notes)))
    out: dict[str, Any] = {"params": params or {}, "rows": rows, "skipped": skipped}
    if "postgres" in can:
        out["postgres"] = pg_server()
    return out


@contextlib.contextmanager
def atomr_store(backend: str, directory: str) -> Iterator[Any]:
    """A fresh atomr store: ``SqliteStore(<directory>/atomr.sqlite, synchronous="full")``, or
    ``PostgresStore(dsn, schema="bench_<random>")`` whose schema is dropped afterwards.
    Hand it to a Runtime (which closes it); it is closed here too if that never happened."""
    if backend == "sqlite":
        from atomr import SqliteStore

        store = SqliteStore(os.path.join(directory, "atomr.sqlite"), synchronous="full")
        try:
            yield store
        finally:
            _close_quietly(store)
        return
    with atomr_pg_store() as (store, _schema):
        yield store


@contextlib.contextmanager
def atomr_pg_store() -> Iterator[tuple[Any, str]]:
    """``(PostgresStore(dsn, schema=s), s)`` for a new schema ``s``, dropped afterwards."""
    from atomr import PostgresStore

    with fresh_schema(create=False) as schema:
        store = PostgresStore(pg_dsn(), schema=schema)
        try:
            yield store, schema
        finally:
            _close_quietly(store)  # before the schema is dropped


def _close_quietly(store: Any) -> None:
    with contextlib.suppress(Exception):  # already closed by its Runtime
        store.close()


@contextlib.contextmanager
def lg_sqlite_full(directory: str) -> Iterator[Any]:
    """LangGraph's SqliteSaver (WAL, set up by ``setup()``) with ``PRAGMA synchronous=FULL``
    forced on its connection and checked."""
    from benchmarks import _lg
    from benchmarks._common import check

    saver = _lg.sqlite_saver(directory, synchronous="FULL")
    try:
        level = _lg.sqlite_synchronous(saver)
        check(level == "FULL", f"SQLite synchronous is {level}, not FULL")
        mode = saver.conn.execute("PRAGMA journal_mode").fetchone()[0]
        check(mode.lower() == "wal", f"SqliteSaver journal_mode is {mode}, not WAL")
        yield saver
    finally:
        saver.conn.close()
