"""The Store protocol shared by every backend, and what it reads and writes.

A store holds, per run, the journal (framed events, gap-free from the run's base
sequence number), snapshots of the folded run state, and a small summary in the
run index; and the schedules (:class:`~atomr.store.schedules.ScheduleRecord`).
It knows events and bytes, not actors or workflows.

Threads: :meth:`Store.write` and the maintenance methods (``truncate``,
``delete_run``, ``put_schedule``, ``delete_schedule``) are called by one writer thread at a time (the checkpointer's,
for LMDB). Every read method may be called from any thread at any time.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from atomr._hooks import logger
from atomr.errors import CodecError, StoredTypeMismatch, StoreError
from atomr.store import format as fmt
from atomr.store._page import check_page, page_of, parse_cursor, run_cursor
from atomr.store.schedules import ScheduleRecord

__all__ = ["AppendBatch", "RunSummary", "Store", "STATUSES", "now_ms", "parse_cursor", "run_cursor"]

log = logger("atomr.store")

#: Run statuses as stored in the run index.
STATUSES = ("running", "paused", "done", "failed", "cancelled", "sleeping", "queued")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of the run index (what ``runs()`` and ``recover()`` read)."""

    workflow_id: str
    run_id: str
    status: str
    super_step: int
    last_seq: int
    first_seq: int = 1
    snapshot_seq: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cursor(self) -> str:
        """This run's place in the run index, newest first: pass it as ``before=``
        to ``runs()`` to list the runs after it (an opaque, stable string)."""
        return run_cursor(self.created_ms, self.workflow_id, self.run_id)

    def to_record(self) -> bytes:
        return fmt.encode_obj(
            [self.status, self.super_step, self.last_seq, self.first_seq, self.snapshot_seq,
             self.created_ms, self.updated_ms, self.meta]
        )

    @classmethod
    def from_record(cls, workflow_id: str, run_id: str, data: bytes) -> RunSummary:
        """Decode a run index record; CodecError when it is damaged or malformed."""
        row = fmt.decode_obj(data)
        if (not isinstance(row, list) or len(row) != 8 or row[0] not in STATUSES
                or not all(type(x) is int for x in row[1:7]) or not isinstance(row[7], dict)):
            raise CodecError("run index record does not hold a run summary (wrong shape)")
        return cls(workflow_id, run_id, *row)


@dataclass(slots=True)
class AppendBatch:
    """Events of one run to append in one transaction (plus an optional snapshot).

    ``records`` are framed events numbered ``first_seq, first_seq + 1, …``;
    ``snapshot`` (framed progress) describes the state after the last of them.
    """

    workflow_id: str
    run_id: str
    first_seq: int
    records: list[bytes]
    status: str | None = None
    super_step: int | None = None
    snapshot: bytes | None = None
    meta: dict[str, Any] | None = None

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.records) - 1


def write_units(n: int, groups: Sequence[int] | None) -> list[list[int]]:
    """The batch indexes written together when a group commit is refused: each
    batch alone, except those of one ``groups`` number (>= 0), together."""
    if groups is None:
        return [[i] for i in range(n)]
    units: list[list[int]] = []
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        if g < 0:
            units.append([i])
        elif g in by_group:
            by_group[g].append(i)
        else:
            by_group[g] = [i]
            units.append(by_group[g])
    return units


