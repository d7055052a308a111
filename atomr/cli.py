"""The ``atomr`` command line: run, watch, inspect and repair workflows.

    atomr demo                                   an example run, start to finish
    atomr run MODULE:WORKFLOW [--input JSON]     run a workflow, streaming its steps
    atomr runs [--status S] [--workflow W]       the runs in the store
    atomr show W RUN / atomr history W RUN       a run's state / its checkpoints
    atomr resume W RUN [--resume JSON] ...       carry on a paused run
    atomr fork / prune / purge / graph / recover / bench

Every command works on the embedded LMDB store in ``./.atomr`` unless
``--store PATH`` says otherwise. A run remembers the ``MODULE:WORKFLOW`` it was
started from, so later commands need only the workflow id and the run id.

Exit codes: 0 done (or success), 3 paused, 1 failed run or unexpected error,
2 bad usage or an atomr error (one line on stderr; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import importlib
import json
import logging
import os
import shlex
import sys
import traceback
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from atomr.errors import AtomrError, RunNotFound
from atomr.types import Command, Done, Failed, Paused, StepEvent

__all__ = ["main", "CliError", "load_workflow", "DEFAULT_STORE"]

DEFAULT_STORE = ".atomr"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PAUSED = 0, 1, 2, 3
STATUSES = ("running", "paused", "done", "failed")


class CliError(AtomrError):
    """A command-line request that cannot be served (bad argument, missing module...)."""


# -- loading workflows ---------------------------------------------------------


def load_workflow(spec: str) -> Any:
    """Import ``MODULE:WORKFLOW``: a Workflow object, or a zero-argument callable
    returning one. The current directory is importable, as with ``python -m``."""
    from atomr.workflow import Workflow

    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise CliError(
            f"expected MODULE:WORKFLOW (e.g. examples.order_pipeline:workflow), got {spec!r}"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (mod_name == missing or mod_name.startswith(missing + ".")):
            raise CliError(
                f"cannot import module {mod_name!r} of {spec!r}: no module named {missing!r}; "
                "run atomr from the directory that holds it or add that directory to PYTHONPATH"
            ) from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = sorted(k for k, v in vars(module).items() if isinstance(v, Workflow))
            hint = f"; workflows defined there: {', '.join(found)}" if found else ""
            raise CliError(f"module {mod_name!r} has no attribute {attr!r}{hint}") from None
    if not isinstance(obj, Workflow):
        if not callable(obj):
            raise CliError(f"{spec} is a {type(obj).__name__}, not a Workflow (nor a function returning one)")
        made = obj()
        if not isinstance(made, Workflow):
            raise CliError(f"{spec}() returned a {type(made).__name__}, not a Workflow")
        obj = made
    return obj


# -- JSON in and out -----------------------------------------------------------


def _parse_json(text: str | None, flag: str, *, mapping: bool = False) -> Any:
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


def _plain(value: Any) -> Any:
    """``value`` made JSON-friendly (tuples, sets, bytes, dataclasses, odd keys)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    return repr(value)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, (bool, int, float)):
        return json.dumps(k)
    return json.dumps(_plain(k), ensure_ascii=False)


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(_plain(value), ensure_ascii=False, indent=indent)


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


def _when(ms: int) -> str:
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
        return f"[{ss}] completed {step} {_short(_json(_writes(e.data)))}"
    if kind == "interrupted":
        iid = getattr(e.data, "id", "?")
        return f"[{ss}] interrupted {step} {iid} {_short(_json(getattr(e.data, 'payload', e.data)))}"
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
            self._finish(e, "[green]✓[/]", _json(_writes(e.data)))
        elif e.kind == "interrupted":
            self._finish(e, "[magenta]⏸[/]", _json(getattr(e.data, "payload", e.data)))
        elif e.kind in ("retrying", "failed"):
            color = "yellow" if e.kind == "retrying" else "red"
            self._finish(e, f"[{color}]{'↻' if e.kind == 'retrying' else '✗'}[/]",
                         f"attempt {e.attempt}: {_error_of(e)}")
        elif e.kind == "committed":
            self.progress.console.print(f"[dim]super-step {e.super_step} committed[/]")


