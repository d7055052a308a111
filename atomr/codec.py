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
registered class   extension 16: ``[type name, data]`` (see :func:`register`)
=================  ===========================================================

Subclasses of ``dict``, ``list``, ``str``, ``int`` and ``float`` (``OrderedDict``,
``defaultdict``, str/int enums) are stored as their base type. Anything else is
refused with :class:`~atomr.errors.CodecError`; nothing is ever pickled, and
decoding never imports anything: an unknown extension, a type name nobody
registered or a newer version raises.

:func:`encode` / :func:`decode` frame a value with the codec version byte;
:func:`packb` / :func:`unpackb` are the bare forms used inside larger records.
All functions are thread-safe and run in the caller's thread.

Depth: a value may nest containers (list, dict, tuple, set, frozenset) at most
:data:`MAX_DEPTH` levels deep; a deeper one is refused on write with a
:class:`~atomr.errors.CodecError` naming it and the limit (:func:`check_depth`
is an iterative walk over containers only, so a flat value costs a type test).
Decoding cannot overflow the C stack whatever the bytes hold: msgpack's
extension decoder recurses once per nested tuple/set, so only the first
:data:`_C_LEVELS` nested extensions use the C decoder, deeper ones the
pure-Python one (whose recursion does not use the C stack), and more than
:data:`MAX_DECODE_DEPTH` nested extensions are refused with a ``CodecError``.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
from msgpack import fallback as _fallback

from atomr import _usertypes as _user
from atomr._usertypes import register, registered, unregister
from atomr.errors import CodecError

__all__ = [
    "CODEC_VERSION", "encode", "decode", "packb", "unpackb", "encode_writes", "check_encodable",
    "check_depth", "depth_exceeds", "encode_error", "MAX_DEPTH", "MAX_DECODE_DEPTH",
    "register", "registered", "unregister",
]

#: Version byte written in front of every framed value.
CODEC_VERSION = 1

#: How many containers deep a stored value may nest (checked on every write).
MAX_DEPTH = 100
#: Nested extension values (tuples, sets) a record may hold before decoding refuses it:
#: above MAX_DEPTH, for the lists and dicts that frame a value inside a record.
MAX_DECODE_DEPTH = MAX_DEPTH + 28
#: Nested extension values decoded by msgpack's C decoder (about 40 KiB of C stack
#: each); deeper ones are decoded by its pure-Python decoder.
_C_LEVELS = 4

_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID, _BYTEARRAY = range(1, 11)
_USER = 16  # a registered class: [type name, data] (11..15 are left for built-in types)


_FLAT = frozenset({str, int, float, bool, type(None), bytes})
_CONTAINERS = (dict, list, tuple, set, frozenset)
_CONTAINER_TYPES = frozenset(_CONTAINERS)
_FLAT_OR_CONTAINER = _FLAT | _CONTAINER_TYPES
_chain = itertools.chain
_chain_all = itertools.chain.from_iterable
_compress = itertools.compress


class _TooDeep(ValueError):
    """A value nests containers deeper than allowed (a ValueError, as msgpack's own)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"nested more than {limit} levels deep")


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests containers more than ``limit`` levels deep.

    A scalar has depth 0, ``[]`` depth 1, ``[{"a": (1,)}]`` depth 3. The walk is
    iterative, one level at a time: Python code looks at containers only, the
    scalars of a level are scanned at C speed (one ``type()`` each); it ends
    on a value that contains itself (whose depth is unbounded).
    """
    t = type(value)
    if t in _FLAT:
        return False
    flat = _FLAT
    # fast path: a dict or list of scalars (most writes)
    if t is dict:
        if flat.issuperset(map(type, value.values())) and flat.issuperset(map(type, value)):
            return limit < 1
    elif t is list or t is tuple:
        if flat.issuperset(map(type, value)):
            return limit < 1
    elif not isinstance(value, _CONTAINERS):
        return False
    level: list[Any] = [value]
    depth = 1
    kinds = _CONTAINERS
    while True:
        if depth > limit:
            return True
        nxt: list[Any]
        if len(level) <= 16:  # a few containers: look at each
            nxt = []
            for c in level:
                if isinstance(c, dict):
                    vals = c.values()
                    if not flat.issuperset(map(type, vals)):
                        nxt += [x for x in vals if isinstance(x, kinds)]
                    if not flat.issuperset(map(type, c)):
                        nxt += [x for x in c if isinstance(x, kinds)]
                elif not flat.issuperset(map(type, c)):
                    nxt += [x for x in c if isinstance(x, kinds)]
        else:  # many: scan all their items in one pass
            dicts = [c for c in level if isinstance(c, dict)]
            if not dicts:
                children = list(_chain_all(level))
            else:
                seqs = [c for c in level if not isinstance(c, dict)] if len(dicts) < len(level) else ()
                children = list(_chain(_chain_all(seqs), _chain_all(map(dict.values, dicts)), _chain_all(dicts)))
            types = set(map(type, children))
            if types <= flat:
                return False
            if types <= _FLAT_OR_CONTAINER:
                nxt = list(_compress(children, map(_CONTAINER_TYPES.__contains__, map(type, children))))
            else:  # subclasses (OrderedDict, namedtuple) or leaf extension types
                nxt = [x for x in children if isinstance(x, kinds)]
        if not nxt:
            return False
        if len(nxt) > 1024 and len(nxt) > len(level):
            # shared sub-values (or a value containing itself) would multiply
            # the walk: look at each object once per level
            nxt = list({id(x): x for x in nxt}.values())
        level = nxt
        depth += 1


