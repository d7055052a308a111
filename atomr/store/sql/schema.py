"""The SQL stores' format, defined once: tables, indexes, the format row, migrations.

SQLite and Postgres hold the same tables and the same record bytes as the
LMDB store (framed msgpack, see :mod:`atomr.store.format`); only the run
index is spread into columns, so that a user can read it with the
database's own tools. Each dialect gives a table prefix (SQLite:
``atomr_``; Postgres: ``"<schema>".``) and its blob and integer types::

    table       columns (primary key first)                     holds
    ----------  ----------------------------------------------  ---------------------------------
    meta        key TEXT | value TEXT                           'format_version' (SQL_FORMAT_VERSION),
                                                                'created_ms', 'store_id'
    runs        workflow_id, run_id TEXT | status TEXT,         the run index: one row per run
                super_step, first_seq, last_seq, snapshot_seq,  (meta: framed msgpack of the run's
                created_ms, updated_ms BIGINT | meta BLOB |     meta dict); owner: the worker
                owner TEXT NULL | epoch BIGINT |                executing it (NULL: nobody, e.g.
                cancel TEXT NULL                                paused, or started by a client);
                                                                epoch: bumped by every claim (fencing);
                                                                cancel: a cancel asked of its owner
    workers     worker_id TEXT | host TEXT, pid, started_ms,    the live workers: heartbeat and
                heartbeat_ms, lease_ms BIGINT                   lease by the database's clock
    slots       lane, worker_id TEXT, token BIGINT |            executions holding a slot of a step
                                                                limit with scope="global"
    lanes       lane TEXT | next_ms BIGINT                      the earliest next start of such a
                                                                limit's per_second (database clock)
    journal     workflow_id, run_id TEXT, seq BIGINT |          the events, gap-free from first_seq
                record BLOB                                     to last_seq (record: framed event)
    snapshots   workflow_id, run_id TEXT, seq BIGINT |          folded run state after event seq
                record BLOB
    schedules   schedule_id TEXT | record BLOB                  one schedule (framed, as in LMDB)
    run_counts  writer, status TEXT | n BIGINT                  runs by status, as changes: each
                                                                writer adds to its own rows in the
                                                                transaction that changes a status
                                                                (no two writers queue on one row);
                                                                the count is the sum over writers

    indexes:    runs (created_ms, workflow_id, run_id), runs (status, created_ms, workflow_id, run_id),
                runs (workflow_id, created_ms, run_id), runs (workflow_id, status, created_ms, run_id):
                a page of runs newest first, filtered or not, is one index range (Postgres: ids
                in the "C" collation, so that they sort as bytes as in the other backends)

Ids are stored as text. Postgres text cannot hold a NUL character, so an id
containing one (or starting with U+0001, the escape mark) is stored as
U+0001 + base64url of its UTF-8 bytes (:func:`escape_id`); every other id is
stored as it is, so ``SELECT * FROM atomr.runs WHERE run_id = 'order-7'``
works. SQLite text holds NUL, so its ids are never escaped.

Format versions (``SQL_FORMAT_VERSION``): 1 — the tables above without
``workers``, ``slots``, ``lanes`` and the runs' ``owner``, ``epoch`` and ``cancel``; 2 — with them
(workers: :mod:`atomr.store.sql._owners`), indexes runs (status, created_ms) and runs (created_ms);
3 — ``run_counts`` and the four paging indexes instead of those two. A store at an
older version is migrated on open, in one transaction, by the statements in
:data:`MIGRATIONS`; a newer one is refused with
:class:`~atomr.errors.FormatVersionError`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

__all__ = [
    "SQL_FORMAT_VERSION",
    "TABLES",
    "MIGRATIONS",
    "FOLD_COUNTS",
    "Dialect",
    "SQLITE",
    "postgres_dialect",
    "create_statements",
    "escape_id",
    "unescape_id",
]

SQL_FORMAT_VERSION = 3

#: Table names (before the dialect's prefix), in the order they are created.
TABLES = ("meta", "runs", "journal", "snapshots", "schedules", "workers", "slots", "lanes", "run_counts")

#: version -> statements that bring a store from that version to the next one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE {t}runs ADD COLUMN owner TEXT",
        "ALTER TABLE {t}runs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE {t}runs ADD COLUMN cancel TEXT"),
    # the tables and indexes of format 3 exist (made IF NOT EXISTS on open); count the runs
    2: ("DROP INDEX IF EXISTS {t}runs_status",
        "DROP INDEX IF EXISTS {t}runs_created",
        "DELETE FROM {t}run_counts",
        "INSERT INTO {t}run_counts (writer, status, n) SELECT '', status, count(*) FROM {t}runs GROUP BY status"),
}


#: Run at an open for writing when run_counts holds many rows (SqlStore.fold_counts_at): fold every
#: writer's rows into one per status (writer '') so that they do not pile up over processes. Postgres: one statement (a writer's concurrent
#: change is either folded or lands in a new row of its own); SQLite: its one writer at a time.
FOLD_COUNTS: dict[str, tuple[str, ...]] = {
    "postgres": ("WITH d AS (DELETE FROM {t}run_counts WHERE writer <> '' RETURNING status, n) "
                 "INSERT INTO {t}run_counts AS c (writer, status, n) SELECT '', status, sum(n) FROM d "
                 "GROUP BY status ON CONFLICT (writer, status) DO UPDATE SET n = c.n + excluded.n",),
    "sqlite": ("INSERT INTO {t}run_counts AS c (writer, status, n) SELECT '', status, sum(n) FROM {t}run_counts "
               "WHERE writer <> '' GROUP BY status ON CONFLICT (writer, status) DO UPDATE SET n = c.n + excluded.n",
               "DELETE FROM {t}run_counts WHERE writer <> ''"),
}


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL databases: names, types, placeholders."""

    name: str
    prefix: str           # prepended to every table name
    blob: str             # the binary type
    bigint: str
    param: str            # the placeholder of one parameter
    without_rowid: str    # table option for clustered primary keys ("" where unsupported)
    escape_ids: bool      # text cannot hold NUL: escape such ids
    collate: str = ""     # appended to an id column to compare ids as bytes

    def t(self, table: str) -> str:
        return self.prefix + table

    def sql(self, statement: str) -> str:
        """A statement written with ``?`` placeholders and ``{t}`` table prefixes."""
        return statement.replace("{t}", self.prefix).replace("?", self.param)


