"""Deep values: refused on write with the place and the limit named; reading a
record nested deeper than any atomr writes is a named error, never a crash of
the process (checked in child processes, and on small thread stacks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomr import codec
from atomr import events as ev
from atomr.codec import MAX_DEPTH, check_depth, check_encodable, depth_exceeds, encode, encode_writes
from atomr.errors import CodecError
from atomr.store import format as fmt

ROOT = str(Path(__file__).resolve().parents[1])


def cons(n: int, leaf: Any = None, kind: str = "tuple") -> Any:
    """A cons list n containers deep: (n-1, (n-2, ... (0, leaf)))."""
    v = leaf
    for i in range(n):
        v = (i, v) if kind == "tuple" else [i, v] if kind == "list" else {"next": v}
    return v


def depth(v: Any) -> int:
    """Reference: nesting depth of containers (recursive, for small values)."""
    if isinstance(v, dict):
        return 1 + max([depth(x) for x in (*v.keys(), *v.values())], default=0)
    if isinstance(v, (list, tuple, set, frozenset)):
        return 1 + max([depth(x) for x in v], default=0)
    return 0


def deep_ext_bytes(n: int) -> bytes:
    """msgpack bytes of a tuple cons list n deep, as an atomr without a depth limit wrote it."""
    b = msgpack.packb(None)
    for i in range(n):
        b = msgpack.packb(msgpack.ExtType(1, b"\x92" + msgpack.packb(i) + b))
    return b


def child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, timeout=120)


# --- the limit, on write ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tuple", "list", "dict"])
def test_limit_is_exact(kind: str) -> None:
    ok = cons(MAX_DEPTH, kind=kind)
    assert codec.decode(encode(ok)) == ok
    check_encodable(ok, "x")
    with pytest.raises(CodecError) as info:
        check_encodable(cons(MAX_DEPTH + 1, kind=kind), "the value written to channel 'x' by step 's'")
    msg = str(info.value)
    assert "channel 'x'" in msg and "step 's'" in msg and str(MAX_DEPTH) in msg and "flatter" in msg


def test_the_issue_value_is_refused_naming_channel_step_and_limit() -> None:
    value = cons(250)
    with pytest.raises(CodecError, match=rf"channel 'chain' by step 'grow'.*{MAX_DEPTH}"):
        fmt.encode_event(ev.StepCompleted("grow", 3, [("ok", 1), ("chain", value)]))
    with pytest.raises(CodecError, match=r"channel 'chain' by step 'grow'"):
        encode_writes("grow", [("chain", value)])
    with pytest.raises(CodecError, match=r"channel 'chain' of the run input"):
        fmt.encode_event(ev.RunStarted({"chain": value}))
    with pytest.raises(CodecError, match=r"Interrupted.payload"):
        fmt.encode_event(ev.Interrupted("s", 1, "i", value, 0))
    with pytest.raises(CodecError, match=r"channel 'chain' of the state"):
        fmt.encode_obj({"v": {"chain": value}, "ss": 1})
    with pytest.raises(CodecError, match=r"limit"):
        encode(value)


def test_a_value_containing_itself_is_refused_quickly() -> None:
    a: list[Any] = []
    a.append(a)
    b: list[Any] = [None, None]
    b[0] = b[1] = b  # fan-out 2: a breadth-first walk without de-duplication never ends
    d: dict[str, Any] = {}
    d["self"] = d
    for v in (a, b, d):
        with pytest.raises(CodecError, match="contains itself"):
            check_encodable(v, "v")


def test_shared_subvalues_are_walked_once_per_level() -> None:
    v: Any = [1]
    for _ in range(40):  # 2**40 paths, 41 objects
        v = [v, v]
    assert depth_exceeds(v, 100) is False
    assert depth_exceeds(v, 40) is True


def test_subclasses_and_leaf_extensions_count_right() -> None:
    import collections
    import datetime as dt

    Point = collections.namedtuple("Point", "x y")
    v = collections.OrderedDict(a=[Point(1, (2,))], b=dt.datetime(2020, 1, 1), c={frozenset({(1,)})})
    assert depth(v) == 4
    assert not depth_exceeds(v, 4) and depth_exceeds(v, 3)
    check_depth(v, "v", 4)
    with pytest.raises(CodecError, match="more than 3 levels"):
        check_depth(v, "v", 3)


json_like = st.recursive(
    st.none() | st.integers() | st.text(max_size=3) | st.floats(allow_nan=False),
    lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids) | st.dictionaries(st.text(max_size=2), kids, max_size=3)
    | st.frozensets(st.integers(), max_size=2),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_depth_walk_agrees_with_the_recursive_definition(v: Any) -> None:
    d = depth(v)
    assert not depth_exceeds(v, d)
    assert depth_exceeds(v, d - 1) == (d >= 1)


# --- reading back: never a crash ---------------------------------------------------------


READ_DEEP = """
import sys, threading
from atomr import codec
from atomr.errors import CodecError
from atomr.store import format as fmt
import msgpack

