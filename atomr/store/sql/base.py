"""SqlStore: what SQLite and Postgres share — every statement, written once.

The tables are described in :mod:`atomr.store.sql.schema`. A backend gives
the dialect and two context managers: :meth:`SqlStore._writing` (a cursor in
a write transaction on the one writer connection) and
:meth:`SqlStore._reading` (a cursor on a reader connection, in a read
transaction when ``consistent``).

Threads: the writer connection is used by one thread at a time (the
checkpointer's once a :class:`~atomr.Runtime` owns the store; a lock makes
any other caller wait its turn). Readers take a pooled connection each, from
any thread.

Group commit: :meth:`write` applies many runs' batches in one transaction:
the journal rows with one ``executemany``, the run index with one insert (new
runs) and one conditional update (the others). The update matches only when
the row still holds the last sequence number this store wrote, and the
journal's primary key refuses a second event at one sequence number: a write
that does not continue the journal is refused by the database itself, and
the batches are then retried one at a time so that only the run at fault is
refused (with the precise reason, read fresh from the database). What is
retried when, and the staging of a group's rows, is in
:mod:`atomr.store.sql._writes`.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from atomr._hooks import logger
from atomr.errors import (CodecError, CorruptRecord, FormatVersionError, OwnershipLost, RunExists, StoreClosed,
                          StoreError)
from atomr.store import format as fmt
from atomr.store.base import AppendBatch, RunSummary, Store, now_ms
from atomr.store.sql._owners import Owners
from atomr.store.sql._reads import SUMMARY_COLS, SqlReads
from atomr.store.sql._schedules import SqlSchedules
from atomr.store.sql._slots import Slots
from atomr.store.sql._writes import GroupWrites, _Group
from atomr.store.sql.schema import FOLD_COUNTS, MIGRATIONS, SQL_FORMAT_VERSION, Dialect, escape_id, unescape_id

__all__ = ["SqlStore", "PG_GROUP"]

log = logger("atomr.store")

def _same(text: str) -> str:
    return text


_B = "::bigint[]"
#: A group commit on Postgres as ONE statement (PostgresStore._commit_group): the rows of
#: SqlStore's journal, snapshot and run index statements, as unnest()ed arrays; ``1 / 0``
#: refuses the whole statement when an index update misses its row. ``pg_notify`` wakes
#: the clients following runs (sent at commit; never for a refused statement).
PG_GROUP = (
    "WITH j AS (INSERT INTO {t}journal (workflow_id, run_id, seq, record) "
    "SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::bytea[])), "
    "s AS (INSERT INTO {t}snapshots (workflow_id, run_id, seq, record) "
    "SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::bytea[]) "
    "ON CONFLICT (workflow_id, run_id, seq) DO UPDATE SET record = excluded.record), "
    "n AS (INSERT INTO {t}runs (workflow_id, run_id, status, super_step, last_seq, first_seq, snapshot_seq, "
    "created_ms, updated_ms, meta, owner, epoch) SELECT * FROM unnest(?::text[], ?::text[], ?::text[], "
    + ", ".join(["?" + _B] * 6) + ", ?::bytea[], ?::text[], ?::bigint[])), "
    "u AS (UPDATE {t}runs AS r SET status = v.status, super_step = v.super_step, last_seq = v.last_seq, "
    "first_seq = v.first_seq, snapshot_seq = v.snapshot_seq, updated_ms = v.updated_ms, meta = v.meta, "
    "owner = v.owner, epoch = v.epoch, cancel = CASE WHEN v.status = 'running' THEN r.cancel END "
    "FROM unnest(?::text[], " + ", ".join(["?" + _B] * 5) + ", ?::bytea[], ?::text[], ?::bigint[], ?::text[], "
    "?::text[], ?::bigint[], ?::bigint[]) AS v(status, super_step, last_seq, first_seq, snapshot_seq, updated_ms, "
    "meta, owner, epoch, workflow_id, run_id, old_last, old_epoch) "
    "WHERE r.workflow_id = v.workflow_id AND r.run_id = v.run_id AND r.last_seq = v.old_last "
    "AND r.epoch = v.old_epoch RETURNING 1), "
    "k AS (INSERT INTO {t}run_counts AS c (writer, status, n) SELECT ?::text, * FROM unnest(?::text[], ?::bigint[]) "
    "ON CONFLICT (writer, status) DO UPDATE SET n = c.n + excluded.n) "
    "SELECT 1 / (count(*) = ?)::int, pg_notify(?, '') FROM u"
)


class SqlStore(Owners, Slots, GroupWrites, SqlReads, SqlSchedules, Store):
    """Common behaviour of the SQL backends (see the module docstring)."""

    single_writer = True
    #: several processes (workers) may open it at once: see atomr.store.sql._owners
    shared = True
    dialect: Dialect
    readonly: bool = False
    #: rows of run_counts past which an open for writing folds them into one per status
    fold_counts_at: int = 64
    #: how messages name the store ("store '/x/runs.db'", "schema 'atomr' of '…'")
    _label: str = "the store"

    def _init_sql(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._enc = escape_id if dialect.escape_ids else _same
        self._dec = unescape_id if dialect.escape_ids else _same
        self._wlock = threading.Lock()
        self._closed = False
        #: summaries of running runs as last written here (the conditional update checks them)
        self._cache: dict[tuple[str, str], RunSummary] = {}
        self._damaged: dict[tuple[str, str], tuple[str | None, str | None, str]] = {}
        self._init_owners()
        q = dialect.sql
        self._q_summary = q(f"SELECT {SUMMARY_COLS} FROM {{t}}runs WHERE workflow_id = ? AND run_id = ?")
        self._q_insert_event = q("INSERT INTO {t}journal (workflow_id, run_id, seq, record) VALUES (?, ?, ?, ?)")
        self._q_put_snapshot = q(
            "INSERT INTO {t}snapshots (workflow_id, run_id, seq, record) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (workflow_id, run_id, seq) DO UPDATE SET record = excluded.record")
        self._q_insert_run = q(
            "INSERT INTO {t}runs (workflow_id, run_id, status, super_step, last_seq, first_seq, snapshot_seq, "
            "created_ms, updated_ms, meta, owner, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        self._q_update_run = q(
            "UPDATE {t}runs SET status = ?, super_step = ?, last_seq = ?, first_seq = ?, snapshot_seq = ?, "
            "updated_ms = ?, meta = ?, owner = ?, epoch = ?, cancel = CASE WHEN ? = 'running' THEN cancel END "
            "WHERE workflow_id = ? AND run_id = ? AND last_seq = ? AND epoch = ?")
        self._q_owner = q("SELECT owner, epoch FROM {t}runs WHERE workflow_id = ? AND run_id = ?")
        #: this writer's changes to the counts of runs by status (its own rows: see schema.py)
        self._q_count = q("INSERT INTO {t}run_counts AS c (writer, status, n) VALUES (?, ?, ?) "
                          "ON CONFLICT (writer, status) DO UPDATE SET n = c.n + excluded.n")
        self._writer_id = uuid.uuid4().hex  # the writer of the counts when the store has no worker id

    # -- what a backend provides ------------------------------------------------------

    def _writing(self, pipeline: bool = False, durable: bool = True) -> contextlib.AbstractContextManager[Any]:
        """A cursor in a write transaction (committed when the block ends without
        error); ``pipeline``: the statements may be sent without waiting for each
        result (only a fresh cursor's results are read back then); ``durable=False``:
        its commit need not be synced (the next durable commit syncs it too)."""
        raise NotImplementedError

    def _write_error(self, exc: BaseException, new_run: str | None) -> BaseException:
        """What to raise for a database error of a write (a named atomr error)."""
        return StoreError(f"the write to {self!r} failed: {exc}")

    def _is_conflict(self, exc: BaseException) -> bool:
        """True for a primary key / unique violation."""
        raise NotImplementedError

    def _count(self, cur: Any) -> int:
        """Rows the cursor's last statement changed (a pipelined backend syncs first)."""
        return int(cur.rowcount)

    def _side_cursor(self, cur: Any) -> Any:
        """Another cursor in ``cur``'s transaction, for one statement whose results
        (or row count) are read on their own."""
        return cur.connection.cursor()

    def _check_tables(self, cur: Any) -> None:
        """StoreError unless atomr's tables exist (a read-only open creates nothing)."""
        raise NotImplementedError

    # -- the format row --------------------------------------------------------------------

    def _check_format(self, cur: Any, write: bool) -> None:
        """Check the format row in the open transaction: a new store gets one; a
        newer format is refused (FormatVersionError); an older one is migrated
        when writing, refused when read-only."""
        q = self.dialect.sql
        if not write:
            self._check_tables(cur)
        cur.execute(q("SELECT value FROM {t}meta WHERE key = 'format_version'"))
        row = cur.fetchone()
        if row is None:
            if write:
                cur.executemany(q("INSERT INTO {t}meta (key, value) VALUES (?, ?)"),
                                [("format_version", str(SQL_FORMAT_VERSION)), ("created_ms", str(now_ms()))])
            return
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise StoreError(f"{self._label} holds a damaged format version {str(row[0])[:40]!r}; restore it "
                             "from a backup") from None
        if version > SQL_FORMAT_VERSION:
            raise FormatVersionError(f"{self._label} has format version {version}, newer than this atomr reads "
                                     f"({SQL_FORMAT_VERSION}); upgrade atomr")
        if version < SQL_FORMAT_VERSION:
            if not write:
                raise FormatVersionError(f"{self._label} has format version {version}; open it once for writing "
                                         f"with this atomr to migrate it to {SQL_FORMAT_VERSION}")
            for v in range(version, SQL_FORMAT_VERSION):
                for stmt in MIGRATIONS.get(v, ()):
                    cur.execute(q(stmt))
            cur.execute(q("UPDATE {t}meta SET value = ? WHERE key = 'format_version'"), (str(SQL_FORMAT_VERSION),))
        if write:  # fold the writers' rows of run_counts once they pile up (a read otherwise)
            cur.execute(q("SELECT count(*) FROM {t}run_counts"))
            if int(cur.fetchone()[0]) > self.fold_counts_at:
                for stmt in FOLD_COUNTS[self.dialect.name]:
                    cur.execute(q(stmt))

    # -- writer side --------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed or self.readonly:
            raise self._not_writable()

    def _not_writable(self) -> StoreError:
        """Why this store object cannot write: closed, or opened read-only."""
        if self._closed:
            return StoreClosed(f"store {self!r} is closed; open it again to use it")
        return StoreError(f"store {self!r} was opened read-only; open it without readonly=True to write")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self!r} is closed; open it again to use it")

    def _write_txn(self, batches: Sequence[AppendBatch], fresh: bool = False) -> None:
        self._check_writable()
        staged: dict[tuple[str, str], RunSummary] = {}
        new_run = (f"{batches[0].workflow_id}/{batches[0].run_id}"
                   if len(batches) == 1 and batches[0].first_seq == 1 else None)
        owned: dict[tuple[str, str], int | None] = {}
        try:
            with self._wlock:
                self._commit_group(lambda read, read_owner: self._stage(batches, fresh, read, staged,
                                                                        read_owner, owned))
        except StoreError:
            self._forget(staged)
            self._fenced(batches)
            raise
        except Exception as exc:  # the database refused the transaction: nothing of it is stored
            self._forget(staged)
            self._fenced(batches)
            if self._is_conflict(exc):
                b = batches[0]
                if len(batches) == 1 and b.first_seq == 1:  # another process started this run id first
                    raise RunExists(b.workflow_id, b.run_id) from None
                raise StoreError(
                    f"the journal of run {b.workflow_id}/{b.run_id} already holds one of events "
                    f"{b.first_seq}..{b.last_seq}, or the run already exists; the batch was refused "
                    "(two writers for one run?)" if len(batches) == 1 else
                    "a batch does not continue its run's journal (two writers for one run?); "
                    "the group was refused and is retried one batch at a time") from None
            raise self._write_error(exc, new_run) from None
        # committed: only running runs stay cached (they write again soon)
        cache, held = self._cache, self._owned
        for key, s in staged.items():
            epoch = owned.get(key)
            if epoch is None:
                held.pop(key, None)
            else:
                held[key] = epoch
            if s.status == "running" and epoch is not None:
                cache[key] = s
            else:
                cache.pop(key, None)

    def _fenced(self, batches: Sequence[AppendBatch]) -> None:
        """After a refused write of one run: OwnershipLost when another process
        wrote the run first — took over a run this worker held (its epoch moved on),
        or a worker now executes a run it held not (a resume, a sleep's wake it lost)."""
        if len(batches) != 1 or batches[0].first_seq == 1:
            return
        b = batches[0]
        key = (b.workflow_id, b.run_id)
        held = self._owned.get(key)
        try:
            now = self.owner_of(*key)
            moved = held is None and now is not None and now[0] not in (None, self.worker_id) \
                and (s := self.summary(*key)) is not None and s.last_seq >= b.first_seq
        except Exception:  # noqa: BLE001 - unknown: keep the write's own error
            return
        if now is not None and ((held is not None and now[1] != held) or moved):
            self._owned.pop(key, None)
            self._cache.pop(key, None)
            raise OwnershipLost(key[0], key[1], now[0])

    def _owner_in(self, cur: Any, key: tuple[str, str]) -> tuple[str | None, int] | None:
        cur = self._side_cursor(cur)
        cur.execute(self._q_owner, (self._enc(key[0]), self._enc(key[1])))
        row = cur.fetchone()
        return None if row is None else (row[0], int(row[1]))

    def _commit_group(self, stage: Callable[..., _Group]) -> None:
        """Stage a group (reading index rows in the transaction) and apply it in one transaction."""
        with self._writing(pipeline=True) as cur:
            g = stage(lambda key: self._summary_in(cur, key), lambda key: self._owner_in(cur, key))
            if g.events:
                cur.executemany(self._q_insert_event, g.events)
            if g.snaps:
                cur.executemany(self._q_put_snapshot, g.snaps)
            if g.inserts:
                cur.executemany(self._q_insert_run, g.inserts)
            if g.updates:
                self._update_runs(cur, g.updates)
            if g.counts:
                cur.executemany(self._q_count, [(self.count_writer, st, n) for st, n in g.counts.items()])

    def _update_runs(self, cur: Any, updates: list[tuple[Any, ...]]) -> None:
        """Apply the conditional index updates; refuse the transaction when a row
        no longer holds the sequence number this store last wrote."""
        cur = self._side_cursor(cur)  # its own cursor: its row count is this statement's alone
        cur.executemany(self._q_update_run, [(*u[:9], u[0], *u[9:]) for u in updates])
        matched = self._count(cur)
        if matched != len(updates):
            raise StoreError(
                "a run's index row changed under this store (another writer?); the group was refused "
                f"({matched} of {len(updates)} runs matched)")

    @property
    def count_writer(self) -> str:
        """The writer whose rows of run_counts this store adds to: its worker id, or one of its own."""
        return self.worker_id or self._writer_id

    def _forget(self, staged: dict[tuple[str, str], RunSummary]) -> None:
        for key in staged:
            self._cache.pop(key, None)

    def _summary_in(self, cur: Any, key: tuple[str, str]) -> RunSummary | None:
        cur = self._side_cursor(cur)
        cur.execute(self._q_summary, (self._enc(key[0]), self._enc(key[1])))
        row = cur.fetchone()
        if row is None:
            return None
        try:
            return self._row_summary(key[0], key[1], row)
        except CodecError as exc:  # a write to that run is refused as a read of it is
            raise CorruptRecord(key[0], key[1], 0, f"its run index entry is damaged ({exc})") from None

    def truncate(self, workflow_id: str, run_id: str, upto_seq: int, snapshot: bytes) -> int:
        self._check_writable()
        q = self.dialect.sql
        w, r = self._enc(workflow_id), self._enc(run_id)
        with self._wlock, self._writing() as cur:
            old = self._summary_in(cur, (workflow_id, run_id))
            if old is None:
                return 0
            upto = min(upto_seq, old.last_seq)
            cur.execute(self._q_put_snapshot, (w, r, upto, bytes(snapshot)))
            cur.execute(q("DELETE FROM {t}journal WHERE workflow_id = ? AND run_id = ? AND seq <= ?"), (w, r, upto))
            removed = max(self._count(cur), 0)
            cur.execute(q("DELETE FROM {t}snapshots WHERE workflow_id = ? AND run_id = ? AND seq < ?"), (w, r, upto))
            removed += max(self._count(cur), 0)
            cur.execute(q("UPDATE {t}runs SET first_seq = ?, snapshot_seq = ?, updated_ms = ? "
                          "WHERE workflow_id = ? AND run_id = ?"),
                        (max(old.first_seq, upto + 1), max(old.snapshot_seq, upto), now_ms(), w, r))
        self._cache.pop((workflow_id, run_id), None)
        return removed

    def delete_run(self, workflow_id: str, run_id: str,
                   only_if: tuple[Sequence[str], int] | None = None) -> bool:
        """Delete a run; ``only_if=(statuses, before_ms)``: only while its status is one of
        ``statuses`` and it was last updated before ``before_ms``, checked in the delete's own
        transaction (another worker may resume a failed run meanwhile)."""
        self._check_writable()
        q = self.dialect.sql
        w, r = self._enc(workflow_id), self._enc(run_id)
        cond, args = "", ()  # type: tuple[str, tuple[Any, ...]]
        if only_if is not None:
            statuses, before_ms = list(only_if[0]), int(only_if[1])
            cond = f" AND status IN ({', '.join('?' * len(statuses))}) AND updated_ms < ?"
            args = (*statuses, before_ms)
        with self._wlock, self._writing() as cur:
            cur.execute(q("DELETE FROM {t}runs WHERE workflow_id = ? AND run_id = ?" + cond + " RETURNING status"),
                        (w, r, *args))
            gone = cur.fetchall()
            existed = bool(gone)
            if not existed and only_if is not None:
                return False  # it moved on (or is gone): its journal stays
            if gone:
                cur.execute(self._q_count, (self.count_writer, gone[0][0], -1))
            for table in ("journal", "snapshots"):
                cur.execute(q(f"DELETE FROM {{t}}{table} WHERE workflow_id = ? AND run_id = ?"), (w, r))
        self._cache.pop((workflow_id, run_id), None)
        return existed

    def import_run(self, summary: RunSummary, journal: Sequence[tuple[int, bytes]],
                   snapshots: Sequence[tuple[int, bytes]]) -> None:
        """Store a whole run as another store holds it (``atomr copy``); the run must be new here."""
        self._check_writable()
        fmt.check_ids(summary.workflow_id, summary.run_id)
        w, r = self._enc(summary.workflow_id), self._enc(summary.run_id)
        s = summary
        try:
            with self._wlock, self._writing() as cur:
                cur.execute(self._q_insert_run, (w, r, s.status, s.super_step, s.last_seq, s.first_seq,
                                                 s.snapshot_seq, s.created_ms, s.updated_ms,
                                                 fmt.encode_obj(s.meta, "the run's meta"), None, 0))
                cur.execute(self._q_count, (self.count_writer, s.status, 1))
                if journal:
                    cur.executemany(self._q_insert_event, [(w, r, seq, bytes(v)) for seq, v in journal])
                if snapshots:
                    cur.executemany(self._q_put_snapshot, [(w, r, seq, bytes(v)) for seq, v in snapshots])
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            if self._is_conflict(exc):
                raise StoreError(f"run {s.workflow_id}/{s.run_id} already exists in {self!r}; "
                                 "nothing of it was copied") from None
            raise self._write_error(exc, f"{s.workflow_id}/{s.run_id}") from None
