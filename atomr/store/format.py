"""The on-disk format, defined once: key layout, record framing, event codes.

Every backend stores the same bytes (the in-memory one too), so a record that
round-trips through one round-trips through all.

Layout (one LMDB environment, four named databases)::

    database   key                                   value
    ---------  ------------------------------------  --------------------------------------
    meta       b"format_version"                     u32 big-endian (FORMAT_VERSION, see below)
    meta       b"created_ms"                         u64 big-endian
    meta       b"schedule:" + schedule_id_utf8       record(schedule)   one schedule: its rule,
                                                     input, policies and firing state (v2)
    meta       b"ix:" + filter + u64be(created_ms)   run_key            the run index's order (v3):
               + ids (see below)                                        one key per filter and run
    meta       b"ix#" + status_utf8                  i64be(n)           runs with that status (v3)
    journal    run_key + u64be(seq)   seq = 1, 2, …  record(event)      (append-only, gap-free)
    snapshots  run_key + u64be(seq)                  record(progress)   state after event `seq`
    runs       run_key                               record(summary)    the small run index

    run_key  = u16be(len(wf)) + wf_utf8 + u16be(len(run)) + run_utf8
    record   = u8(codec version) + u32be(crc32(payload)) + payload
    payload  = msgpack([event_code, field, field, …])   (events, see EVENT_CODES)
             | msgpack({progress fields})                (snapshots)
             | msgpack({summary fields})                 (run index)
             | msgpack({schedule fields})                (schedules, see store.schedules)

Big-endian sequence numbers make LMDB's key order the journal's order, so a
cursor walk from ``run_key + u64be(n)`` replays a run from event ``n``. The
CRC makes a flipped bit a :class:`~atomr.errors.CorruptRecord` instead of a
silently wrong state. A store whose ``format_version`` is newer than
FORMAT_VERSION is refused on open.

Format versions: 1 — runs only; 2 — the meta database may also hold schedule
records (key prefix ``b"schedule:"``; the payload holds the fields of
:class:`~atomr.store.schedules.ScheduleRecord` but its id, by name). Schedules
live in ``meta`` rather than in a database of their own because an atomr that
predates them checks a store's database names (``verify`` on open) before its
format version: a fifth database would be reported as damage, while a newer
version number is refused with a clear "upgrade atomr". A new store is
created at 2; a store at 1 opens unchanged and is marked 2 in the
transaction that writes its first schedule. 3 — the meta database also holds
the run index's order and the counts of runs by status. ``filter`` is
``b"a"`` (every run), ``b"s" + ord(status)``, ``b"w" + ord(wf)`` or ``b"x" +
hash8(wf) + ord(status)``, then ``u64be(created_ms)`` and the ids (a workflow's
filters: only the run id); ``ord(text)`` is its UTF-8 bytes with NUL written
as ``00 ff``, ended by ``00 00``, so that key order is ``(created_ms, workflow
id, run id)`` order, ids compared as bytes: a page of runs newest first is a
backwards cursor walk from the key of the cursor's run. A key longer than
MAX_KEY_BYTES keeps its first bytes and ends with a hash of its ids (runs of
one millisecond with such long ids sort by those bytes, then by that hash). The writer puts a
run's four keys in the transaction that creates its run index entry and moves
its two status keys (and the two counts) in the one that changes its status.
A store at 1 or 2 is migrated when opened for writing (one transaction that
builds the keys from the run index); read-only, it is read by a scan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from typing import Any

from atomr import codec, events as ev
from atomr.errors import CodecError, CorruptRecord, StoredTypeMismatch, StoreError, UnregisteredType

__all__ = [
    "FORMAT_VERSION", "MAX_KEY_BYTES", "check_ids", "EVENT_CODES", "run_key", "parse_run_key", "seq_key",
    "seq_of", "frame", "unframe", "encode_event", "decode_event", "encode_obj", "decode_obj",
    "SCHEDULE_PREFIX", "MAX_SCHEDULE_ID_BYTES", "schedule_key", "parse_schedule_key",
]

FORMAT_VERSION = 3
#: The first format whose meta database may hold schedule records.
SCHEDULES_FORMAT = 2
#: The first format whose meta database holds the run index's order and counts.
INDEX_FORMAT = 3
#: Key prefixes (meta database) of the run index's order and of the counts by status.
INDEX_PREFIX = b"ix:"
COUNT_PREFIX = b"ix#"

DB_META = b"meta"
DB_JOURNAL = b"journal"
DB_SNAPSHOTS = b"snapshots"
DB_RUNS = b"runs"

#: Event class <-> code. Codes are forever: never renumber, only append.
EVENT_CODES: dict[type, int] = {
    ev.RunStarted: 1,
    ev.StepStarted: 2,
    ev.StepCompleted: 3,
    ev.StepFailed: 4,
    ev.SuperStepCommitted: 5,
    ev.Interrupted: 6,
    ev.Paused: 7,
    ev.Resumed: 8,
    ev.StateUpdated: 9,
    ev.BranchTaken: 10,
    ev.HumanApproved: 11,
    ev.RunCompleted: 12,
    ev.RunFailed: 13,
    ev.Forked: 14,
    ev.StepCancelled: 15,
    ev.ItemCompleted: 16,
    ev.LoopIterated: 17,
    ev.RunCancelled: 18,
    ev.TurnStarted: 19,
}
_CLASSES = {code: cls for cls, code in EVENT_CODES.items()}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_CODES}
#: Trailing fields added since format 1, stored only when not None, so that a
#: record without them has its old layout (and old records read as None).
_OPTIONAL_TAIL = {ev.RunFailed: 1}
#: Fields holding (channel, value) pairs: stored as 2-lists, read back as tuples.
_PAIR_FIELDS = {ev.StepCompleted: "writes", ev.StateUpdated: "edits", ev.LoopIterated: "writes"}
#: Fields holding {key: value} of user values (each value may nest codec.MAX_DEPTH deep).
_MAP_FIELDS = {
    ev.RunStarted: ("input", "channel {!r} of the run input"),
    ev.TurnStarted: ("input", "channel {!r} of the turn's input"),
    ev.Resumed: ("answers", "the resume value of interrupt {!r}"),
    ev.Forked: ("values", "channel {!r} of the forked state"),
}

_U16, _U32, _U64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_VERSION = bytes((codec.CODEC_VERSION,))


#: Longest key LMDB accepts (its default build); a journal key is run_key + 8 bytes.
MAX_KEY_BYTES = 511


def check_ids(workflow_id: str, run_id: str) -> None:
    """Refuse ids whose journal keys would not fit (every backend, for one behaviour)."""
    n = len(workflow_id.encode()) + len(run_id.encode()) + 12
    if n > MAX_KEY_BYTES:
        raise StoreError(
            f"ids of run {workflow_id[:40]}/{run_id[:40]}... are too long: their journal key "
            f"takes {n} bytes, the store allows {MAX_KEY_BYTES} (UTF-8 workflow id + run id "
            f"up to {MAX_KEY_BYTES - 12} bytes together); use shorter ids"
        )


def run_key(workflow_id: str, run_id: str) -> bytes:
    w = workflow_id.encode()
    r = run_id.encode()
    return _U16.pack(len(w)) + w + _U16.pack(len(r)) + r


def parse_run_key(key: bytes) -> tuple[str, str]:
    """(workflow id, run id) of a run key. CodecError when the key is damaged:
    its length fields must add up exactly and the ids must be UTF-8."""
    n = len(key)
    if n < 4:
        raise CodecError(f"run key of {n} bytes is shorter than its two length fields")
    (lw,) = _U16.unpack_from(key, 0)
    if 4 + lw > n:
        raise CodecError(f"run key's workflow id length ({lw}) runs past its {n} bytes")
    (lr,) = _U16.unpack_from(key, 2 + lw)
    if 4 + lw + lr != n:
        raise CodecError(f"run key's id lengths ({lw} + {lr}) do not add up to its {n} bytes")
    try:
        return key[2 : 2 + lw].decode(), key[4 + lw :].decode()
    except UnicodeDecodeError:
        raise CodecError("run key's ids are not valid UTF-8") from None


#: Key prefix of schedule records in the meta database.
SCHEDULE_PREFIX = b"schedule:"
#: Longest schedule id (UTF-8): its runs' ids (``id@<due time>``) must fit a journal key too.
MAX_SCHEDULE_ID_BYTES = 200


def schedule_key(schedule_id: str) -> bytes:
    """The meta key of a schedule. StoreError for an id that is empty, not
    UTF-8 or longer than MAX_SCHEDULE_ID_BYTES."""
    try:
        raw = schedule_id.encode()
    except (AttributeError, UnicodeEncodeError):
        raise StoreError(f"schedule id {schedule_id!r} is not a str that UTF-8 can encode; "
                         "use a plain text id") from None
    if not raw or len(raw) > MAX_SCHEDULE_ID_BYTES:
        raise StoreError(f"schedule id of {len(raw)} bytes; use 1 to {MAX_SCHEDULE_ID_BYTES} bytes")
    return SCHEDULE_PREFIX + raw


def parse_schedule_key(key: bytes) -> str:
    """The schedule id of a meta key made by :func:`schedule_key`; CodecError otherwise."""
    if not key.startswith(SCHEDULE_PREFIX) or len(key) == len(SCHEDULE_PREFIX):
        raise CodecError(f"meta key {key!r} is not a schedule key")
    try:
        return key[len(SCHEDULE_PREFIX):].decode()
    except UnicodeDecodeError:
        raise CodecError("schedule key's id is not valid UTF-8") from None


def ordered(text: str) -> bytes:
    """``text`` as a key part that sorts as its UTF-8 bytes do and ends unambiguously."""
    return text.encode("utf-8", "surrogatepass").replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def index_filters(workflow_id: str, status: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The four filter prefixes a run is listed under: all, its status, its workflow, both."""
    h, st = _hash8(workflow_id.encode("utf-8", "surrogatepass")), ordered(status)
    return INDEX_PREFIX + b"a", INDEX_PREFIX + b"s" + st, INDEX_PREFIX + b"w" + h, INDEX_PREFIX + b"x" + h + st