SQLITE = Dialect("sqlite", "atomr_", "BLOB", "INTEGER", "?", " WITHOUT ROWID", False)


def postgres_dialect(schema: str) -> Dialect:
    """The Postgres dialect for tables in ``schema`` (a checked identifier)."""
    return Dialect("postgres", f'"{schema}".', "BYTEA", "BIGINT", "%s", "", True, ' COLLATE "C"')


def create_statements(d: Dialect) -> list[str]:
    """CREATE statements of the current format (idempotent: IF NOT EXISTS)."""
    b, i, w, c = d.blob, d.bigint, d.without_rowid, d.collate
    p = "" if d.name == "postgres" else "atomr_"  # an index lives in its table's schema
    return [
        f"CREATE TABLE IF NOT EXISTS {d.t('meta')} (key TEXT PRIMARY KEY, value TEXT NOT NULL){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('runs')} ("
        f"workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, status TEXT NOT NULL, "
        f"super_step {i} NOT NULL, first_seq {i} NOT NULL, last_seq {i} NOT NULL, "
        f"snapshot_seq {i} NOT NULL, created_ms {i} NOT NULL, updated_ms {i} NOT NULL, "
        f"meta {b} NOT NULL, owner TEXT, epoch {i} NOT NULL DEFAULT 0, cancel TEXT, "
        f"PRIMARY KEY (workflow_id, run_id)){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('journal')} ("
        f"workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, seq {i} NOT NULL, record {b} NOT NULL, "
        f"PRIMARY KEY (workflow_id, run_id, seq)){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('snapshots')} ("
        f"workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, seq {i} NOT NULL, record {b} NOT NULL, "
        f"PRIMARY KEY (workflow_id, run_id, seq)){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('schedules')} (schedule_id TEXT PRIMARY KEY, record {b} NOT NULL){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('workers')} (worker_id TEXT PRIMARY KEY, host TEXT NOT NULL, "
        f"pid {i} NOT NULL, started_ms {i} NOT NULL, heartbeat_ms {i} NOT NULL, lease_ms {i} NOT NULL){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('slots')} (lane TEXT NOT NULL, worker_id TEXT NOT NULL, "
        f"token {i} NOT NULL, PRIMARY KEY (lane, worker_id, token)){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('lanes')} (lane TEXT PRIMARY KEY, next_ms {i} NOT NULL){w}",
        f"CREATE TABLE IF NOT EXISTS {d.t('run_counts')} (writer TEXT NOT NULL, status TEXT NOT NULL, "
        f"n {i} NOT NULL, PRIMARY KEY (writer, status)){w}",
        f"CREATE INDEX IF NOT EXISTS {p}runs_page ON {d.t('runs')} (created_ms, workflow_id{c}, run_id{c})",
        f"CREATE INDEX IF NOT EXISTS {p}runs_status_page ON {d.t('runs')} "
        f"(status, created_ms, workflow_id{c}, run_id{c})",
        f"CREATE INDEX IF NOT EXISTS {p}runs_wf_page ON {d.t('runs')} (workflow_id{c}, created_ms, run_id{c})",
        f"CREATE INDEX IF NOT EXISTS {p}runs_wf_status_page ON {d.t('runs')} "
        f"(workflow_id{c}, status, created_ms, run_id{c})",
    ]


_MARK = "\x01"


def escape_id(text: str) -> str:
    """An id as Postgres text can hold it (see the module docstring)."""
    if "\x00" in text or text.startswith(_MARK):
        return _MARK + base64.urlsafe_b64encode(text.encode()).decode()
    return text


def unescape_id(text: str) -> str:
    """Inverse of :func:`escape_id`."""
    if text.startswith(_MARK):
        return base64.urlsafe_b64decode(text[1:].encode()).decode()
    return text
