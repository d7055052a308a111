"""Walk every page of an LMDB store; run in a child process by atomr.store.verify.

LMDB trusts the page numbers it reads from its file: a flipped bit can send a
reader past the end of the map (SIGBUS/SIGSEGV). This walk touches every page
reachable from the roots of every database (a read transaction, a cursor over
all keys and values, every value byte read for its checksum), so a damaged
page kills this child, not the process that asked.

It imports nothing from atomr (it is loaded by file path) and prints one JSON
object on stdout::

    {"damage": str|null,       what is wrong with the B-tree or the databases
     "unavailable": str|null,  why the store could not be checked at all
     "dbs": {name: entries}, "records": n, "bytes": n,
     "problems": [{"db", "run": [wf, run]|null, "seq", "key", "what"}, ...],
     "more_problems": n}

``problems`` lists damaged records (bad key, bad checksum, gaps in a
journal): those are one run's damage, reported and read as such; ``damage``
is damage to the store itself.
"""

from __future__ import annotations

import json
import sys
import zlib
from typing import Any


def _parse_run_key(k: bytes) -> tuple[str, str]:
    """(workflow id, run id) of a run key; ValueError when malformed."""
    if len(k) < 4:
        raise ValueError(f"run key of {len(k)} bytes, shorter than its two length fields")
    lw = int.from_bytes(k[0:2], "big")
    if 2 + lw + 2 > len(k):
        raise ValueError("workflow id length runs past the end of the key")
    lr = int.from_bytes(k[2 + lw : 4 + lw], "big")
    if 4 + lw + lr != len(k):
        raise ValueError(f"lengths ({lw} + {lr}) do not add up to the key's {len(k)} bytes")
    try:
        return k[2 : 2 + lw].decode(), k[4 + lw :].decode()
    except UnicodeDecodeError:
        raise ValueError("id bytes are not UTF-8") from None


