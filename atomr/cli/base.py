"""What every command shares: exit codes, the CLI's error, workflow specs, JSON input."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from atomr import _specs
from atomr.errors import AtomrError
from atomr.workflow import Workflow

__all__ = [
    "DEFAULT_STORE", "EXIT_FAILED", "EXIT_OK", "EXIT_PAUSED", "EXIT_USAGE", "STATUSES",
    "CliError", "cwd_importable", "load_workflow", "parse_json",
]

DEFAULT_STORE = ".atomr"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PAUSED = 0, 1, 2, 3
STATUSES = ("running", "paused", "done", "failed", "cancelled", "sleeping", "queued")


class CliError(AtomrError):
    """A command-line request that cannot be served (bad argument, missing store...)."""


def cwd_importable() -> None:
    """Make the current directory importable, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_workflow(spec: str) -> Workflow:
    """Import ``MODULE:WORKFLOW``: a Workflow object, or a zero-argument callable
    returning one. The current directory is importable, as with ``python -m``.
    Raises :class:`~atomr._specs.WorkflowSpecError` when the spec names no Workflow."""
    cwd_importable()
    return _specs.load_workflow(
        spec, hint="run atomr from the directory that holds it or add that directory to PYTHONPATH"
    )


def parse_json(text: str | None, flag: str, *, mapping: bool = False) -> Any:
    """The value of a JSON option (``@file.json`` reads a file); None when absent."""
    if text is None:
        return None
    source = text
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                source = f.read()
        except OSError as exc:
            raise CliError(f"{flag}: cannot read {text[1:]!r}: {exc.strerror}") from None
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        shown = source if len(source) <= 60 else source[:57] + "..."
        raise CliError(
            f"{flag} is not valid JSON ({exc.msg} at column {exc.colno}): {shown!r}; "
            "quote strings as JSON, e.g. --resume '\"yes\"'"
        ) from None
    if mapping and not isinstance(value, dict):
        raise CliError(f"{flag} must be a JSON object of channel -> value, got {type(value).__name__}")
    return value
