"""Reusable workflows, step builders and runtime fixtures for the runtime tests.

Everything here is deterministic: steps that must overlap meet on barriers,
steps that must finish in a given order wait on the journal, and every wait
has a generous timeout so a loaded machine only makes tests slower.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from atomr import (
    AppendList,
    Dag,
    LastWriteWins,
    LmdbStore,
    MemoryStore,
    PostgresStore,
    RetryPolicy,
    Runtime,
    SqliteStore,
    StateSchema,
    Workflow,
)
from atomr import events as ev

#: generous upper bound for any wait in a test (a pass returns much sooner)
T = 30.0

STORES = ("memory", "lmdb")
#: the database-backed stores (Postgres: a fresh schema per runtime, dropped at teardown)
SQL_STORES = ("sqlite", "postgres")
ALL_STORES = STORES + SQL_STORES
#: the stores whose runs survive closing the runtime (``Runtimes.reopen``)
PERSISTENT = ("lmdb", "sqlite", "postgres")
DURABILITIES = ("sync", "async", "exit")


# --- schema and steps ---------------------------------------------------------


def schema(**extra: Any) -> StateSchema:
    """``log`` (AppendList), ``n`` (LWW, 0), ``winner`` (LWW) plus ``extra`` channels."""
    chans: dict[str, Any] = {
        "log": AppendList(),
        "n": (LastWriteWins(), 0),
        "winner": LastWriteWins(),
        "answers": AppendList(),
    }
    chans.update(extra)
    return StateSchema(chans)


class Calls:
    """Thread-safe count of step executions (by step name) and their contexts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.seen: list[tuple[str, str, int, int]] = []  # (step, run_id, super_step, attempt)

    def hit(self, step: str, ctx: Any = None) -> int:
        with self._lock:
            self.counts[step] += 1
            if ctx is not None:
                self.seen.append((step, ctx.run_id, ctx.super_step, ctx.attempt))
            return self.counts[step]

    def __getitem__(self, step: str) -> int:
        with self._lock:
            return self.counts[step]

    def attempts(self, step: str, run_id: str | None = None) -> list[int]:
        with self._lock:
            return [a for s, r, _, a in self.seen if s == step and (run_id is None or r == run_id)]


def logger(name: str, calls: Calls | None = None, before: Callable[[Any, Any], Any] | None = None,
           writes: Mapping[str, Any] | None = None) -> Callable[[Any, Any], Any]:
    """A sync step that counts itself, optionally runs ``before(state, ctx)``, and
    appends its name to ``log`` (plus ``writes``)."""

    def step(state: Any, ctx: Any) -> Any:
        if calls is not None:
            calls.hit(name, ctx)
        if before is not None:
            before(state, ctx)
        out: dict[str, Any] = {"log": [name]}
        if writes:
            out.update(writes)
        return out

    step.__name__ = f"step_{name}"
    return step


def asker(name: str, calls: Calls | None = None, times: int = 1,
          payload: Callable[[int], Any] | None = None) -> Callable[[Any, Any], Any]:
    """A step that calls ``ctx.interrupt`` ``times`` times and records the answers."""

    def step(state: Any, ctx: Any) -> Any:
        if calls is not None:
            calls.hit(name, ctx)
        got = []
        for i in range(times):
            got.append(ctx.interrupt(payload(i) if payload else {"step": name, "i": i}))
        return {"log": [name], "answers": [[name, *got]]}

    step.__name__ = f"ask_{name}"
    return step


def build(wid: str, steps: Mapping[str, Any], edges: Iterable[tuple[str, str]] = (),
          entry: str | None = None, sch: StateSchema | None = None, **wf_kw: Any) -> Workflow:
    """A Workflow from ``{step: fn}`` and ``[(a, b), ...]``."""
    names = list(steps)
    b = Dag.builder(entry or names[0])
    for s in names:
        b.step(s, steps[s])
    for a, c in edges:
        b.edge(a, c)
    return Workflow(wid, b.build(), sch or schema(), **wf_kw)


def chain_steps(n: int, prefix: str = "s") -> list[str]:
    width = len(str(n - 1))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def counting_step(name: str, calls: Calls | None = None) -> Callable[[Any, Any], Any]:
    """Appends ``name`` to ``log`` and increments ``n``."""

    def step(state: Any, ctx: Any) -> Any:
        if calls is not None:
            calls.hit(name, ctx)
        return {"log": [name], "n": state["n"] + 1}

    return step


def chain(wid: str, n: int, calls: Calls | None = None, **wf_kw: Any) -> Workflow:
    names = chain_steps(n)
    return build(wid, {s: counting_step(s, calls) for s in names}, zip(names, names[1:]), **wf_kw)


