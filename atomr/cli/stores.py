"""Opening the store and a Runtime on it for a command.

``--store`` (default: ``$ATOMR_STORE``, else ``.atomr``) takes what
:func:`atomr.open_store` takes: a directory or ``lmdb:DIR`` (LMDB),
``sqlite:///FILE``, ``postgresql://USER@HOST:PORT/DB?schema=NAME`` or
``memory:``. Commands that only read or change existing runs never create a
store: :func:`existing_store` says clearly when there is none. Wherever a
store is shown, its password is masked (:func:`shown`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from atomr.cli.base import DEFAULT_STORE, CliError, load_workflow
from atomr.errors import RunNotFound, StoreError, StoreNotShared, StoreUrlError
from atomr.runtime import Runtime
from atomr.store.base import Store
from atomr.store.url import open_store, redact

__all__ = ["EXECUTING", "backend", "default_store", "describe", "existing_store", "has_store", "lmdb_path",
           "maybe_store", "refuse_unshared", "runtime", "runtime_for_run", "same_store", "shared", "shown",
           "sqlite_path", "writable_store"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
#: what each backend is called in messages
NAMES = {"lmdb": "LMDB", "sqlite": "SQLite", "postgres": "Postgres", "memory": "in-memory"}


def default_store() -> str:
    """The store a command uses without ``--store``: ``$ATOMR_STORE``, else ``.atomr``."""
    return os.environ.get("ATOMR_STORE", "").strip() or DEFAULT_STORE


def shown(url: str) -> str:
    """The store as it may be printed: any password masked."""
    return redact(url)


def backend(url: str) -> str:
    """``"lmdb"``, ``"sqlite"``, ``"postgres"`` or ``"memory"``: what ``url`` opens
    (StoreUrlError for an unknown scheme)."""
    m = _SCHEME.match(url.strip())
    scheme = m.group(1).lower() if m else None
    if scheme is None:
        return "lmdb"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme in ("lmdb", "sqlite", "memory"):
        return scheme
    raise StoreUrlError(f"unknown store URL scheme {scheme!r} in {shown(url)!r}; use a path, lmdb:PATH, "
                        "sqlite:///FILE, postgresql://USER@HOST:PORT/DB or memory: (a directory whose name "
                        "has a colon: write it as ./NAME)")


def lmdb_path(url: str) -> str:
    """The directory of an LMDB store URL (a plain path or ``lmdb:PATH``)."""
    text = url.strip()
    if text[:5].lower() == "lmdb:":
        text = text[5:]
        text = text[2:] if text.startswith("//") else text
        if not text:
            raise StoreUrlError(f"lmdb: needs a directory, e.g. lmdb:runs/ (got {url!r})")
    return text


def sqlite_path(url: str) -> str:
    """The database file of a ``sqlite:///FILE`` URL (StoreUrlError when malformed)."""
    text = url.strip()
    rest = text[len("sqlite:"):]
    path = rest[3:].partition("?")[0]
    if not rest.startswith("///") or not path:
        raise StoreUrlError(f"malformed SQLite URL {text!r}: write sqlite:///relative.db or "
                            "sqlite:////absolute/path.db (three slashes, then the path)")
    return unquote(path)


def _where(url: str) -> tuple[str, str]:
    """``(backend, location)``: what a store URL names, for comparing two of them."""
    kind = backend(url)
    if kind == "lmdb":
        return kind, os.path.realpath(lmdb_path(url))
    if kind == "sqlite":
        return kind, os.path.realpath(sqlite_path(url))
    return kind, url.strip()


def same_store(a: str, b: str) -> bool:
    """True when two store URLs name one store (as far as can be told without opening them)."""
    return _where(a) == _where(b)


