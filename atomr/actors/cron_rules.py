"""Schedules as pure functions: checking a definition, due times, what to fire next.

No threads, no I/O (except the lazy import of ``croniter`` for ``cron=``).
Times are epoch milliseconds, UTC. A schedule's due times are:

* ``every_s``: the multiples of the interval since the Unix epoch (every_s=60
  fires on each whole minute, 3600 on each whole hour, UTC);
* ``cron``: the times a 5-field cron expression (minute hour day-of-month
  month day-of-week, or an alias such as ``@daily``) names, in UTC.

The run a firing starts is named after the schedule and the due time
(:func:`run_id_for`), so a due time starts at most one run, whichever process
fires it and however often.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from atomr.codec import check_encodable
from atomr.errors import AtomrError, CodecError, ScheduleError, ScheduleNotFound
from atomr.graph.state import check_channels, check_required
from atomr.store import format as fmt
from atomr.store.schedules import CATCH_UP, OVERLAP, ScheduleRecord

__all__ = [
    "ScheduleError", "ScheduleNotFound", "Schedule", "check_cron", "define", "merge", "describe",
    "next_due_ms", "latest_due_ms", "plan", "run_id_for", "due_text", "iso_ms", "ACTIVE", "MIN_EVERY_S",
]

#: Statuses of a run that is not over: a firing of an overlap="skip" schedule waits for it.
ACTIVE = ("running", "paused", "sleeping", "queued")
MIN_EVERY_S = 0.1
MAX_EVERY_S = 10 * 366 * 86400.0
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise ScheduleError("cron= needs the croniter package, which is not installed: "
                            "pip install croniter (or pass every_s= instead)") from None
    return croniter


def check_cron(expr: Any) -> str:
    """The expression, whitespace normalised; ScheduleError naming the bad field."""
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(f"cron must be a cron expression such as '*/5 * * * *', got {expr!r}")
    text = " ".join(expr.split())
    croniter = _croniter()
    if text.startswith("@"):
        if text not in _ALIASES:
            raise ScheduleError(f"cron {text!r} is not a known alias; use one of {', '.join(_ALIASES)} "
                                "or 5 fields (minute hour day-of-month month day-of-week)")
    else:
        parts = text.split(" ")
        if len(parts) != 5:
            raise ScheduleError(f"cron {text!r} has {len(parts)} fields, expected 5: minute hour "
                                "day-of-month month day-of-week (UTC), e.g. '0 2 * * *'")
        for i, name in enumerate(_FIELDS):
            alone = ["*"] * 5
            alone[i] = parts[i]
            if not croniter.is_valid(" ".join(alone)):
                raise ScheduleError(f"cron {text!r}: its {name} field {parts[i]!r} is not valid "
                                    f"(fields: {' '.join(_FIELDS)}; e.g. '*/5', '0-30', '1,15', 'mon-fri')")
        if not croniter.is_valid(text):
            raise ScheduleError(f"cron {text!r} is not a valid cron expression")
    try:
        _cron_next(text, int(time.time() * 1000))
    except (ValueError, KeyError, OverflowError) as exc:
        raise ScheduleError(f"cron {text!r} never fires ({exc}); check its day and month fields") from None
    return text


def _cron_next(expr: str, after_ms: int) -> int:
    from datetime import datetime, timezone

    start = datetime.fromtimestamp(after_ms / 1000, tz=timezone.utc)
    return round(_croniter()(expr, start).get_next(datetime).timestamp() * 1000)


def _cron_prev(expr: str, before_ms: int) -> int:
    from datetime import datetime, timezone

    start = datetime.fromtimestamp(before_ms / 1000, tz=timezone.utc)
    return round(_croniter()(expr, start).get_prev(datetime).timestamp() * 1000)


def next_due_ms(rule: ScheduleRecord, after_ms: int) -> int:
    """The first due time strictly after ``after_ms``."""
    if rule.every_ms is not None:
        return (after_ms // rule.every_ms + 1) * rule.every_ms
    return _cron_next(rule.cron or "", after_ms)


def latest_due_ms(rule: ScheduleRecord, at_ms: int) -> int:
    """The last due time at or before ``at_ms``."""
    if rule.every_ms is not None:
        return at_ms // rule.every_ms * rule.every_ms
    return _cron_prev(rule.cron or "", at_ms + 1)


def plan(rec: ScheduleRecord, now_ms: int) -> int:
    """The due time to fire next (at once when it is not after ``now_ms``).

    The baseline is the last due time handled (or the schedule's creation).
    When a due time after it has already passed — the store was closed, or a
    firing ran late — ``catch_up="none"`` skips the missed ones and waits for
    the next future due time; ``"one"`` fires once, now, for the latest missed.
    """
    base = rec.last_due_ms if rec.last_due_ms is not None else rec.created_ms
    first = next_due_ms(rec, base)
    if first > now_ms:
        return first
    if rec.catch_up == "one":
        return max(first, latest_due_ms(rec, now_ms))
    return next_due_ms(rec, now_ms)


def iso_ms(ms: int, subsecond: bool | None = None) -> str:
    """``2026-11-25T02:00:00Z``, UTC; with ``.mmm`` when ``subsecond`` (None:
    when the time has milliseconds)."""
    s, frac = divmod(ms, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    return f"{text}.{frac:03d}Z" if (frac if subsecond is None else subsecond) else f"{text}Z"


def due_text(rule: ScheduleRecord, due_ms: int) -> str:
    """A due time as its runs' ids show it: milliseconds only for an interval
    that is not whole seconds (so the ids of one schedule sort by time)."""
    return iso_ms(due_ms, rule.every_ms is not None and rule.every_ms % 1000 != 0)


def run_id_for(rule: ScheduleRecord, due_ms: int) -> str:
    """The id of the run a schedule starts for a due time: ``<schedule id>@<due time>``."""
    return f"{rule.schedule_id}@{due_text(rule, due_ms)}"


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ScheduleError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _text_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ScheduleError(f"{name} must be a non-empty str, got {type(value).__name__} {value!r}")
    try:
        n = len(value.encode())
    except UnicodeEncodeError:
        raise ScheduleError(f"{name} {value!r} cannot be encoded as UTF-8; use a plain text id") from None
    if name == "schedule_id":
        if n > fmt.MAX_SCHEDULE_ID_BYTES:
            raise ScheduleError(f"schedule_id is {n} bytes long; use at most {fmt.MAX_SCHEDULE_ID_BYTES}")
        if "/" in value or any(ord(c) < 32 for c in value):
            raise ScheduleError(f"schedule_id {value!r} holds '/' or a control character; the ids of its "
                                "runs are made from it: use letters, digits, '-', '_', '.'")
    return value


def _every_ms(every_s: Any) -> int:
    if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not math.isfinite(every_s) \
            or not MIN_EVERY_S <= every_s <= MAX_EVERY_S:
        raise ScheduleError(f"every_s must be a number of seconds from {MIN_EVERY_S} to {MAX_EVERY_S:.0f}, "
                            f"got {every_s!r}")
    return round(every_s * 1000)


def define(schedule_id: Any, workflow_id: Any, *, cron: Any = None, every_s: Any = None, input: Any = None,
           overlap: Any = "skip", catch_up: Any = "none", meta: Any = None, schema: Any = None,
           now_ms: int | None = None) -> ScheduleRecord:
    """A checked new schedule record. ScheduleError names what is wrong;
    ``schema`` (the workflow's, when known) checks the input's channels."""
    sid = _text_id(schedule_id, "schedule_id")
    wid = _text_id(workflow_id, "workflow_id")
    try:
        fmt.check_ids(wid, f"{sid}@{iso_ms(1, True)}")
    except AtomrError as exc:
        raise ScheduleError(f"schedule_id and workflow_id together are too long for its runs' ids: {exc}") from None
    if (cron is None) == (every_s is None):
        raise ScheduleError("pass exactly one of cron= (e.g. '*/5 * * * *') or every_s= (seconds)")
    expr = check_cron(cron) if cron is not None else None
    every = _every_ms(every_s) if every_s is not None else None
    if input is not None and (not isinstance(input, Mapping) or not all(isinstance(k, str) for k in input)):
        raise ScheduleError(f"input must be a mapping of channel -> value, got {type(input).__name__}")
    data = dict(input or {})
    if meta is not None and (not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta)):
        raise ScheduleError(f"meta must be a mapping with str keys, got {type(meta).__name__}")
    extra = dict(meta or {})
    if {"parent", "schedule", "due"} & set(extra):
        raise ScheduleError("meta keys 'parent', 'schedule' and 'due' are reserved (a scheduled run's meta "
                            "gets its schedule id and due time); use other keys")
    try:
        check_encodable(data, "the schedule input")
        check_encodable(extra, "the schedule meta")
    except CodecError as exc:
        raise ScheduleError(str(exc)) from None
    if schema is not None:
        check_channels(schema, data.items())
        check_required(schema, data, "the schedule input")
    return ScheduleRecord(sid, wid, expr, every, data, _choice(overlap, "overlap", OVERLAP),
                          _choice(catch_up, "catch_up", CATCH_UP), extra,
                          int(time.time() * 1000) if now_ms is None else now_ms)


def merge(old: ScheduleRecord | None, new: ScheduleRecord) -> ScheduleRecord:
    """What to store when ``new`` is defined over ``old`` (same id): the old one
    when nothing changed; else the new definition with the old firing state,
    so a due time already handled is not fired again."""
    if old is None:
        return new
    if old.same_definition(new):
        return old
    return replace(old, workflow_id=new.workflow_id, cron=new.cron, every_ms=new.every_ms, input=new.input,
                   overlap=new.overlap, catch_up=new.catch_up, meta=new.meta, version=old.version + 1,
                   last_error=None)


@dataclass(frozen=True)
class Schedule:
    """A schedule as ``rt.schedules()`` and ``atomr schedule ls`` show it.
    Times are epoch seconds (UTC), like ``StateView.wake_at``."""

    schedule_id: str
    workflow_id: str
    cron: str | None
    every_s: float | None
    input: dict[str, Any]
    overlap: str
    catch_up: str
    #: when the next run starts (None: cannot tell, see last_error)
    next_due: float | None
    #: when the last run was started, and its id
    last_fired: float | None
    last_run_id: str | None
    #: the latest due time handled (a run started or a firing skipped)
    last_due: float | None
    fired: int = 0
    skipped: int = 0
    last_error: str | None = None
    #: True when this runtime starts its runs (its workflow is registered here)
    armed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("next_due", "last_fired", "last_due"):
            out[k + "_iso"] = None if out[k] is None else iso_ms(round(out[k] * 1000))
        return out


def describe(rec: ScheduleRecord, now_ms: int, armed: bool = False) -> Schedule:
    error = rec.last_error
    try:
        nxt: float | None = plan(rec, now_ms) / 1000
    except ScheduleError as exc:  # a cron schedule read where croniter is missing
        nxt, error = None, str(exc)
    sec = (lambda ms: None if ms is None else ms / 1000)
    return Schedule(rec.schedule_id, rec.workflow_id, rec.cron, sec(rec.every_ms), dict(rec.input),
                    rec.overlap, rec.catch_up, nxt, sec(rec.last_fired_ms), rec.last_run_id,
                    sec(rec.last_due_ms), rec.fired, rec.skipped, error, armed, dict(rec.meta))
