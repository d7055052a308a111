"""The stored form of a schedule (one record in the meta database, see :mod:`.format`).

A record holds the schedule's definition (workflow, rule, input, policies) and
its firing state (the last due time handled, the run it started, counters).
The runtime computes due times; the store only keeps and checks records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atomr.errors import CodecError
from atomr.store import format as fmt

__all__ = ["ScheduleRecord", "OVERLAP", "CATCH_UP"]

#: What a firing does while the schedule's previous run is still active.
OVERLAP = ("skip", "allow")
#: What a runtime does about due times missed while no runtime had the store open.
CATCH_UP = ("none", "one")

_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))
#: field -> accepted types (bool is refused where an int is expected)
_TYPES: dict[str, tuple[type, ...]] = {
    "workflow_id": (str,), "cron": _OPT_STR, "every_ms": _OPT_INT, "input": (dict,),
    "overlap": (str,), "catch_up": (str,), "meta": (dict,), "created_ms": (int,), "version": (int,),
    "last_due_ms": _OPT_INT, "last_run_id": _OPT_STR, "last_fired_ms": _OPT_INT, "fired": (int,),
    "skipped": (int,), "last_error": _OPT_STR,
}
_REQUIRED = ("workflow_id", "cron", "every_ms", "input", "overlap", "catch_up", "created_ms", "version")


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One schedule as stored. Times are epoch milliseconds (UTC).

    Exactly one of ``cron`` (a 5-field cron expression, UTC) and ``every_ms``
    (due times are the multiples of it since the epoch) is set. ``version``
    grows when the definition changes, so a timer armed for an older one
    is ignored. ``last_due_ms`` is the latest due time handled — a run started
    or a firing skipped — and the baseline for the next one.
    """

    schedule_id: str
    workflow_id: str
    cron: str | None
    every_ms: int | None
    input: dict[str, Any]
    overlap: str = "skip"
    catch_up: str = "none"
    meta: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    version: int = 1
    last_due_ms: int | None = None
    last_run_id: str | None = None
    last_fired_ms: int | None = None
    fired: int = 0
    skipped: int = 0
    last_error: str | None = None

    def same_definition(self, other: ScheduleRecord) -> bool:
        return (self.workflow_id, self.cron, self.every_ms, self.input, self.overlap, self.catch_up,
                self.meta) == (other.workflow_id, other.cron, other.every_ms, other.input,
                               other.overlap, other.catch_up, other.meta)

    def to_record(self) -> bytes:
        row = {name: getattr(self, name) for name in _TYPES}
        return fmt.encode_obj(row, f"the record of schedule {self.schedule_id!r}")

    @classmethod
    def from_record(cls, schedule_id: str, data: bytes) -> ScheduleRecord:
        """Decode a schedule record; CodecError when it is damaged or malformed.
        Fields a newer atomr may add are ignored."""
        row = fmt.decode_obj(data)
        if not isinstance(row, dict) or any(k not in row for k in _REQUIRED):
            raise CodecError(f"the record of schedule {schedule_id!r} does not hold a schedule (wrong shape)")
        values = {}
        for name, types in _TYPES.items():
            if name not in row:
                continue
            v = row[name]
            if isinstance(v, bool) or not isinstance(v, types):
                raise CodecError(f"the record of schedule {schedule_id!r} has a bad {name} ({type(v).__name__})")
            values[name] = v
        if (row["cron"] is None) == (row["every_ms"] is None) or row["overlap"] not in OVERLAP \
                or row["catch_up"] not in CATCH_UP:
            raise CodecError(f"the record of schedule {schedule_id!r} has an invalid rule or policy")
        return cls(schedule_id, **values)
