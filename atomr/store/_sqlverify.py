"""Checking a SQL store (``atomr verify`` on SQLite or Postgres): :func:`verify_sql`.

Two kinds of check, as for LMDB (:mod:`atomr.store._verify`):

* physical — SQLite: ``PRAGMA integrity_check`` (``quick_check`` with
  ``deep=False``): every page, every index against its table. Postgres: the
  server's business (``pg_amcheck``); the report says so and gives the command.
* logical — in one read transaction (one snapshot, safe while a process runs
  the store): every run index row decodes; each run's journal runs gap-free
  from its ``first_seq`` to its ``last_seq``; the snapshot at
  ``snapshot_seq`` is there; no journal or snapshot rows belong to a run the
  index does not list; every schedule record decodes. With ``deep`` every
  record's checksum is checked and it is decoded (a record naming a user type
  this process has not registered is sound: it is not reported).

Damage is reported per run with :class:`~atomr.store._verify.Damage`, as the
LMDB report does; reading a damaged run raises CorruptRecord, the others are fine.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from atomr.errors import CodecError, CorruptStore
from atomr.store import format as fmt
from atomr.store._verify import Damage, VerifyReport
from atomr.store.schedules import ScheduleRecord

__all__ = ["verify_sql", "verify_sqlite_file", "pg_tool_command"]

_MAX_PROBLEMS = 1000
_COLS = "workflow_id, run_id, status, super_step, last_seq, first_seq, snapshot_seq, created_ms, updated_ms, meta"


def pg_tool_command(tool: str, dsn: str, *options: str, db_flag: str | None = None) -> str:
    """A shell command line running the Postgres client ``tool`` on the server
    and database of ``dsn``: ``-h``/``-p``/``-U`` from the DSN, never its
    password (the tool asks for it, or reads PGPASSWORD or ~/.pgpass), then
    ``options``, then the database (as the last word, or ``db_flag=NAME`` first)."""
    import shlex

    try:
        from psycopg.conninfo import conninfo_to_dict

        params: dict[str, Any] = dict(conninfo_to_dict(dsn))
    except Exception:  # noqa: BLE001 - no psycopg or an odd DSN: the command without connection options
        params = {}
    words = [tool]
    for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
        if params.get(key):
            words += [flag, str(params[key])]
    db = str(params.get("dbname") or "")
    if db and db_flag:
        words.append(f"{db_flag}={db}")
    words += options
    if db and not db_flag:
        words.append(db)
    return shlex.join(words)


class _Walk:
    def __init__(self, store: Any, deep: bool) -> None:
        self.store = store
        self.deep = deep
        self.q = store.dialect.sql
        self.problems: list[Damage] = []
        self.more = 0
        self.counts = {"runs": 0, "journal": 0, "snapshots": 0, "schedules": 0}

    def problem(self, db: str, what: str, wf: str | None = None, run: str | None = None,
                seq: int | None = None, key: bytes = b"") -> None:
        if len(self.problems) >= _MAX_PROBLEMS:
            self.more += 1
        else:
            self.problems.append(Damage(db, what, wf, run, seq, key.hex()))

    def record_ok(self, db: str, wf: str, run: str, seq: int, rec: Any) -> None:
        if not self.deep:
            return
        try:
            if db == "journal":
                fmt.decode_event(bytes(rec))
            else:
                fmt.decode_obj(bytes(rec))
        except fmt.SOUND:
            pass  # a sound record naming a type this process has not registered, or reads otherwise now
        except CodecError as exc:
            self.problem(db, f"damaged record: {exc}", wf, run, seq)

    def walk(self, cur: Any) -> None:
        cur.execute(self.q(f"SELECT {_COLS} FROM {{t}}runs"))
        rows = cur.fetchall()
        self.counts["runs"] = len(rows)
        for row in rows:
            try:
                wf, run = self.store._dec(row[0]), self.store._dec(row[1])
            except Exception as exc:  # noqa: BLE001 - a damaged escaped id
                self.problem("runs", f"damaged run index ids {row[0]!r}/{row[1]!r}: {exc}")
                continue
            try:
                s = self.store._row_summary(wf, run, row[2:])
            except fmt.SOUND:
                continue  # sound: its meta holds a type this process's classes cannot read
            except CodecError as exc:
                self.problem("runs", f"damaged run index entry: {exc}", wf, run)
                continue
            if s.first_seq < 1 or s.last_seq < s.first_seq - 1 or s.snapshot_seq > s.last_seq:
                self.problem("runs", f"run index entry has inconsistent sequence numbers (first {s.first_seq}, "
                             f"last {s.last_seq}, snapshot {s.snapshot_seq})", wf, run)
                continue
            self.run(cur, row[0], row[1], s)
        for table in ("journal", "snapshots"):
            cur.execute(self.q(f"SELECT DISTINCT workflow_id, run_id FROM {{t}}{table} x WHERE NOT EXISTS "
                               "(SELECT 1 FROM {t}runs r WHERE r.workflow_id = x.workflow_id "
                               "AND r.run_id = x.run_id)"))
            for w, r in cur.fetchall():
                self.problem(table, f"{table} rows of a run the run index does not list", str(w), str(r))
        self.schedules(cur)

    def run(self, cur: Any, w: Any, r: Any, s: Any) -> None:
        wf, run = s.workflow_id, s.run_id
        cols = "seq, record" if self.deep else "seq"
        cur.execute(self.q(f"SELECT {cols} FROM {{t}}journal WHERE workflow_id = ? AND run_id = ? ORDER BY seq"),
                    (w, r))
        expect = s.first_seq
        outside = []
        for row in cur.fetchall():
            self.counts["journal"] += 1
            seq = int(row[0])
            if seq < s.first_seq or seq > s.last_seq:
                outside.append(seq)
                continue
            if seq > expect:
                self.problem("journal", f"events {expect}..{seq - 1} are missing", wf, run, expect)
            expect = seq + 1
            if self.deep:
                self.record_ok("journal", wf, run, seq, row[1])
        if expect <= s.last_seq:
            self.problem("journal", f"events {expect}..{s.last_seq} are missing (the journal ends at "
                         f"{expect - 1}, the run index says {s.last_seq})", wf, run, expect)
        if outside:
            self.problem("journal", f"{len(outside)} events outside {s.first_seq}..{s.last_seq}, the range the "
                         f"run index gives (first: {outside[0]})", wf, run, outside[0])
        cur.execute(self.q(f"SELECT {cols} FROM {{t}}snapshots WHERE workflow_id = ? AND run_id = ? ORDER BY seq"),
                    (w, r))
        seen = set()
        for row in cur.fetchall():
            self.counts["snapshots"] += 1
            seen.add(int(row[0]))
            if self.deep:
                self.record_ok("snapshots", wf, run, int(row[0]), row[1])
        if s.snapshot_seq and s.snapshot_seq not in seen:
            self.problem("snapshots", f"the snapshot at event {s.snapshot_seq} is missing", wf, run, s.snapshot_seq)

    def schedules(self, cur: Any) -> None:
        cur.execute(self.q("SELECT schedule_id, record FROM {t}schedules"))
        for sid, rec in cur.fetchall():
            self.counts["schedules"] += 1
            try:
                name = self.store._dec(sid)
                ScheduleRecord.from_record(name, bytes(rec))
            except fmt.SOUND:
                pass  # sound: its input holds a type this process's classes cannot read
            except Exception as exc:  # noqa: BLE001 - CodecError, or a damaged escaped id
                key = fmt.SCHEDULE_PREFIX + str(sid).encode(errors="replace")
                self.problem("schedules", f"damaged schedule record: {exc}", key=key)


_SQLITE_RESTORE = ("restore the database file from a backup (atomr backup DEST.db makes one with SQLite's online "
                   "backup); or copy the readable runs out with atomr copy")


def _sqlite_check(cur: Any, deep: bool) -> str:
    """What SQLite's own check finds ("" when the file is sound)."""
    cur.execute("PRAGMA integrity_check" if deep else "PRAGMA quick_check")
    found = [str(r[0]) for r in cur.fetchall()]
    if found == ["ok"]:
        return ""
    return "SQLite's integrity check: " + "; ".join(found[:5]) + (
        f" (and {len(found) - 5} more)" if len(found) > 5 else "")


