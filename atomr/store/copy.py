"""Copying every run of one store into another: :func:`copy_store` (``atomr copy``).

What is copied, per run, exactly as the source holds it: the run index entry
(status, super-step, sequence numbers, times, meta), the journal (the framed
events from ``first_seq`` to ``last_seq``: a pruned run stays pruned) and the
snapshots; then every schedule record (definition and firing state). Every
backend stores the same framed records (:mod:`atomr.store.format`), so the
bytes are copied as they are — nothing is decoded and encoded again, user
types need not be registered — and a paused run resumes in the copy as it
would have in the source. What belongs to the processes that run a store
rather than to its runs is not copied: locks, and the ownership state of
workers.

Checks:

* the destination must hold no run and no schedule
  (:class:`~atomr.errors.StoreNotEmpty`; it is left unchanged);
* a source with damaged index entries is refused before anything is written;
  each source record's checksum is checked as it is read;
* each run is read in one snapshot of the source and its index entry read
  again after: a run that changed meanwhile (a process still running the
  source) is read again, and refused if it keeps changing. Runs started
  after the copy began are not copied: open the source for writing (its
  lock keeps other writers out), as ``atomr copy`` does;
* each imported run is read back from the destination and compared with the
  source: every summary field, the event and snapshot counts, and a SHA-256
  over its framed records (:func:`run_digest`); each schedule record is read
  back byte for byte.

Any failure removes what the copy wrote (the destination is left empty, as it
was) and raises :class:`~atomr.errors.CopyError` saying what went wrong.

Threads: the destination is written from the calling thread, so it must not
be owned by an open Runtime; the source may be.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from atomr.errors import CodecError, CopyError, StoreError, StoreNotEmpty
from atomr.store import format as fmt
from atomr.store.base import RunSummary, Store, check_import
from atomr.store.schedules import ScheduleRecord

__all__ = ["CopyReport", "RunCopy", "copy_store", "run_digest"]

#: Reads of one run before a source that keeps changing it is refused.
_ATTEMPTS = 3


@dataclass(frozen=True)
class RunCopy:
    """One copied run, as verified in the destination."""

    workflow_id: str
    run_id: str
    status: str
    events: int
    snapshots: int
    sha256: str


@dataclass(frozen=True)
class CopyReport:
    """What :func:`copy_store` copied and verified."""

    src: str
    dst: str
    runs: tuple[RunCopy, ...]
    schedules: int
    seconds: float

    @property
    def events(self) -> int:
        return sum(r.events for r in self.runs)

    @property
    def snapshots(self) -> int:
        return sum(r.snapshots for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``atomr copy --json``)."""
        d = asdict(self)
        d["runs"] = [asdict(r) for r in self.runs]
        d.update(events=self.events, snapshots=self.snapshots)
        return d


def run_digest(journal: Sequence[tuple[int, bytes]], snapshots: Sequence[tuple[int, bytes]]) -> str:
    """SHA-256 (hex) over a run's framed records: each event and each snapshot
    with its sequence number and length, events first."""
    h = hashlib.sha256()
    for tag, items in ((b"J", journal), (b"S", snapshots)):
        for seq, rec in items:
            h.update(tag + seq.to_bytes(8, "big") + len(rec).to_bytes(4, "big"))
            h.update(rec)
    return h.hexdigest()


_Run = tuple[RunSummary, list[tuple[int, bytes]], list[tuple[int, bytes]]]


def _read_run(store: Store, wf: str, run: str) -> _Run | None:
    """The run as ``store`` holds it: (summary, journal, snapshots), consistent
    with each other; None when the run is not there."""
    for _ in range(_ATTEMPTS):
        before = store.summary(wf, run)
        if before is None:
            return None
        journal = [(seq, bytes(rec)) for seq, rec in store._journal_raw(wf, run, 1, None)]
        snaps = [(seq, bytes(rec)) for seq, rec in store._snapshots_raw(wf, run)]
        if store.summary(wf, run) == before:
            return before, journal, snaps
    raise CopyError(f"run {wf}/{run} kept changing while it was read from {store!r} (a process runs that "
                    "store); stop it, then copy again")


def _source_run(src: Store, s: RunSummary) -> _Run:
    wf, run = s.workflow_id, s.run_id
    got = _read_run(src, wf, run)
    if got is None:
        raise CopyError(f"run {wf}/{run} disappeared from {src!r} during the copy (a process runs that store); "
                        "stop it, then copy again")
    summary, journal, snaps = got
    try:
        check_import(summary, journal, snaps)
    except StoreError as exc:
        raise CopyError(f"the source's {exc}; `atomr verify` on the source tells what is damaged") from None
    for seq, rec in (*journal, *snaps):
        try:
            fmt.unframe(rec)
        except CodecError as exc:
            raise CopyError(f"record {seq} of run {wf}/{run} in {src!r} is damaged ({exc}); restore that run "
                            f"from a backup or delete it (atomr prune {wf} {run} --delete), then copy "
                            "again") from None
    return got


