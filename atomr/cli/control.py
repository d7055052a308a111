"""CLI commands for run control and store care: ``cancel``, ``verify``, ``backup``."""

from __future__ import annotations

import argparse
import json

from atomr.cli.base import EXIT_FAILED, EXIT_OK
from atomr.cli.stores import existing_store, runtime_for_run
from atomr.errors import CorruptStore
from atomr.store._verify import backup_store, verify_store

__all__ = ["cmd_cancel", "cmd_verify", "cmd_backup", "add_control_commands"]


def cmd_cancel(args: argparse.Namespace) -> int:
    with runtime_for_run(args) as rt:
        out = rt.cancel(args.workflow_id, args.run_id, args.reason or "")
    print(f"cancelled {out.workflow_id}/{out.run_id} at super-step {out.super_step}"
          + (f": {out.reason}" if out.reason else ""))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    existing_store(args.store, readonly=True).close()  # a clear error when there is no store
    report = verify_store(args.store, deep=not args.quick)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_backup(args: argparse.Namespace) -> int:
    existing_store(args.store, readonly=True).close()
    try:
        rep = backup_store(args.store, args.dest, compact=not args.no_compact)
    except CorruptStore as exc:
        print(f"atomr: {exc}")
        return EXIT_FAILED
    print(f"backed up {rep.src} to {rep.dst}: {rep.data_bytes} bytes in {rep.seconds:.2f}s")
    return EXIT_OK


def add_control_commands(add: object, run_args: object, module_flag: object) -> None:
    """Register the commands with the parser's ``add`` helper."""
    p = add("cancel", cmd_cancel, "cancel a running, paused, failed or sleeping run",  # type: ignore[operator]
            "Cancel a run: steps in flight are abandoned (async steps get CancelledError, plain "
            "steps see ctx.cancelled), the super-step in flight is not committed; the run ends "
            "'cancelled' and can be forked, not resumed.")
    run_args(p)  # type: ignore[operator]
    p.add_argument("--reason", metavar="TEXT", help="why (kept with the run)")
    module_flag(p)  # type: ignore[operator]
    p = add("verify", cmd_verify, "check the store's files for damage (in a child process)",  # type: ignore[operator]
            "Read every page of the store in a child process (a damaged file cannot crash this "
            "one) and check every record; exit 0 when sound, 1 when damaged.")
    p.add_argument("--quick", action="store_true", help="the B-tree only, not every record")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p = add("backup", cmd_backup, "copy the store (consistent, compacted) to a new directory",  # type: ignore[operator]
            "LMDB's compacting copy, made in a child process: safe while another process runs "
            "the store; the copy is checked. Restore by pointing --store at the copy.")
    p.add_argument("dest", metavar="DEST", help="a new (or empty) directory")
    p.add_argument("--no-compact", action="store_true", help="copy pages as they are")