class _Walk:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.deep = bool(cfg.get("deep"))
        self.version = int(cfg["codec_version"])
        self.max_problems = int(cfg.get("max_problems", 1000))
        self.out: dict[str, Any] = {
            "damage": None, "unavailable": None, "dbs": {}, "records": 0, "bytes": 0,
            "problems": [], "more_problems": 0,
        }
        # deep checks: run -> (first_seq, last_seq, snapshot_seq) from the run index
        self.summaries: dict[bytes, tuple[int, int, int]] = {}
        self.names: dict[bytes, tuple[str, str]] = {}
        self.journal_seen: set[bytes] = set()
        self.snaps: dict[bytes, set[int]] = {}

    def problem(self, db: str, what: str, key: bytes = b"", rkey: bytes | None = None,
                seq: int | None = None) -> None:
        if len(self.out["problems"]) >= self.max_problems:
            self.out["more_problems"] += 1
            return
        run = self.names.get(rkey) if rkey is not None else None
        if run is None and rkey is not None:
            try:
                run = _parse_run_key(rkey)
            except ValueError:
                run = None
        self.out["problems"].append(
            {"db": db, "run": list(run) if run else None, "seq": seq, "key": key.hex(), "what": what}
        )

    def frame_ok(self, db: str, key: bytes, v: Any, rkey: bytes | None, seq: int | None) -> bytes | None:
        if len(v) < 5:
            self.problem(db, f"record of {len(v)} bytes, shorter than its header", key, rkey, seq)
            return None
        if v[0] != self.version:
            self.problem(db, f"record version byte {v[0]} (expected {self.version})", key, rkey, seq)
            return None
        payload = bytes(v[5:])
        if zlib.crc32(payload) != int.from_bytes(bytes(v[1:5]), "big"):
            self.problem(db, "checksum mismatch (the record's bytes were altered)", key, rkey, seq)
            return None
        return payload

    # -- per database --------------------------------------------------------

    def walk(self, lmdb: Any, env: Any) -> None:
        dbn = self.cfg["dbs"]  # role -> name
        with env.begin(buffers=True) as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
            known = {n.encode() for n in dbn.values()}
            unknown = [n for n in names if n not in known]
            if unknown:
                shown = ", ".join(repr(n) for n in unknown[:5])
                self.out["damage"] = (f"unknown database name(s) {shown} in the main database "
                                      "(a damaged name: its data is unreachable under its real name)")
            order = [dbn[r] for r in ("meta", "runs", "journal", "snapshots")]
            for role_name in order:
                name = role_name.encode()
                if name not in names:
                    continue
                db = env.open_db(name, txn=txn, create=False)
                self.walk_db(txn, db, role_name)
        if self.deep:
            self.cross_check()

    def walk_db(self, txn: Any, db: Any, name: str) -> None:
        role = {v: k for k, v in self.cfg["dbs"].items()}[name]
        n = 0
        nbytes = 0
        cur = txn.cursor(db=db)
        state: dict[str, Any] = {"rkey": None, "next": None}
        for k, v in cur:
            n += 1
            nbytes += len(v)
            key = bytes(k)
            crc = zlib.crc32(v)  # reads every byte: every overflow page is touched
            del crc
            if self.deep:
                getattr(self, "check_" + role)(key, v, state)
        if self.deep and role == "journal":
            self.end_run(state)
        expected = txn.stat(db)["entries"]
        if expected != n:
            self.out["damage"] = (f"database {name!r} counts {expected} entries but a walk of its "
                                  f"pages finds {n}")
        self.out["dbs"][name] = n
        self.out["records"] += n
        self.out["bytes"] += nbytes

    def check_meta(self, key: bytes, v: Any, state: dict[str, Any]) -> None:
        sizes = {b"format_version": 4, b"created_ms": 8}
        prefix = self.cfg.get("schedule_prefix", "schedule:").encode()
        if key.startswith(prefix) and len(key) > len(prefix):
            payload = self.frame_ok("meta", key, v, None, None)  # a schedule record (format 2)
            if payload is not None:
                try:
                    key[len(prefix):].decode()
                except UnicodeDecodeError:
                    self.problem("meta", "schedule key's id is not UTF-8", key)
            return
        if key.startswith(self.cfg.get("index_prefix", "ix:").encode()):  # the run index's order (format 3)
            if not len(v) or key[3:4] not in (b"a", b"s", b"w", b"x"):
                self.problem("meta", "damaged run index order key", key)
            return
        if key.startswith(self.cfg.get("count_prefix", "ix#").encode()):  # runs by status (format 3)
            if len(v) != 8:
                self.problem("meta", f"count of runs {key!r} has {len(v)} bytes, expected 8", key)
            return
        if key not in sizes:
            self.problem("meta", f"unknown meta key {key!r}", key)
        elif len(v) != sizes[key]:
            self.problem("meta", f"meta value {key.decode()} has {len(v)} bytes, expected {sizes[key]}", key)

    def check_runs(self, key: bytes, v: Any, state: dict[str, Any]) -> None:
        try:
            self.names[key] = _parse_run_key(key)
        except ValueError as exc:
            self.problem("runs", f"damaged run index key: {exc}", key)
            return
        payload = self.frame_ok("runs", key, v, key, None)
        if payload is None:
            return
        try:
            import msgpack

            row = msgpack.unpackb(payload, ext_hook=lambda code, data: None, raw=False,
                                  strict_map_key=False)
        except ImportError:
            return
        except Exception as exc:  # noqa: BLE001 - msgpack raises several types
            self.problem("runs", f"undecodable run index entry ({type(exc).__name__})", key, key)
            return
        if (not isinstance(row, list) or len(row) != 8 or row[0] not in self.cfg["statuses"]
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in row[1:7])):
            self.problem("runs", "run index entry has the wrong shape", key, key)
            return
        self.summaries[key] = (row[3], row[2], row[4])

    def check_journal(self, key: bytes, v: Any, state: dict[str, Any]) -> None:
        rkey, seq = self.split(key, "journal")
        if rkey is None:
            return
        if rkey != state["rkey"]:
            self.end_run(state)
            state["rkey"] = rkey
            state["first"] = seq
            self.journal_seen.add(rkey)
        elif seq > state["next"]:
            self.problem("journal", f"events {state['next']}..{seq - 1} missing (a journal key was "
                         "damaged or lost)", key, rkey, state["next"])
        elif seq < state["next"]:
            self.problem("journal", f"event {seq} comes after event {state['next'] - 1} (a "
                         "journal key was damaged: keys out of order)", key, rkey, seq)
        state["next"] = seq + 1
        self.frame_ok("journal", key, v, rkey, seq)

    def end_run(self, state: dict[str, Any]) -> None:
        rkey = state.get("rkey")
        if rkey is None:
            return
        first, last = state["first"], state["next"] - 1
        summary = self.summaries.get(rkey)
        if summary is None:
            if rkey not in self.names:
                self.problem("journal", "journal of a run the run index does not list (its index "
                             "key was damaged)", rkey, rkey)
            return
        want_first, want_last, _ = summary
        if (first, last) != (want_first, want_last):
            self.problem("journal", f"journal holds events {first}..{last}, the run index says "
                         f"{want_first}..{want_last}", rkey, rkey)

    def check_snapshots(self, key: bytes, v: Any, state: dict[str, Any]) -> None:
        rkey, seq = self.split(key, "snapshots")
        if rkey is None:
            return
        self.snaps.setdefault(rkey, set()).add(seq)
        self.frame_ok("snapshots", key, v, rkey, seq)

    def split(self, key: bytes, db: str) -> tuple[bytes | None, int]:
        rkey = key[:-8]
        try:
            if len(key) < 12:
                raise ValueError(f"key of {len(key)} bytes is too short")
            _parse_run_key(rkey)
        except ValueError as exc:
            self.problem(db, f"damaged {db} key: {exc}", key)
            return None, 0
        return rkey, int.from_bytes(key[-8:], "big")

    def cross_check(self) -> None:
        for rkey, (first, last, snap) in self.summaries.items():
            if last >= first and rkey not in self.journal_seen:
                self.problem("journal", f"journal events {first}..{last} of the run are missing",
                             rkey, rkey)
            if snap > 0 and snap not in self.snaps.get(rkey, ()):
                self.problem("snapshots", f"snapshot at event {snap} is missing", rkey, rkey, snap)
        for rkey in self.snaps:
            if rkey not in self.summaries and rkey not in self.names:
                self.problem("snapshots", "snapshots of a run the run index does not list", rkey, rkey)


