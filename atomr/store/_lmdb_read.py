"""The readers of :class:`~atomr.store.lmdb.LmdbStore` (a mixin): short read
transactions in whatever thread asks; damage is reported per run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lmdb

from atomr._hooks import logger
from atomr.errors import CodecError, CorruptRecord
from atomr.store import format as fmt
from atomr.store.base import RunSummary

__all__ = ["_Reading"]

log = logger("atomr.store")


class _Reading:
    """Run index, journal and snapshot reads, checked against each other."""

    _env: lmdb.Environment
    _gate: Any
    _meta: Any
    _journal: Any
    _snaps: Any
    _runs: Any
    _damaged: dict[bytes, tuple[str | None, str | None, str]]
    path: str

    @staticmethod
    def _decode_summary(wf: str, run: str, raw: bytes) -> RunSummary:
        try:
            return RunSummary.from_record(wf, run, raw)
        except fmt.SOUND as exc:  # sound: its meta holds a type this process cannot read
            raise fmt.corrupt(wf, run, 0, exc) from None
        except CodecError as exc:
            raise CorruptRecord(wf, run, 0, f"its run index entry is damaged ({exc})") from None


    def summary(self, workflow_id: str, run_id: str) -> RunSummary | None:
        """The run's index entry; None for an unknown run. CorruptRecord when
        the entry is damaged, or missing while the run's journal exists."""
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        with self._gate.read(), self._env.begin() as txn:
            return self._summary_checked(txn, rkey, workflow_id, run_id)

    def _summary_checked(self, txn: lmdb.Transaction, rkey: bytes, wf: str, run: str) -> RunSummary | None:
        raw = txn.get(rkey, db=self._runs)
        if raw is not None:
            return self._decode_summary(wf, run, bytes(raw))
        cur = txn.cursor(db=self._journal)
        if cur.set_range(rkey) and cur.key().startswith(rkey):
            k = bytes(cur.key())
            seq = fmt.seq_of(k) if len(k) == len(rkey) + 8 else 0
            raise CorruptRecord(wf, run, seq, "the run index has no entry for this run but its journal "
                                "holds events (the index key was damaged)")
        return None

    def summaries(self) -> Iterator[RunSummary]:
        """Every readable run index entry; damaged ones are skipped (logged once
        and listed by :meth:`damaged_entries`)."""
        self._check_open()
        with self._gate.read(), self._env.begin(db=self._runs) as txn:
            rows = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        out = []
        for k, v in rows:
            try:
                wf, run = fmt.parse_run_key(k)
            except CodecError as exc:
                self._skip(k, None, None, f"damaged run index key {k.hex()}: {exc}")
                continue
            try:
                out.append(RunSummary.from_record(wf, run, v))
            except fmt.SOUND as exc:
                self._skip(k, wf, run, f"{fmt.corrupt(wf, run, 0, exc)}", damaged=False)
            except CodecError as exc:
                self._skip(k, wf, run, f"damaged run index entry of run {wf}/{run}: {exc}")
        return iter(out)

    def _skip(self, key: bytes, wf: str | None, run: str | None, what: str, damaged: bool = True) -> None:
        if not damaged:  # a sound entry this process's classes cannot read: not damage
            told = self.__dict__.setdefault("_unreadable", set())
            if key not in told:
                told.add(key)
                log.warning("store %s: %s; the run is left out of runs() until it can be read", self.path, what)
            return
        if key not in self._damaged:
            self._damaged[key] = (wf, run, what)
            log.warning("store %s: %s; the run is left out of runs() (`atomr verify` reports every "
                        "damaged entry)", self.path, what)

    def damaged_entries(self) -> list[tuple[str | None, str | None, str]]:
        return list(self._damaged.values())

    def _journal_raw(
        self, workflow_id: str, run_id: str, from_seq: int, to_seq: int | None
    ) -> Iterator[tuple[int, bytes]]:
        """The run's raw events ``from_seq..to_seq``, checked against the run index
        (read in the same transaction): CorruptRecord unless they run gap-free
        from the first event kept to the last one committed."""
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        n = len(rkey) + 8
        out: list[tuple[int, bytes]] = []
        with self._gate.read(), self._env.begin() as txn:
            summary = self._summary_checked(txn, rkey, workflow_id, run_id)
            if summary is None:
                return iter(out)
            expect = max(from_seq, summary.first_seq, 1)
            end = summary.last_seq if to_seq is None else min(to_seq, summary.last_seq)
            if expect > end:
                return iter(out)
            cur = txn.cursor(db=self._journal)
            if cur.set_range(fmt.seq_key(rkey, expect)):
                for k, v in cur:
                    if not k.startswith(rkey):
                        break
                    if len(k) != n:
                        raise CorruptRecord(workflow_id, run_id, expect, f"the journal key after event "
                                            f"{expect - 1} is damaged ({len(k)} bytes, not {n})")
                    seq = fmt.seq_of(k)
                    if seq != expect:
                        raise CorruptRecord(workflow_id, run_id, expect, f"event {expect} is missing from "
                                            f"the journal (next is {seq}): a journal key was damaged")
                    out.append((seq, v))
                    expect += 1
                    if expect > end:
                        break
            if expect <= end:
                raise CorruptRecord(workflow_id, run_id, expect, f"the journal ends before event {expect}, "
                                    f"but the run index says it holds events up to {summary.last_seq}: "
                                    "a journal key was damaged")
        return iter(out)

    def _snapshots_raw(self, workflow_id: str, run_id: str) -> list[tuple[int, bytes]]:
        self._check_open()
        rkey = fmt.run_key(workflow_id, run_id)
        n = len(rkey) + 8
        out: list[tuple[int, bytes]] = []
        with self._gate.read(), self._env.begin() as txn:
            summary = self._summary_checked(txn, rkey, workflow_id, run_id)
            cur = txn.cursor(db=self._snaps)
            if cur.set_range(fmt.seq_key(rkey, 0)):
                for k, v in cur:
                    if not k.startswith(rkey):
                        break
                    if len(k) != n:
                        raise CorruptRecord(workflow_id, run_id, 0, f"a snapshot key is damaged ({len(k)} "
                                            f"bytes, not {n})")
                    out.append((fmt.seq_of(k), v))
        if summary is not None and summary.snapshot_seq > 0 and summary.snapshot_seq not in {q for q, _ in out}:
            raise CorruptRecord(workflow_id, run_id, summary.snapshot_seq, f"the snapshot at event "
                                f"{summary.snapshot_seq} is missing (its key was damaged)")
        return out

    def stored_bytes(self) -> int:
        """Bytes of the data file actually in use (pages up to the high-water mark)."""
        info = self._env.info()
        return int((info["last_pgno"] + 1) * self._env.stat()["psize"])

    def _get_schedule_raw(self, key: bytes) -> bytes | None:
        self._check_open()
        with self._gate.read(), self._env.begin(db=self._meta) as txn:
            raw = txn.get(key)
            return None if raw is None else bytes(raw)

    def _schedules_raw(self) -> list[tuple[bytes, bytes]]:
        self._check_open()
        prefix = fmt.SCHEDULE_PREFIX
        out: list[tuple[bytes, bytes]] = []
        with self._gate.read(), self._env.begin(db=self._meta) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append((bytes(k), bytes(v)))
        return out
