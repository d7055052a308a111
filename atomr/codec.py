"""Safe, versioned value encoding: msgpack plus a small explicit set of extensions.

What can be stored in a channel, an input or an interrupt payload:

=================  ===========================================================
type               how
=================  ===========================================================
None, bool, int    msgpack native (ints up to 64 bits)
float, str, bytes  msgpack native
list, dict         msgpack native (dict keys may be any supported scalar)
tuple              extension 1 (comes back as a tuple)
set, frozenset     extensions 2 and 3
datetime           extension 4 (ISO 8601; a tz-aware value keeps its offset)
date, time         extensions 5 and 6
timedelta          extension 7
Decimal            extension 8
UUID               extension 9
bytearray,         msgpack bin: they come back as ``bytes`` (msgpack packs
memoryview         them natively; extension 10 is read, never written)
=================  ===========================================================

Subclasses of ``dict``, ``list``, ``str``, ``int`` and ``float`` (``OrderedDict``,
``defaultdict``, str/int enums) are stored as their base type. Anything else is
refused with :class:`~atomr.errors.CodecError`; nothing is ever pickled, and
decoding never executes code: an unknown extension or a newer version raises.

:func:`encode` / :func:`decode` frame a value with the codec version byte;
:func:`packb` / :func:`unpackb` are the bare forms used inside larger records.
All functions are thread-safe and run in the caller's thread.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from collections.abc import Iterable
from typing import Any

import msgpack

from atomr.errors import CodecError

__all__ = [
    "CODEC_VERSION",
    "encode",
    "decode",
    "packb",
    "unpackb",
    "encode_writes",
    "check_encodable",
]

#: Version byte written in front of every framed value.
CODEC_VERSION = 1

_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID, _BYTEARRAY = range(
    1, 11
)


def _default(obj: Any) -> Any:
    t = type(obj)
    if t is tuple:
        return msgpack.ExtType(_TUPLE, packb(list(obj)))
    if t is set or t is frozenset:
        try:
            items = sorted(obj)
        except TypeError:
            items = list(obj)
        return msgpack.ExtType(_SET if t is set else _FROZENSET, packb(items))
    if t is _dt.datetime:
        return msgpack.ExtType(_DATETIME, obj.isoformat().encode())
    if t is _dt.date:
        return msgpack.ExtType(_DATE, obj.isoformat().encode())
    if t is _dt.time:
        return msgpack.ExtType(_TIME, obj.isoformat().encode())
    if t is _dt.timedelta:
        return msgpack.ExtType(_TIMEDELTA, packb([obj.days, obj.seconds, obj.microseconds]))
    if t is decimal.Decimal:
        return msgpack.ExtType(_DECIMAL, str(obj).encode())
    if t is uuid.UUID:
        return msgpack.ExtType(_UUID, obj.bytes)
    # Subclasses of the native containers/scalars are stored as their base type.
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, tuple):  # namedtuple
        return msgpack.ExtType(_TUPLE, packb(list(obj)))
    # The base type's own conversion: str() of a (str, Enum) member is "Cls.NAME",
    # and a subclass may override __int__/__float__; the stored value is the data.
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int.__int__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    raise TypeError(f"unsupported type {t.__module__}.{t.__qualname__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _TUPLE:
        return tuple(unpackb(data))
    if code == _SET:
        return set(unpackb(data))
    if code == _FROZENSET:
        return frozenset(unpackb(data))
    if code == _DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == _DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == _TIME:
        return _dt.time.fromisoformat(data.decode())
    if code == _TIMEDELTA:
        d, s, us = unpackb(data)
        return _dt.timedelta(days=d, seconds=s, microseconds=us)
    if code == _DECIMAL:
        return decimal.Decimal(data.decode())
    if code == _UUID:
        return uuid.UUID(bytes=data)
    if code == _BYTEARRAY:
        return bytearray(data)
    raise CodecError(
        f"unknown extension type {code} in stored data; it was written by a newer atomr "
        "or is corrupt: upgrade atomr to read it"
    )


def packb(obj: Any) -> bytes:
    """Encode ``obj`` without a version header. Raises TypeError/OverflowError."""
    return msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Decode bytes produced by :func:`packb`.

    atomr never writes msgpack's built-in timestamp extension (-1); should one
    appear it is read as a UTC ``datetime``, so decoding only ever yields the
    types listed above.
    """
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False, timestamp=3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OverflowError):
        return "an integer outside the 64-bit range"
    msg = str(exc)
    if msg.startswith("unsupported type "):
        return "a value of type " + msg[len("unsupported type ") :]
    return msg


def encode(value: Any, *, where: str = "value") -> bytes:
    """Frame ``value`` as ``[CODEC_VERSION] + msgpack``; refuse unsupported types."""
    try:
        return bytes((CODEC_VERSION,)) + packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(
            f"cannot encode {where}: {_describe(exc)} is not storable; use JSON-like "
            "values (dict, list, str, int, float, bool, None, bytes) or a supported "
            "extension type (tuple, set, datetime, Decimal, UUID)"
        ) from None


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`; refuses a newer version or malformed bytes."""
    if not data:
        raise CodecError("cannot decode an empty value; the record is truncated")
    version = data[0]
    if version > CODEC_VERSION:
        raise CodecError(
            f"value written with codec version {version}, newer than this atomr supports "
            f"({CODEC_VERSION}); upgrade atomr"
        )
    if version < 1:
        raise CodecError(f"bad codec version byte {version}; the record is corrupt")
    try:
        return unpackb(data[1:])
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise CodecError(f"malformed data ({type(exc).__name__}: {exc}); the record is corrupt") from None


def check_encodable(value: Any, where: str) -> None:
    """Raise CodecError naming ``where`` if ``value`` cannot be stored."""
    try:
        packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(
            f"cannot encode {where}: {_describe(exc)} is not storable; use JSON-like "
            "values or a supported extension type (tuple, set, datetime, Decimal, UUID)"
        ) from None


def encode_writes(step: str, writes: Iterable[tuple[str, Any]]) -> bytes:
    """Pack a step's writes; a refusal names the step and the channel."""
    pairs = [[k, v] for k, v in writes]
    try:
        return packb(pairs)
    except (TypeError, ValueError, OverflowError):
        for k, v in pairs:
            check_encodable(v, f"the value written to channel {k!r} by step {step!r}")
        raise