def deep(n):
    b = msgpack.packb(None)
    for i in range(n):
        b = msgpack.packb(msgpack.ExtType(1, b"\\x92" + msgpack.packb(i) + b))
    return b

results = []
def read():
    for n in (codec.MAX_DEPTH, 250, 5000):
        raw = deep(n)
        for name, f in (("decode", lambda: codec.decode(bytes([codec.CODEC_VERSION]) + raw)),
                        ("record", lambda: fmt.decode_obj(fmt.frame(raw)))):
            try:
                f()
                results.append(f"{name} {n} ok")
            except CodecError as exc:
                results.append(f"{name} {n} CodecError {'nests more than' in str(exc)}")
threading.stack_size(int(sys.argv[1]) * 1024)
t = threading.Thread(target=read)
t.start()
t.join()
print("|".join(results), flush=True)
"""


@pytest.mark.parametrize("stack_kib", [8192, 512])
def test_reading_deep_records_never_crashes(stack_kib: int) -> None:
    res = child(READ_DEEP, str(stack_kib))
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    got = res.stdout.strip().split("|")
    for name in ("decode", "record"):
        assert f"{name} {MAX_DEPTH} ok" in got
        for n in (250, 5000):
            assert f"{name} {n} CodecError True" in got, got


POISON = """
import sys
from atomr.store.lmdb import LmdbStore
from atomr.store import format as fmt
from atomr.testing import encode_batch, filler_events
import msgpack

def deep(n):
    b = msgpack.packb(None)
    for i in range(n):
        b = msgpack.packb(msgpack.ExtType(1, b"\\x92" + msgpack.packb(i) + b))
    return b

s = LmdbStore(sys.argv[1], map_size=8 << 20)
for run in ("poisoned", "fine"):
    assert s.write([encode_batch("wf", run, 1, filler_events(4))]) == [None]
# what an atomr without a depth limit wrote: StepCompleted("s", 1, [("x", <250 deep>)])
row = b"\\x94" + msgpack.packb(fmt.EVENT_CODES[__import__("atomr.events").events.StepCompleted]) \\
    + msgpack.packb("s") + msgpack.packb(1) + b"\\x91\\x92" + msgpack.packb("x") + deep(250)
s._corrupt("wf", "poisoned", 3, fmt.frame(row))
s.close()
print("written", flush=True)
"""

READ_ALL = """
import sys
from atomr.store.lmdb import LmdbStore
from atomr.errors import CorruptRecord
s = LmdbStore(sys.argv[1], map_size=8 << 20)
out = []
for summ in s.runs():
    try:
        out.append(f"{summ.run_id}:{len(list(s.journal('wf', summ.run_id)))}")
    except CorruptRecord as exc:
        out.append(f"{summ.run_id}:CorruptRecord:{exc.seq}")
s.close()
print(" ".join(sorted(out)), flush=True)
"""


def test_a_store_poisoned_by_a_deep_record_stays_readable(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    res = child(POISON, path)
    assert res.returncode == 0 and "written" in res.stdout, res.stderr[-2000:]
    res = child(READ_ALL, path)
    assert res.returncode != -signal.SIGSEGV, "reading the deep record crashed the process"
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.split() == ["fine:4", "poisoned:CorruptRecord:3"]


def test_a_lone_surrogate_is_named() -> None:
    with pytest.raises(CodecError, match=r"the run meta: a str holding '\\udc80' \(a lone surrogate"):
        check_encodable({"k": "a\udc80"}, "the run meta")
