"""The value codec: what round-trips, what is refused, and how bad bytes are reported."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import math
import uuid
import zoneinfo
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomr import codec
from atomr.codec import CODEC_VERSION, check_encodable, decode, encode, encode_writes, packb, unpackb
from atomr.errors import AtomrError, CodecError


def same(a: Any, b: Any) -> bool:
    """Equal, and of exactly the same types all the way down (True != 1 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, b[k2]) for k2 in b if k2 == k) for k, v in a.items()
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (set, frozenset)):
        return a == b and {type(x) for x in a} == {type(x) for x in b}
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    return bool(a == b)


def roundtrip(value: Any) -> Any:
    data = encode(value)
    assert data[0] == CODEC_VERSION
    back = decode(data)
    assert unpackb(packb(value)) == back or value != value  # bare form agrees
    return back


PARIS = zoneinfo.ZoneInfo("Europe/Paris")

SUPPORTED = [
    None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 0.0, -0.0, 1.5, float("inf"), -1e300,
    "", "héllo ✓ 中文", b"", b"\x00\xff",
    [], [1, [2, [3]]], {}, {"a": {"b": {"c": []}}},
    (), (1,), (1, (2, (3, ())), [4, (5,)]), ((), ((),)),
    set(), {1, 2, 3}, {"a", "b"}, {(1, 2), (3,)}, frozenset(), frozenset({1, frozenset({2})}),
    {1: "int key", -2: "neg", 2**40: "big"}, {(1, "a"): "tuple key", None: 0, 1.5: 1, b"k": 2, True: 3},
    {frozenset({1}): "fs key"},
    dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-7, minutes=-30))),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, seconds=7, microseconds=5))),
    dt.date(1999, 12, 31), dt.time(23, 59, 59, 999999), dt.time(1, 2, tzinfo=dt.timezone.utc),
    dt.timedelta(0), dt.timedelta(days=-3, seconds=5, microseconds=7), dt.timedelta(days=999999),
    decimal.Decimal("0"), decimal.Decimal("-1.2300"), decimal.Decimal("1E+30"), decimal.Decimal("-0"),
    decimal.Decimal("Infinity"), uuid.UUID(int=0), uuid.UUID("12345678-1234-5678-1234-567812345678"),
    {"nested": [({1, 2}, dt.date(2020, 2, 29)), {"d": decimal.Decimal("3.14"), "u": uuid.UUID(int=7)}]},
]


@pytest.mark.parametrize("value", SUPPORTED, ids=lambda v: type(v).__name__ + ":" + repr(v)[:30])
def test_round_trip_of_every_supported_type(value: Any) -> None:
    assert same(roundtrip(value), value)


def test_tz_aware_datetime_keeps_its_offset_and_instant() -> None:
    for when in (dt.datetime(2024, 7, 1, 9, 0, tzinfo=PARIS), dt.datetime(2024, 1, 15, 9, 0, tzinfo=PARIS)):
        back = roundtrip(when)
        assert back == when and back.utcoffset() == when.utcoffset()
        assert back.tzinfo is not None
    naive = dt.datetime(2024, 7, 1, 9, 0)
    assert roundtrip(naive).tzinfo is None


def test_special_numbers() -> None:
    assert math.isnan(roundtrip(float("nan")))
    assert roundtrip(decimal.Decimal("NaN")).is_nan()
    assert math.copysign(1.0, roundtrip(-0.0)) == -1.0


def test_subclasses_are_stored_as_their_base_type() -> None:
    class Color(str, enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class Half(float):
        def __float__(self) -> float:
            return 99.0

    Point = collections.namedtuple("Point", "x y")
    value = [collections.OrderedDict(a=1), collections.defaultdict(list, b=[1]), Color.RED, Level.HIGH,
             Half(0.5), Point(1, 2), True]
    assert same(roundtrip(value), [{"a": 1}, {"b": [1]}, "red", 3, 0.5, (1, 2), True])


def test_bytes_like_values_come_back_as_bytes() -> None:
    assert same(roundtrip([bytearray(b"ab"), memoryview(b"cd")]), [b"ab", b"cd"])
    # extension 10 (bytearray) is still read
    assert same(decode(bytes([CODEC_VERSION]) + msgpack.packb(msgpack.ExtType(10, b"ef"))), bytearray(b"ef"))


def test_sets_of_unorderable_items_still_round_trip() -> None:
    value = {1, "a", (2, "b"), None}
    assert same(roundtrip(value), value)


def test_encoding_is_deterministic_for_sets() -> None:
    assert encode({3, 1, 2}) == encode({2, 3, 1}) == encode(set(range(3, 0, -1)))


# --- refusals ---------------------------------------------------------------------------------


class Custom:
    pass


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (object(), "builtins.object"),
        (lambda x: x, "builtins.function"),
        (Custom(), "Custom"),
        (2**64, "64-bit"),
        (-(2**63) - 1, "64-bit"),
        ([1, {"k": (2, 2**70)}], "64-bit"),
        ({"a": [object()]}, "builtins.object"),
        ({Custom(): 1}, "Custom"),
        ((1, {2, Custom()}), "Custom"),
        (1 + 2j, "complex"),
        (print, "builtin_function_or_method"),
        (ValueError("x"), "ValueError"),
    ],
    ids=lambda v: repr(v)[:25],
)
def test_unsupported_values_raise_codec_error_naming_what(value: Any, what: str) -> None:
    with pytest.raises(CodecError) as info:
        encode(value, where="the input of run r1")
    msg = str(info.value)
    assert what in msg and "the input of run r1" in msg and "not storable" in msg
    assert isinstance(info.value, AtomrError)
    with pytest.raises(CodecError, match="channel 'c'"):
        check_encodable(value, "channel 'c'")


