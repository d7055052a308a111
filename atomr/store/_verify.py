"""Checking and copying LMDB stores in a child process (``atomr verify`` / ``atomr backup``).

Reading a damaged LMDB file can kill the reading process (LMDB follows page
numbers without checking them). Both operations here therefore run in a
child Python process: if it dies by a signal, the store is damaged and this
process lives on to say so.

Cost, measured on a 2-core VM with the file in the page cache (add the disk's
read time otherwise): starting the child ~0.1 s; the structure walk ~0.7 µs
per record plus ~0.3 s per GB (0.8 s per GB of 1 KB records, 5.5 s per GB of
100-byte ones); the deep check ~3.5 µs per record (2.6 s per GB of 1 KB
records, 27 s per GB of 100-byte ones).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from atomr import codec
from atomr.errors import CorruptStore, StoreError
from atomr.store import format as fmt

__all__ = ["BackupReport", "Damage", "VerifyReport", "backup_store", "verify_store"]

_WALK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_walk.py")
_STATUSES = ("running", "paused", "done", "failed", "cancelled", "sleeping", "queued")

#: Measured cost of a check, quoted by LmdbStore's docstring.
VERIFY_COST_NOTE = ("~0.1 s, then ~0.7 us per record plus ~0.3 s per GB for the structure; "
                    "~3.5 us per record with every record checked (deep)")

_BOOT = (
    "import json, sys\n"
    "cfg = json.loads(sys.argv[2])\n"
    "sys.path[:] = cfg['sys_path']\n"
    "import importlib.util as u\n"
    "spec = u.spec_from_file_location('_atomr_store_task', sys.argv[1])\n"
    "m = u.module_from_spec(spec)\n"
    "spec.loader.exec_module(m)\n"
    "sys.exit(m.main(cfg))\n"
)

_COPY = (
    "import json, sys\n"
    "cfg = json.loads(sys.argv[1])\n"
    "sys.path[:] = cfg['sys_path']\n"
    "import lmdb\n"
    "env = lmdb.open(cfg['path'], readonly=True, lock=cfg['lock'], max_dbs=64, subdir=True,\n"
    "                readahead=False, create=False)\n"
    "try:\n"
    "    env.copy(cfg['dst'], compact=cfg['compact'])\n"
    "finally:\n"
    "    env.close()\n"
    "print('copied', flush=True)\n"
)


@dataclasses.dataclass(frozen=True)
class Damage:
    """One damaged entry: its database, what is wrong, and whose it is when known."""

    database: str
    what: str
    workflow_id: str | None = None
    run_id: str | None = None
    seq: int | None = None
    key: str = ""  # hex

    def __str__(self) -> str:
        who = f"run {self.workflow_id}/{self.run_id}" if self.run_id is not None else "unknown run"
        key = bytes.fromhex(self.key) if self.key else b""
        if self.run_id is None and key.startswith(fmt.SCHEDULE_PREFIX):
            who = f"schedule {key[len(fmt.SCHEDULE_PREFIX):].decode(errors='replace')!r}"
        at = f" event {self.seq}" if self.seq else ""
        return f"{self.database}: {who}{at}: {self.what}" + (f" (key {self.key})" if self.key and self.run_id is None else "")


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """What a check of a store found.

    ``structure_ok``: every page of every database was read and the B-tree is
    consistent (False: ``detail`` says what is damaged; the store must not be
    opened). ``problems``: damaged records (keys or values) of single runs:
    reading those runs raises :class:`~atomr.errors.CorruptRecord`, the
    others are fine. ``ok``: neither.
    """

    path: str
    structure_ok: bool
    detail: str
    problems: tuple[Damage, ...]
    more_problems: int
    databases: dict[str, int]
    records: int
    data_bytes: int
    seconds: float
    deep: bool
    #: lines printed under the first one (what a backend's check covers)
    notes: tuple[str, ...] = ()
    #: what to do when the structure is damaged
    restore: str = "restore the store from a backup (atomr backup, or LMDB's compacting copy)"
    #: what ``databases`` counts: LMDB databases, or SQL tables
    containers: str = "databases"

    @property
    def ok(self) -> bool:
        return self.structure_ok and not self.problems and not self.more_problems

    def damaged_runs(self) -> list[tuple[str, str]]:
        """(workflow id, run id) of every run with a damaged record, sorted."""
        return sorted({(d.workflow_id, d.run_id) for d in self.problems
                       if d.workflow_id is not None and d.run_id is not None})

    def lines(self) -> list[str]:
        """A human-readable report, one line each (what ``atomr verify`` prints)."""
        size = f"{self.data_bytes / (1 << 20):.1f} MiB"
        head = (f"store {self.path}: {self.records} records in {len(self.databases)} {self.containers}, "
                f"{size}, checked in {self.seconds:.2f} s")
        if self.ok:
            return [head, *self.notes, "ok: no damage found" + ("" if self.deep else " (structure only)")]
        out = [head, *self.notes]
        if not self.structure_ok:
            out.append(f"DAMAGED: {self.detail}")
            out.append(self.restore)
        for d in self.problems:
            out.append(f"damaged record: {d}")
        if self.more_problems:
            out.append(f"... and {self.more_problems} more damaged records")
        if self.problems and self.structure_ok:
            out.append("other runs are readable; restore the damaged runs from a backup or "
                       "delete them (atomr prune <workflow> <run> --delete)")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``atomr verify --json``)."""
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        d["problems"] = [dataclasses.asdict(p) for p in self.problems]
        d["damaged_runs"] = [list(r) for r in self.damaged_runs()]
        return d

    def raise_if_damaged(self) -> None:
        """Raise :class:`~atomr.errors.CorruptStore` unless the structure is sound."""
        if not self.structure_ok:
            raise CorruptStore(self.path, self.detail)