def _stream(handle: Any) -> Any:
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


# -- outcomes ------------------------------------------------------------------------


def _cmdline(args: argparse.Namespace, *words: str) -> str:
    store = ["--store", args.store] if args.store != DEFAULT_STORE else []
    return " ".join(shlex.quote(w) for w in ["atomr", *words[:1], *store, *words[1:]])


def _print_state(values: dict[str, Any]) -> None:
    """One line per channel: ``  key  <compact JSON>``."""
    width = max((len(k) for k in values), default=0)
    for k, v in values.items():
        print(f"  {k.ljust(width)}  {_json(v)}")


def _print_outcome(out: Any, args: argparse.Namespace) -> int:
    if isinstance(out, Done):
        print(f"done: {out.workflow_id}/{out.run_id}")
        _print_state(out.state)
        return EXIT_OK
    if isinstance(out, Paused):
        why = out.reason if out.reason == "interrupt" else f"{out.reason} {', '.join(out.steps)}".strip()
        print(f"paused: {out.workflow_id}/{out.run_id} at super-step {out.super_step} ({why})")
        for i in out.interrupts:
            print(f"  interrupt {i.id} (step {i.step_id}): {_json(i.payload)}")
        if len(out.interrupts) == 1:
            hint = _cmdline(args, "resume", out.workflow_id, out.run_id, "--resume", "<JSON>")
        elif out.interrupts:
            hint = _cmdline(args, "resume", out.workflow_id, out.run_id, "--resume",
                            '{"' + out.interrupts[0].id + '": <JSON>, ...}')
        else:
            hint = _cmdline(args, "resume", out.workflow_id, out.run_id)
        print(f"resume with: {hint}")
        return EXIT_PAUSED
    if isinstance(out, Failed):
        where = f" at step {out.step_id}" if out.step_id else ""
        print(f"failed: {out.workflow_id}/{out.run_id}{where} (super-step {out.super_step}): "
              f"{out.error_type}: {out.message}")
        print(f"retry the step with: {_cmdline(args, 'resume', out.workflow_id, out.run_id)}")
        return EXIT_FAILED
    raise CliError(f"unexpected outcome {out!r}")  # pragma: no cover


# -- stores and runtimes -------------------------------------------------------------------


def _existing_store(path: str, readonly: bool = False) -> Any:
    from atomr.store.lmdb import LmdbStore

    if not os.path.isfile(os.path.join(path, "data.mdb")):
        raise CliError(
            f"no atomr store at {path!r}; start a run first (atomr run MODULE:WORKFLOW) "
            "or point at one with --store PATH"
        )
    # read-only opens take no lock: they work while another process runs the store
    return LmdbStore(path, readonly=readonly)


@contextlib.contextmanager
def _runtime(args: argparse.Namespace, store: Any = None) -> Iterator[Any]:
    from atomr.runtime import Runtime
    from atomr.store.lmdb import LmdbStore

    durability = getattr(args, "durability", None) or "sync"
    if store is None:
        store = LmdbStore(args.store)
    try:
        rt = Runtime(store=store, durability=durability)
    except BaseException:
        store.close()
        raise
    with rt:
        yield rt


@contextlib.contextmanager
def _runtime_for_run(args: argparse.Namespace, readonly: bool = False) -> Iterator[Any]:
    """A runtime on an existing store with the run's workflow registered (from
    ``--module`` or the ``module`` the run was started from)."""
    store = _existing_store(args.store, readonly)
    try:
        summary = store.summary(args.workflow_id, args.run_id)
        if summary is None:
            raise RunNotFound(args.workflow_id, args.run_id)
        spec = getattr(args, "module", None) or (summary.meta or {}).get("module")
        if not spec:
            raise CliError(
                f"run {args.workflow_id}/{args.run_id} does not say which MODULE:WORKFLOW it "
                "runs (it was not started by atomr run); pass --module MODULE:WORKFLOW"
            )
        wf = load_workflow(spec)
        if wf.id != args.workflow_id:
            raise CliError(f"{spec} defines workflow {wf.id!r}, not {args.workflow_id!r}; "
                           "pass the right --module MODULE:WORKFLOW")
    except BaseException:
        store.close()
        raise
    with _runtime(args, store) as rt:
        rt.register(wf)
        yield rt


