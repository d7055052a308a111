"""``main``: arguments in, exit code out; the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from atomr.cli.base import EXIT_FAILED, EXIT_USAGE
from atomr.cli.bench import cmd_bench
from atomr.cli.parser import build_parser, split_bench
from atomr.errors import AtomrError
from atomr.store.url import scrub

__all__ = ["main"]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, AtomrError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _secret_bearers(argv: Sequence[str]) -> list[str]:
    """The arguments (and ATOMR_STORE) that may carry a DSN with a password."""
    found = []
    for a in [*argv, os.environ.get("ATOMR_STORE", "")]:
        a = a.split("=", 1)[1] if a.startswith("--") and "=" in a else a
        if "://" in a or "password" in a.lower():
            found.append(a)
    return found


def _masked(text: str, argv: Sequence[str]) -> str:
    """``text`` with the password of any DSN given on the command line masked."""
    for dsn in _secret_bearers(argv):
        text = scrub(text, dsn)
    return text


class _MaskLogs(logging.Filter):
    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__()
        self.argv = list(argv)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _masked(record.getMessage(), self.argv), None
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """The ``atomr`` command. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for out in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            out.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    debug = "--debug" in argv
    try:
        bench = split_bench(argv)
        if bench is not None:
            return cmd_bench(bench[1])
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        if debug:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            for handler in logging.getLogger().handlers:
                handler.addFilter(_MaskLogs(argv))
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.fn(args))
    except BrokenPipeError:  # the reader went away (atomr runs | head): stop quietly
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("atomr: interrupted; a run left executing stays 'running' in the store: "
              "carry it on with atomr recover MODULE:WORKFLOW", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        if debug:
            print(_masked(traceback.format_exc(), argv), end="", file=sys.stderr)
        print(f"atomr: error: {_masked(_one_line(exc), argv)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, AtomrError) else EXIT_FAILED
