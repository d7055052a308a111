"""CLI commands for run control: ``cancel`` (store care, ``verify`` / ``backup`` / ``copy``, is in :mod:`.care`)."""

from __future__ import annotations

import argparse

from atomr.cli.base import EXIT_OK
from atomr.cli.stores import runtime_for_run

__all__ = ["cmd_cancel", "add_control_commands"]


def cmd_cancel(args: argparse.Namespace) -> int:
    with runtime_for_run(args) as rt:
        out = rt.cancel(args.workflow_id, args.run_id, args.reason or "")
    print(f"cancelled {out.workflow_id}/{out.run_id} at super-step {out.super_step}"
          + (f": {out.reason}" if out.reason else ""))
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