def _sqlite_note(deep: bool, ok: bool) -> str:
    return (f"SQLite PRAGMA {'integrity_check' if deep else 'quick_check'}: {'ok' if ok else 'DAMAGED'}"
            + ("; every run's records walked" + (" and decoded" if deep else " (sequence numbers only)")
               if ok else ""))


def verify_sqlite_file(path: str, *, deep: bool = True) -> VerifyReport:
    """SQLite's own check of a database file, on a connection of its own: the
    report on a file the store cannot open (its pages are damaged)."""
    t0 = time.perf_counter()
    uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            detail = _sqlite_check(conn.cursor(), deep)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        detail = f"SQLite cannot read the database: {exc}"
    size = os.path.getsize(path) if os.path.exists(path) else 0
    return VerifyReport(path, not detail, detail, (), 0, {}, 0, size, time.perf_counter() - t0, deep,
                        (_sqlite_note(deep, not detail),), _SQLITE_RESTORE, "tables")


def verify_sql(store: Any, *, deep: bool = True) -> VerifyReport:
    """Check an open SqliteStore or PostgresStore (see the module docstring)."""
    t0 = time.perf_counter()
    sqlite = store.dialect.name == "sqlite"
    walk = _Walk(store, deep)
    detail, notes = "", []
    try:
        with store._reading(consistent=True) as cur:
            detail = _sqlite_check(cur, deep) if sqlite else ""
            if not detail:
                walk.walk(cur)
    except (sqlite3.DatabaseError, CorruptStore):  # SQLite's pages are damaged past reading
        if not sqlite:
            raise
        return verify_sqlite_file(store.path, deep=deep)
    if sqlite:
        notes.append(_sqlite_note(deep, not detail))
        restore = _SQLITE_RESTORE
    else:
        notes.append("the physical checks (pages, indexes) are the Postgres server's: run "
                     + pg_tool_command("pg_amcheck", store._dsn, f"--schema={store.schema}",
                                         "--heapallindexed"))
        notes.append("this check read every run's records" + (" and decoded them" if deep else
                                                                " (sequence numbers only)"))
        restore = "restore the schema from a pg_dump backup"
    return VerifyReport(
        store.path, not detail, detail, tuple(walk.problems), walk.more, dict(walk.counts),
        sum(walk.counts.values()), _size(store), time.perf_counter() - t0, deep, tuple(notes), restore, "tables")


def _size(store: Any) -> int:
    try:
        return int(store.stored_bytes())
    except Exception:  # noqa: BLE001 - a size is nice to have, not part of the check
        return 0