def test_encode_default_where() -> None:
    with pytest.raises(CodecError, match="cannot encode value: "):
        encode(object())


def test_nothing_is_pickled() -> None:
    class Evil:
        def __reduce__(self) -> Any:
            raise AssertionError("pickled")

    with pytest.raises(CodecError, match="Evil"):
        encode(Evil())


def test_encode_writes_names_channel_and_step() -> None:
    data = encode_writes("s1", [("a", 1), ("b", (1, {2}))])
    assert unpackb(data) == [["a", 1], ["b", (1, {2})]]
    with pytest.raises(CodecError) as info:
        encode_writes("fetch", [("ok", 1), ("bad", {"x": object()}), ("later", 2)])
    msg = str(info.value)
    assert "channel 'bad'" in msg and "step 'fetch'" in msg and "builtins.object" in msg
    with pytest.raises(CodecError, match=r"channel 'n' by step 'count'.*64-bit"):
        encode_writes("count", [("n", 2**65)])


# --- decoding bad bytes -------------------------------------------------------------------------


def test_unknown_extension_type_is_refused() -> None:
    for code in (11, 42, 127):
        data = bytes([CODEC_VERSION]) + msgpack.packb(msgpack.ExtType(code, b"payload"))
        with pytest.raises(CodecError, match=f"unknown extension type {code}.*upgrade"):
            decode(data)
    # nested inside a structure, and a negative (reserved) code written by hand
    nested = bytes([CODEC_VERSION]) + msgpack.packb({"a": [msgpack.ExtType(50, b"")]})
    with pytest.raises(CodecError, match="unknown extension type 50"):
        decode(nested)
    with pytest.raises(CodecError, match="unknown extension type -5"):
        decode(bytes([CODEC_VERSION, 0xD4, 0xFB, 0x00]))


def test_foreign_timestamp_extension_reads_as_a_utc_datetime() -> None:
    data = bytes([CODEC_VERSION]) + msgpack.packb(msgpack.Timestamp(86400, 0))
    assert decode(data) == dt.datetime(1970, 1, 2, tzinfo=dt.timezone.utc)


def test_newer_version_byte_is_refused() -> None:
    body = encode({"a": 1})[1:]
    for v in (CODEC_VERSION + 1, 255):
        with pytest.raises(CodecError, match=f"codec version {v}.*upgrade atomr"):
            decode(bytes([v]) + body)
    with pytest.raises(CodecError, match="bad codec version byte 0"):
        decode(b"\x00" + body)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([CODEC_VERSION]),
        bytes([CODEC_VERSION, 0xC1]),  # a byte msgpack never uses
        bytes([CODEC_VERSION, 0x92, 0x01]),  # an array of 2 with one item (truncated)
        bytes([CODEC_VERSION, 0x01, 0x02]),  # trailing data
        bytes([CODEC_VERSION, 0xD9, 0x05, 0xFF, 0xFE]),  # bad UTF-8, truncated str
        bytes([CODEC_VERSION]) + msgpack.packb(msgpack.ExtType(4, b"not a date")),
        bytes([CODEC_VERSION]) + msgpack.packb(msgpack.ExtType(9, b"short")),
        bytes([CODEC_VERSION]) + msgpack.packb(msgpack.ExtType(1, b"\xc1")),
        bytes([CODEC_VERSION]) + msgpack.packb(msgpack.ExtType(7, msgpack.packb([1]))),
        bytes([CODEC_VERSION, 0x81, 0x91, 0x01, 0x02]),  # a map whose key is a list (unhashable)
    ],
    ids=lambda d: d.hex()[:20],
)
def test_garbage_raises_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


def test_truncations_of_a_real_value_never_escape_as_other_errors() -> None:
    data = encode({"k": [1, "two", (3.0, {4}), dt.datetime(2024, 1, 1), decimal.Decimal("5"), b"\x06" * 40]})
    for n in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:n])


def test_codec_module_api() -> None:
    assert set(codec.__all__) >= {"CODEC_VERSION", "encode", "decode", "packb", "unpackb", "encode_writes",
                                  "check_encodable"}


# --- property -------------------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
)
keys = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=10)
json_like_plus_tuples = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_like_plus_tuples)
def test_round_trip_property(value: Any) -> None:
    back = decode(encode(value))
    assert same(back, value)
    assert encode(back) == encode(value)  # stable bytes


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_decoding_arbitrary_bytes_only_raises_codec_error(data: bytes) -> None:
    try:
        decode(data)
    except CodecError:
        pass
