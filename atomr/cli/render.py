"""Output: values as compact JSON, step events as they stream, outcomes, tables."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import shlex
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from atomr import _usertypes
from atomr.cli.base import EXIT_FAILED, EXIT_OK, EXIT_PAUSED, CliError
from atomr.cli.stores import default_store
from atomr.store.url import redact
from atomr.types import Done, Failed, Paused, StepEvent

__all__ = [
    "cmdline", "json_text", "plain", "print_history", "print_outcome", "print_state", "stream",
    "table", "when",
]


# -- JSON out --------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` made JSON-friendly (tuples, sets, bytes, dataclasses, odd keys; a
    class registered with ``atomr.codec.register`` as the data it is stored as).
    Floats that JSON cannot hold are written as the strings "NaN", "Infinity"
    and "-Infinity" (JavaScript's spelling), so the output is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    entry = _usertypes.entry_of(value)
    if entry is not None:
        return plain(_usertypes.dump(entry, value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    return repr(value)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, (bool, int, float)):
        return json.dumps(k)
    return json.dumps(plain(k), ensure_ascii=False)


def json_text(value: Any, indent: int | None = None) -> str:
    return json.dumps(plain(value), ensure_ascii=False, indent=indent, allow_nan=False)


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _writes(writes: Any) -> Any:
    """A step's writes as a JSON-able value: an object when the keys are unique."""
    if isinstance(writes, dict):
        return writes
    try:
        pairs = [(k, v) for k, v in writes or ()]
    except (TypeError, ValueError):
        return writes
    keys = [k for k, _ in pairs]
    if all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys):
        return dict(pairs)
    return [list(p) for p in pairs]


