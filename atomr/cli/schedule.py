"""``atomr schedule add|rm|ls``: edit and list the schedules kept in the store.

These commands only change or read the store. The runs of a schedule start
in a process that has the store open with the schedule's workflow registered
(``atomr serve MODULE:WORKFLOW``, or an application's Runtime). Adding or
removing needs the store's write lock: stop the process that holds it first
(its schedules are read again when it registers the workflow).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from atomr.actors.cron import upsert
from atomr.actors.cron_rules import ScheduleNotFound, define, describe, iso_ms
from atomr.cli.base import DEFAULT_STORE, EXIT_OK, EXIT_USAGE, load_workflow, parse_json
from atomr.cli.render import cmdline, json_text, table
from atomr.cli.stores import existing_store, maybe_store, shown, writable_store
from atomr.store.base import now_ms
from atomr.store.schedules import CATCH_UP, OVERLAP

__all__ = ["add_schedule_commands", "cmd_schedule_add", "cmd_schedule_rm", "cmd_schedule_ls"]


def _rule(s: Any) -> str:
    if s.cron is not None:
        return f"cron {s.cron!r} (UTC)"
    return f"every {s.every_s:g} s"


def _when(t: float | None) -> str:
    return "-" if t is None else iso_ms(round(t * 1000))


def cmd_schedule_add(args: argparse.Namespace) -> int:
    wf = load_workflow(args.workflow)
    data = parse_json(args.input, "--input", mapping=True)
    rec = define(args.schedule_id, wf.id, cron=args.cron, every_s=args.every, input=data,
                 overlap=args.overlap, catch_up=args.catch_up, meta={"module": args.workflow},
                 schema=wf.schema)
    store = writable_store(args.store)
    try:
        stored = upsert(store, rec)
    finally:
        store.close()
    s = describe(stored, now_ms())
    print(f"schedule {s.schedule_id}: {s.workflow_id} {_rule(s)}, overlap {s.overlap}, "
          f"catch-up {s.catch_up}; next due {_when(s.next_due)}")
    print(f"its runs start while a process runs {args.workflow} on this store, e.g. "
          f"{cmdline(args, 'serve', args.workflow)}")
    return EXIT_OK


def cmd_schedule_rm(args: argparse.Namespace) -> int:
    store = existing_store(args.store)
    try:
        if not store.delete_schedule(args.schedule_id):
            raise ScheduleNotFound(args.schedule_id, [r.schedule_id for r in store.list_schedules()])
    finally:
        store.close()
    print(f"removed schedule {args.schedule_id} (the runs it started are kept)")
    return EXIT_OK


def cmd_schedule_ls(args: argparse.Namespace) -> int:
    records = []
    store, _ = maybe_store(args.store)
    if store is not None:
        try:
            records = store.list_schedules()
        finally:
            store.close()
    now = int(time.time() * 1000)
    items = [describe(r, now) for r in records if args.workflow is None or r.workflow_id == args.workflow]
    if args.json:
        print(json_text([{k: v for k, v in s.to_dict().items() if k != "armed"} for s in items], indent=2))
        return EXIT_OK
    if not items:
        print(f"no schedules in {shown(args.store)!r}")
        return EXIT_OK
    rows = [["ID", "WORKFLOW", "RULE", "NEXT DUE", "LAST FIRED", "LAST RUN", "OVERLAP", "CATCH-UP",
             "FIRED", "SKIPPED"]]
    for s in items:
        rows.append([s.schedule_id, s.workflow_id, _rule(s), _when(s.next_due), _when(s.last_fired),
                     s.last_run_id or "-", s.overlap, s.catch_up, str(s.fired), str(s.skipped)])
    table(rows)
    for s in items:
        if s.last_error:
            print(f"{s.schedule_id}: last error: {s.last_error}")
    return EXIT_OK


def _help(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    return show


def add_schedule_commands(add: Any) -> None:
    """Register ``schedule add|rm|ls`` with the parser's ``add`` helper."""
    p = add("schedule", None, "add, remove or list schedules (runs started on a cron or an interval)",
            "Schedules start runs of a workflow on a cron expression (UTC) or every N seconds, while a "
            "process that runs the workflow has the store open (atomr serve, or an app). These "
            "commands only edit or read the store.")
    p.set_defaults(fn=_help(p))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS,
                        help=f"the store (default: $ATOMR_STORE, else {DEFAULT_STORE}; see atomr --help)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and log messages")
    sub = p.add_subparsers(dest="schedule_command", metavar="ACTION", parser_class=type(p))

    a = sub.add_parser("add", parents=[common], help="add (or redefine) a schedule",
                       description="Store a schedule: runs of MODULE:WORKFLOW with --input, on --cron "
                       "EXPR (5 fields, UTC; needs croniter) or --every SECONDS (due on the multiples of "
                       "it since the epoch). Adding an existing ID redefines it and keeps its history.")
    a.set_defaults(fn=cmd_schedule_add)
    a.add_argument("schedule_id", metavar="ID", help="the schedule's id (its runs are ID@<due time>)")
    a.add_argument("workflow", metavar="MODULE:WORKFLOW")
    rule = a.add_mutually_exclusive_group(required=True)
    rule.add_argument("--cron", metavar="EXPR", help="a cron expression, e.g. '0 2 * * *' (UTC)")
    rule.add_argument("--every", metavar="SECONDS", type=float, help="an interval in seconds")
    a.add_argument("--input", metavar="JSON", help="each run's input, a JSON object (or @file.json)")
    a.add_argument("--overlap", choices=OVERLAP, default="skip",
                   help="while the previous run is active: skip the due time (default) or allow it")
    a.add_argument("--catch-up", dest="catch_up", choices=CATCH_UP, default="none",
                   help="due times missed while no process ran: none (default) or one run at once")

    r = sub.add_parser("rm", parents=[common], help="remove a schedule (its runs are kept)",
                       description="Remove a schedule: no more runs start for it.")
    r.set_defaults(fn=cmd_schedule_rm)
    r.add_argument("schedule_id", metavar="ID")

    ls = sub.add_parser("ls", parents=[common], help="list the schedules",
                        description="List the schedules: rule, next due time, last firing, counts.")
    ls.set_defaults(fn=cmd_schedule_ls)
    ls.add_argument("--workflow", metavar="W", help="only schedules of this workflow id")
    ls.add_argument("--json", action="store_true", help="print JSON (for scripts)")
