"""The argument parser of the ``atomr`` command."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from atomr.cli.base import DEFAULT_STORE, STATUSES, CliError
from atomr.cli.care import add_care_commands
from atomr.cli.control import add_control_commands
from atomr.cli.schedule import add_schedule_commands
from atomr.cli.commands import (
    cmd_demo,
    cmd_fork,
    cmd_graph,
    cmd_history,
    cmd_prune,
    cmd_purge,
    cmd_recover,
    cmd_resume,
    cmd_run,
    cmd_runs,
    cmd_show,
)
from atomr.cli.serve import add_serve_args, cmd_serve
from atomr.cli.worker import add_worker_command
from atomr.cli.stores import default_store

__all__ = ["STORE_HELP", "build_parser", "split_bench"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise CliError(f"{message} (see: {self.prog} --help)")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def _module_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--module", metavar="MODULE:WORKFLOW",
                   help="the workflow to fold the run with (default: the one the run was started from)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", metavar="W", help="workflow id")
    p.add_argument("run_id", metavar="RUN", help="run id")


#: what --store takes (the default is read from the environment when the parser is built)
STORE_HELP = ("the store: a directory (LMDB), lmdb:DIR, sqlite:///FILE, postgresql://USER@HOST:PORT/DB[?schema=NAME] "
              f"or memory: (default: $ATOMR_STORE, else {DEFAULT_STORE})")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help=STORE_HELP)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and log messages")
    parser = _Parser(
        prog="atomr", description="Run, watch and inspect atomr workflows.",
        epilog="Exit codes: 0 done, 3 paused, 1 failed, 2 usage or atomr error.",
    )
    parser.add_argument("--store", metavar="URL", default=default_store(), help=STORE_HELP)
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show tracebacks and log messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    durability = argparse.ArgumentParser(add_help=False)
    durability.add_argument("--durability", choices=("sync", "async", "exit"), default="sync",
                            help="when the journal is committed (default: sync, every super-step)")

    def add(name: str, fn: Any, help: str, description: str | None = None,
            *, durable: bool = False) -> argparse.ArgumentParser:
        parents = [common, durability] if durable else [common]
        p = sub.add_parser(name, help=help, description=description or help, parents=parents)
        p.set_defaults(fn=fn)
        return p

    add("demo", cmd_demo, "run the example order pipeline: parallel steps, a pause for approval, a resume",
        "Run an example order pipeline on the store: a parallel layer, a human-approval "
        "interrupt answered by a resume, then its history and final state.")

    p = add("run", cmd_run, "start a run of MODULE:WORKFLOW and stream its steps",
            "Import MODULE:WORKFLOW (a Workflow, or a function returning one), start a run, stream "
            "its step events and print the outcome. Exit code 0 done, 3 paused, 1 failed.", durable=True)
    p.add_argument("workflow", metavar="MODULE:WORKFLOW")
    p.add_argument("--input", metavar="JSON", help="the input state, a JSON object (or @file.json)")
    p.add_argument("--run-id", metavar="ID", help="the run id (default: a random one)")
    p.add_argument("--continue", dest="cont", action="store_true",
                   help="give the done run --run-id another turn with --input (or start it if it does not exist)")
    p.add_argument("--priority", metavar="N", type=int, default=0,
                   help="among queued runs (max_concurrent_runs), a higher priority starts first (default 0)")

    p = add("runs", cmd_runs, "list the runs in the store, newest first")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--workflow", metavar="W", help="only runs of this workflow id")
    p.add_argument("--limit", metavar="N", type=int, default=100, help="at most N runs (default 100; 0: all)")
    p.add_argument("--before", metavar="CURSOR", help="the runs after this one (the cursor a page ends with)")
    _json_flag(p)

    p = add("show", cmd_show, "a run's status, state, next steps and pending interrupts")
    _run_args(p)
    _json_flag(p)
    _module_flag(p)

    p = add("history", cmd_history, "a run's checkpoints, oldest first")
    _run_args(p)
    _json_flag(p)
    p.add_argument("--changes", action="store_true",
                   help="show only the channels each checkpoint changed")
    _module_flag(p)

    p = add("resume", cmd_resume, "resume a paused (or failed) run and stream its steps",
            "Resume a paused or failed run: --resume answers the pending interrupt (or "
            "{interrupt_id: value, ...} answers several), --update merges edits through the "
            "reducers first, --goto continues from a step's layer. Exit code 0 done, 3 paused, 1 failed.",
            durable=True)
    _run_args(p)
    p.add_argument("--resume", metavar="JSON", help="the answer to the pending interrupt(s), as JSON")
    p.add_argument("--update", metavar="JSON", help="state edits, a JSON object of channel -> value")
    p.add_argument("--goto", metavar="STEP", help="continue from this step's layer")
    _module_flag(p)

    p = add("fork", cmd_fork, "copy a run as of a super-step or a checkpoint into a new paused run",
            "Create a new paused run from the state after super-step N of RUN, or from exactly the "
            "checkpoint with seq S (see atomr history --json; e.g. one Loop iteration); edits go "
            "through the reducers; resume it with atomr resume.")
    _run_args(p)
    at = p.add_mutually_exclusive_group(required=True)
    at.add_argument("--at", metavar="N", type=int, help="the super-step to fork from")
    at.add_argument("--seq", metavar="S", type=int, help="the checkpoint to fork from, by its seq")
    p.add_argument("--update", metavar="JSON", help="state edits for the new run, a JSON object")
    p.add_argument("--run-id", dest="run_id_new", metavar="NEW", help="the new run's id")
    _module_flag(p)

    p = add("prune", cmd_prune, "drop a run's old history (or delete the run)")
    _run_args(p)
    p.add_argument("--keep-last", metavar="K", type=int, default=1,
                   help="checkpoints to keep (default: 1)")
    p.add_argument("--delete", action="store_true", help="delete the whole run instead")
    _module_flag(p)

    p = add("purge", cmd_purge, "delete finished (done/failed) runs not updated for a while")
    p.add_argument("--older-than", metavar="SECONDS", type=float, required=True,
                   help="age in seconds since the run's last update")

    p = add("graph", cmd_graph, "print the DAG of MODULE:WORKFLOW as a mermaid flowchart")
    p.add_argument("workflow", metavar="MODULE:WORKFLOW")
    p.add_argument("--out", metavar="FILE", help="write to FILE (a .md file gets a ```mermaid fence)")

    p = add("recover", cmd_recover, "carry on the runs a crash left running",
            "Register the given workflows and carry on every run of theirs left 'running' in "
            "the store (after a crash); print each outcome.")
    p.add_argument("workflows", metavar="MODULE:WORKFLOW", nargs="+")

    add_control_commands(add, _run_args, _module_flag)
    add_care_commands(add)
    add_schedule_commands(add)

    add_worker_command(add)
    add_serve_args(add("serve", cmd_serve, "serve the HTTP API, /metrics and the web UI for MODULE:WORKFLOW...",
                       "Run the given workflows on the store behind an HTTP server (the server extra): "
                       "a JSON API, server-sent events, Prometheus /metrics and a web UI at /.",
                       durable=True))

    add("bench", None, "the benchmark harness of a source checkout (arguments go to it: atomr bench --help)")
    return parser


def split_bench(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """``(global options, bench arguments)`` when the command is ``bench``."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--store":
            i += 2
        elif a == "--debug" or a.startswith("--store="):
            i += 1
        else:
            break
    if i < len(argv) and argv[i] == "bench":
        return argv[:i], argv[i + 1:]
    return None