# -- commands ------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from atomr import demo

    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    wf = demo.workflow
    print(f"atomr demo: an order pipeline on the embedded LMDB store at {args.store!r}")
    print("  validate -> price | reserve | screen (one parallel super-step) -> approve (asks a person) -> fulfil")
    with _runtime(args) as rt:
        rt.register(wf)
        print(f"\n== 1. start run {wf.id}/{run_id} with order {demo.SAMPLE_ORDER['order_id']}")
        handle = rt.start(wf.id, demo.SAMPLE_ORDER, run_id=run_id, meta={"module": demo.SPEC})
        out = _stream(handle)
        _print_outcome(out, args)
        if isinstance(out, Paused):
            print(f"\n== 2. a person answers {demo.APPROVAL!r}: resume with Command(resume={demo.APPROVAL!r})")
            out = _stream(rt.resume(wf.id, run_id, Command(resume=demo.APPROVAL)))
        if not isinstance(out, Done):
            return _print_outcome(out, args)
        print("\n== history: one checkpoint per committed super-step or pause (changed channels only)")
        _print_history(rt.history(wf.id, run_id), changes=True)
        print("\n== final state")
        code = _print_outcome(out, args)
    print("\nnext, try:")
    for words in (["runs"], ["show", wf.id, run_id], ["history", wf.id, run_id], ["graph", demo.SPEC]):
        print(f"  {_cmdline(args, *words)}")
    return code


def cmd_run(args: argparse.Namespace) -> int:
    wf = load_workflow(args.workflow)
    data = _parse_json(args.input, "--input", mapping=True)
    with _runtime(args) as rt:
        rt.register(wf)
        handle = rt.start(wf.id, data, run_id=args.run_id, meta={"module": args.workflow})
        print(f"run {wf.id}/{handle.run_id}", flush=True)
        return _print_outcome(_stream(handle), args)


def cmd_resume(args: argparse.Namespace) -> int:
    value = _parse_json(args.resume, "--resume")
    update = _parse_json(args.update, "--update", mapping=True)
    command = Command(resume=value, update=update, goto=args.goto)
    with _runtime_for_run(args) as rt:
        handle = rt.resume(args.workflow_id, args.run_id, command)
        print(f"resume {args.workflow_id}/{args.run_id}", flush=True)
        return _print_outcome(_stream(handle), args)