def _verify_run(dst: Store, expected: _Run) -> RunCopy:
    """Read the run back from ``dst``; CopyError unless it equals what was copied."""
    summary, journal, snaps = expected
    wf, run = summary.workflow_id, summary.run_id
    got = _read_run(dst, wf, run)
    if got is None:
        raise CopyError(f"run {wf}/{run} is missing from {dst!r} right after it was copied")
    back, back_journal, back_snaps = got
    differ = [f.name for f in fields(RunSummary) if getattr(back, f.name) != getattr(summary, f.name)]
    if len(back_journal) != len(journal):
        differ.append(f"event count ({len(back_journal)}, not {len(journal)})")
    if len(back_snaps) != len(snaps):
        differ.append(f"snapshot count ({len(back_snaps)}, not {len(snaps)})")
    digest = run_digest(journal, snaps)
    if run_digest(back_journal, back_snaps) != digest:
        differ.append("the SHA-256 of its records")
    if differ:
        raise CopyError(f"run {wf}/{run} reads back from {dst!r} different from the source: "
                        f"{', '.join(differ)}")
    return RunCopy(wf, run, summary.status, len(journal), len(snaps), digest)


def _check_stores(src: Store, dst: Store) -> None:
    if src is dst:
        raise CopyError("the source and the destination of the copy are the same store; pass another destination")
    if getattr(dst, "readonly", False):
        raise CopyError(f"the destination {dst!r} was opened read-only; open it without readonly=True")
    if getattr(dst, "_atomr_runtime", None) is not None:
        raise CopyError(f"the destination {dst!r} is used by an open Runtime; close that Runtime first (a "
                        "copy writes it from this thread)")
    held = len(dst.runs())
    scheds = len(dst._schedules_raw())
    if held or scheds:
        raise StoreNotEmpty(f"the destination {dst!r} already holds {held} run(s) and {scheds} schedule(s); "
                            "copy into an empty store (a new directory, file or schema): it was left unchanged")


def copy_store(src: Store, dst: Store, *, progress: Callable[[RunCopy], None] | None = None) -> CopyReport:
    """Copy every run and schedule of ``src`` into the empty store ``dst`` and
    verify the copy (see the module docstring). ``progress`` is called with
    each run once it is verified. Returns a :class:`CopyReport`; raises
    :class:`~atomr.errors.StoreNotEmpty` or :class:`~atomr.errors.CopyError`
    (then ``dst`` is left as it was)."""
    t0 = time.perf_counter()
    _check_stores(src, dst)
    summaries = src.runs()
    damaged = src.damaged_entries()
    if damaged:
        what = "; ".join(d[2] for d in damaged[:3])
        raise CopyError(f"{src!r} has {len(damaged)} damaged run index entries ({what}); nothing was copied: "
                        "`atomr verify` on the source lists them; restore or delete those runs, then copy again")
    schedules = _source_schedules(src)
    copied: list[RunCopy] = []
    written: list[tuple[str, str]] = []
    put: list[bytes] = []
    try:
        for s in summaries:
            run = _source_run(src, s)
            try:
                dst.import_run(*run)
            except StoreError as exc:
                raise CopyError(f"{dst!r} refused run {s.workflow_id}/{s.run_id}: {exc}") from None
            written.append((s.workflow_id, s.run_id))
            copied.append(_verify_run(dst, run))
            if progress is not None:
                progress(copied[-1])
        for key, data in schedules:
            dst._put_schedule_raw(key, data)
            put.append(key)
            if dst._get_schedule_raw(key) != data:
                raise CopyError(f"schedule {fmt.parse_schedule_key(key)!r} reads back from {dst!r} different "
                                "from the source")
    except BaseException as exc:
        left = _undo(dst, written, put)
        if isinstance(exc, CopyError):
            raise CopyError(f"{exc}; {left}") from None
        if isinstance(exc, StoreError):
            raise CopyError(f"the copy failed: {exc}; {left}") from None
        raise
    return CopyReport(repr(src), repr(dst), tuple(copied), len(schedules), time.perf_counter() - t0)


def _source_schedules(src: Store) -> list[tuple[bytes, bytes]]:
    out = []
    for key, data in src._schedules_raw():
        try:
            ScheduleRecord.from_record(fmt.parse_schedule_key(key), bytes(data))
        except fmt.SOUND:
            pass  # sound: its input holds a type this process's classes cannot read; copied as it is
        except CodecError as exc:
            raise CopyError(f"schedule record {key!r} of {src!r} is damaged ({exc}); nothing was copied: "
                            "remove the schedule (atomr schedule rm ID) and add it again, then copy") from None
        out.append((key, bytes(data)))
    return out


def _undo(dst: Store, runs: list[tuple[str, str]], schedules: list[bytes]) -> str:
    """Remove what the copy wrote; say what the destination holds now."""
    try:
        for wf, run in runs:
            dst.delete_run(wf, run)
        for key in schedules:
            dst.delete_schedule(fmt.parse_schedule_key(key))
    except Exception as exc:  # noqa: BLE001 - reported to the user, who must clean up
        return (f"removing the part already copied failed too ({exc}): the destination holds part of the copy; "
                "delete it (the directory, file or schema) before copying again")
    if not runs and not schedules:
        return "nothing was written to the destination"
    return "what was copied was removed again: the destination is empty, as it was"
