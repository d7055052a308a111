"""Workers on one SQL store: who executes which run (a mixin of
:class:`~atomr.store.sql.base.SqlStore`).

Each process (a :class:`~atomr.Runtime`) that executes runs *joins* the store
as a worker: a row in ``workers`` (its heartbeat and lease, timed by the
database's clock) and a liveness lock the database or the kernel drops when
the process dies (Postgres: a session advisory lock on the writer's
connection; SQLite: an ``flock`` on ``<path>-atomr-worker-<hash>.lock``).

A run's index row names its ``owner`` and an ``epoch``. A worker owns the
runs it starts; a run that pauses or ends is owned by nobody. Taking a run
over (:meth:`Owners.claim`) bumps its epoch, and every write of a run is
conditional on the epoch its writer holds (:mod:`atomr.store.sql._writes`):
a worker that lost a run is *fenced* — its next write is refused in the
transaction that would have committed it (:class:`~atomr.errors.OwnershipLost`).

A run is claimable when it is running and its owner is nobody, a worker
whose row is gone (reaped: its liveness lock was free, the process died) or
whose heartbeat is older than its lease (it hangs: SIGSTOP, a cut network).

Threads: every method here is called by the runtime's worker thread (or at
open/close); writes take the writer lock like any other write.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from atomr.errors import StoreError

__all__ = ["Owners", "WorkerInfo"]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One live worker of a shared store (``rt.workers()``)."""

    worker_id: str
    host: str
    pid: int
    started_ms: int
    heartbeat_ms: int
    lease_s: float
    runs: int
    #: False when its heartbeat is older than its lease (it hangs; its runs may be taken over)
    alive: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "host": self.host, "pid": self.pid, "started_ms": self.started_ms,
                "heartbeat_ms": self.heartbeat_ms, "lease_s": self.lease_s, "runs": self.runs,
                "alive": self.alive}