def _summary_row(s: Any) -> dict[str, Any]:
    return {
        "workflow_id": s.workflow_id, "run_id": s.run_id, "status": s.status,
        "super_step": s.super_step, "created_ms": s.created_ms, "updated_ms": s.updated_ms,
        "last_seq": s.last_seq, "meta": _plain(s.meta),
    }


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def cmd_runs(args: argparse.Namespace) -> int:
    if not os.path.isfile(os.path.join(args.store, "data.mdb")):
        summaries: list[Any] = []
    else:
        store = _existing_store(args.store, readonly=True)
        try:
            summaries = store.runs(status=args.status, workflow_id=args.workflow)
        finally:
            store.close()
    summaries.sort(key=lambda s: (s.created_ms, s.workflow_id, s.run_id))
    if args.json:
        print(_json([_summary_row(s) for s in summaries], indent=2))
        return EXIT_OK
    if not summaries:
        print(f"no runs in {args.store!r}")
        return EXIT_OK
    rows = [["WORKFLOW", "RUN", "STATUS", "STEP", "UPDATED", "MODULE"]]
    for s in summaries:
        rows.append([s.workflow_id, s.run_id, s.status, str(s.super_step), _when(s.updated_ms)[:19],
                     str((s.meta or {}).get("module", ""))])
    _table(rows)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with _runtime_for_run(args, readonly=True) as rt:
        v = rt.get_state(args.workflow_id, args.run_id)
    error = None
    if v.error:
        step, etype, message = (list(v.error) + [None, None, None])[:3]
        error = {"step": step, "type": etype, "message": message}
    doc = {
        "workflow_id": v.workflow_id, "run_id": v.run_id, "status": v.status,
        "super_step": v.super_step, "next": list(v.next), "pause_reason": v.pause_reason,
        "interrupts": [{"id": i.id, "step": i.step_id, "payload": _plain(i.payload)} for i in v.interrupts],
        "error": error, "meta": _plain(v.meta), "values": _plain(v.values),
    }
    if args.json:
        print(_json(doc, indent=2))
        return EXIT_OK
    status = v.status + (f" ({v.pause_reason})" if v.status == "paused" and v.pause_reason else "")
    rows = [["run", f"{v.workflow_id}/{v.run_id}"], ["status", status], ["super-step", str(v.super_step)],
            ["next", ", ".join(v.next) or "-"]]
    if v.meta.get("module"):
        rows.append(["module", str(v.meta["module"])])
    if v.meta.get("forked_from"):
        rows.append(["forked from", str(v.meta["forked_from"])])
    if error:
        where = f" at step {error['step']}" if error["step"] else ""
        rows.append(["error", f"{error['type']}{where}: {error['message']}"])
    _table(rows)
    if v.interrupts:
        print("interrupts:")
        for i in v.interrupts:
            print(f"  {i.id}  step {i.step_id}  {_json(i.payload)}")
    print("state:")
    _print_state(v.values)
    return EXIT_OK


def _print_history(points: Sequence[Any], changes: bool = False) -> None:
    """One line per checkpoint; with ``changes``, only the channels that changed
    since the previous checkpoint (the first line shows every channel)."""
    width = max((len(c.label) for c in points), default=0)
    prev: dict[str, Any] | None = None
    for c in points:
        values = c.values
        if changes and prev is not None:
            values = {k: v for k, v in c.values.items() if k not in prev or prev[k] != v}
        print(f"[{c.super_step}] {c.label.ljust(width)}  {_when(c.at_ms)}  {_json(values)}")
        prev = c.values


def cmd_history(args: argparse.Namespace) -> int:
    with _runtime_for_run(args, readonly=True) as rt:
        points = rt.history(args.workflow_id, args.run_id)
    if args.json:
        print(_json([{"super_step": c.super_step, "label": c.label, "at_ms": c.at_ms, "seq": c.seq,
                      "next": list(c.next), "values": c.values} for c in points], indent=2))
        return EXIT_OK
    _print_history(points, changes=args.changes)
    return EXIT_OK


