"""Opening the store and a Runtime on it for a command."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from atomr.cli.base import CliError, load_workflow
from atomr.errors import RunNotFound
from atomr.runtime import Runtime
from atomr.store.lmdb import LmdbStore

__all__ = ["existing_store", "has_store", "runtime", "runtime_for_run"]


def has_store(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "data.mdb"))


def existing_store(path: str, readonly: bool = False) -> LmdbStore:
    """The store at ``path``; a CliError (rather than a new, empty store) when there is none."""
    if not has_store(path):
        raise CliError(
            f"no atomr store at {path!r}; start a run first (atomr run MODULE:WORKFLOW) "
            "or point at one with --store PATH"
        )
    # read-only opens take no lock: they work while another process runs the store
    return LmdbStore(path, readonly=readonly)


@contextlib.contextmanager
def runtime(args: argparse.Namespace, store: LmdbStore | None = None) -> Iterator[Runtime]:
    """A Runtime on ``store`` (default: the --store directory, created when missing)."""
    durability = getattr(args, "durability", None) or "sync"
    if store is None:
        store = LmdbStore(args.store)
    try:
        rt = Runtime(store=store, durability=durability)
    except BaseException:
        store.close()
        raise
    # a short command (cancel, resume, fork, prune...) must not start scheduled runs
    rt.fire_schedules = getattr(args, "command", None) in ("run", "recover", "serve")
    with rt:
        yield rt


@contextlib.contextmanager
def runtime_for_run(args: argparse.Namespace, readonly: bool = False) -> Iterator[Runtime]:
    """A runtime on an existing store with the run's workflow registered (from
    ``--module`` or the ``module`` the run was started from)."""
    store = existing_store(args.store, readonly)
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
    with runtime(args, store) as rt:
        rt.register(wf)
        yield rt
