"""The commands: each takes the parsed arguments and returns the exit code."""

from __future__ import annotations

import argparse
import shlex
import uuid
from typing import Any

from atomr import demo
from atomr.cli.base import EXIT_FAILED, EXIT_OK, EXIT_PAUSED, CliError, load_workflow, parse_json
from atomr.cli.render import (
    cmdline,
    json_text,
    plain,
    print_history,
    print_outcome,
    print_state,
    stream,
    table,
    when,
)
from atomr.cli.stores import describe, existing_store, maybe_store, runtime, runtime_for_run, shown
from atomr._maintain import checkpoint_by_seq
from atomr.errors import RunNotFound
from atomr.types import Command, Done, Paused

__all__ = [
    "cmd_demo", "cmd_fork", "cmd_graph", "cmd_history", "cmd_prune", "cmd_purge", "cmd_recover",
    "cmd_resume", "cmd_run", "cmd_runs", "cmd_show",
]


def cmd_demo(args: argparse.Namespace) -> int:
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    wf = demo.workflow
    print(f"atomr demo: an order pipeline on {describe(args.store)}")
    print("  validate -> price | reserve | screen (one parallel super-step) -> approve (asks a person) -> fulfil")
    with runtime(args) as rt:
        rt.register(wf)
        print(f"\n== 1. start run {wf.id}/{run_id} with order {demo.SAMPLE_ORDER['order_id']}")
        handle = rt.start(wf.id, demo.SAMPLE_ORDER, run_id=run_id, meta={"module": demo.SPEC})
        out = stream(handle)
        print_outcome(out, args)
        if isinstance(out, Paused):
            print(f"\n== 2. a person answers {demo.APPROVAL!r}: resume with Command(resume={demo.APPROVAL!r})")
            out = stream(rt.resume(wf.id, run_id, Command(resume=demo.APPROVAL)))
        if not isinstance(out, Done):
            return print_outcome(out, args)
        print("\n== history: one checkpoint per committed super-step or pause (changed channels only)")
        print_history(rt.history(wf.id, run_id), changes=True)
        print("\n== final state")
        code = print_outcome(out, args)
    print("\nnext, try:")
    for words in (["runs"], ["show", wf.id, run_id], ["history", wf.id, run_id], ["graph", demo.SPEC]):
        print(f"  {cmdline(args, *words)}")
    return code


def cmd_run(args: argparse.Namespace) -> int:
    wf = load_workflow(args.workflow)
    data = parse_json(args.input, "--input", mapping=True)
    with runtime(args) as rt:
        rt.register(wf)
        if args.cont and not args.run_id:
            raise CliError("--continue needs --run-id: the run to give another turn")
        handle = rt.start(wf.id, data, run_id=args.run_id, meta={"module": args.workflow},
                          if_exists="continue" if args.cont else "error", priority=args.priority)
        print(f"run {wf.id}/{handle.run_id}", flush=True)
        return print_outcome(stream(handle), args)


def cmd_resume(args: argparse.Namespace) -> int:
    value = parse_json(args.resume, "--resume")
    update = parse_json(args.update, "--update", mapping=True)
    command = Command(resume=value, update=update, goto=args.goto)
    with runtime_for_run(args) as rt:
        handle = rt.resume(args.workflow_id, args.run_id, command)
        print(f"resume {args.workflow_id}/{args.run_id}", flush=True)
        return print_outcome(stream(handle), args)


def _summary_row(s: Any) -> dict[str, Any]:
    return {
        "workflow_id": s.workflow_id, "run_id": s.run_id, "status": s.status,
        "super_step": s.super_step, "created_ms": s.created_ms, "updated_ms": s.updated_ms,
        "last_seq": s.last_seq, "meta": plain(s.meta), "cursor": s.cursor,
    }