@dataclasses.dataclass(frozen=True)
class BackupReport:
    src: str
    dst: str
    data_bytes: int
    seconds: float


def _data_file(path: str) -> str:
    return os.path.join(path, "data.mdb")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    return env


def _sys_path() -> list[str]:
    return [p for p in sys.path if p]


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _timeout_for(size: int) -> float:
    return 60.0 + size / (10 << 20)  # generous: 10 MB/s


def check_path(path: Any, what: str = "store path") -> str:
    """``path`` as a str; refuse non-paths and NUL bytes with StoreError."""
    try:
        p = os.fspath(path)
    except TypeError:
        raise StoreError(f"{what} must be a str or os.PathLike, got {type(path).__name__}; "
                         "pass a directory path") from None
    if isinstance(p, bytes):
        try:
            p = os.fsdecode(p)
        except UnicodeDecodeError:
            raise StoreError(f"{what} {p!r} cannot be decoded; pass a str path") from None
    if "\x00" in p:
        raise StoreError(f"{what} {p!r} contains a NUL byte, which no file name can hold; "
                         "pass a path without it")
    if not p:
        raise StoreError(f"{what} is empty; pass a directory path")
    return p


def run_walk(path: str, *, deep: bool, lock: bool, timeout: float | None = None) -> VerifyReport:
    """Walk the store at ``path`` in a child process; never raises for damage."""
    data = _data_file(path)
    size = os.path.getsize(data)
    cfg = {
        "path": path, "lock": lock, "deep": deep, "codec_version": codec.CODEC_VERSION,
        "dbs": {"meta": fmt.DB_META.decode(), "runs": fmt.DB_RUNS.decode(),
                "journal": fmt.DB_JOURNAL.decode(), "snapshots": fmt.DB_SNAPSHOTS.decode()},
        "statuses": list(_STATUSES), "max_problems": 1000, "sys_path": _sys_path(),
        "schedule_prefix": fmt.SCHEDULE_PREFIX.decode(), "index_prefix": fmt.INDEX_PREFIX.decode(),
        "count_prefix": fmt.COUNT_PREFIX.decode(),
    }
    limit = _timeout_for(size) if timeout is None else timeout
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _BOOT, _WALK, json.dumps(cfg)],
            capture_output=True, text=True, timeout=limit, env=_child_env(), stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return _report(path, size, t0, deep, damage=(
            f"a walk of its pages did not end in {limit:.0f} s (a damaged page pointing back "
            "into the tree makes it endless)"))
    except OSError as exc:
        raise StoreError(f"cannot start a child process to check store {path!r}: {exc}; "
                         "check the Python executable (sys.executable) or open with verify=False") from None
    if proc.returncode < 0:
        return _report(path, size, t0, deep, damage=(
            f"reading its pages kills the reading process ({_signal_name(proc.returncode)}): a "
            "page pointer or a page header is damaged"))
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise StoreError(f"the check of store {path!r} failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}; check the installation, or open with verify=False") from None
    if out.get("unavailable"):
        raise StoreError(f"cannot check store {path!r}: {out['unavailable']}; check its permissions, "
                         "or open with verify=False")
    problems = []
    for p in out["problems"]:
        run = p.get("run") or (None, None)
        problems.append(Damage(p["db"], p["what"], run[0], run[1], p.get("seq"), p.get("key", "")))
    return _report(path, size, t0, deep, damage=out.get("damage"), problems=tuple(problems),
                   more=out.get("more_problems", 0), dbs=out.get("dbs", {}), records=out.get("records", 0))


