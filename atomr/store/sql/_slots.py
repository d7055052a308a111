"""The slots of step limits with ``scope="global"`` (:mod:`atomr.actors.global_limits`).

A slot is a row ``(lane, worker_id, token)`` of the ``slots`` table, held by one
execution (``token``) of one worker; only slots of workers whose lease is live
count. A worker's own rows are written by its one ``atomr-limits`` thread, so
the rows of (lane, this worker) are exactly the executions that thread holds:
:meth:`Slots.free_slots_except` gives back any other (a row a crash of the
bookkeeping left behind would hold the lane for ever).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = ["Slots"]


class Slots:
    """Mixed into :class:`~atomr.store.sql.base.SqlStore` (its writer connection, dialect and clock)."""

    # provided by SqlStore and its backends (no stubs here: they would shadow them in the MRO)
    dialect: Any
    worker_id: str | None
    _wlock: Any
    _now_sql: Any
    _live: Any
    _rows: Any
    _writing: Any

    def take_slot(self, lane: str, token: int, concurrency: int | None, per_second: float | None) -> bool:
        """Hold a slot of ``lane`` for execution ``token`` if its limit allows one now
        (slots of live workers counted; starts spaced by the database's clock): True
        when taken, in one transaction."""
        q = self.dialect.sql
        now = self._now_sql()
        with self._wlock, self._writing() as cur:
            self._lock_lane(cur, lane)
            if concurrency is not None:
                cur.execute(q(f"SELECT count(*) FROM {{t}}slots s JOIN {{t}}workers w ON w.worker_id = s.worker_id "
                              f"WHERE s.lane = ? AND {self._live('w')}"), (lane,))
                if int(cur.fetchone()[0]) >= concurrency:
                    return False
            if per_second is not None:
                cur.execute(q("INSERT INTO {t}lanes (lane, next_ms) VALUES (?, 0) ON CONFLICT (lane) DO NOTHING"),
                            (lane,))
                cur.execute(q(f"UPDATE {{t}}lanes SET next_ms = (CASE WHEN next_ms > {now} THEN next_ms ELSE {now} "
                              f"END) + ? WHERE lane = ? AND next_ms <= {now}"), (max(1, int(1000 / per_second)), lane))
                if self._rows(cur) != 1:
                    return False
            cur.execute(q("INSERT INTO {t}slots (lane, worker_id, token) VALUES (?, ?, ?)"),
                        (lane, self.worker_id or "", token))
        return True

    def free_slot(self, lane: str, token: int) -> None:
        """Give back the slot ``take_slot`` took for ``token``."""
        with self._wlock, self._writing() as cur:
            cur.execute(self.dialect.sql("DELETE FROM {t}slots WHERE lane = ? AND worker_id = ? AND token = ?"),
                        (lane, self.worker_id or "", token))

    def _lock_lane(self, cur: Any, lane: str) -> None:
        """Serialize the slot counts of one lane (SQLite: its write transactions are serial already)."""

    def free_slots_except(self, lane: str, tokens: Collection[int]) -> int:
        """Give back this worker's slots of ``lane`` held by none of ``tokens`` (the executions
        its limits thread holds): how many there were."""
        q = self.dialect.sql
        tokens = [int(t) for t in tokens]
        keep = f" AND token NOT IN ({', '.join('?' * len(tokens))})" if tokens else ""
        with self._wlock, self._writing() as cur:
            cur.execute(q("DELETE FROM {t}slots WHERE lane = ? AND worker_id = ?" + keep),
                        (lane, self.worker_id or "", *tokens))
            return self._rows(cur)