def cmd_runs(args: argparse.Namespace) -> int:
    summaries: list[Any] = []
    if args.limit < 0:
        raise CliError(f"--limit {args.limit}: pass a number of runs, or 0 for all of them")
    limit = args.limit or None
    store, _ = maybe_store(args.store)
    if store is not None:
        try:  # one page, newest first, through the store's indexes
            summaries = store.runs(status=args.status, workflow_id=args.workflow, limit=limit, before=args.before)
        finally:
            store.close()
    if args.json:
        print(json_text([_summary_row(s) for s in summaries], indent=2))
        return EXIT_OK
    if not summaries:
        print(f"no {'more ' if args.before else ''}runs in {shown(args.store)!r}")
        return EXIT_OK
    rows = [["WORKFLOW", "RUN", "STATUS", "STEP", "UPDATED", "VERSION", "MODULE"]]
    for s in summaries:
        meta = s.meta or {}
        rows.append([s.workflow_id, s.run_id, s.status, str(s.super_step), when(s.updated_ms)[:19],
                     str(meta.get("workflow_version", "")), str(meta.get("module", ""))])
    table(rows)
    if limit is not None and len(summaries) == limit:
        same = "".join(f" --{k} {shlex.quote(str(v))}" for k, v in (("status", args.status), ("workflow", args.workflow),
                                                   ("limit", limit if limit != 100 else None)) if v is not None)
        print(f"more: atomr runs{same} --before {summaries[-1].cursor}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with runtime_for_run(args, readonly=True) as rt:
        v = rt.get_state(args.workflow_id, args.run_id)
    error = None
    if v.error:
        step, etype, message = (list(v.error) + [None, None, None])[:3]
        error = {"step": step, "type": etype, "message": message, "traceback": v.traceback}
    doc = {
        "workflow_id": v.workflow_id, "run_id": v.run_id, "status": v.status,
        "super_step": v.super_step, "next": list(v.next), "pause_reason": v.pause_reason,
        "interrupts": [{"id": i.id, "step": i.step_id, "payload": plain(i.payload)} for i in v.interrupts],
        "error": error, "meta": plain(v.meta), "values": plain(v.values),
    }
    if args.json:
        print(json_text(doc, indent=2))
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
    table(rows)
    if error and error["traceback"]:
        print("traceback of the failed step:")
        print(error["traceback"].rstrip("\n"))
    if v.interrupts:
        print("interrupts:")
        for i in v.interrupts:
            print(f"  {i.id}  step {i.step_id}  {json_text(i.payload)}")
    print("state:")
    print_state(v.values)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    with runtime_for_run(args, readonly=True) as rt:
        points = rt.history(args.workflow_id, args.run_id)
    if args.json:
        print(json_text([{"super_step": c.super_step, "label": c.label, "at_ms": c.at_ms, "seq": c.seq,
                          "next": list(c.next), "values": c.values} for c in points], indent=2))
        return EXIT_OK
    print_history(points, changes=args.changes)
    return EXIT_OK


def cmd_fork(args: argparse.Namespace) -> int:
    edits = parse_json(args.update, "--update", mapping=True)
    with runtime_for_run(args) as rt:
        at: Any = args.at
        if args.seq is not None:
            at = checkpoint_by_seq(rt.history(args.workflow_id, args.run_id), args.workflow_id, args.run_id, args.seq)
        new_id = rt.fork(args.workflow_id, args.run_id, at, edits=edits, new_run_id=args.run_id_new)
    where = f"@{args.at}" if args.seq is None else f" at seq {args.seq} ({at.label}, super-step {at.super_step})"
    print(f"forked {args.workflow_id}/{args.run_id}{where} -> {args.workflow_id}/{new_id} (paused)")
    print(f"resume with: {cmdline(args, 'resume', args.workflow_id, new_id)}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    if args.delete:
        store = existing_store(args.store)
        if store.summary(args.workflow_id, args.run_id) is None:
            store.close()
            raise RunNotFound(args.workflow_id, args.run_id)
        with runtime(args, store) as rt:
            rt.delete(args.workflow_id, args.run_id)
        print(f"deleted {args.workflow_id}/{args.run_id}")
        return EXIT_OK
    if args.keep_last < 1:
        raise CliError(f"--keep-last must be >= 1, got {args.keep_last}")
    with runtime_for_run(args) as rt:
        n = rt.prune(args.workflow_id, args.run_id, keep_last=args.keep_last)
    print(f"pruned {n} record(s) of {args.workflow_id}/{args.run_id} "
          f"(kept the last {args.keep_last} checkpoint(s))")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    if args.older_than < 0:
        raise CliError(f"--older-than must be >= 0 seconds, got {args.older_than}")
    store, _ = maybe_store(args.store, readonly=False)
    if store is None:
        print(f"purged 0 run(s): no store at {shown(args.store)!r}")
        return EXIT_OK
    with runtime(args, store) as rt:
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
    with runtime(args, existing_store(args.store)) as rt:
        for wf in workflows:
            rt.register(wf)
        handles = rt.recover([wf.id for wf in workflows])
        if not handles:
            ids = ", ".join(wf.id for wf in workflows)
            print(f"nothing to recover: no run of {ids} is left running in {shown(args.store)!r}")
            return EXIT_OK
        print(f"recovering {len(handles)} run(s)")
        codes = [print_outcome(h.result(timeout=None), args) for h in handles]
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return EXIT_PAUSED if EXIT_PAUSED in codes else EXIT_OK
