"""Damaged and misused LMDB stores: a flipped bit never kills the process that
opens the store (CorruptStore instead, found by a walk in a child process),
damaged keys are named errors for their run only, and every bad path or option
is a named error whose message is true."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from atomr.errors import CorruptRecord, CorruptStore, StoreError, StoreFull, StoreLocked
from atomr.store import format as fmt
from atomr.store.lmdb import LmdbStore, backup_store, verify_store
from atomr.testing import encode_batch, filler_events

ROOT = str(Path(__file__).resolve().parents[1])
RUNS = ("alpha", "victim", "omega")


def child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def build(path: Path, events: int = 40) -> str:
    """A compact store (every key stored once: no stale page copies) with three runs."""
    raw = path / "raw"
    s = LmdbStore(raw, map_size=8 << 20)
    assert s.write([encode_batch("wf", r, 1, filler_events(events, tag=r[0]), status="done")
                    for r in RUNS]) == [None] * len(RUNS)
    s.close()
    out = path / "store"
    backup_store(raw, out)
    return str(out)


def occurrences(data: bytes, needle: bytes) -> list[int]:
    out, i = [], data.find(needle)
    while i >= 0:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


def node_of_key(path: str, key: bytes) -> int:
    """File offset of the LMDB leaf node holding ``key`` (node header: 8 bytes before it)."""
    data = Path(path, "data.mdb").read_bytes()
    page = 4096

    def in_leaf(o: int) -> bool:
        flags = int.from_bytes(data[o - o % page + 10 : o - o % page + 12], "little")
        return bool(flags & 0x02)

    hits = [o for o in occurrences(data, key)
            if int.from_bytes(data[o - 2 : o], "little") == len(key) and in_leaf(o)]
    assert len(hits) == 1, hits
    return hits[0] - 8


def point_journal_branch_at_itself(path: str) -> None:
    """Make the second child pointer of the journal's branch page point at the
    branch page itself: a reader moving to that child finds a branch where it
    expects a leaf (LMDB aborts the process on that)."""
    data = Path(path, "data.mdb").read_bytes()
    page = 4096
    prefix = fmt.run_key("wf", "")[:4]  # journal keys start with the workflow id's length and bytes
    for pgno in range(len(data) // page):
        base = pgno * page
        if not int.from_bytes(data[base + 10 : base + 12], "little") & 0x01:
            continue
        lower = int.from_bytes(data[base + 12 : base + 14], "little")
        nodes = [base + int.from_bytes(data[base + 16 + 2 * i : base + 18 + 2 * i], "little")
                 for i in range((lower - 16) // 2)]
        if len(nodes) > 1 and data[nodes[1] + 8 : nodes[1] + 12] == prefix and \
                int.from_bytes(data[nodes[1] + 6 : nodes[1] + 8], "little") > 12:
            patch(path, nodes[1], (pgno & 0xFFFF).to_bytes(2, "little") + (pgno >> 16).to_bytes(2, "little"))
            return
    raise AssertionError("no branch page in the journal: write more events")


def patch(path: str, offset: int, new: bytes) -> None:
    with open(os.path.join(path, "data.mdb"), "r+b") as f:
        f.seek(offset)
        f.write(new)


def flip(path: str, offset: int, bit: int) -> None:
    data = Path(path, "data.mdb").read_bytes()
    patch(path, offset, bytes([data[offset] ^ (1 << bit)]))


# --- a damaged page: CorruptStore, not a dead process ---------------------------------------


RAW_READ = """
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=False, max_dbs=8)
with env.begin() as txn:
    for name in [bytes(k) for k, _ in txn.cursor()]:
        for k, v in txn.cursor(db=env.open_db(name, txn=txn, create=False)):
            bytes(v)
print("read", flush=True)
"""

OPEN = """
import sys
from atomr.store.lmdb import LmdbStore
from atomr.errors import AtomrError
try:
    s = LmdbStore(sys.argv[1], map_size=8 << 20)
except AtomrError as exc:
    print(type(exc).__name__, "|", exc, flush=True)
    sys.exit(3)