def cmd_fork(args: argparse.Namespace) -> int:
    edits = _parse_json(args.update, "--update", mapping=True)
    with _runtime_for_run(args) as rt:
        new_id = rt.fork(args.workflow_id, args.run_id, args.at, edits=edits, new_run_id=args.run_id_new)
    print(f"forked {args.workflow_id}/{args.run_id}@{args.at} -> {args.workflow_id}/{new_id} (paused)")
    print(f"resume with: {_cmdline(args, 'resume', args.workflow_id, new_id)}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    if args.delete:
        store = _existing_store(args.store)
        if store.summary(args.workflow_id, args.run_id) is None:
            store.close()
            raise RunNotFound(args.workflow_id, args.run_id)
        with _runtime(args, store) as rt:
            rt.delete(args.workflow_id, args.run_id)
        print(f"deleted {args.workflow_id}/{args.run_id}")
        return EXIT_OK
    if args.keep_last < 1:
        raise CliError(f"--keep-last must be >= 1, got {args.keep_last}")
    with _runtime_for_run(args) as rt:
        n = rt.prune(args.workflow_id, args.run_id, keep_last=args.keep_last)
    print(f"pruned {n} record(s) of {args.workflow_id}/{args.run_id} "
          f"(kept the last {args.keep_last} checkpoint(s))")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    if args.older_than < 0:
        raise CliError(f"--older-than must be >= 0 seconds, got {args.older_than}")
    if not os.path.isfile(os.path.join(args.store, "data.mdb")):
        print(f"purged 0 run(s): no store at {args.store!r}")
        return EXIT_OK
    with _runtime(args, _existing_store(args.store)) as rt:
        n = rt.purge(args.older_than)
    print(f"purged {n} finished run(s) not updated for {args.older_than:g}s")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    text = load_workflow(args.workflow).to_mermaid()
    if not args.out:
        print(text, end="")
        return EXIT_OK
    body = f"```mermaid\n{text}```\n" if args.out.lower().endswith((".md", ".markdown")) else text
    try:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(body)
    except OSError as exc:
        raise CliError(f"cannot write {args.out!r}: {exc.strerror}") from None
    print(f"wrote {args.out}")
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    workflows = [load_workflow(spec) for spec in args.workflows]
    with _runtime(args, _existing_store(args.store)) as rt:
        for wf in workflows:
            rt.register(wf)
        handles = rt.recover([wf.id for wf in workflows])
        if not handles:
            ids = ", ".join(wf.id for wf in workflows)
            print(f"nothing to recover: no run of {ids} is left running in {args.store!r}")
            return EXIT_OK
        print(f"recovering {len(handles)} run(s)")
        codes = [_print_outcome(h.result(timeout=None), args) for h in handles]
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return EXIT_PAUSED if EXIT_PAUSED in codes else EXIT_OK


def cmd_bench(argv: Sequence[str]) -> int:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # a source checkout's benchmarks/ package
    try:
        import benchmarks
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks":
            raise
        benchmarks = None
    fn = getattr(benchmarks, "main", None)
    if fn is None:
        raise CliError(
            "the benchmark harness is not available: it is the benchmarks/ package of the source "
            "checkout; run atomr from the checkout's top directory, or reinstall it there with "
            "pip install -e '.[bench]'"
        )
    return int(fn(list(argv)) or 0)


# -- argument parsing ----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, not usage + message
        raise CliError(f"{message} (see: {self.prog} --help)")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def _module_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--module", metavar="MODULE:WORKFLOW",
                   help="the workflow to fold the run with (default: the one the run was started from)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", metavar="W", help="workflow id")
    p.add_argument("run_id", metavar="RUN", help="run id")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"the LMDB store directory (default: {DEFAULT_STORE})")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and log messages")
    parser = _Parser(
        prog="atomr", description="Run, watch and inspect atomr workflows.",
        epilog="Exit codes: 0 done, 3 paused, 1 failed, 2 usage or atomr error.",
    )
    parser.add_argument("--store", metavar="PATH", default=DEFAULT_STORE,
                        help=f"the LMDB store directory (default: {DEFAULT_STORE})")
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

    p = add("runs", cmd_runs, "list the runs in the store")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--workflow", metavar="W", help="only runs of this workflow id")
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

    p = add("fork", cmd_fork, "copy a run as of a super-step into a new paused run",
            "Create a new paused run from the state after super-step N of RUN (edits go through "
            "the reducers); resume it with atomr resume.")
    _run_args(p)
    p.add_argument("--at", metavar="N", type=int, required=True, help="the super-step to fork from")
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

    add("bench", None, "the benchmark harness (arguments go to it: atomr bench --help)")
    return parser


def _split_bench(argv: list[str]) -> tuple[list[str], list[str]] | None:
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, AtomrError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """The ``atomr`` command. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    debug = "--debug" in argv
    try:
        bench = _split_bench(argv)
        if bench is not None:
            return cmd_bench(bench[1])
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        if debug:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
            traceback.print_exc()
        print(f"atomr: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, AtomrError) else EXIT_FAILED
