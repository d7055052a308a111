"""The SQL store backends: SQLite (standard library) and Postgres (psycopg 3).

Both keep the tables of :mod:`atomr.store.sql.schema`; what they share is
written once in :mod:`atomr.store.sql.base`. Importing this package imports
no database driver but sqlite3: psycopg is imported when a PostgresStore opens.
"""

from atomr.store.sql.base import SqlStore
from atomr.store.sql.postgres import PostgresStore
from atomr.store.sql.sqlite import SqliteStore

__all__ = ["PostgresStore", "SqlStore", "SqliteStore"]
