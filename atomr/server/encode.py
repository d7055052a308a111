"""Values to JSON: run state may hold what JSON cannot (bytes, sets, NaN, datetimes...).

The mapping (one way; the API never reads these forms back):

==========================  ==============================================
stored value                JSON
==========================  ==============================================
float NaN / +inf / -inf     the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
bytes (bytearray, memview)  a base64 string (standard alphabet, padded)
tuple                       an array
set, frozenset              an array (sorted when its items can be sorted)
datetime, date, time        an ISO 8601 string
timedelta                   seconds as a number
Decimal, UUID               a string
dict with non-str keys      keys as ``str(key)`` (JSON keys are strings)
outcomes, StateView, ...    an object of their fields
anything else               ``repr(value)`` (atomr's codec stores nothing else)
==========================  ==============================================

Containers nested deeper than :data:`MAX_JSON_DEPTH` end in the string
``"..."`` (stored values are at most ``codec.MAX_DEPTH`` deep).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import json
import math
import uuid
from typing import Any

from atomr.store.base import RunSummary
from atomr.types import Checkpoint, StateView

__all__ = ["MAX_JSON_DEPTH", "checkpoint_json", "dumps", "outcome_json", "summary_json", "to_json",
           "view_json"]

MAX_JSON_DEPTH = 200


def _float(x: float) -> Any:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _key(k: Any) -> str:
    if isinstance(k, str):
        return str.__str__(k)
    j = to_json(k)
    return j if isinstance(j, str) else dumps(j)


def to_json(value: Any, depth: int = 0) -> Any:
    """``value`` made of JSON types only (see the module's table)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a str enum: its value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float(float(value))
    if depth >= MAX_JSON_DEPTH:
        return "..."
    d = depth + 1
    if isinstance(value, dict):
        return {_key(k): to_json(v, d) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if hasattr(value, "_asdict"):  # a named tuple (StepEvent): its fields
            return {k: to_json(v, d) for k, v in value._asdict().items()}
        return [to_json(v, d) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_json(v, d) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name), d) for f in dataclasses.fields(value)}
    return repr(value)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (already made of JSON types by :func:`to_json`)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def iso(ms: int) -> str | None:
    if not ms:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds")


def summary_json(s: RunSummary) -> dict[str, Any]:
    return {
        "workflow_id": s.workflow_id, "run_id": s.run_id, "status": s.status, "super_step": s.super_step,
        "created_ms": s.created_ms, "updated_ms": s.updated_ms, "created": iso(s.created_ms),
        "updated": iso(s.updated_ms), "last_seq": s.last_seq, "meta": to_json(s.meta or {}),
    }


def interrupts_json(items: Any) -> list[dict[str, Any]]:
    return [{"id": i.id, "step_id": i.step_id, "payload": to_json(i.payload)} for i in items or ()]


def view_json(v: StateView) -> dict[str, Any]:
    error = None
    if v.error:
        step, etype, message = (list(v.error) + [None, None, None])[:3]
        error = {"step_id": step, "error_type": etype, "message": message,
                 "traceback": getattr(v, "traceback", None)}
    return {
        "workflow_id": v.workflow_id, "run_id": v.run_id, "values": to_json(v.values),
        "super_step": v.super_step, "status": v.status, "next": list(v.next),
        "interrupts": interrupts_json(v.interrupts), "pause_reason": v.pause_reason, "error": error,
        "meta": to_json(v.meta or {}),
    }


def checkpoint_json(c: Checkpoint) -> dict[str, Any]:
    return {"super_step": c.super_step, "label": c.label, "values": to_json(c.values), "at_ms": c.at_ms,
            "at": iso(c.at_ms), "seq": c.seq, "next": list(c.next)}


def outcome_json(out: Any) -> dict[str, Any]:
    """``{"outcome": "done"|"paused"|"failed"|"cancelled", ...its fields}``."""
    doc: dict[str, Any] = {"outcome": str(getattr(out, "status", type(out).__name__.lower()))}
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        for f in dataclasses.fields(out):
            value = getattr(out, f.name)
            doc[f.name] = interrupts_json(value) if f.name == "interrupts" else to_json(value)
    return doc
