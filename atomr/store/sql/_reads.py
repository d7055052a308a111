"""The readers of the SQL stores (a mixin of :class:`~atomr.store.sql.base.SqlStore`):
any thread, each read on a pooled reader connection; a journal and its run's
index row are read in one read transaction (one snapshot)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from atomr._hooks import logger
from atomr.errors import CodecError, CorruptRecord
from atomr.store import format as fmt
from atomr.store._page import PageKey
from atomr.store.base import STATUSES, RunSummary

__all__ = ["SqlReads", "SUMMARY_COLS"]

log = logger("atomr.store")

#: The run index columns a RunSummary is read from, in its constructor's order.
SUMMARY_COLS = "status, super_step, last_seq, first_seq, snapshot_seq, created_ms, updated_ms, meta"


class SqlReads:
    """Run index, journal, snapshot and schedule reads of the SQL stores."""

    dialect: Any
    _enc: Callable[[str], str]
    _dec: Callable[[str], str]
    _q_summary: str
    _damaged: dict[tuple[str, str], tuple[str | None, str | None, str]]

    def _check_open(self) -> None:
        raise NotImplementedError

    def _reading(self, consistent: bool = True) -> contextlib.AbstractContextManager[Any]:
        """A reader cursor; in one read transaction (one snapshot) when ``consistent``."""
        raise NotImplementedError

    def _row_summary(self, wf: str, run: str, row: Sequence[Any]) -> RunSummary:
        """A run index row (from ``status`` on) as a RunSummary; CodecError when damaged."""
        status, super_step, last_seq, first_seq, snapshot_seq, created, updated, meta_raw = row
        if status not in STATUSES:
            raise CodecError(f"unknown status {status!r} in the run index")
        meta = fmt.decode_obj(bytes(meta_raw))
        if not isinstance(meta, dict):
            raise CodecError("the run index's meta is not a map")
        return RunSummary(wf, run, status, int(super_step), int(last_seq), int(first_seq), int(snapshot_seq),
                          int(created), int(updated), meta)

    # -- readers (any thread) -----------------------------------------------------------

    def summary(self, workflow_id: str, run_id: str) -> RunSummary | None:
        self._check_open()
        with self._reading(consistent=False) as cur:
            cur.execute(self._q_summary, (self._enc(workflow_id), self._enc(run_id)))
            rows = cur.fetchall()  # to the end: an unfinished statement would keep SQLite's read snapshot open
        if not rows:
            return None
        try:
            return self._row_summary(workflow_id, run_id, rows[0])
        except fmt.SOUND as exc:  # sound: its meta holds a type this process cannot read
            raise fmt.corrupt(workflow_id, run_id, 0, exc) from None
        except CodecError as exc:
            raise CorruptRecord(workflow_id, run_id, 0, f"its run index entry is damaged ({exc})") from None

    def summaries(self) -> Iterator[RunSummary]:
        return iter(self._select_runs("", ()))

    def _runs_page(self, status: str | None, workflow_id: str | None, limit: int | None,
                   key: PageKey | None) -> list[RunSummary]:
        """One page, newest first: one range of one of the paging indexes (schema.py)."""
        c = self.dialect.collate
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if workflow_id is not None:
            where.append("workflow_id = ?")
            args.append(self._enc(workflow_id))
            order = f"created_ms DESC, run_id{c} DESC"
            if key is not None:  # within one workflow: (created_ms, run_id) past the cursor's run
                wf = self._enc(workflow_id)
                ck = self._enc(key[1])
                bound = (key[0], self._enc(key[2])) if wf == ck else (key[0] + 1, "") if wf < ck else (key[0], "")
                where.append(f"(created_ms, run_id{c}) < (?, ?)")
                args += bound
        else:
            order = f"created_ms DESC, workflow_id{c} DESC, run_id{c} DESC"
            if key is not None:
                where.append(f"(created_ms, workflow_id{c}, run_id{c}) < (?, ?, ?)")
                args += (key[0], self._enc(key[1]), self._enc(key[2]))
        sql = (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._select_runs(sql, tuple(args))

    def run_counts(self) -> dict[str, int]:
        """Runs by status: the sum of every writer's changes (a few rows per writer)."""
        self._check_open()
        counts = dict.fromkeys(STATUSES, 0)
        with self._reading(consistent=False) as cur:
            cur.execute(self.dialect.sql("SELECT status, sum(n) FROM {t}run_counts GROUP BY status"))
            rows = cur.fetchall()
        for status, n in rows:
            if status in counts:
                counts[status] = int(n)
        return counts

    def _select_runs(self, where: str, args: tuple[Any, ...]) -> list[RunSummary]:
        self._check_open()
        with self._reading(consistent=False) as cur:
            cur.execute(self.dialect.sql(f"SELECT workflow_id, run_id, {SUMMARY_COLS} FROM {{t}}runs{where}"), args)
            rows = cur.fetchall()
        out = []
        for row in rows:
            wf, run = self._dec(row[0]), self._dec(row[1])
            try:
                out.append(self._row_summary(wf, run, row[2:]))
            except fmt.SOUND as exc:  # not damage: logged once, left out until it can be read
                told = self.__dict__.setdefault("_unreadable", set())
                if (wf, run) not in told:
                    told.add((wf, run))
                    log.warning("store %r: %s; the run is left out of runs() until it can be read", self,
                                fmt.corrupt(wf, run, 0, exc))
            except CodecError as exc:
                if (wf, run) not in self._damaged:
                    what = f"damaged run index entry of run {wf}/{run}: {exc}"
                    self._damaged[(wf, run)] = (wf, run, what)
                    log.warning("store %r: %s; the run is left out of runs() (`atomr verify` reports every "
                                "damaged entry)", self, what)
        return out

    def damaged_entries(self) -> list[tuple[str | None, str | None, str]]:
        return list(self._damaged.values())

    def _journal_raw(
        self, workflow_id: str, run_id: str, from_seq: int, to_seq: int | None
    ) -> Iterator[tuple[int, bytes]]:
        """The run's raw events, read in one transaction with its index row:
        CorruptRecord unless they run gap-free from ``from_seq`` (or the first
        event kept) to ``to_seq`` (or the last one committed)."""
        self._check_open()
        w, r = self._enc(workflow_id), self._enc(run_id)
        with self._reading() as cur:
            cur.execute(self._q_summary, (w, r))
            row = cur.fetchone()
            if row is None:
                return iter(())
            first_seq, last_seq = int(row[3]), int(row[2])
            expect = max(from_seq, first_seq, 1)
            end = last_seq if to_seq is None else min(to_seq, last_seq)
            if expect > end:
                return iter(())
            cur.execute(self.dialect.sql("SELECT seq, record FROM {t}journal WHERE workflow_id = ? AND run_id = ? "
                                         "AND seq >= ? AND seq <= ? ORDER BY seq"), (w, r, expect, end))
            rows = cur.fetchall()
        out: list[tuple[int, bytes]] = []
        for seq, rec in rows:
            if seq != expect:
                break
            out.append((seq, bytes(rec)))
            expect += 1
        if expect <= end:
            raise CorruptRecord(workflow_id, run_id, expect, f"event {expect} is missing from the journal, but "
                                f"the run index says it holds events up to {last_seq}")
        return iter(out)

    def _snapshots_raw(self, workflow_id: str, run_id: str) -> list[tuple[int, bytes]]:
        self._check_open()
        w, r = self._enc(workflow_id), self._enc(run_id)
        with self._reading() as cur:
            cur.execute(self._q_summary, (w, r))
            row = cur.fetchone()
            cur.execute(self.dialect.sql("SELECT seq, record FROM {t}snapshots WHERE workflow_id = ? AND run_id = ? "
                                         "ORDER BY seq"), (w, r))
            out = [(int(seq), bytes(rec)) for seq, rec in cur.fetchall()]
        snap_seq = int(row[4]) if row is not None else 0
        if snap_seq > 0 and snap_seq not in {s for s, _ in out}:
            raise CorruptRecord(workflow_id, run_id, snap_seq, f"the snapshot at event {snap_seq} is missing")
        return out

    def latest_snapshot(self, workflow_id: str, run_id: str, max_seq: int | None = None) -> tuple[int, Any] | None:
        """The newest snapshot at or before ``max_seq`` (one indexed read, not all of them)."""
        self._check_open()
        w, r = self._enc(workflow_id), self._enc(run_id)
        bound = (1 << 62) if max_seq is None else max_seq
        with self._reading(consistent=False) as cur:
            cur.execute(self.dialect.sql("SELECT seq, record FROM {t}snapshots WHERE workflow_id = ? AND run_id = ? "
                                         "AND seq <= ? ORDER BY seq DESC LIMIT 1"), (w, r, bound))
            row = cur.fetchone()
        if row is None:
            return None
        seq = int(row[0])
        try:
            return seq, fmt.decode_obj(bytes(row[1]))
        except CodecError as exc:
            raise fmt.corrupt(workflow_id, run_id, seq, exc) from None

    def _get_schedule_raw(self, key: bytes) -> bytes | None:
        self._check_open()
        sid = self._enc(fmt.parse_schedule_key(key))
        with self._reading(consistent=False) as cur:
            cur.execute(self.dialect.sql("SELECT record FROM {t}schedules WHERE schedule_id = ?"), (sid,))
            row = cur.fetchone()
        return None if row is None else bytes(row[0])

    def _schedules_raw(self) -> list[tuple[bytes, bytes]]:
        self._check_open()
        with self._reading(consistent=False) as cur:
            cur.execute(self.dialect.sql("SELECT schedule_id, record FROM {t}schedules"))
            rows = cur.fetchall()
        return sorted((fmt.schedule_key(self._dec(sid)), bytes(rec)) for sid, rec in rows)