def diamond(wid: str = "diamond", calls: Calls | None = None, barrier: threading.Barrier | None = None,
            **wf_kw: Any) -> Workflow:
    """a -> (b, c) -> d; b and c meet on ``barrier`` when given (proves they overlap)."""

    def meet(state: Any, ctx: Any) -> None:
        if barrier is not None:
            barrier.wait()

    return build(
        wid,
        {
            "a": logger("a", calls),
            "b": logger("b", calls, meet, {"winner": "b"}),
            "c": logger("c", calls, meet, {"winner": "c"}),
            "d": logger("d", calls, writes=None),
        },
        [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
        **wf_kw,
    )


# --- journal helpers ----------------------------------------------------------


def journal(rt_or_store: Any, wid: str, run_id: str) -> list[Any]:
    store = getattr(rt_or_store, "store", rt_or_store)
    return [e for _, e in store.journal(wid, run_id)]


def kinds(events: Iterable[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def wait_for(pred: Callable[[], Any], timeout: float = T, what: str = "condition") -> Any:
    """Poll ``pred`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def wait_step_completed(store: Any, wid: str, run_id: str, step: str, timeout: float = T) -> None:
    """Block (in a step) until ``step``'s StepCompleted is in the journal."""
    wait_for(
        lambda: any(type(e) is ev.StepCompleted and e.step == step
                    for _, e in store.journal(wid, run_id)),
        timeout, f"StepCompleted of {step!r}",
    )


def store_state(rt: Runtime) -> tuple[list[Any], dict[tuple[str, str], int]]:
    """(run summaries, journal length per run): to check a refused request wrote nothing."""
    runs = rt.runs()
    lengths = {(s.workflow_id, s.run_id): len(journal(rt, s.workflow_id, s.run_id)) for s in runs}
    return runs, lengths


# --- runtimes -------------------------------------------------------------------


def make_store(kind: str, path: Path | str, schema: str | None = None, **lmdb_kw: Any) -> Any:
    """A store of ``kind`` at ``path`` (a directory for LMDB, a file for SQLite);
    Postgres uses ``schema`` of the test database (ATOMR_TEST_PG_DSN).
    ``lmdb_kw``: options of an LmdbStore (ignored by the others)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "lmdb":
        return LmdbStore(path, **{"map_size": 64 << 20, **lmdb_kw})
    if kind == "sqlite":
        # "normal": a commit survives a process crash (the crash tests cover "full" too)
        return SqliteStore(path, synchronous="normal")
    if kind == "postgres":
        from conftest import PG_DSN

        assert schema is not None, "a PostgresStore in the tests needs a schema of its own"
        return PostgresStore(PG_DSN, schema=schema, pool_size=2)
    raise ValueError(kind)


class Reopener:
    """Opens one persistent store again and again (a process restart): the same
    LMDB directory, SQLite file or Postgres schema each time."""

    def __init__(self, kind: str, path: Path | str) -> None:
        self.kind = kind
        self.path = Path(path)
        self.schema = new_pg_schema() if kind == "postgres" else None

    def __call__(self, **lmdb_kw: Any) -> Any:
        return make_store(self.kind, self.path, self.schema, **lmdb_kw)

    def drop(self) -> None:
        if self.schema is not None:
            from conftest import drop_schema

            drop_schema(self.schema)


#: the stores the kill -9 tests run on (SQLite in both synchronous modes)
CRASH_KINDS = ("lmdb", "sqlite-full", "sqlite-normal", "postgres")


def open_target(target: str) -> Any:
    """The store a crash test's child process opens: a URL (``sqlite:///…``,
    ``postgresql://…?schema=…``) or an LMDB directory. The scripts run as
    subprocesses carry a copy of these two lines."""
    from atomr import open_store

    return open_store(target) if "://" in target else LmdbStore(target, map_size=64 << 20)


class CrashTarget:
    """A fresh store location named by a string a child process can open
    (``open_target``): an LMDB directory, an SQLite file in synchronous "full" or
    "normal" mode, or a Postgres schema (dropped by :meth:`drop`)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.schema: str | None = None
        if kind == "lmdb":
            self.url = str(tmp_path / "store")
        elif kind in ("sqlite-full", "sqlite-normal"):
            self.url = f"sqlite:///{tmp_path / 'runs.db'}?synchronous={kind.split('-')[1]}"
        elif kind == "postgres":
            from conftest import PG_DSN

            self.schema = new_pg_schema()
            self.url = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={self.schema}"
        else:
            raise ValueError(kind)

    def open(self) -> Any:
        return open_target(self.url)

    def drop(self) -> None:
        if self.schema is not None:
            from conftest import drop_schema

            drop_schema(self.schema)


def crash_targets(*kinds: str) -> Any:
    """A ``crash_target`` fixture over ``kinds`` (a CrashTarget; Postgres schemas
    dropped at teardown)."""

    @pytest.fixture(params=kinds)
    def crash_target(request: Any, tmp_path: Path) -> Any:
        if request.param == "postgres":
            from conftest import need_pg

            need_pg()
        t = CrashTarget(str(request.param), tmp_path)
        yield t
        t.drop()

    return crash_target


def reopeners(*kinds: str) -> Any:
    """A ``reopen_store`` fixture over ``kinds`` (persistent ones): a Reopener on
    a fresh location; the Postgres schema is dropped at teardown."""

    @pytest.fixture(params=kinds)
    def reopen_store(request: Any, tmp_path: Path) -> Any:
        if request.param == "postgres":
            from conftest import need_pg

            need_pg()
        r = Reopener(str(request.param), tmp_path / "s")
        yield r
        r.drop()

    return reopen_store


def new_pg_schema() -> str:
    """A fresh schema name (drop it with ``conftest.drop_schema``)."""
    return "t_" + uuid.uuid4().hex[:16]


class Runtimes:
    """Creates runtimes on fresh stores and closes them all at teardown (and drops
    the Postgres schemas they used)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._open: list[Runtime] = []
        self._n = 0
        self._paths: dict[int, Path] = {}  # by id(runtime) (some tests read it)
        self._kinds: dict[int, str] = {}
        self._schemas: dict[Path, str] = {}

    def __call__(self, kind: str = "memory", durability: str = "sync", path: Path | str | None = None,
                 workflows: Iterable[Workflow] = (), **kw: Any) -> Runtime:
        if path is None:
            self._n += 1
            path = self.tmp_path / f"store{self._n}"
        path = Path(path)
        schema = None
        if kind == "postgres":  # one schema per store path: a reopen finds the same runs
            schema = self._schemas.setdefault(path, new_pg_schema())
        rt = Runtime(store=make_store(kind, path, schema), durability=durability, **kw)
        self._open.append(rt)
        self._paths[id(rt)] = path
        self._kinds[id(rt)] = kind
        for wf in workflows:
            rt.register(wf)
        return rt

    def reopen(self, rt: Runtime, durability: str | None = None, **kw: Any) -> Runtime:
        """Close ``rt`` (on a persistent store) and open a new runtime on the same
        files (or Postgres schema), with the same workflows registered."""
        kind, path = self._kinds[id(rt)], self._paths[id(rt)]
        assert kind in PERSISTENT, f"a {kind} store does not survive a reopen"
        wfs = list(rt.workflows.values())
        rt.close()
        return self(kind, durability or rt.durability, path=path, workflows=wfs, **kw)

    def close_all(self) -> None:
        for rt in self._open:
            try:
                rt.close()
            except Exception:  # noqa: BLE001
                pass
        if self._schemas:
            from conftest import drop_schema

            for schema in self._schemas.values():
                drop_schema(schema)


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterable[Runtimes]:
    r = Runtimes(tmp_path)
    yield r
    r.close_all()


# --- fixtures to import into test modules ----------------------------------------


def store_kinds(*kinds: str) -> Any:
    """A ``store_kind`` fixture over ``kinds``; a module that runs on other stores
    than STORES assigns it: ``store_kind = store_kinds(*ALL_STORES)``. The
    Postgres cases skip (fail in CI) when the test server does not answer."""

    @pytest.fixture(params=kinds)
    def store_kind(request: Any) -> str:
        if request.param == "postgres":
            from conftest import need_pg

            need_pg()
        return str(request.param)

    return store_kind


store_kind = store_kinds(*STORES)


@pytest.fixture(params=DURABILITIES)
def durability(request: Any) -> str:
    return str(request.param)


def retry(max_attempts: int = 3, backoff_s: float = 0.01) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, backoff_s=backoff_s)


def _pump(stream: Any, out: Any) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def kill_at_ready(argv: list[str], go: str) -> None:
    """Run ``argv`` (a Python script and its arguments) in a subprocess, SIGKILL it
    once it prints READY, then touch ``go`` (nothing the script blocked on blocks
    any more)."""
    import os
    import queue
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    try:
        got = lines.get(timeout=T)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=T)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert got == "READY", f"script said {got!r}; stderr:\n{err}"
    assert proc.returncode == -signal.SIGKILL
    Path(go).touch()


__all__ = [
    "T", "STORES", "SQL_STORES", "ALL_STORES", "PERSISTENT", "DURABILITIES", "store_kinds", "new_pg_schema",
    "Reopener", "reopeners", "CRASH_KINDS", "kill_at_ready", "open_target", "CrashTarget", "crash_targets",
    "schema", "Calls", "logger", "asker", "build", "chain",
    "chain_steps", "counting_step", "diamond", "journal", "kinds", "wait_for",
    "wait_step_completed", "store_state", "make_store", "Runtimes", "runtimes", "store_kind",
    "durability", "retry",
]
