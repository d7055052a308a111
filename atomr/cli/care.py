"""CLI commands that look after a store: ``verify``, ``backup``, ``copy``.

What each does depends on the backend, and says so:

============  ==========================================  ==========================================
backend       verify                                      backup DEST
============  ==========================================  ==========================================
LMDB          every page read in a child process, every   LMDB's compacting copy to a new directory,
              record checked (``--quick``: pages only)    in a child process; the copy is checked
SQLite        ``PRAGMA integrity_check`` (``--quick``:    SQLite's online backup API to a new file
              ``quick_check``) and a walk of every        (one consistent snapshot, writers go on);
              record: checksum, decoding, gap-free        the copy is checked
              journals, snapshots present
Postgres      the same walk of every record; physical     refused: the message gives the exact
              checks are the server's (``pg_amcheck``     ``pg_dump`` (and ``pg_restore``) command
              command printed)
============  ==========================================  ==========================================

``copy SRC DST`` copies every run and schedule from one store (any backend)
into another, empty one, and verifies each run read back from DST
(:mod:`atomr.store.copy`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from atomr.cli.base import EXIT_FAILED, EXIT_OK, CliError
from atomr.cli.render import json_text
from atomr.cli.stores import backend, existing_store, lmdb_path, same_store, shown, sqlite_path, writable_store
from atomr.errors import CorruptStore, StoreError
from atomr.store._sqlbackup import backup_sqlite, pg_dump_hint
from atomr.store._sqlverify import verify_sql, verify_sqlite_file
from atomr.store._verify import backup_store, verify_store
from atomr.store.copy import RunCopy, copy_store
from atomr.store.url import split_schema

__all__ = ["add_care_commands", "cmd_backup", "cmd_copy", "cmd_verify"]


def cmd_verify(args: argparse.Namespace) -> int:
    kind = backend(args.store)
    try:
        store = existing_store(args.store, readonly=True)  # a clear error when there is none
    except CorruptStore:
        if kind != "sqlite":
            raise
        store = None  # its pages are damaged: SQLite's own check says where
    if store is None:
        report = verify_sqlite_file(sqlite_path(args.store), deep=not args.quick)
    else:
        try:
            if kind == "lmdb":
                store.close()
                report = verify_store(lmdb_path(args.store), deep=not args.quick)
            else:
                report = verify_sql(store, deep=not args.quick)
        finally:
            store.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_backup(args: argparse.Namespace) -> int:
    kind = backend(args.store)
    if kind == "postgres":
        dsn, schema = split_schema(args.store.strip())
        raise StoreError(pg_dump_hint(dsn, schema or "atomr", args.dest))
    if kind == "memory":
        raise CliError("memory: holds nothing to back up (its runs live in one process only)")
    store = existing_store(args.store, readonly=True)
    try:
        if kind == "lmdb":
            store.close()
            rep = backup_store(lmdb_path(args.store), args.dest, compact=not args.no_compact)
            how = "LMDB's compacting copy" if not args.no_compact else "LMDB's copy"
        else:
            rep = backup_sqlite(store, args.dest)
            how = "SQLite's online backup"
    except CorruptStore as exc:
        print(f"atomr: {exc}")
        return EXIT_FAILED
    finally:
        store.close()
    print(f"backed up {rep.src} to {rep.dst}: {rep.data_bytes} bytes in {rep.seconds:.2f}s ({how}; the copy "
          "was checked)")
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    src_url, dst_url = args.src, args.dst
    for url in (src_url, dst_url):
        if backend(url) == "memory":
            raise CliError("memory: lives in one process only: copy from and to a path, sqlite:/// or "
                           "postgresql:// store")
    if same_store(src_url, dst_url):
        raise CliError(f"SRC and DST are the same store ({shown(src_url)!r}); pass another DST")
    # the source is opened for writing: its lock keeps any other writer out while it is copied
    src = existing_store(src_url)
    try:
        dst = writable_store(dst_url)
        try:
            if not args.json:
                print(f"copying {shown(src_url)} -> {shown(dst_url)}", flush=True)
            report = copy_store(src, dst, progress=None if args.json else _print_run)
        finally:
            dst.close()
    finally:
        src.close()
    if args.json:
        doc: dict[str, Any] = report.to_dict()
        doc.update(src=shown(src_url), dst=shown(dst_url))
        print(json_text(doc, indent=2))
        return EXIT_OK
    print(f"copied {len(report.runs)} run(s) ({report.events} events, {report.snapshots} snapshots) and "
          f"{report.schedules} schedule(s) in {report.seconds:.2f}s; each run was read back from DST and "
          "matches SRC (summary, counts, sha256)")
    return EXIT_OK


def _print_run(r: RunCopy) -> None:
    print(f"  {r.workflow_id}/{r.run_id}  {r.status}  {r.events} events, {r.snapshots} snapshots  "
          f"sha256 {r.sha256[:16]}  ok", flush=True)


def add_care_commands(add: Any) -> None:
    """Register ``verify``, ``backup`` and ``copy`` with the parser's ``add`` helper."""
    p = add("verify", cmd_verify, "check the store for damage (exit 1 if damaged)",
            "Check the store. LMDB: every page read in a child process (a damaged file cannot crash this "
            "one) and every record checked. SQLite: PRAGMA integrity_check and a walk of every record. "
            "Postgres: the same walk of every record; the physical checks are the server's (pg_amcheck). "
            "Exit 0 when sound, 1 when damaged.")
    p.add_argument("--quick", action="store_true",
                   help="LMDB: the B-tree only; SQLite: quick_check; both SQL: sequence numbers, not every record")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p = add("backup", cmd_backup, "a consistent copy of the store (LMDB: a directory, SQLite: a file)",
            "LMDB: LMDB's compacting copy to a new directory, made in a child process. SQLite: SQLite's online "
            "backup API to a new file. Both are safe while another process runs the store, and the copy is "
            "checked; restore by pointing --store at it. Postgres: refused, with the pg_dump command to use.")
    p.add_argument("dest", metavar="DEST", help="a new (or empty) directory (LMDB) or a new file (SQLite)")
    p.add_argument("--no-compact", action="store_true", help="LMDB: copy pages as they are")
    p = add("copy", cmd_copy, "copy every run and schedule from store SRC into the empty store DST",
            "Copy every run (index entry, journal, snapshots) and every schedule from SRC into DST, which may "
            "be of another kind (e.g. an LMDB directory into postgresql://...), then read each run back from "
            "DST and compare it with SRC (summary, counts, sha256). DST must hold no runs or schedules. SRC is "
            "opened with its writer lock: stop the process that runs it first.")
    p.add_argument("src", metavar="SRC", help="the store to copy (a path or a store URL)")
    p.add_argument("dst", metavar="DST", help="an empty or new store (a path or a store URL)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
