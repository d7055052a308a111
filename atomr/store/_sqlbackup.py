"""Backing up a SQL store (``atomr backup``).

SQLite: :func:`backup_sqlite` — SQLite's online backup API
(``sqlite3.Connection.backup``) copies the database, one consistent snapshot,
into a new file while another process may be writing it (WAL: the writer is
not blocked); the copy is a self-contained file (journal mode DELETE, 0600)
and is checked (:func:`~atomr.store._sqlverify.verify_sql`) before it counts.
Restore by pointing ``--store sqlite:///<copy>`` at it.

Postgres: atomr does not copy a database server's data; :func:`pg_dump_hint`
says how to with the server's own tools (``pg_dump`` / ``pg_restore``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Any

from atomr.errors import CorruptStore, StoreError
from atomr.store._sqlverify import pg_tool_command, verify_sql
from atomr.store._verify import BackupReport

__all__ = ["backup_sqlite", "pg_dump_hint"]


def _target(dest: str) -> str:
    """The backup file a DEST names: a path or a sqlite:/// URL."""
    text = os.fspath(dest)
    if text.startswith("sqlite:"):
        rest = text[len("sqlite:"):]
        if not rest.startswith("///") or len(rest) == 3:
            raise StoreError(f"malformed SQLite URL {text!r} as the backup destination: write sqlite:///copy.db "
                             "or a plain file path")
        text = rest[3:].partition("?")[0]
    elif "://" in text:
        raise StoreError(f"an SQLite store is backed up to a new file, not to {text.split('://')[0]}://...; to move "
                         "its runs to another kind of store, use atomr copy SRC DST")
    if not text:
        raise StoreError("the backup destination is empty; pass a new file path, e.g. runs-backup.db")
    return os.path.abspath(text)


def backup_sqlite(store: Any, dest: str) -> BackupReport:
    """Copy the open SqliteStore ``store`` to the new file ``dest`` (see the module docstring)."""
    t0 = time.perf_counter()
    d = _target(dest)
    if os.path.realpath(d) == os.path.realpath(store.path):
        raise StoreError("the backup destination is the store itself; pass another file")
    if os.path.lexists(d):
        raise StoreError(f"backup destination {d!r} exists; pass a new file path (nothing is overwritten)")
    parent = os.path.dirname(d)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.close(os.open(d, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create backup file {d!r}: {exc.strerror}; pick another path") from None
    try:
        uri = "file:" + store.path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
        src = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            out = sqlite3.connect(d)
            try:
                src.backup(out)
                out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                out.close()
        finally:
            src.close()
        _check_copy(store.path, d)
    except sqlite3.Error as exc:
        _remove(d)
        raise StoreError(f"cannot back up {store.path!r} to {d!r}: {exc}; check the paths and the disk") from None
    except BaseException:
        _remove(d)
        raise
    return BackupReport(store.path, d, os.path.getsize(d), time.perf_counter() - t0)


def _check_copy(src: str, d: str) -> None:
    from atomr.store.sql.sqlite import SqliteStore

    copy = SqliteStore(d, readonly=True)
    try:
        report = verify_sql(copy, deep=False)
    finally:
        copy.close()
    if not report.structure_ok:
        raise CorruptStore(src, f"its backup copy fails the check ({report.detail}); the copy was removed")


def _remove(d: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.unlink(d + suffix)


def pg_dump_hint(dsn: str, schema: str, dest: str | None = None) -> str:
    """Why ``atomr backup`` does not copy a Postgres store, and the exact
    ``pg_dump`` / ``pg_restore`` commands that do (password-free)."""
    file = dest if dest and "://" not in dest else f"atomr-{schema}.dump"
    dump = pg_tool_command("pg_dump", dsn, f"--schema={schema}", "--format=custom", f"--file={file}")
    restore = pg_tool_command("pg_restore", dsn, file, db_flag="--dbname")
    return (f"atomr backup does not copy a Postgres store: back it up with the server's own tools: {dump} "
            f"(it asks for the password, or reads PGPASSWORD or ~/.pgpass); restore with {restore}; or copy its "
            "runs into another atomr store with atomr copy SRC DST")