def main(cfg: dict[str, Any]) -> int:
    walk = _Walk(cfg)
    out = walk.out
    try:
        import lmdb
    except ImportError as exc:
        out["unavailable"] = f"cannot import lmdb in a child process: {exc}"
        print(json.dumps(out))
        return 0
    damage_errors = tuple(
        getattr(lmdb, n) for n in ("CorruptedError", "PageNotFoundError", "InvalidError",
                                   "BadValsizeError", "IncompatibleError", "PanicError",
                                   "BadRslotError", "BadTxnError", "VersionMismatchError")
        if hasattr(lmdb, n)
    )
    try:
        env = lmdb.open(cfg["path"], readonly=True, lock=bool(cfg.get("lock")), max_dbs=64,
                        subdir=True, readahead=False, create=False)
    except damage_errors as exc:
        out["damage"] = f"LMDB refuses its header: {exc}"
    except (lmdb.Error, OSError, MemoryError) as exc:
        out["unavailable"] = f"cannot open it for reading: {exc}"
    else:
        try:
            walk.walk(lmdb, env)
        except damage_errors as exc:
            out["damage"] = f"LMDB found a damaged page: {type(exc).__name__}: {exc}"
        except lmdb.Error as exc:
            out["damage"] = f"reading it failed: {type(exc).__name__}: {exc}"
        finally:
            env.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover - run by atomr.store.verify
    sys.exit(main(json.loads(sys.argv[1])))