def _too_deep_message(where: str, limit: int) -> str:
    return (
        f"cannot encode {where}: it nests containers (list, dict, tuple, set) more than "
        f"{limit} levels deep, the limit of a stored value (codec.MAX_DEPTH = {MAX_DEPTH}), "
        "or it contains itself; make it flatter (e.g. store a linked list or a tree "
        "as a list of nodes)"
    )


def check_depth(value: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`CodecError` naming ``where`` if ``value`` nests deeper than ``limit``."""
    if depth_exceeds(value, limit):
        raise CodecError(_too_deep_message(where, limit))


def _default(obj: Any) -> Any:
    t = type(obj)
    if t is tuple:
        return msgpack.ExtType(_TUPLE, _pack_inner(list(obj)))
    if t is set or t is frozenset:
        try:
            items = sorted(obj)
        except TypeError:
            items = list(obj)
        return msgpack.ExtType(_SET if t is set else _FROZENSET, _pack_inner(items))
    if t is _dt.datetime:
        return msgpack.ExtType(_DATETIME, obj.isoformat().encode())
    if t is _dt.date:
        return msgpack.ExtType(_DATE, obj.isoformat().encode())
    if t is _dt.time:
        return msgpack.ExtType(_TIME, obj.isoformat().encode())
    if t is _dt.timedelta:
        return msgpack.ExtType(_TIMEDELTA, _pack_inner([obj.days, obj.seconds, obj.microseconds]))
    if t is decimal.Decimal:
        return msgpack.ExtType(_DECIMAL, str(obj).encode())
    if t is uuid.UUID:
        return msgpack.ExtType(_UUID, obj.bytes)
    entry = _user.BY_TYPE.get(t)
    if entry is not None:
        return msgpack.ExtType(_USER, _user.payload(entry, obj, _pack_inner, depth_exceeds, _TooDeep(MAX_DEPTH)))
    # Subclasses of the native containers/scalars are stored as their base type.
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, tuple):  # namedtuple
        return msgpack.ExtType(_TUPLE, _pack_inner(list(obj)))
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


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)


def _pack_inner(obj: Any) -> bytes:
    """An extension's payload: a packer with a small first buffer (packb's 256 KiB
    one costs ~40 us when allocated while another packer is live)."""
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True, buf_size=512).pack(obj)


def _ext_value(code: int, data: bytes, level: int) -> Any:
    """The value of an extension found ``level`` extensions deep."""
    if code == _TUPLE:
        return tuple(_unpack_at(data, level))
    if code == _SET:
        return set(_unpack_at(data, level))
    if code == _FROZENSET:
        return frozenset(_unpack_at(data, level))
    if code == _DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == _DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == _TIME:
        return _dt.time.fromisoformat(data.decode())
    if code == _TIMEDELTA:
        d, s, us = _unpack_at(data, level)
        return _dt.timedelta(days=d, seconds=s, microseconds=us)
    if code == _DECIMAL:
        return decimal.Decimal(data.decode())
    if code == _UUID:
        return uuid.UUID(bytes=data)
    if code == _BYTEARRAY:
        return bytearray(data)
    if code == _USER:
        return _user.load(_unpack_at(data, level))
    raise CodecError(
        f"unknown extension type {code} in stored data; it was written by a newer atomr "
        "or is corrupt: upgrade atomr to read it"
    )


def _hook_for(level: int) -> Callable[[int, bytes], Any]:
    def hook(code: int, data: bytes) -> Any:
        return _ext_value(code, data, level)

    return hook


#: _HOOKS[n] decodes an extension nested n extensions deep.
_HOOKS = [_hook_for(n) for n in range(MAX_DECODE_DEPTH + 2)]


def _unpack_at(data: bytes, level: int) -> Any:
    """Decode the payload of an extension nested ``level`` deep.

    msgpack's C decoder keeps ~40 KiB of state on the C stack per call and calls
    the extension hook from inside itself, so nested extensions recurse on the
    C stack: past ``_C_LEVELS`` the pure-Python decoder is used, whose calls
    into the hook are plain Python calls (bounded by the recursion limit).
    """
    if level > MAX_DECODE_DEPTH:
        raise CodecError(
            f"stored value nests more than {MAX_DECODE_DEPTH} tuples/sets deep, more than "
            f"atomr writes (codec.MAX_DEPTH = {MAX_DEPTH}): the record is corrupt or was "
            "written by an atomr without a depth limit; restore it from a backup or delete the run"
        )
    if level <= _C_LEVELS:
        return msgpack.unpackb(data, ext_hook=_HOOKS[level + 1], raw=False,
                               strict_map_key=False, timestamp=3)
    return _fallback.unpackb(data, ext_hook=_HOOKS[level + 1], raw=False,
                             strict_map_key=False, timestamp=3)


def packb(obj: Any, *, max_depth: int | None = MAX_DEPTH) -> bytes:
    """Encode ``obj`` without a version header. Raises TypeError/ValueError/OverflowError.

    A value nesting deeper than ``max_depth`` raises ValueError (None: the
    caller has checked the depth already).
    """
    if max_depth is not None and depth_exceeds(obj, max_depth):
        raise _TooDeep(max_depth)
    return _pack(obj)


def unpackb(data: bytes) -> Any:
    """Decode bytes produced by :func:`packb`.

    atomr never writes msgpack's built-in timestamp extension (-1); should one
    appear it is read as a UTC ``datetime``, so decoding only ever yields the
    types listed above. Nesting never overflows the C stack (see the module
    docstring); too deep a value raises CodecError.
    """
    return msgpack.unpackb(data, ext_hook=_HOOKS[1], raw=False, strict_map_key=False, timestamp=3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OverflowError):
        return "an integer outside the 64-bit range"
    if isinstance(exc, UnicodeEncodeError):
        bad = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else "?"
        return f"a str holding {bad!r} (a lone surrogate, which UTF-8 cannot hold)"
    msg = str(exc)
    if msg.startswith("unsupported type "):
        return "a value of type " + msg[len("unsupported type ") :]
    return msg


def encode_error(where: str, exc: BaseException) -> CodecError:
    """The CodecError for a value that ``packb`` refused with ``exc``."""
    if isinstance(exc, _TooDeep) or (isinstance(exc, ValueError) and "recursion limit" in str(exc)):
        return CodecError(_too_deep_message(where, getattr(exc, "limit", MAX_DEPTH)))
    return CodecError(
        f"cannot encode {where}: {_describe(exc)} is not storable; use JSON-like "
        "values (dict, list, str, int, float, bool, None, bytes), a supported "
        "extension type (tuple, set, datetime, Decimal, UUID), or register the "
        "class with atomr.codec.register(TheClass) (pydantic models, dataclasses, enums)"
    )


def encode(value: Any, *, where: str = "value") -> bytes:
    """Frame ``value`` as ``[CODEC_VERSION] + msgpack``; refuse unsupported types
    and values nesting deeper than :data:`MAX_DEPTH`."""
    try:
        return bytes((CODEC_VERSION,)) + packb(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise encode_error(where, exc) from None


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
    """Raise CodecError naming ``where`` if ``value`` cannot be stored (unsupported
    type, integer out of range, or nested deeper than :data:`MAX_DEPTH`)."""
    try:
        packb(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise encode_error(where, exc) from None


def encode_writes(step: str, writes: Iterable[tuple[str, Any]]) -> bytes:
    """Pack a step's writes; a refusal names the step and the channel."""
    pairs = [[k, v] for k, v in writes]
    for k, v in pairs:
        if depth_exceeds(v, MAX_DEPTH):
            raise CodecError(_too_deep_message(f"the value written to channel {k!r} by step {step!r}", MAX_DEPTH))
    try:
        return packb(pairs, max_depth=None)
    except (TypeError, ValueError, OverflowError):
        for k, v in pairs:
            check_encodable(v, f"the value written to channel {k!r} by step {step!r}")
        raise
