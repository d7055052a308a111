"""How the SQL stores write a group of batches (a mixin of
:class:`~atomr.store.sql.base.SqlStore`): which retries follow a refusal, and
the rows one group commit stages. No SQL here: every statement is in
:mod:`atomr.store.sql.base` (and the Postgres group statement in its module).

A refused group is retried one batch at a time, so that only the run at
fault is refused. While the server is away (its session ended, the network
dropped, a restart refuses connections: StoreUnavailable) a write goes on
trying, whole, on a new connection, for up to ``_lost_retry_s`` seconds
(Postgres: its connect_timeout) before it reports the error; a batch the store
already holds, record for record, counts as written (its commit went through,
its answer was lost). Once out of time, a server that cannot be reached fails
the rest of the group at once: each batch would wait again for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from atomr.errors import OwnershipLost, RunOwnedElsewhere, StoreClosed, StoreUnavailable
from atomr.store import format as fmt
from atomr.store.base import AppendBatch, RunSummary, now_ms, write_units

__all__ = ["GroupWrites"]


class _Group:
    """The rows of one group commit, as parameter tuples of the statements."""

    __slots__ = ("events", "snaps", "inserts", "updates", "counts")

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int, bytes]] = []   # journal rows
        self.snaps: list[tuple[str, str, int, bytes]] = []    # snapshot rows
        self.inserts: list[tuple[Any, ...]] = []              # index rows of new runs
        self.updates: list[tuple[Any, ...]] = []              # index rows: new values..., key, old last_seq, epoch
        self.counts: dict[str, int] = {}                      # runs by status: the changes (none is 0)

    def count(self, old: str | None, new: str) -> None:
        """A run's status moves from ``old`` (None: a new run) to ``new``."""
        if old == new:
            return
        c = self.counts
        for status, d in ((old, -1), (new, 1)):
            if status is not None:
                n = c.get(status, 0) + d
                if n:
                    c[status] = n
                else:
                    c.pop(status, None)

    def pg_params(self, writer: str, channel: str) -> tuple[Any, ...]:
        """The parameters of the Postgres group statement (base.PG_GROUP): columns as arrays."""
        cols = [list(c) for c in zip(*self.events)] if self.events else [[], [], [], []]
        cols += [list(c) for c in zip(*self.snaps)] if self.snaps else [[], [], [], []]
        cols += [list(c) for c in zip(*self.inserts)] if self.inserts else [[]] * 12
        cols += [list(c) for c in zip(*self.updates)] if self.updates else [[]] * 13
        return (*cols, writer, list(self.counts), list(self.counts.values()), len(self.updates), channel)


class _Retry:
    """The budget of one write while the server is away: tries after a pause
    (50 ms, doubling up to 1 s) until ``budget`` seconds have passed."""

    __slots__ = ("budget", "deadline", "pause", "lost")

    def __init__(self, budget: float) -> None:
        self.budget, self.deadline, self.pause, self.lost = budget, 0.0, 0.05, False

    def again(self) -> bool:
        """A connection broke or was refused: True after the pause, False when out of time."""
        now = time.monotonic()
        if not self.lost:
            self.lost, self.deadline = True, now + self.budget
        if now + self.pause > self.deadline:
            return False
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 1.0)
        return True