def maybe_store(url: str, readonly: bool = True) -> tuple[Store | None, str]:
    """``(the existing store, "")``, or ``(None, why there is none)``. Opening
    read-only creates nothing; an unknown scheme, a malformed URL or an
    unreachable server raise their named errors."""
    kind = backend(url)
    if kind == "memory":
        return None, "memory: keeps runs in one process only, nothing is left of them for this command"
    if kind == "lmdb":
        path = lmdb_path(url)
        if not os.path.isfile(os.path.join(path, "data.mdb")):
            return None, ""
        # read-only opens take no lock: they work while another process runs the store
        return open_store(url, readonly=readonly), ""
    if kind == "sqlite":
        path = sqlite_path(url)
        if not os.path.isfile(path):
            return None, "no such file"
        if _sqlite_tables(path) is False:
            return None, f"{path!r} is an SQLite database without atomr's tables"
    try:
        probe = open_store(url, readonly=True)  # any other problem of the file is the store's to name
    except StoreError as exc:
        # a schema without atomr's tables; an unreachable server, a malformed URL... are raised
        if kind == "postgres" and type(exc) is StoreError and str(exc).startswith("no atomr store"):
            return None, str(exc)
        raise
    if readonly:
        return probe, ""
    probe.close()
    return open_store(url), ""


def _sqlite_tables(path: str) -> bool | None:
    """Whether the SQLite file holds atomr's tables; None when SQLite cannot tell
    (not a database, damaged: opening the store then says what is wrong)."""
    uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'atomr_meta'").fetchone()
        return row is not None
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def has_store(url: str) -> bool:
    store, _ = maybe_store(url)
    if store is None:
        return False
    store.close()
    return True


def existing_store(url: str, readonly: bool = False) -> Store:
    """The store at ``url``; a CliError (rather than a new, empty store) when there is none."""
    store, why = maybe_store(url, readonly)
    if store is not None:
        return store
    if backend(url) == "lmdb":
        raise CliError(
            f"no atomr store at {shown(url)!r}; start a run first (atomr run MODULE:WORKFLOW) "
            "or point at one with --store PATH"
        )
    head = why if why.startswith("no atomr store") else f"no atomr store at {shown(url)!r} ({why})"
    raise CliError(f"{head}; start a run first (atomr run MODULE:WORKFLOW) or point at one with --store URL")


def writable_store(url: str) -> Store:
    """The store at ``url`` opened for writing; created when there is none."""
    return open_store(url)  # type: ignore[no-any-return]


def describe(url: str) -> str:
    """``the LMDB store at '.atomr'`` and the like (password masked)."""
    return f"the {NAMES[backend(url)]} store at {shown(url)!r}"


#: the commands that execute runs; on a shared store (SQLite, Postgres) every other one is a client
#: (``Runtime(execute=False)``): it hands its requests to the workers, so a short command never
#: takes a run over only to drop it when it exits
EXECUTING = ("run", "recover", "worker", "serve", "demo")


def shared(store: Store) -> bool:
    """True for a store several processes share (SQLite, Postgres): one with workers."""
    return bool(getattr(store, "shared", False))


def refuse_unshared(url: str, what: str) -> None:
    """StoreNotShared unless ``url`` names an SQLite or Postgres store (checked before opening it)."""
    kind = backend(url)
    if kind not in ("sqlite", "postgres"):
        hint = " (move its runs with atomr copy SRC DST)" if kind == "lmdb" else ""
        raise StoreNotShared(
            f"{what} needs a store that several processes share: SQLite (--store sqlite:///FILE) or Postgres "
            f"(--store postgresql://USER@HOST:PORT/DB); {describe(url)} is opened by one process only{hint}")


def _live_worker(store: Store) -> bool:
    try:
        return any(w.alive for w in store.workers())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a store without worker rows (an older format): none
        return False


@contextlib.contextmanager
def runtime(args: argparse.Namespace, store: Store | None = None, *,
            execute: bool | None = None, **options: Any) -> Iterator[Runtime]:
    """A Runtime on ``store`` (default: the --store, created when missing).

    On a shared store only the :data:`EXECUTING` commands execute runs (or
    ``execute`` says); the others are clients. ``resume`` streams the run to its
    outcome: it is a client while a worker is alive on the store, else it
    executes the run itself (as ``run`` does). ``options`` go to the Runtime."""
    command = getattr(args, "command", None)
    durability = getattr(args, "durability", None) or "sync"
    if store is None:
        store = writable_store(args.store)
    try:
        if not shared(store):
            execute = True
        elif execute is None:
            execute = command in EXECUTING or (command == "resume" and not _live_worker(store))
        rt = Runtime(store=store, durability=durability, execute=execute, **options)
    except BaseException:
        store.close()
        raise
    # a short command (cancel, resume, fork, prune...) must not start scheduled runs
    rt.fire_schedules = command in EXECUTING and command != "demo"
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