def _report(path: str, size: int, t0: float, deep: bool, damage: str | None = None,
            problems: tuple[Damage, ...] = (), more: int = 0, dbs: dict[str, int] | None = None,
            records: int = 0) -> VerifyReport:
    return VerifyReport(path, damage is None, damage or "", problems, more, dict(dbs or {}), records,
                        size, time.perf_counter() - t0, deep)


def verify_store(path: Any, *, deep: bool = True, timeout: float | None = None) -> VerifyReport:
    """Check the store in directory ``path`` without opening it in this process.

    A child process reads every page of every database (and, with ``deep``,
    checks every key's layout, every record's checksum and that every run's
    journal is gap-free and matches the run index). Safe while another process
    runs the store (the child reads one consistent snapshot). Returns a
    :class:`VerifyReport`; raises :class:`~atomr.errors.StoreError` only when
    there is no store at ``path`` or it cannot be read at all. Cost: see
    :data:`VERIFY_COST_NOTE`.
    """
    p = check_path(path)
    if not os.path.isfile(_data_file(p)):
        raise StoreError(f"no LMDB store at {p!r} (no data.mdb); check the path")
    if os.path.getsize(_data_file(p)) < 2 * 4096:
        return _report(p, os.path.getsize(_data_file(p)), time.perf_counter(), deep,
                       damage="the data file is truncated (smaller than LMDB's two header pages)")
    lock = os.access(os.path.join(p, "lock.mdb"), os.W_OK) or not os.path.exists(os.path.join(p, "lock.mdb"))
    lock = lock and os.access(p, os.W_OK)
    return run_walk(p, deep=deep, lock=lock, timeout=timeout)


def backup_store(src: Any, dst: Any, *, compact: bool = True, verify: bool = True) -> BackupReport:
    """Copy the store in ``src`` to the new directory ``dst`` (LMDB's compacting copy).

    Safe while a process runs ``src``: the copy is one consistent snapshot and
    does not block the writer. It runs in a child process, so a damaged
    ``src`` cannot kill this one (:class:`~atomr.errors.CorruptStore`
    instead). ``dst`` must not exist or be an empty directory; it is created
    0700, its files 0600. With ``verify`` the copy is walked once more.
    """
    s = check_path(src, "backup source")
    d = check_path(dst, "backup destination")
    if not os.path.isfile(_data_file(s)):
        raise StoreError(f"no LMDB store at {s!r} to back up (no data.mdb); check the path")
    if os.path.realpath(d) == os.path.realpath(s):
        raise StoreError("backup destination is the source; pass another directory")
    if os.path.exists(d) and (not os.path.isdir(d) or os.listdir(d)):
        raise StoreError(f"backup destination {d!r} exists and is not an empty directory; pass a new path")
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create backup destination {d!r}: {exc}; pick another path") from None
    lock = os.access(s, os.W_OK)
    cfg = {"path": s, "dst": d, "lock": lock, "compact": bool(compact), "sys_path": _sys_path()}
    size = os.path.getsize(_data_file(s))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _COPY, json.dumps(cfg)],
                              capture_output=True, text=True, timeout=_timeout_for(size) * 2,
                              env=_child_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CorruptStore(s, "copying it did not end (a damaged page pointing back into the tree?)") from None
    if proc.returncode < 0:
        _clean(d)
        raise CorruptStore(s, f"copying it kills the reading process ({_signal_name(proc.returncode)})")
    if proc.returncode != 0 or "copied" not in proc.stdout:
        _clean(d)
        err = proc.stderr.strip().splitlines()
        last = err[-1] if err else f"exit {proc.returncode}"
        if "Corrupted" in last or "PageNotFound" in last or "Invalid" in last:
            raise CorruptStore(s, f"copying it failed: {last}")
        raise StoreError(f"cannot back up {s!r} to {d!r}: {last}; check the paths and permissions")
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o600)
    if verify:
        report = run_walk(d, deep=False, lock=False)
        if not report.structure_ok:
            raise CorruptStore(d, f"the fresh copy does not read back: {report.detail}")
    return BackupReport(s, d, os.path.getsize(_data_file(d)), time.perf_counter() - t0)


def _clean(d: str) -> None:
    for name in ("data.mdb", "lock.mdb"):
        try:
            os.unlink(os.path.join(d, name))
        except OSError:
            pass
    try:
        os.rmdir(d)
    except OSError:
        pass