class Store(abc.ABC):
    """Common behaviour of the backends; subclasses provide the primitives."""

    #: Write a snapshot every this many super-steps (and at pauses and ends).
    snapshot_every: int = 50
    #: True when writes must go through a single writer thread (LMDB).
    single_writer: bool = False
    #: True when several processes may write it at once (workers on SQLite, Postgres)
    shared: bool = False
    path: str | None = None

    # -- writer side -------------------------------------------------------

    def write(self, batches: Sequence[AppendBatch],
              groups: Sequence[int] | None = None) -> list[BaseException | None]:
        """Write all batches in one transaction (one sync); isolate failures.

        Returns one entry per batch: None when it is durable, else the error
        that refused it. A failure of one batch does not refuse the others.
        ``groups`` (one entry per batch): batches with the same number >= 0 are
        written all or none (a ``start_many``); -1: a batch on its own.
        """
        if not batches:
            return []
        try:
            self._write_txn(batches)
            return [None] * len(batches)
        except Exception as exc:  # noqa: BLE001 - reported to the run that wrote it
            if len(batches) == 1:
                return [exc]
        # one batch (or group) was bad: write them one unit at a time so the others still land
        results: list[BaseException | None] = [None] * len(batches)
        for unit in write_units(len(batches), groups):
            try:
                self._write_txn([batches[i] for i in unit])
            except Exception as exc:  # noqa: BLE001
                for i in unit:
                    results[i] = exc
        return results

    @abc.abstractmethod
    def _write_txn(self, batches: Sequence[AppendBatch]) -> None:
        """Apply every batch atomically, or none; raise on any problem."""

    def _next_summary(self, old: RunSummary | None, b: AppendBatch, ts: int) -> RunSummary:
        """Check the batch continues the journal gap-free; return the new summary."""
        if old is None:
            fmt.check_ids(b.workflow_id, b.run_id)
            if b.first_seq != 1:
                raise StoreError(
                    f"journal gap in run {b.workflow_id}/{b.run_id}: first event numbered "
                    f"{b.first_seq}, expected 1; this is a bug: please report it"
                )
            return RunSummary(
                b.workflow_id, b.run_id, b.status or "running", b.super_step or 0, b.last_seq,
                1, b.last_seq if b.snapshot is not None else 0, ts, ts, dict(b.meta or {}),
            )
        if b.first_seq != old.last_seq + 1:
            raise StoreError(
                f"journal gap in run {b.workflow_id}/{b.run_id}: events numbered from "
                f"{b.first_seq}, expected {old.last_seq + 1} (two writers for one run?); "
                "the batch was refused and the journal is unchanged"
            )
        meta = old.meta if b.meta is None else {**old.meta, **b.meta}
        # the positional constructor: dataclasses.replace() is slow on this hot path
        return RunSummary(
            old.workflow_id, old.run_id, b.status or old.status,
            old.super_step if b.super_step is None else b.super_step, b.last_seq,
            old.first_seq, b.last_seq if b.snapshot is not None else old.snapshot_seq,
            old.created_ms, ts, meta,
        )

    @abc.abstractmethod
    def truncate(self, workflow_id: str, run_id: str, upto_seq: int, snapshot: bytes) -> int:
        """Drop journal events <= upto_seq and older snapshots, keeping ``snapshot``
        as the state at ``upto_seq``. Returns the number of records removed."""

    @abc.abstractmethod
    def delete_run(self, workflow_id: str, run_id: str) -> bool:
        """Remove every trace of a run. Returns False if it did not exist."""

    def import_run(self, summary: RunSummary, journal: Sequence[tuple[int, bytes]],
                   snapshots: Sequence[tuple[int, bytes]]) -> None:
        """Store a whole run as another store holds it (``atomr copy``): its index
        entry ``summary``, its framed events ``(seq, record)`` from
        ``summary.first_seq`` to ``summary.last_seq`` and its framed snapshots, in
        one transaction. The run must be new here: StoreError otherwise, and
        nothing of it is written."""
        raise StoreError(f"{type(self).__name__} cannot import runs; copy into an LmdbStore, SqliteStore, "
                         "PostgresStore or MemoryStore")

    # -- readers (any thread) ---------------------------------------------

    @abc.abstractmethod
    def summary(self, workflow_id: str, run_id: str) -> RunSummary | None: ...

    @abc.abstractmethod
    def summaries(self) -> Iterator[RunSummary]: ...

    def runs(self, status: str | None = None, workflow_id: str | None = None, limit: int | None = None,
             before: str | None = None) -> list[RunSummary]:
        """Run summaries from the index, newest first by creation (ties: by ids,
        descending); filter by status and/or workflow. ``limit``: at most that
        many (None: all); ``before``: the ``cursor`` of the last run of the page
        before, to list the runs after it. A page is read through the indexes the
        store keeps (by status, by workflow): it costs the same however many runs
        the store holds. StoreError for an unknown status, a bad limit or cursor."""
        key = check_page(status, workflow_id, limit, before, STATUSES)
        return self._runs_page(status, workflow_id, limit, key)

    def _runs_page(self, status: str | None, workflow_id: str | None, limit: int | None,
                   key: tuple[int, str, str] | None) -> list[RunSummary]:
        """One page (arguments checked); a backend with indexes overrides this scan."""
        return page_of(self.summaries(), status, workflow_id, limit, key)

    def run_counts(self) -> dict[str, int]:
        """Runs in the store by status (every status, 0 included), as the store
        keeps them: updated in the transaction that changes a run's status, so
        right after a restart; reading them costs the same however many runs
        there are (a backend without counts scans)."""
        counts = dict.fromkeys(STATUSES, 0)
        for s in self.summaries():
            counts[s.status] += 1
        return counts

    @abc.abstractmethod
    def _journal_raw(
        self, workflow_id: str, run_id: str, from_seq: int, to_seq: int | None
    ) -> Iterator[tuple[int, bytes]]: ...

    def journal(
        self, workflow_id: str, run_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Decoded events ``(seq, event)`` in order; a bad record raises CorruptRecord."""
        for seq, data in self._journal_raw(workflow_id, run_id, from_seq, to_seq):
            try:
                yield seq, fmt.decode_event(data)
            except CodecError as exc:
                raise fmt.corrupt(workflow_id, run_id, seq, exc) from None

    @abc.abstractmethod
    def _snapshots_raw(self, workflow_id: str, run_id: str) -> list[tuple[int, bytes]]: ...

    def snapshots(self, workflow_id: str, run_id: str) -> list[tuple[int, Any]]:
        """All snapshots ``(seq, progress dict)``, oldest first."""
        out = []
        for seq, data in self._snapshots_raw(workflow_id, run_id):
            try:
                out.append((seq, fmt.decode_obj(data)))
            except CodecError as exc:
                raise fmt.corrupt(workflow_id, run_id, seq, exc) from None
        return out

    def latest_snapshot(
        self, workflow_id: str, run_id: str, max_seq: int | None = None
    ) -> tuple[int, Any] | None:
        """The newest snapshot at or before ``max_seq`` (None: the newest)."""
        best = None
        for seq, data in self._snapshots_raw(workflow_id, run_id):
            if max_seq is None or seq <= max_seq:
                best = (seq, data)
        if best is None:
            return None
        try:
            return best[0], fmt.decode_obj(best[1])
        except CodecError as exc:
            raise fmt.corrupt(workflow_id, run_id, best[0], exc) from None

    # -- schedules (writes: the writer thread; reads: any thread) -----------

    def put_schedule(self, record: ScheduleRecord) -> None:
        """Store (or replace) a schedule record."""
        key = fmt.schedule_key(record.schedule_id)
        self._put_schedule_raw(key, record.to_record())

    def delete_schedule(self, schedule_id: str) -> bool:
        """Remove a schedule. Returns False if it did not exist."""
        return self._delete_schedule_raw(fmt.schedule_key(schedule_id))

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """The schedule's record; None for an unknown id. StoreError when the record is damaged."""
        raw = self._get_schedule_raw(fmt.schedule_key(schedule_id))
        if raw is None:
            return None
        try:
            return ScheduleRecord.from_record(schedule_id, raw)
        except StoredTypeMismatch as exc:  # sound: its input's class changed since
            raise exc.located(f"the input of schedule {schedule_id!r}") from None
        except fmt.SOUND:
            raise
        except CodecError as exc:
            raise StoreError(f"the record of schedule {schedule_id!r} is damaged ({exc}); remove the "
                             f"schedule (atomr schedule rm {schedule_id}) and add it again") from None

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every readable schedule, by id; a damaged record is skipped (logged once)."""
        out = []
        for key, raw in self._schedules_raw():
            try:
                out.append(ScheduleRecord.from_record(fmt.parse_schedule_key(key), raw))
            except CodecError as exc:
                warned = self.__dict__.setdefault("_bad_schedules", set())
                if key not in warned:
                    warned.add(key)
                    what = "cannot be read by this process's classes" if isinstance(exc, fmt.SOUND) else "is damaged"
                    log.warning("store %s: skipping the schedule record %r, which %s (%s)", self.path or self,
                                key, what, exc)
        out.sort(key=lambda r: r.schedule_id)
        return out

    # A backend keeps schedule records as framed bytes under their meta keys;
    # one that keeps none has none, and refuses to write one.

    def _put_schedule_raw(self, key: bytes, data: bytes) -> None:
        raise StoreError(f"{type(self).__name__} does not keep schedules; use an LmdbStore or a MemoryStore")

    def _delete_schedule_raw(self, key: bytes) -> bool:
        return False

    def _get_schedule_raw(self, key: bytes) -> bytes | None:
        return None

    def _schedules_raw(self) -> list[tuple[bytes, bytes]]:
        return []

    def damaged_entries(self) -> list[tuple[str | None, str | None, str]]:
        """Entries :meth:`summaries` skipped because they are damaged, as
        ``(workflow_id, run_id, what)`` (ids None when the key itself is
        damaged). Reading such a run raises CorruptRecord."""
        return []

    def close(self) -> None:  # noqa: B027
        """Release the store's resources."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_import(summary: RunSummary, journal: Sequence[tuple[int, bytes]],
                 snapshots: Sequence[tuple[int, bytes]]) -> None:
    """StoreError unless ``journal`` and ``snapshots`` are what a store holds for
    ``summary`` (what :meth:`Store.import_run` takes): the events numbered
    gap-free from ``first_seq`` to ``last_seq``, snapshots in order with the one
    at ``snapshot_seq`` among them, every record bytes."""
    who = f"run {summary.workflow_id}/{summary.run_id}"
    if summary.status not in STATUSES:
        raise StoreError(f"{who} has an unknown status {summary.status!r}; it cannot be imported")
    if summary.first_seq < 1 or summary.last_seq < summary.first_seq - 1 or summary.snapshot_seq > summary.last_seq:
        raise StoreError(f"{who} has inconsistent sequence numbers (first {summary.first_seq}, last "
                         f"{summary.last_seq}, snapshot {summary.snapshot_seq}); it cannot be imported")
    seqs = [seq for seq, _ in journal]
    if seqs != list(range(summary.first_seq, summary.last_seq + 1)):
        got = f"{seqs[0]}..{seqs[-1]} ({len(seqs)} events)" if seqs else "no events"
        raise StoreError(f"the journal given for {who} holds {got}, not events {summary.first_seq}.."
                         f"{summary.last_seq} without a gap; nothing of it was imported")
    snap_seqs = [seq for seq, _ in snapshots]
    if snap_seqs != sorted(set(snap_seqs)) or (summary.snapshot_seq and summary.snapshot_seq not in snap_seqs):
        raise StoreError(f"the snapshots given for {who} are out of order or miss the one at event "
                         f"{summary.snapshot_seq}; nothing of it was imported")
    for _, rec in (*journal, *snapshots):
        if not isinstance(rec, (bytes, bytearray, memoryview)):
            raise StoreError(f"a record given for {who} is a {type(rec).__name__}, not bytes; nothing of it "
                             "was imported")