print("opened", [r.run_id for r in s.runs()], flush=True)
s.close()
"""


def test_a_damaged_page_is_corrupt_store_not_a_crash(tmp_path: Path) -> None:
    path = build(tmp_path)
    good = str(tmp_path / "backup")
    backup_store(path, good)
    point_journal_branch_at_itself(path)
    raw = child(RAW_READ, path)
    assert raw.returncode < 0, ("the damage no longer kills a plain reader", raw.returncode, raw.stdout)

    res = child(OPEN, path)  # verify="auto": the file is small
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr[-2000:])
    name, message = res.stdout.split(" | ", 1)
    assert name == "CorruptStore"
    assert path in message and "damaged" in message and "atomr backup" in message
    assert "compact=True" in message and "atomr verify" in message

    report = verify_store(path)
    assert not report.structure_ok and not report.ok
    assert "kills the reading process" in report.detail
    assert any("DAMAGED" in line for line in report.lines())
    with pytest.raises(CorruptStore):
        report.raise_if_damaged()
    with pytest.raises(CorruptStore):
        backup_store(path, tmp_path / "copy-of-damaged")
    assert not (tmp_path / "copy-of-damaged").exists()
    # in this process too: the open is refused, the process lives on
    with pytest.raises(CorruptStore):
        LmdbStore(path, map_size=8 << 20)
    with pytest.raises(CorruptStore):
        LmdbStore(path, map_size=8 << 20, readonly=True)
    # restore from the backup, as the message says
    res = child(OPEN, good)
    assert res.returncode == 0 and "opened" in res.stdout, res.stdout + res.stderr[-2000:]


def test_verify_false_skips_the_check_and_verify_true_forces_it(tmp_path: Path) -> None:
    path = build(tmp_path)
    point_journal_branch_at_itself(path)
    s = LmdbStore(path, map_size=8 << 20, verify=False)  # opens: the damaged page is not read yet
    s.close()
    code = OPEN.replace("map_size=8 << 20", "map_size=8 << 20, verify=True")
    res = child(code, path)
    assert res.returncode == 3 and res.stdout.startswith("CorruptStore"), res.stdout + res.stderr


def test_an_intact_store_verifies_clean_deep(tmp_path: Path) -> None:
    path = build(tmp_path)
    report = verify_store(path)
    assert report.ok and report.deep and report.structure_ok
    # meta: format version, creation time, the count of running runs, 4 order keys per run
    assert report.databases == {"meta": 2 + 1 + 4 * 3, "runs": 3, "journal": 120, "snapshots": 0}
    assert report.records == 138 and report.damaged_runs() == []
    assert report.to_dict()["ok"] is True
    assert "no damage" in report.lines()[-1]
    with LmdbStore(path, map_size=8 << 20) as s:
        assert s.verify().ok  # while open in this process


# --- damaged keys: a named error for that run, the others readable ----------------------------


def test_flipped_bit_in_a_journal_key_is_corrupt_record_not_a_short_history(tmp_path: Path) -> None:
    path = build(tmp_path)
    key = fmt.seq_key(fmt.run_key("wf", "victim"), 5)
    flip(path, node_of_key(path, key) + 8 + len(key) - 1, 1)  # seq 5 -> 7
    s = LmdbStore(path, map_size=8 << 20)
    try:
        with pytest.raises(CorruptRecord) as info:
            list(s.journal("wf", "victim"))
        assert info.value.run_id == "victim" and info.value.seq == 5
        assert "journal key" in str(info.value) and "restore" in str(info.value)
        for run in ("alpha", "omega"):
            assert [q for q, _ in s.journal("wf", run)] == list(range(1, 41))
        assert [q for q, _ in s.journal("wf", "victim", 1, 4)] == [1, 2, 3, 4]  # before the damage
        assert sorted(r.run_id for r in s.runs()) == sorted(RUNS)
    finally:
        s.close()
    report = verify_store(path)
    assert report.structure_ok and not report.ok
    assert report.damaged_runs() == [("wf", "victim")]


def test_flipped_bit_in_a_run_index_key_leaves_the_other_runs_listed(tmp_path: Path, caplog: Any) -> None:
    path = build(tmp_path)
    rkey = fmt.run_key("wf", "victim")
    flip(path, node_of_key(path, rkey) + 8 + len(rkey) - 3, 7)  # a byte of "victim": not UTF-8 any more
    s = LmdbStore(path, map_size=8 << 20)
    try:
        with caplog.at_level(logging.WARNING, logger="atomr.store"):
            listed = s.runs()  # through the index's order: the run whose entry it cannot find is named
            s.runs()
            assert sorted(r.run_id for r in s.summaries()) == ["alpha", "omega"]  # a scan: the damaged key
        assert sorted(r.run_id for r in listed) == ["alpha", "omega"]
        assert len([r for r in caplog.records if "damaged run index key" in r.getMessage()]) == 1
        assert len([r for r in caplog.records if "no entry for it" in r.getMessage()]) == 1
        (wf, run, what), (wf2, run2, what2) = s.damaged_entries()
        assert (wf, run) == ("wf", "victim") and "no entry" in what
        assert wf2 is None and run2 is None and "not valid UTF-8" in what2
        for read in (lambda: s.summary("wf", "victim"), lambda: list(s.journal("wf", "victim"))):
            with pytest.raises(CorruptRecord, match="index key was damaged") as info:
                read()
            assert info.value.run_id == "victim"
        assert len(list(s.journal("wf", "alpha"))) == 40
    finally:
        s.close()
    report = verify_store(path)
    assert report.structure_ok and not report.ok
    whats = " ".join(d.what for d in report.problems)
    assert "damaged run index key" in whats and "does not list" in whats


def test_a_damaged_run_index_value_is_that_runs_error(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    s = LmdbStore(path, map_size=8 << 20)
    try:
        for r in RUNS:
            assert s.write([encode_batch("wf", r, 1, filler_events(3))]) == [None]
        with s._env.begin(write=True, db=s._runs) as txn:  # noqa: SLF001 - damage one entry
            txn.put(fmt.run_key("wf", "victim"), fmt.encode_obj(["running", 1]))
    finally:
        s.close()
    s = LmdbStore(path, map_size=8 << 20)
    try:
        assert sorted(r.run_id for r in s.runs()) == ["alpha", "omega"]
        assert s.damaged_entries()[0][:2] == ("wf", "victim")
        with pytest.raises(CorruptRecord, match="run index entry is damaged"):
            s.summary("wf", "victim")
        # a write to the damaged run is refused with the same error, others go on
        res = s.write([encode_batch("wf", "victim", 4, filler_events(1, 4)),
                       encode_batch("wf", "alpha", 4, filler_events(1, 4))])
        assert isinstance(res[0], CorruptRecord) and res[1] is None
    finally:
        s.close()


# --- opening twice, paths, options ------------------------------------------------------------


def test_a_second_open_in_this_process_is_not_called_damaged(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    s = LmdbStore(path, map_size=1 << 20)
    try:
        for kw in ({}, {"readonly": True}):
            with pytest.raises(StoreLocked) as info:
                LmdbStore(path, map_size=1 << 20, **kw)
            msg = str(info.value)
            assert "already open in this process" in msg and "close()" in msg
            assert "damaged" not in msg and "stop" not in msg and info.value.pid == os.getpid()
        # through another spelling of the same directory
        with pytest.raises(StoreLocked):
            LmdbStore(os.path.join(path, ".", ""), map_size=1 << 20)
    finally:
        s.close()
    LmdbStore(path, map_size=1 << 20).close()


def test_bad_paths_are_named_errors(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    cases = [
        (afile, "is a file"),
        (afile / "below", "cannot create"),
        (str(tmp_path / "a\x00b"), "NUL"),
        ("", "empty"),
        (42, "str or os.PathLike"),
    ]
    for path, words in cases:
        with pytest.raises(StoreError, match=words):
            LmdbStore(path)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no store"):
        LmdbStore(tmp_path / "none", readonly=True)
    assert afile.read_text() == "x"


@pytest.mark.parametrize("kw,words", [
    ({"map_size": True}, "map_size must be an int"),
    ({"map_size": 1.5e9}, "map_size must be an int"),
    ({"map_size": -1}, "map_size"),
    ({"map_size": 1 << 60}, "<= 70368744177664"),
    ({"map_size": "1G"}, "map_size"),
    ({"max_map_size": 10}, "max_map_size"),
    ({"max_map_size": float("inf")}, "max_map_size"),
    ({"snapshot_every": True}, "snapshot_every"),
    ({"snapshot_every": 0}, "snapshot_every"),
    ({"snapshot_every": float("nan")}, "snapshot_every"),
    ({"max_readers": 0}, "max_readers"),
    ({"max_readers": 1 << 40}, "max_readers"),
    ({"fsync": "always"}, "fsync"),
    ({"fsync": None}, "fsync"),
    ({"readonly": 1}, "readonly"),
    ({"verify": "yes"}, "verify"),
    ({"verify": 1}, "verify"),
])
def test_out_of_range_options_are_named_errors(tmp_path: Path, kw: dict[str, Any], words: str) -> None:
    with pytest.raises(StoreError, match=words) as info:
        LmdbStore(tmp_path / "s", **kw)
    assert "pass" in str(info.value)
    LmdbStore(tmp_path / "s", map_size=1 << 20).close()  # nothing was left locked or registered


def test_a_first_commit_that_does_not_fit_says_the_run_was_not_created(tmp_path: Path) -> None:
    limit = 256 * 1024
    s = LmdbStore(tmp_path / "s", map_size=limit, max_map_size=limit, fsync="none")
    try:
        assert s.write([encode_batch("wf", "small", 1, filler_events(2))]) == [None]
        big = [fmt.encode_event(ev) for ev in filler_events(1)]
        batch = encode_batch("wf", "huge", 1, filler_events(1))
        batch.records = big + [fmt.encode_obj({"blob": b"z" * (2 * limit)})]
        (err,) = s.write([batch])
        assert isinstance(err, StoreFull)
        msg = str(err)
        assert "huge" in msg and "was not started" in msg and "start it again" in msg
        assert "rt.recover()" not in msg and f"map_size={2 * limit}" in msg and "max_map_size" in msg
        assert s.summary("wf", "huge") is None and list(s.journal("wf", "huge")) == []
        assert [r.run_id for r in s.runs()] == ["small"]
        # a later batch of an existing run: the message says nothing was lost
        more = encode_batch("wf", "small", 3, filler_events(1, 3))
        more.records = [fmt.encode_obj({"blob": b"z" * (2 * limit)})]
        (err,) = s.write([more])
        assert isinstance(err, StoreFull) and "rt.recover()" in str(err)
    finally:
        s.close()


# --- backups ------------------------------------------------------------------------------------


def dump(path: str) -> dict[str, list[Any]]:
    with LmdbStore(path, map_size=8 << 20, readonly=True) as s:
        return {r.run_id: list(s.journal("wf", r.run_id)) for r in s.runs()}


def test_backup_while_the_store_is_open_and_refusals(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    s = LmdbStore(path, map_size=8 << 20)
    try:
        for r in RUNS:
            assert s.write([encode_batch("wf", r, 1, filler_events(30))]) == [None]
        rep = s.backup(tmp_path / "b1")
        assert rep.data_bytes > 0 and rep.dst == str(tmp_path / "b1")
        assert s.write([encode_batch("wf", "later", 1, filler_events(3))]) == [None]
    finally:
        s.close()
    copy = dump(str(tmp_path / "b1"))
    assert sorted(copy) == sorted(RUNS) and copy == {k: v for k, v in dump(path).items() if k != "later"}
    for name in os.listdir(tmp_path / "b1"):
        assert stat.S_IMODE(os.stat(tmp_path / "b1" / name).st_mode) == 0o600
    with pytest.raises(StoreError, match="not an empty directory"):
        backup_store(path, tmp_path / "b1")
    with pytest.raises(StoreError, match="is the source"):
        backup_store(path, path + "/")
    with pytest.raises(StoreError, match="no LMDB store"):
        backup_store(tmp_path / "nothing", tmp_path / "b2")
    with pytest.raises(StoreError, match="no LMDB store"):
        verify_store(tmp_path / "nothing")


def test_a_check_that_cannot_run_is_skipped_under_auto_only(tmp_path: Path, monkeypatch: Any,
                                                              caplog: Any) -> None:
    path = build(tmp_path)
    monkeypatch.setattr(sys, "executable", "")
    with caplog.at_level(logging.WARNING, logger="atomr.store"):
        LmdbStore(path, map_size=8 << 20).close()
    assert any("not checked before use" in r.getMessage() for r in caplog.records)
    with pytest.raises(StoreError, match="verify=False"):
        LmdbStore(path, map_size=8 << 20, verify=True)
    LmdbStore(path, map_size=8 << 20, verify=False).close()