def index_prefix(workflow_id: str | None, status: str | None) -> bytes:
    """The prefix of one filter's keys (None: not filtered on it)."""
    return index_filters(workflow_id or "", status or "")[(status is not None) + 2 * (workflow_id is not None)]


def index_key(prefix: bytes, created_ms: int, workflow_id: str, run_id: str) -> bytes:
    """A run's key under a filter's ``prefix`` (a workflow's filters hold no workflow id)."""
    tie = ordered(run_id) if prefix[3:4] in (b"w", b"x") else ordered(workflow_id) + ordered(run_id)
    key = prefix + _U64.pack(created_ms) + tie
    return key if len(key) <= MAX_KEY_BYTES else key[:MAX_KEY_BYTES - 8] + _hash8(tie)


def _hash8(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def count_key(status: str) -> bytes:
    return COUNT_PREFIX + status.encode()


def seq_key(rkey: bytes, seq: int) -> bytes:
    return rkey + _U64.pack(seq)


def seq_of(key: bytes) -> int:
    return _U64.unpack_from(key, len(key) - 8)[0]


def u32(n: int) -> bytes:
    return _U32.pack(n)


def read_u32(b: bytes) -> int:
    return _U32.unpack(b)[0]


def u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def frame(payload: bytes) -> bytes:
    return _VERSION + _U32.pack(zlib.crc32(payload)) + payload


def unframe(data: bytes) -> bytes:
    """Check version and CRC; return the payload. Raises CodecError."""
    if len(data) < 5:
        raise CodecError(f"record is {len(data)} bytes, shorter than its 5-byte header (truncated)")
    if data[0] != codec.CODEC_VERSION:
        if data[0] > codec.CODEC_VERSION:
            raise CodecError(
                f"record written with codec version {data[0]}, newer than this atomr "
                f"({codec.CODEC_VERSION}); upgrade atomr"
            )
        raise CodecError(f"bad record version byte {data[0]}")
    payload = bytes(data[5:])
    if zlib.crc32(payload) != _U32.unpack_from(data, 1)[0]:
        raise CodecError("checksum mismatch (the bytes were altered or truncated)")
    return payload


def encode_event(event: Any) -> bytes:
    """One journal record. Raises CodecError naming what could not be stored
    (an unsupported type, or a value nested deeper than ``codec.MAX_DEPTH``)."""
    cls = type(event)
    row: list[Any] = [EVENT_CODES[cls]]
    pair_field = _PAIR_FIELDS.get(cls)
    map_field = _MAP_FIELDS.get(cls, _NO_MAP)[0]
    flat = _FLAT
    exceeds = codec.depth_exceeds
    for name in _FIELDS[cls]:
        value = getattr(event, name)
        if type(value) not in flat:  # scalars (most fields) need no depth check
            if name == pair_field:
                value = [[k, v] for k, v in value]
                for k, v in value:
                    if exceeds(v, codec.MAX_DEPTH):
                        codec.check_depth(v, _written(event, k))
            elif name == map_field and isinstance(value, dict):
                for k, v in value.items():
                    if exceeds(v, codec.MAX_DEPTH):
                        codec.check_depth(v, _MAP_FIELDS[cls][1].format(k))
            elif exceeds(value, codec.MAX_DEPTH):
                codec.check_depth(value, f"{cls.__name__}.{name}")
        row.append(value)
    tail = _OPTIONAL_TAIL.get(cls, 0)
    while tail and row[-1] is None:
        row.pop()
        tail -= 1
    try:
        return frame(codec.packb(row, max_depth=None))
    except (TypeError, ValueError, OverflowError):
        if pair_field is not None:
            for k, v in getattr(event, pair_field):
                codec.check_encodable(v, _written(event, k))
        for name in _FIELDS[cls]:
            codec.check_encodable(getattr(event, name), f"{cls.__name__}.{name}")
        raise


_FLAT = frozenset({str, int, float, bool, type(None), bytes})
_NO_MAP = ("", "")


def _written(event: Any, channel: str) -> str:
    step = getattr(event, "step", None)
    who = f" by step {step!r}" if step else f" ({type(event).__name__})"
    return f"the value written to channel {channel!r}{who}"


def _unpack(payload: bytes) -> Any:
    """msgpack-decode a checked payload; any malformation becomes a CodecError."""
    try:
        return codec.unpackb(payload)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise CodecError(f"malformed payload ({type(exc).__name__}: {exc})") from None


def decode_event(data: bytes) -> Any:
    """Inverse of :func:`encode_event`. Raises CodecError on any malformed record."""
    row = _unpack(unframe(data))
    if not isinstance(row, list) or not row:
        raise CodecError("journal record is not an event row")
    cls = _CLASSES.get(row[0]) if isinstance(row[0], int) else None
    if cls is None:
        raise CodecError(f"unknown event code {row[0]!r} (written by a newer atomr?)")
    values = row[1:]
    fields = _FIELDS[cls]
    if len(values) != len(fields) and not 0 <= len(fields) - len(values) <= _OPTIONAL_TAIL.get(cls, 0):
        raise CodecError(f"{cls.__name__} record has {len(values)} fields, expected {len(fields)}")
    pair_field = _PAIR_FIELDS.get(cls)
    if pair_field is not None:
        i = fields.index(pair_field)
        try:
            values[i] = [(k, v) for k, v in values[i]]
        except (TypeError, ValueError):
            raise CodecError(f"{cls.__name__}.{pair_field} is not a list of (channel, value) pairs") from None
    return cls(*values)


#: Levels a snapshot or summary record adds around a stored value.
RECORD_WRAP = 4


def encode_obj(obj: Any, where: str = "a snapshot or run index record") -> bytes:
    """A framed snapshot / run-index record. Raises CodecError naming ``where``.

    Values inside it are checked against ``codec.MAX_DEPTH`` plus the
    :data:`RECORD_WRAP` levels of the record around them. A snapshot's
    channels (``obj["v"]``) are named when one of them is too deep.
    """
    try:
        return frame(codec.packb(obj, max_depth=codec.MAX_DEPTH + RECORD_WRAP))
    except (TypeError, ValueError, OverflowError, RecursionError):
        values = obj.get("v") if isinstance(obj, dict) else None
        if isinstance(values, dict):
            for k, v in values.items():
                codec.check_encodable(v, f"channel {k!r} of the state ({where})")
        try:
            codec.packb(obj, max_depth=codec.MAX_DEPTH + RECORD_WRAP)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise codec.encode_error(where, exc) from None
        raise


def decode_obj(data: bytes) -> Any:
    """Inverse of :func:`encode_obj`. Raises CodecError on any malformed record."""
    return _unpack(unframe(data))


#: decoding errors of a sound record: this process's classes cannot read it (not damage)
SOUND = (UnregisteredType, StoredTypeMismatch)


def corrupt(workflow_id: str, run_id: str, seq: int, exc: Exception) -> Exception:
    """What to raise for a record that cannot be read: CorruptRecord, unless
    the record is sound and only this process's classes cannot read it
    (:data:`SOUND`: a type not registered, or one whose stored shape no longer
    fits its class): then that error, naming the record."""
    if isinstance(exc, StoredTypeMismatch):
        return exc.located(f"record {seq} of run {workflow_id}/{run_id}" if seq
                           else f"the run index entry of run {workflow_id}/{run_id}")
    if isinstance(exc, UnregisteredType):
        return exc
    return CorruptRecord(workflow_id, run_id, seq, str(exc))