def when(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# -- streaming -------------------------------------------------------------------


def _error_of(e: StepEvent) -> str:
    """``"Type: message"`` of a failed/retrying event (data is ``(type, message)``)."""
    if isinstance(e.data, (list, tuple)) and len(e.data) == 2:
        etype, message = e.data
        return " ".join(f"{etype}: {message}".split())
    return " ".join(str(e.data).split())


def _event_line(e: StepEvent) -> str | None:
    ss, step, kind = e.super_step, e.step, e.kind
    if kind == "started":
        return f"[{ss}] started {step}" + (f" (attempt {e.attempt})" if e.attempt > 1 else "")
    if kind == "completed":
        return f"[{ss}] completed {step} {_short(json_text(_writes(e.data)))}"
    if kind == "interrupted":
        iid = getattr(e.data, "id", "?")
        return f"[{ss}] interrupted {step} {iid} {_short(json_text(getattr(e.data, 'payload', e.data)))}"
    if kind in ("retrying", "failed"):
        return f"[{ss}] {kind} {step} (attempt {e.attempt}): {_error_of(e)}"
    if kind == "committed":
        return f"[{ss}] committed"
    if kind == "outcome":
        return None
    return f"[{ss}] {kind} {step or ''}".rstrip()


class _PlainStream:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __enter__(self) -> _PlainStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def event(self, e: StepEvent) -> None:
        line = _event_line(e)
        if line is not None:
            print(line, file=self.out, flush=True)


class _RichStream:  # pragma: no cover - needs a terminal
    """Step events as a live list of spinners (one per step attempt)."""

    def __init__(self) -> None:
        # rich is optional (the bench extra): imported only for a terminal
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.escape = escape
        self.console = Console()
        self.progress = Progress(
            SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=self.console,
        )
        self.tasks: dict[tuple[int, str | None], Any] = {}

    def __enter__(self) -> _RichStream:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _finish(self, e: StepEvent, mark: str, tail: str = "") -> None:
        desc = f"{mark} [bold]{self.escape(str(e.step))}[/] [dim]\\[{e.super_step}][/]"
        if tail:
            desc += f" [dim]{self.escape(_short(tail, 100))}[/]"
        key = (e.super_step, e.step)
        task = self.tasks.pop(key, None)
        if task is None:
            task = self.progress.add_task(desc, total=1)
        self.progress.update(task, description=desc, completed=1)

    def event(self, e: StepEvent) -> None:
        esc = self.escape
        if e.kind == "started":
            desc = f"[bold]{esc(str(e.step))}[/] [dim]\\[{e.super_step}][/]"
            if e.attempt > 1:
                desc += f" [yellow]attempt {e.attempt}[/]"
            self.tasks[(e.super_step, e.step)] = self.progress.add_task(desc, total=1)
        elif e.kind == "completed":
            self._finish(e, "[green]✓[/]", json_text(_writes(e.data)))
        elif e.kind == "interrupted":
            self._finish(e, "[magenta]⏸[/]", json_text(getattr(e.data, "payload", e.data)))
        elif e.kind in ("retrying", "failed"):
            color = "yellow" if e.kind == "retrying" else "red"
            self._finish(e, f"[{color}]{'↻' if e.kind == 'retrying' else '✗'}[/]",
                         f"attempt {e.attempt}: {_error_of(e)}")
        elif e.kind == "committed":
            self.progress.console.print(f"[dim]super-step {e.super_step} committed[/]")


def stream(handle: Any) -> Any:
    """Print the run's step events as they come; return its outcome."""
    renderer: Any = None
    if sys.stdout.isatty():
        try:
            renderer = _RichStream()
        except ImportError:
            renderer = None
    if renderer is None:
        renderer = _PlainStream(sys.stdout)
    outcome = None
    with renderer:
        for e in handle.events(timeout=None):
            if e.kind == "outcome":
                outcome = e.data
            else:
                renderer.event(e)
    return outcome if outcome is not None else handle.result(timeout=None)


# -- outcomes, states, tables ------------------------------------------------------


def cmdline(args: argparse.Namespace, *words: str) -> str:
    """An ``atomr`` command line to copy (with this invocation's --store unless it
    is the default, its password masked: type it, or set ATOMR_STORE)."""
    store = ["--store", redact(args.store)] if args.store != default_store() else []
    return " ".join(shlex.quote(w) for w in ["atomr", *words[:1], *store, *words[1:]])


def print_state(values: dict[str, Any]) -> None:
    """One line per channel: ``  key  <compact JSON>``."""
    width = max((len(k) for k in values), default=0)
    for k, v in values.items():
        print(f"  {k.ljust(width)}  {json_text(v)}")


def print_outcome(out: Any, args: argparse.Namespace) -> int:
    """Print a run's outcome and what to do next; return its exit code."""
    if isinstance(out, Done):
        print(f"done: {out.workflow_id}/{out.run_id}")
        print_state(out.state)
        return EXIT_OK
    if isinstance(out, Paused):
        why = out.reason if out.reason == "interrupt" else f"{out.reason} {', '.join(out.steps)}".strip()
        print(f"paused: {out.workflow_id}/{out.run_id} at super-step {out.super_step} ({why})")
        for i in out.interrupts:
            print(f"  interrupt {i.id} (step {i.step_id}): {json_text(i.payload)}")
        if len(out.interrupts) == 1:
            hint = cmdline(args, "resume", out.workflow_id, out.run_id, "--resume", "<JSON>")
        elif out.interrupts:
            hint = cmdline(args, "resume", out.workflow_id, out.run_id, "--resume",
                           '{"' + out.interrupts[0].id + '": <JSON>, ...}')
        else:
            hint = cmdline(args, "resume", out.workflow_id, out.run_id)
        print(f"resume with: {hint}")
        return EXIT_PAUSED
    if isinstance(out, Failed):
        where = f" at step {out.step_id}" if out.step_id else ""
        print(f"failed: {out.workflow_id}/{out.run_id}{where} (super-step {out.super_step}): "
              f"{out.error_type}: {out.message}")
        print(f"retry the step with: {cmdline(args, 'resume', out.workflow_id, out.run_id)}")
        return EXIT_FAILED
    raise CliError(f"unexpected outcome {out!r}")  # pragma: no cover


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def print_history(points: Sequence[Any], changes: bool = False) -> None:
    """One line per checkpoint; with ``changes``, only the channels that changed
    since the previous checkpoint (the first line shows every channel)."""
    width = max((len(c.label) for c in points), default=0)
    prev: dict[str, Any] | None = None
    for c in points:
        values = c.values
        if changes and prev is not None:
            values = {k: v for k, v in c.values.items() if k not in prev or prev[k] != v}
        print(f"[{c.super_step}] {c.label.ljust(width)}  {when(c.at_ms)}  {json_text(values)}")
        prev = c.values