class Owners:
    """join / heartbeat / reap / claim / release (see the module docstring)."""

    dialect: Any
    _enc: Callable[[str], str]
    _dec: Callable[[str], str]
    _wlock: Any
    _cache: dict[tuple[str, str], Any]
    _label: str

    #: this process's worker id on the store (None: not joined, writes leave runs unowned)
    worker_id: str | None = None
    lease_ms: int = 10_000

    def _writing(self, pipeline: bool = False, durable: bool = True) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _reading(self, consistent: bool = True) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _check_writable(self) -> None:
        raise NotImplementedError

    # -- what a backend provides ------------------------------------------------------------

    def _now_sql(self) -> str:
        """An SQL expression: the database's clock in milliseconds since the epoch."""
        raise NotImplementedError

    def _hold_worker(self, worker_id: str) -> None:
        """Take the liveness lock of ``worker_id``; WorkerIdInUse when a live worker holds it."""
        raise NotImplementedError

    def _drop_worker(self) -> None:
        """Release this worker's liveness lock."""
        raise NotImplementedError

    def _worker_dead(self, cur: Any, worker_id: str) -> bool:
        """True when ``worker_id``'s liveness lock is free (its process died), in ``cur``'s transaction."""
        raise NotImplementedError

    # -- state kept by this store object --------------------------------------------------------

    def _init_owners(self) -> None:
        #: runs this worker owns (or wrote unowned) -> the epoch its writes are conditional on
        self._owned: dict[tuple[str, str], int] = {}
        #: the worker thread's own reader connection (its polls never grow the reader pool)
        self._poll_conn: Any = None
        self._poll_lock = threading.Lock()

    def _poll_connect(self) -> Any:
        """A new reader connection in autocommit (the backend's)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _polling(self) -> Any:
        """A cursor on the worker thread's own connection (made once, at the first poll)."""
        with self._poll_lock:
            try:
                if self._poll_conn is None:
                    self._poll_conn = self._poll_connect()
                yield self._poll_conn.cursor()
            except Exception:
                conn, self._poll_conn = self._poll_conn, None  # broken? a new one next time
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                raise

    def _close_polling(self) -> None:
        with self._poll_lock:
            conn, self._poll_conn = self._poll_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- joining and leaving ---------------------------------------------------------------------

    def join(self, worker_id: str, lease_s: float) -> None:
        """Become worker ``worker_id`` of this store (WorkerIdInUse when a live one has that id)."""
        self._check_writable()
        if self.worker_id is not None:
            raise StoreError(f"{self._label} already has a worker ({self.worker_id!r}) in this store object")
        self._hold_worker(worker_id)
        self.worker_id = worker_id
        self.lease_ms = max(1, int(lease_s * 1000))
        try:
            with self._wlock, self._writing() as cur:
                cur.execute(self.dialect.sql("DELETE FROM {t}workers WHERE worker_id = ?"), (worker_id,))
                self._insert_worker(cur)
        except BaseException:
            self.worker_id = None
            with self._wlock:
                self._drop_worker()
            raise

    def heartbeat(self) -> None:
        """Renew this worker's lease (by the database's clock); a row reaped meanwhile is put back."""
        wid = self.worker_id
        if wid is None:
            return
        q = self.dialect.sql
        with self._wlock, self._writing(durable=False) as cur:
            cur.execute(q(f"UPDATE {{t}}workers SET heartbeat_ms = {self._now_sql()} WHERE worker_id = ?"), (wid,))
            if self._rows(cur) == 0:
                self._insert_worker(cur)

    def _insert_worker(self, cur: Any) -> None:
        """This worker's row, its heartbeat now (in ``cur``'s write transaction)."""
        now = self._now_sql()
        cur.execute(self.dialect.sql(f"INSERT INTO {{t}}workers (worker_id, host, pid, started_ms, heartbeat_ms, "
                                     f"lease_ms) VALUES (?, ?, ?, {now}, {now}, ?)"),
                    (self.worker_id, socket.gethostname()[:255], os.getpid(), self.lease_ms))

    def _live(self, w: str) -> str:
        """SQL: the worker row aliased ``w`` has a lease that has not expired (database clock)."""
        return f"{w}.heartbeat_ms >= {self._now_sql()} - {w}.lease_ms"

    def leave(self) -> int:
        """Give up every run this worker owns (others take them at once) and its row.
        Returns how many runs it gave up."""
        wid = self.worker_id
        if wid is None:
            return 0
        q = self.dialect.sql
        try:
            with self._wlock, self._writing() as cur:
                cur.execute(q("UPDATE {t}runs SET owner = NULL WHERE owner = ?"), (wid,))
                n = self._rows(cur)
                cur.execute(q("DELETE FROM {t}workers WHERE worker_id = ?"), (wid,))
                cur.execute(q("DELETE FROM {t}slots WHERE worker_id = ?"), (wid,))
        finally:
            self._owned.clear()
            self._cache.clear()
            self.worker_id = None
            with self._wlock:
                self._drop_worker()
            self._close_polling()
        return max(n, 0)

    def _rows(self, cur: Any) -> int:
        return int(cur.rowcount)

    # -- who is alive ----------------------------------------------------------------------------

    def reap(self) -> list[str]:
        """Forget the workers whose process died (their liveness lock is free):
        their runs become claimable at once. Returns their ids."""
        q = self.dialect.sql
        with self._polling() as cur:
            cur.execute(q("SELECT worker_id FROM {t}workers WHERE worker_id <> ?"), (self.worker_id or "",))
            others = [r[0] for r in cur.fetchall()]
        gone = []
        for wid in others:
            with self._wlock, self._writing() as cur:
                if self._worker_dead(cur, wid):
                    cur.execute(q("DELETE FROM {t}workers WHERE worker_id = ?"), (wid,))
                    gone.append(wid)
        return gone

    def workers(self) -> list[WorkerInfo]:
        """The workers that have joined this store, with how many runs each owns."""
        q = self.dialect.sql
        with self._reading(consistent=True) as cur:
            cur.execute(q(f"SELECT w.worker_id, w.host, w.pid, w.started_ms, w.heartbeat_ms, w.lease_ms, "
                          f"(SELECT count(*) FROM {{t}}runs r WHERE r.owner = w.worker_id), {self._now_sql()} "
                          "FROM {t}workers w ORDER BY w.started_ms, w.worker_id"))
            rows = cur.fetchall()
        return [WorkerInfo(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]) / 1000, int(r[6]),
                           int(r[7]) - int(r[4]) <= int(r[5])) for r in rows]

    # -- runs ------------------------------------------------------------------------------------

    def claimable(self, workflow_ids: Iterable[str], limit: int, own: bool = True) -> list[tuple[str, str, int]]:
        """Running runs of ``workflow_ids`` nobody live executes (``own``: and those this worker's
        id owns, an earlier process's and this one's): ``(workflow_id, run_id, epoch)``, longest waiting first."""
        wfs = [self._enc(w) for w in workflow_ids]
        if not wfs or limit <= 0:
            return []
        q = self.dialect.sql
        marks = ", ".join("?" * len(wfs))
        with self._polling() as cur:
            cur.execute(q(
                f"SELECT r.workflow_id, r.run_id, r.epoch FROM {{t}}runs r LEFT JOIN {{t}}workers w "
                f"ON w.worker_id = r.owner WHERE r.status = 'running' AND r.workflow_id IN ({marks}) "
                f"AND (r.owner IS NULL OR r.owner = ? OR w.worker_id IS NULL OR NOT ({self._live('w')})) "
                "ORDER BY r.updated_ms LIMIT ?"),
                (*wfs, (self.worker_id or "") if own else "", int(limit)))
            rows = cur.fetchall()
        return [(self._dec(r[0]), self._dec(r[1]), int(r[2])) for r in rows]

    def claim(self, workflow_id: str, run_id: str, epoch: int) -> bool:
        """Take over a running run seen at ``epoch`` (from :meth:`claimable`): True
        when this worker owns it now (its epoch bumped: the previous owner is fenced);
        False when another worker was first, or it is no longer claimable."""
        return bool(self.claim_many([(workflow_id, run_id, epoch)]))

    def claim_many(self, seen: Sequence[tuple[str, str, int]]) -> list[tuple[str, str]]:
        """:meth:`claim` for many runs in one transaction (one commit); the runs won."""
        wid = self.worker_id
        if wid is None:
            raise StoreError("this store object has not joined as a worker; claim() is for workers")
        if not seen:
            return []
        won = self._claim_rows(wid, seen)
        for workflow_id, run_id, epoch in seen:
            self._cache.pop((workflow_id, run_id), None)  # read it afresh: the previous owner may have written
        for workflow_id, run_id, epoch in won:
            self._owned[(workflow_id, run_id)] = epoch + 1
        return [(w, r) for w, r, _ in won]

    def _claim_rows(self, wid: str, seen: Sequence[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        """The conditional claims, in one transaction; the ones won. Postgres: ONE statement
        over arrays (one round trip); SQLite: one update per run (no round trips there).
        Not synced: the first durable commit of a claimed run syncs its claim too (a claim
        lost with a power cut was lost before anything that depends on it was committed)."""
        claimable = (f"status = 'running' AND (owner IS NULL OR owner = ? OR NOT EXISTS (SELECT 1 FROM "
                     f"{{t}}workers w WHERE w.worker_id = {{t}}runs.owner AND {self._live('w')}))")
        q = self.dialect.sql
        won = []
        with self._wlock, self._writing(durable=False) as cur:
            if self.dialect.name == "postgres":
                cur.execute(q(f"UPDATE {{t}}runs SET owner = ?, epoch = epoch + 1 FROM unnest(?::text[], ?::text[], "
                              f"?::bigint[]) AS v(w, id, e) WHERE workflow_id = v.w AND run_id = v.id AND epoch = v.e "
                              f"AND {claimable} RETURNING workflow_id, run_id, v.e"),
                            (wid, [self._enc(w) for w, _, _ in seen], [self._enc(r) for _, r, _ in seen],
                             [int(e) for _, _, e in seen], wid))
                return [(self._dec(w), self._dec(r), int(e)) for w, r, e in cur.fetchall()]
            stmt = q(f"UPDATE {{t}}runs SET owner = ?, epoch = epoch + 1 WHERE workflow_id = ? AND run_id = ? "
                     f"AND epoch = ? AND {claimable}")
            for workflow_id, run_id, epoch in seen:
                cur.execute(stmt, (wid, self._enc(workflow_id), self._enc(run_id), epoch, wid))
                if self._rows(cur) == 1:
                    won.append((workflow_id, run_id, epoch))
        return won

    def owner_of(self, workflow_id: str, run_id: str) -> tuple[str | None, int, str | None] | None:
        """``(owner, epoch, cancel asked)`` of a run; None for an unknown run."""
        q = self.dialect.sql
        with self._reading(consistent=False) as cur:
            cur.execute(q("SELECT owner, epoch, cancel FROM {t}runs WHERE workflow_id = ? AND run_id = ?"),
                        (self._enc(workflow_id), self._enc(run_id)))
            row = cur.fetchone()
        return None if row is None else (row[0], int(row[1]), row[2])

    def live_owner(self, workflow_id: str, run_id: str) -> str | None:
        """The live worker (other than this one) executing the run, or None."""
        q = self.dialect.sql
        with self._reading(consistent=False) as cur:
            cur.execute(q(f"SELECT r.owner FROM {{t}}runs r JOIN {{t}}workers w ON w.worker_id = r.owner "
                          f"WHERE r.workflow_id = ? AND r.run_id = ? AND r.status = 'running' AND r.owner <> ? "
                          f"AND {self._live('w')}"),
                        (self._enc(workflow_id), self._enc(run_id), self.worker_id or ""))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def ask_cancel(self, workflow_id: str, run_id: str, reason: str) -> bool:
        """Ask whoever executes a running run to cancel it (its worker reads the
        request within a tick). False when the run is not running."""
        q = self.dialect.sql
        with self._wlock, self._writing() as cur:
            cur.execute(q("UPDATE {t}runs SET cancel = ? WHERE workflow_id = ? AND run_id = ? AND status = 'running'"),
                        (reason, self._enc(workflow_id), self._enc(run_id)))
            return self._rows(cur) == 1

    def cancels_asked(self, keys: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str, str]]:
        """Cancels asked of this worker's runs: ``(workflow_id, run_id, reason)``."""
        if self.worker_id is None:
            return []
        q = self.dialect.sql
        with self._polling() as cur:
            cur.execute(q("SELECT workflow_id, run_id, cancel FROM {t}runs WHERE owner = ? AND cancel IS NOT NULL "
                          "AND status = 'running'"), (self.worker_id,))
            rows = cur.fetchall()
        return [(self._dec(r[0]), self._dec(r[1]), str(r[2])) for r in rows]

    def db_now_ms(self) -> int:
        """The database's clock (what leases are timed by)."""
        with self._reading(consistent=False) as cur:
            cur.execute(f"SELECT {self._now_sql()}")
            return int(cur.fetchone()[0])

    def positions(self, keys: Sequence[tuple[str, str]], settled: bool = False
                  ) -> dict[tuple[str, str], tuple[int, str]]:
        """``(last_seq, status)`` of each of ``keys`` that exists (``settled``: only of
        those paused or ended). Postgres: one statement whatever the number (arrays: its
        text, and so its prepared plan, never changes); SQLite: one per 300 keys."""
        q = self.dialect.sql
        keys = list(keys)
        only = " AND r.status NOT IN ('running', 'queued', 'sleeping')" if settled else ""
        rows: list[Any] = []
        with self._reading(consistent=False) as cur:
            if self.dialect.name == "postgres":
                cur.execute(q("SELECT r.workflow_id, r.run_id, r.last_seq, r.status FROM {t}runs r JOIN "
                              "unnest(?::text[], ?::text[]) AS k(w, id) ON r.workflow_id = k.w AND r.run_id = k.id" + only),
                            ([self._enc(w) for w, _ in keys], [self._enc(r) for _, r in keys]))
                rows = cur.fetchall()
            else:
                for i in range(0, len(keys), 300):
                    chunk = keys[i:i + 300]
                    cond = " OR ".join(["(workflow_id = ? AND run_id = ?)"] * len(chunk))
                    cur.execute(q(f"SELECT workflow_id, run_id, last_seq, status FROM {{t}}runs r WHERE ({cond}){only}"),
                                [self._enc(x) for k in chunk for x in k])
                    rows += cur.fetchall()
        return {(self._dec(r[0]), self._dec(r[1])): (int(r[2]), str(r[3])) for r in rows}
