"""The SQL stores' schedule writes and their test hook (a mixin of ``SqlStore``,
apart to keep that module short). Called by the runtime's writer thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atomr.store import format as fmt

__all__ = ["SqlSchedules"]


class SqlSchedules:
    dialect: Any
    _wlock: Any

    # provided by SqlStore
    _check_writable: Callable[[], None]
    _enc: Callable[[str], Any]
    _writing: Callable[..., Any]
    _count: Callable[[Any], int]

    def _put_schedule_raw(self, key: bytes, data: bytes) -> None:
        self._check_writable()
        sid = self._enc(fmt.parse_schedule_key(key))
        with self._wlock, self._writing() as cur:
            cur.execute(self.dialect.sql("INSERT INTO {t}schedules (schedule_id, record) VALUES (?, ?) "
                                         "ON CONFLICT (schedule_id) DO UPDATE SET record = excluded.record"),
                        (sid, bytes(data)))

    def _delete_schedule_raw(self, key: bytes) -> bool:
        self._check_writable()
        sid = self._enc(fmt.parse_schedule_key(key))
        with self._wlock, self._writing() as cur:
            cur.execute(self.dialect.sql("DELETE FROM {t}schedules WHERE schedule_id = ?"), (sid,))
            return self._count(cur) > 0

    # -- test hook: damage one record in place (the conformance suite) ----------------------

    def _corrupt(self, workflow_id: str, run_id: str, seq: int, data: bytes) -> None:
        with self._wlock, self._writing() as cur:
            cur.execute(self.dialect.sql("UPDATE {t}journal SET record = ? WHERE workflow_id = ? AND run_id = ? "
                                         "AND seq = ?"), (bytes(data), self._enc(workflow_id), self._enc(run_id), seq))