class GroupWrites:
    """write(): one transaction for a group, and the retries after a refusal."""

    # provided by SqlStore, its readers and Store (declared, not defined: the MRO must reach them)
    _enc: Callable[[str], str]
    _cache: dict[tuple[str, str], RunSummary]
    _owned: dict[tuple[str, str], int]
    worker_id: str | None
    _write_txn: Callable[..., None]
    _journal_raw: Callable[..., Any]
    _next_summary: Callable[[RunSummary | None, AppendBatch, int], RunSummary]

    #: seconds a write goes on trying while the server is away (connections broken
    #: or refused) before it reports StoreUnavailable; 0: no retries
    _lost_retry_s: float = 0.0

    def _unreachable(self, exc: BaseException) -> bool:
        """True when ``exc`` says the database server cannot be reached at all."""
        return False

    def write(self, batches: Sequence[AppendBatch],
              groups: Sequence[int] | None = None) -> list[BaseException | None]:
        n = len(batches)
        if not n:
            return []
        retry = _Retry(self._lost_retry_s)
        while True:  # the whole group, again while the server is away (within the budget)
            try:
                self._write_txn(batches, fresh=retry.lost)
                return [None] * n
            except Exception as exc:  # noqa: BLE001 - isolated below
                if isinstance(exc, StoreClosed) or (isinstance(exc, StoreUnavailable) and not retry.again()):
                    return [exc] * n
                if n == 1 and isinstance(exc, (OwnershipLost, RunOwnedElsewhere)):
                    return [exc]  # final: another worker executes the run
                if not isinstance(exc, StoreUnavailable):
                    break
        # refused: one batch (or start_many group) at a time, so the others land and
        # the bad one gets its reason
        results: list[BaseException | None] = [None] * n
        units = write_units(n, groups)
        for k, unit in enumerate(units):
            err = self._write_alone([batches[i] for i in unit], retry)
            for i in unit:
                results[i] = err
            if err is not None and self._unreachable(err):  # the rest would wait for it too
                for rest in units[k + 1:]:
                    for i in rest:
                        results[i] = err
                break
        return results

    def _write_alone(self, unit: list[AppendBatch], retry: _Retry) -> BaseException | None:
        while True:
            try:
                self._write_txn(unit, fresh=True)
                return None
            except Exception as exc:  # noqa: BLE001 - reported to the run that wrote it
                err = exc
            lost = isinstance(err, StoreUnavailable)
            if (retry.lost or lost) and not self._unreachable(err) and all(self._landed(b) for b in unit):
                return None
            if not lost or not retry.again():
                return err

    def _landed(self, b: AppendBatch) -> bool:
        """True when the store holds ``b`` already, record for record: after a
        connection broke as a group committed (the client never heard whether it
        did), a batch that did land is not refused when it is tried again."""
        if not b.records:
            return False
        try:
            got = list(self._journal_raw(b.workflow_id, b.run_id, b.first_seq, b.last_seq))
        except Exception:  # noqa: BLE001 - unknown: keep the write's own error
            return False
        return got == [(seq, bytes(rec)) for seq, rec in enumerate(b.records, b.first_seq)]

    def _stage(self, batches: Sequence[AppendBatch], fresh: bool, read: Callable[[tuple[str, str]], Any],
               staged: dict[tuple[str, str], RunSummary],
               read_owner: Callable[[tuple[str, str]], Any] | None = None,
               owned: dict[tuple[str, str], int | None] | None = None) -> _Group:
        """The rows of one group commit (``staged``: each run's new summary;
        ``owned``: each run's epoch after it, None when nobody owns it then).

        A run's index row is read (with ``read``) only when this store has no
        cached summary of it, or ``fresh``; a run's first batch needs no read:
        the inserts of its index row and of its event 1 fail if it exists.
        Every index update is conditional on the run's epoch (fencing, see
        :mod:`atomr.store.sql._owners`): the epoch this worker holds, or, for a
        run it does not hold, the one read now — refused (RunOwnedElsewhere)
        when another worker owns it.
        """
        enc = self._enc
        ts = now_ms()
        base: dict[tuple[str, str], RunSummary | None] = {}
        g = _Group()
        for b in batches:
            key = (b.workflow_id, b.run_id)
            old = staged.get(key)
            if old is None and key not in base:
                if fresh:
                    old = read(key)
                elif b.first_seq != 1:
                    old = self._cache.get(key) or read(key)
                base[key] = old
            staged[key] = self._next_summary(old, b, ts)
            w, r = enc(b.workflow_id), enc(b.run_id)
            seq = b.first_seq
            for rec in b.records:
                g.events.append((w, r, seq, rec))
                seq += 1
            if b.snapshot is not None:
                g.snaps.append((w, r, b.last_seq, bytes(b.snapshot)))
        me = self.worker_id
        for key, s in staged.items():
            w, r = enc(key[0]), enc(key[1])
            meta = fmt.encode_obj(s.meta, "the run's meta")
            old = base[key]
            owner = me if s.status == "running" else None
            if old is None:
                epoch = 1 if owner is not None else 0
                g.inserts.append((w, r, s.status, s.super_step, s.last_seq, s.first_seq, s.snapshot_seq,
                                  s.created_ms, s.updated_ms, meta, owner, epoch))
                g.count(None, s.status)
            else:
                held = self._owned.get(key)
                if held is None:  # not ours yet: take it (a resume, a cancel) unless a worker runs it
                    row = read_owner(key) if read_owner is not None else None
                    was, held = (row if row is not None else (None, 0))
                    if was is not None and was != me:
                        raise RunOwnedElsewhere(key[0], key[1], was)
                    epoch = held + 1 if owner is not None else held
                else:
                    epoch = held
                g.updates.append((s.status, s.super_step, s.last_seq, s.first_seq, s.snapshot_seq,
                                  s.updated_ms, meta, owner, epoch, w, r, old.last_seq, held))
                g.count(old.status, s.status)
            if owned is not None:
                owned[key] = epoch if owner is not None else None
        return g
