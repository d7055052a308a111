"""Bad input catalogue: every misuse raises a named atomr error whose message
says what to do, and leaves the store as it was.

Each case is one row of a table. A case either raises (checked: the exact
class from ``atomr.errors``) or ends a run with a ``Failed`` outcome (checked:
``error_type`` is the class name and ``Failed.raise_error()`` raises that
class). Either way the message must carry a hint (a verb telling the user what
to do), and a dump of the store (every run summary, every journal record and
snapshot, byte for byte) is the same before and after — except, for a
``Failed`` case, the one new run that failed.

The bench runs on LMDB, SQLite and Postgres (a case that never reaches the
store, such as a bad DAG or an LMDB option, only on LMDB). Store damage (a
lock held by another process, a corrupted record, a truncated data file, a
full map, a newer format) is catalogued at the end with its own LMDB stores;
the SQL stores' own cases are in tests/test_store_sql_extra.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import pytest

from atomr import (
    AppendList,
    Command,
    Dag,
    Done,
    Failed,
    Human,
    LastWriteWins,
    LmdbStore,
    Loop,
    Paused,
    Runtime,
    StateSchema,
    Workflow,
)
from atomr import errors as E
from atomr.store import format as fmt
from workflows import PERSISTENT, Reopener, reopeners

T = 60.0
ROOT = str(Path(__file__).resolve().parents[1])

#: verbs that tell the user what to do; every message must use one
HINTS = (
    "use", "pass", "add", "declare", "register", "call", "pick", "restore", "upgrade", "open",
    "stop", "resume", "wait", "fix", "rename", "raise", "remove", "write", "answer", "check",
    "fork", "return", "create", "give", "delete", "make", "instantiate", "connect", "inspect",
)
_HINT_RE = re.compile(r"\b(" + "|".join(HINTS) + r")\b", re.IGNORECASE)


def has_hint(message: str) -> bool:
    return bool(_HINT_RE.search(message))


# --- the bench: a runtime on LMDB with runs in every state -----------------------------------

SCHEMA_SPEC: dict[str, Any] = {"log": AppendList(), "n": (LastWriteWins(), 0), "x": LastWriteWins()}


def _schema(**extra: Any) -> StateSchema:
    return StateSchema({**SCHEMA_SPEC, **extra})


def _log(name: str) -> Callable[..., Any]:
    def step(state: Any, ctx: Any) -> Any:
        return {"log": [name], "n": state["n"] + 1}

    step.__name__ = f"step_{name}"
    return step


def _asker(name: str, times: int = 1) -> Callable[..., Any]:
    def step(state: Any, ctx: Any) -> Any:
        got = [ctx.interrupt({"q": name, "i": i}) for i in range(times)]
        return {"log": [name, *got]}

    return step


def _wf(wid: str, steps: dict[str, Any], edges: Iterable[tuple[str, str]] = (), **kw: Any) -> Workflow:
    names = list(steps)
    b = Dag.builder(names[0])
    for s in names:
        b.step(s, steps[s])
    for a, c in edges:
        b.edge(a, c)
    schema = kw.pop("schema", None) or _schema()
    return Workflow(wid, b.build(), schema, **kw)


class Bench:
    """A runtime on a store (``opener``: LMDB, SQLite or Postgres) holding a done
    run, a paused run (one interrupt), a paused run with two interrupts, a failed
    run and a run blocked mid-step (running)."""

    def __init__(self, tmp_path: Path, opener: Reopener) -> None:
        self.path = tmp_path / "store"
        self.kind = opener.kind
        self.opener = opener
        self.gate = threading.Event()  # releases the blocked step and hung steps
        self.rt = Runtime(store=opener(map_size=32 << 20), durability="sync")
        gate = self.gate
        entered = self.entered = threading.Event()

        def block(state: Any, ctx: Any) -> Any:
            entered.set()
            gate.wait(T)
            return {"log": ["block"]}

        def boom(state: Any, ctx: Any) -> Any:
            raise ValueError("boom")

        self.chain = _wf("chain", {"a": _log("a"), "b": _log("b"), "c": _log("c")}, [("a", "b"), ("b", "c")])
        self.ask = _wf("ask", {"a": _log("a"), "q": _asker("q"), "z": _log("z")}, [("a", "q"), ("q", "z")])
        self.ask2 = _wf("ask2", {"p": _asker("p"), "q": _asker("q")})  # two roots: two interrupts
        self.fails = _wf("fails", {"a": _log("a"), "boom": boom}, [("a", "boom")])
        self.blocks = _wf("blocks", {"block": block})
        for wf in (self.chain, self.ask, self.ask2, self.fails, self.blocks):
            self.rt.register(wf)
        rt = self.rt
        assert isinstance(rt.start("chain", {"n": 1}, run_id="done1").result(timeout=T), Done)
        assert isinstance(rt.start("ask", {}, run_id="paused1").result(timeout=T), Paused)
        assert isinstance(rt.start("ask2", {}, run_id="paused2").result(timeout=T), Paused)
        assert isinstance(rt.start("fails", {}, run_id="failed1").result(timeout=T), Failed)
        self.blocked = rt.start("blocks", {}, run_id="running1")
        assert entered.wait(T)
        self.new_runs: list[tuple[str, str]] = []

    def dump(self, skip: Collection[tuple[str, str]] = ()) -> Any:
        """Every run summary, journal record and snapshot (raw bytes), minus ``skip``."""
        self.rt.flush()
        store = self.rt.store
        out = []
        for s in store.runs():
            key = (s.workflow_id, s.run_id)
            if key in skip:
                continue
            out.append((s, list(store._journal_raw(*key, 1, None)), store._snapshots_raw(*key)))
        return out

    def close(self) -> None:
        self.gate.set()
        self.rt.close()


#: the stores the bench runs on (by indirect parametrization of ``bench_store``)
bench_store = reopeners(*PERSISTENT)


@pytest.fixture
def bench(tmp_path: Path, bench_store: Reopener) -> Any:
    b = Bench(tmp_path, bench_store)
    yield b
    b.close()


# --- the cases -------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    error: type[E.AtomrError]
    act: Callable[[Bench], Any]
    failed: bool = False  # the misuse shows as a Failed outcome of a new run
    words: tuple[str, ...] = ()  # must appear in the message too
    store: bool = True  # False: it never reaches the store (checked on LMDB only)


def _register(b: Bench, wf: Workflow) -> None:
    b.rt.register(wf)


def _run_new(b: Bench, wf: Workflow, input: dict[str, Any] | None = None, rid: str = "bad") -> Failed:
    if wf.id not in b.rt.workflows:
        b.rt.register(wf)
    out = b.rt.start(wf.id, input or {}, run_id=rid).result(timeout=T)
    b.new_runs.append((wf.id, rid))
    return out  # type: ignore[return-value]


def _cycle(b: Bench) -> None:
    Dag.builder("a").step("a", _log("a")).step("b", _log("b")).edge("a", "b").edge("b", "a").build()


def _unknown_edge(b: Bench) -> None:
    Dag.builder("a").step("a", _log("a")).edge("a", "nowhere").build()


def _duplicate_step(b: Bench) -> None:
    Dag.builder("a").step("a", _log("a")).step("a", _log("a2")).build()


def _not_callable(b: Bench) -> None:
    Dag.builder("a").step("a", "not a function").build()  # type: ignore[arg-type]


def _bad_entry(b: Bench) -> None:
    Dag.builder("start").step("a", _log("a")).build()


def _class_as_reducer(b: Bench) -> None:
    StateSchema({"log": AppendList})  # the class, not an instance


def _reducer_not_callable(b: Bench) -> None:
    StateSchema({"log": 42})


def _bad_join(b: Bench) -> None:
    Dag.builder("a").step("a", _log("a")).step("b", _log("b")).edge("a", "b").join("b", "first").build()


def _unknown_breakpoint(b: Bench) -> None:
    Workflow("bp", b.chain.dag, _schema(), interrupt_before=["nope"])


def _duplicate_workflow(b: Bench) -> None:
    b.rt.register(_wf("chain", {"a": _log("a")}))


def _unknown_workflow(b: Bench) -> None:
    b.rt.start("nope", {})


def _unknown_input_key(b: Bench) -> None:
    b.rt.start("chain", {"typo": 1}, run_id="new1")


def _unencodable_input(b: Bench) -> None:
    b.rt.start("chain", {"x": object()}, run_id="new1")


def _existing_run_id(b: Bench) -> None:
    b.rt.start("chain", {}, run_id="done1")


def _step_unknown_channel(b: Bench) -> Failed:
    return _run_new(b, _wf("uc", {"a": lambda s, c: {"nope": 1}}))


def _step_unencodable(b: Bench) -> Failed:
    return _run_new(b, _wf("ue", {"writer": lambda s, c: {"x": threading.Lock()}}))


def _step_non_mapping(b: Bench) -> Failed:
    return _run_new(b, _wf("nm", {"a": lambda s, c: 42}))


def _reducer_raises(b: Bench) -> Failed:
    def picky(current: Any, incoming: Any) -> Any:
        if incoming < 0:
            raise ValueError("negative values are not allowed")
        return incoming

    wf = _wf("rr", {"a": _log("a"), "neg": lambda s, c: {"v": -1}}, [("a", "neg")],
             schema=_schema(v=(picky, 0)))
    out = _run_new(b, wf)
    # the state was left as it was before the bad write
    assert b.rt.get_state("rr", "bad").values["v"] == 0
    return out


def _base_exception(b: Bench) -> Failed:
    def crash(state: Any, ctx: Any) -> Any:
        raise KeyboardInterrupt("stop everything?")

    out = _run_new(b, _wf("be", {"a": _log("a"), "crash": crash}, [("a", "crash")]))
    # every other run goes on: a new one finishes, the blocked one is still running
    assert isinstance(b.rt.start("chain", {}, run_id="after-crash").result(timeout=T), Done)
    b.new_runs.append(("chain", "after-crash"))
    assert b.rt.get_state("blocks", "running1").status == "running"
    return out


def _never_returns(b: Bench) -> Failed:
    def hang(state: Any, ctx: Any) -> Any:
        b.gate.wait(T)  # released at teardown
        return {"log": ["late"]}

    return _run_new(b, _wf("hang", {"a": _log("a"), "hang": hang}, [("a", "hang")], step_timeout_s=0.3))


def _router_bad_label(b: Bench) -> Failed:
    dag = (Dag.builder("a").step("a", _log("a")).step("l", _log("l")).step("r", _log("r"))
           .branch("a", lambda s: "middle", {"left": "l", "right": "r"}).build())
    return _run_new(b, Workflow("br", dag, _schema()))


def _loop_limit(b: Bench) -> Failed:
    dag = Dag.builder("loop").step("loop", Loop(_log("body"), lambda s: True, max_iterations=3)).build()
    return _run_new(b, Workflow("lp", dag, _schema()))


def _resume_done(b: Bench) -> None:
    b.rt.resume("chain", "done1", Command())


def _resume_running(b: Bench) -> None:
    b.rt.resume("blocks", "running1", Command())


def _resume_unknown_run(b: Bench) -> None:
    b.rt.resume("chain", "nope", Command())


def _goto_unknown(b: Bench) -> None:
    b.rt.resume("ask", "paused1", Command(goto="nowhere"))


def _unknown_interrupt(b: Bench) -> None:
    b.rt.resume("ask", "paused1", Command(resume={"q:9:0": "yes"}))


def _ambiguous_resume(b: Bench) -> None:
    b.rt.resume("ask2", "paused2", Command(resume="yes"))


def _resume_value_no_interrupt(b: Bench) -> None:
    b.rt.resume("fails", "failed1", Command(resume="yes"))


def _update_unknown_channel(b: Bench) -> None:
    b.rt.resume("ask", "paused1", Command(update={"nope": 1}))


def _human_bad_answer(b: Bench) -> None:
    wf = _wf("hm", {"ok": Human("ship it?", into="x")})
    b.rt.register(wf)
    out = b.rt.start("hm", {}, run_id="h1").result(timeout=T)
    assert isinstance(out, Paused)
    b.new_runs.append(("hm", "h1"))
    before = b.dump()
    try:
        b.rt.resume("hm", "h1", Command(resume="sure"))
    finally:
        assert b.dump() == before


def _fork_missing_step(b: Bench) -> None:
    b.rt.fork("chain", "done1", super_step=99)


def _fork_unknown_run(b: Bench) -> None:
    b.rt.fork("chain", "nope", super_step=0)


def _history_unknown_run(b: Bench) -> None:
    b.rt.history("chain", "nope")


def _result_timeout(b: Bench) -> None:
    b.blocked.result(timeout=0.05)


def _closed_runtime(b: Bench) -> None:
    rt = Runtime(store=LmdbStore(b.path.parent / "other", map_size=1 << 20))
    rt.close()
    rt.start("chain", {})


def _bad_durability(b: Bench) -> None:
    Runtime(store=b.rt.store, durability="eventually")


def _ids_mismatch(b: Bench) -> None:
    b.rt.start_many("chain", [{}, {}], run_ids=["only-one"])


def _delete_live_run(b: Bench) -> None:
    b.rt.delete("blocks", "running1")


def _bad_status_filter(b: Bench) -> None:
    b.rt.runs(status="finished")


def _store_option(b: Bench) -> None:
    LmdbStore(b.path.parent / "opts", fsync="sometimes")


def _cons(n: int) -> Any:
    v: Any = None
    for i in range(n):
        v = (i, v)
    return v


def _step_writes_too_deep(b: Bench) -> Failed:
    return _run_new(b, _wf("deep", {"grow": lambda s, c: {"x": _cons(250)}}))


def _input_too_deep(b: Bench) -> None:
    b.rt.start("chain", {"x": _cons(250)}, run_id="new1")


def _map_into_no_channel(b: Bench) -> None:
    from atomr import Map

    _wf("mp", {"m": Map(lambda item, ctx: item, items="log", into="nope")})


def _retry_on_names(b: Bench) -> None:
    from atomr import RetryPolicy

    RetryPolicy(max_attempts=3, retry_on=("ValueError",))  # type: ignore[arg-type]


def _infinite_timeout(b: Bench) -> None:
    _wf("inf", {"a": _log("a")}, step_timeout_s=float("inf"))


def _infinite_backoff(b: Bench) -> None:
    from atomr import RetryPolicy

    RetryPolicy(max_attempts=3, backoff_s=float("inf"))


def _store_path_is_a_file(b: Bench) -> None:
    f = b.path.parent / "a-file"
    f.write_text("not a store")
    LmdbStore(f)


def _store_path_nul(b: Bench) -> None:
    LmdbStore(str(b.path.parent / "bad\x00name"))


def _map_size_out_of_range(b: Bench) -> None:
    LmdbStore(b.path.parent / "opts", map_size=1 << 60)


def _store_opened_twice(b: Bench) -> None:
    b.opener(map_size=32 << 20)  # the same LMDB directory: one writer per store (SQL stores: test_workers)


CASES = [
    Case("cycle", E.CycleError, _cycle, words=("a -> b -> a",), store=False),
    Case("unknown edge target", E.UnknownStepError, _unknown_edge, words=("nowhere",), store=False),
    Case("duplicate step", E.DuplicateStepError, _duplicate_step, words=("'a'",), store=False),
    Case("non-callable step", E.NotCallableError, _not_callable, words=("str",), store=False),
    Case("entry not a step", E.EntryError, _bad_entry, words=("start",), store=False),
    Case("reducer class not instance", E.SchemaError, _class_as_reducer, words=("AppendList()",), store=False),
    Case("reducer not callable", E.SchemaError, _reducer_not_callable, words=("int",), store=False),
    Case("unknown join policy", E.JoinError, _bad_join, words=("first",), store=False),
    Case("breakpoint on unknown step", E.UnknownStepError, _unknown_breakpoint, words=("nope",), store=False),
    Case("duplicate workflow id", E.WorkflowExists, _duplicate_workflow, words=("chain",)),
    Case("start unknown workflow", E.WorkflowNotFound, _unknown_workflow, words=("nope", "register")),
    Case("start with unknown input key", E.UnknownChannelError, _unknown_input_key, words=("typo",)),
    Case("unstorable input", E.CodecError, _unencodable_input, words=("object",)),
    Case("start an existing run id", E.RunExists, _existing_run_id, words=("done1",)),
    Case("step writes unknown channel", E.UnknownChannelError, _step_unknown_channel, failed=True,
         words=("nope",)),
    Case("step writes unstorable value", E.CodecError, _step_unencodable, failed=True,
         words=("'x'", "'writer'")),
    Case("step returns non-mapping", E.StepResultError, _step_non_mapping, failed=True, words=("int",)),
    Case("reducer raises", E.ReducerError, _reducer_raises, failed=True, words=("'v'", "negative")),
    Case("step raises BaseException", E.StepCrashed, _base_exception, failed=True,
         words=("KeyboardInterrupt",)),
    Case("step never returns", E.StepTimeout, _never_returns, failed=True, words=("step_timeout_s",)),
    Case("router picks unknown label", E.BranchError, _router_bad_label, failed=True, words=("middle",)),
    Case("loop never ends", E.LoopLimitError, _loop_limit, failed=True, words=("max_iterations",)),
    Case("resume a done run", E.RunNotPaused, _resume_done, words=("done",)),
    Case("resume a running run", E.RunNotPaused, _resume_running, words=("running",)),
    Case("resume an unknown run", E.RunNotFound, _resume_unknown_run, words=("nope",)),
    Case("goto unknown step", E.UnknownStepError, _goto_unknown, words=("nowhere",)),
    Case("resume unknown interrupt id", E.UnknownInterruptError, _unknown_interrupt,
         words=("q:9:0", "q:2:0")),
    Case("bare resume with two interrupts", E.AmbiguousResumeError, _ambiguous_resume,
         words=("p:1:0", "q:1:0")),
    Case("resume value without interrupt", E.InterruptError, _resume_value_no_interrupt),
    Case("update unknown channel", E.UnknownChannelError, _update_unknown_channel, words=("nope",)),
    Case("bad answer to a Human step", E.InvalidResumeValue, _human_bad_answer, words=("approved",)),
    Case("fork at a missing super-step", E.CheckpointNotFound, _fork_missing_step, words=("99",)),
    Case("fork an unknown run", E.RunNotFound, _fork_unknown_run),
    Case("history of an unknown run", E.RunNotFound, _history_unknown_run),
    Case("result() times out", E.ResultTimeout, _result_timeout, words=("running1",)),
    Case("use a closed runtime", E.RuntimeClosed, _closed_runtime, store=False),
    Case("unknown durability", E.AtomrError, _bad_durability, words=("eventually",), store=False),
    Case("start_many ids mismatch", E.AtomrError, _ids_mismatch),
    Case("delete an executing run", E.AtomrError, _delete_live_run, words=("running1",)),
    Case("unknown status filter", E.StoreError, _bad_status_filter, words=("finished",)),
    Case("unknown fsync option", E.StoreError, _store_option, words=("sometimes",), store=False),
    Case("step writes a value nested too deep", E.CodecError, _step_writes_too_deep, failed=True,
         words=("'x'", "'grow'", "100 levels")),
    Case("input nested too deep", E.CodecError, _input_too_deep, words=("run input", "100 levels")),
    Case("Map into no channel", E.GraphError, _map_into_no_channel, words=("into='nope'",), store=False),
    Case("retry_on as names", E.GraphError, _retry_on_names, words=("retry_on", "ValueError"), store=False),
    Case("infinite step timeout", E.GraphError, _infinite_timeout, words=("step_timeout_s", "inf"), store=False),
    Case("infinite backoff", E.GraphError, _infinite_backoff, words=("backoff_s", "finite"), store=False),
    Case("store path is a file", E.StoreError, _store_path_is_a_file, words=("is a file",), store=False),
    Case("store path holds NUL", E.StoreError, _store_path_nul, words=("NUL",), store=False),
    Case("map_size out of range", E.StoreError, _map_size_out_of_range, words=("map_size",), store=False),
    Case("store opened twice in this process", E.StoreLocked, _store_opened_twice,
         words=("already open", "in this process"), store=False),
]


MISUSE = [pytest.param(c, kind, id=f"{c.name}-{kind}") for c in CASES
          for kind in (PERSISTENT if c.store else ("lmdb",))]


@pytest.mark.parametrize("case,bench_store", MISUSE, indirect=["bench_store"])
def test_misuse(case: Case, bench: Bench) -> None:
    before = bench.dump()
    if case.failed:
        out = case.act(bench)
        assert isinstance(out, Failed), out
        assert out.error_type == case.error.__name__, (out.error_type, out.message)
        with pytest.raises(case.error) as info:
            out.raise_error()
        assert type(info.value) is case.error
        message = out.message
        assert str(info.value) == message
        status = bench.rt.get_state(*bench.new_runs[0]).status
        assert status == "failed", status
    else:
        with pytest.raises(E.AtomrError) as info:
            case.act(bench)
        assert type(info.value) is case.error, (type(info.value), info.value)
        message = str(info.value)
    assert has_hint(message), f"no hint in: {message}"
    for w in case.words:
        assert w.lower() in message.lower(), (w, message)
    # nothing else in the store changed (a Failed case adds only its own run)
    assert bench.dump(skip=set(bench.new_runs)) == before
    # and the runtime still works
    bench.new_runs.append(("chain", "still-ok"))
    assert isinstance(bench.rt.start("chain", {}, run_id="still-ok").result(timeout=T), Done)


def test_catalogue_size() -> None:
    assert len(CASES) + len(STORE_CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


# --- damaged or contested stores -------------------------------------------------------------------


def _raw_dump(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every key/value of every database of the LMDB files, read-only."""
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16, subdir=True)
    try:
        out: dict[bytes, list[tuple[bytes, bytes]]] = {}
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        return out
    finally:
        env.close()


def _fill(path: Path, **store_kw: Any) -> None:
    """A closed store with a done run and a paused run."""
    with Runtime(store=LmdbStore(path, **{"map_size": 8 << 20, **store_kw}), durability="sync") as rt:
        rt.register(_wf("chain", {"a": _log("a"), "b": _log("b")}, [("a", "b")]))
        rt.register(_wf("ask", {"q": _asker("q")}))
        assert isinstance(rt.start("chain", {"n": 1}, run_id="r1").result(timeout=T), Done)
        assert isinstance(rt.start("ask", {}, run_id="r2").result(timeout=T), Paused)


def _child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, timeout=T)


OPEN_IN_CHILD = """
import sys
from atomr import LmdbStore, Runtime
from atomr.errors import AtomrError
try:
    rt = Runtime(store=LmdbStore(sys.argv[1], map_size=8 << 20))
except AtomrError as exc:
    print(type(exc).__name__, getattr(exc, "pid", ""), exc, sep="|", flush=True)
    sys.exit(3)
print("opened", flush=True)
rt.close()
"""


def store_locked(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "store"
    _fill(path)
    before = _raw_dump(path)
    rt = Runtime(store=LmdbStore(path, map_size=8 << 20))  # this process holds the store
    try:
        res = _child(OPEN_IN_CHILD, str(path))
    finally:
        rt.close()
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
    name, pid, message = res.stdout.strip().split("|", 2)
    assert name == "StoreLocked" and pid == str(os.getpid())
    assert str(os.getpid()) in message and str(path) in message
    assert _raw_dump(path) == before
    return name, message


def corrupt_record(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "store"
    _fill(path, snapshot_every=1000)
    with Runtime(store=LmdbStore(path, map_size=8 << 20)) as rt:
        rt.register(_wf("chain", {"a": _log("a"), "b": _log("b")}, [("a", "b")]))
        rt.register(_wf("ask", {"q": _asker("q")}))
        rt._maintain(lambda store: store._corrupt("ask", "r2", 2, b"\x01garbage"))  # noqa: SLF001
        before = [(s, list(rt.store._journal_raw(s.workflow_id, s.run_id, 1, None)))  # noqa: SLF001
                  for s in rt.runs()]
        for read in (lambda: list(rt.store.journal("ask", "r2")), lambda: rt.history("ask", "r2"),
                     lambda: rt.fork("ask", "r2", super_step=0)):
            with pytest.raises(E.CorruptRecord) as info:
                read()
            assert info.value.seq == 2 and "ask/r2" in str(info.value)
        # other runs are fine; the reads changed nothing
        assert rt.get_state("chain", "r1").values["log"] == ["a", "b"]
        assert isinstance(rt.start("chain", {}, run_id="r3").result(timeout=T), Done)
        after = [(s, list(rt.store._journal_raw(s.workflow_id, s.run_id, 1, None)))  # noqa: SLF001
                 for s in rt.runs() if s.run_id != "r3"]
        assert after == before
        return type(info.value).__name__, str(info.value)


def truncated_file(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "store"
    _fill(path)
    with Runtime(store=LmdbStore(path, map_size=8 << 20)) as rt:  # grow the file a little
        rt.register(_wf("chain", {"a": _log("a"), "b": _log("b")}, [("a", "b")]))
        for i in range(30):
            rt.start("chain", {"x": "y" * 2000}, run_id=f"big{i}").result(timeout=T)
    data = path / "data.mdb"
    os.truncate(data, os.path.getsize(data) // 2)
    damaged = data.read_bytes()
    res = _child(OPEN_IN_CHILD, str(path))
    assert data.read_bytes() == damaged  # the refused open wrote nothing
    assert res.returncode != -signal.SIGBUS, "reading the truncated map killed the process"
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
    name, _, message = res.stdout.strip().split("|", 2)
    assert "truncated" in message
    return name, message


def store_full(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "store"
    limit = 256 * 1024
    with Runtime(store=LmdbStore(path, map_size=limit, max_map_size=limit), durability="sync") as rt:
        rt.register(_wf("chain", {"a": _log("a"), "b": _log("b")}, [("a", "b")]))
        big = _wf("big", {"w": lambda s, c: {"x": "z" * 400_000}})
        rt.register(big)
        assert isinstance(rt.start("chain", {}, run_id="small").result(timeout=T), Done)
        rt.flush()
        before = [(s, list(rt.store._journal_raw(s.workflow_id, s.run_id, 1, None)))  # noqa: SLF001
                  for s in rt.runs()]
        out = rt.start("big", {}, run_id="huge").result(timeout=T)
        assert isinstance(out, Failed) and out.error_type == "StoreFull", out
        rt.flush()
        after = [(s, list(rt.store._journal_raw(s.workflow_id, s.run_id, 1, None)))  # noqa: SLF001
                 for s in rt.runs() if s.run_id != "huge"]
        assert after == before
        # the refused run stays at its last durable point: started, resumable once the map grows
        assert rt.runs(status="running")[0].run_id == "huge"
        with pytest.raises(E.StoreFull) as info:
            out.raise_error()
        assert str(info.value) == out.message
    # do as the message says: a bigger map (this write needs more than twice), then
    # recover() carries the run on
    assert f"map_size={2 * limit}" in out.message and "rt.recover()" in out.message
    with Runtime(store=LmdbStore(path, map_size=16 * limit, max_map_size=16 * limit)) as rt:
        rt.register(big)
        (h,) = rt.recover()
        done = h.result(timeout=T)
        assert isinstance(done, Done) and len(done.state["x"]) == 400_000
    return out.error_type, out.message


def newer_format(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "store"
    _fill(path)
    env = lmdb.open(str(path), max_dbs=8, map_size=8 << 20)
    try:
        meta = env.open_db(fmt.DB_META)
        with env.begin(write=True, db=meta) as txn:
            txn.put(b"format_version", fmt.u32(fmt.FORMAT_VERSION + 1))
    finally:
        env.close()
    before = _raw_dump(path)
    with pytest.raises(E.AtomrError) as info:
        Runtime(store=LmdbStore(path, map_size=8 << 20))
    assert _raw_dump(path) == before
    # the refusal released the lock: another process is told the same
    res = _child(OPEN_IN_CHILD, str(path))
    assert res.stdout.startswith("FormatVersionError"), res.stdout + res.stderr
    return type(info.value).__name__, str(info.value)


STORE_CASES = [
    ("second process opens the store", E.StoreLocked, store_locked, ("stop",)),
    ("corrupted record", E.CorruptRecord, corrupt_record, ("restore", "delete")),
    ("truncated data file", E.StoreError, truncated_file, ("restore", "backup")),
    ("store full", E.StoreFull, store_full, ("map_size=", "max_map_size")),
    ("newer on-disk format", E.FormatVersionError, newer_format, ("upgrade",)),
]


@pytest.mark.parametrize("name,error,act,words", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_store_misuse(name: str, error: type[E.AtomrError], act: Callable[[Path], tuple[str, str]],
                      words: tuple[str, ...], tmp_path: Path) -> None:
    """``act`` damages or contests a store, checks it is otherwise unchanged,
    and returns the class name and message of the error it got."""
    got, message = act(tmp_path)
    assert got == error.__name__, (got, message)
    assert has_hint(message), message
    for w in words:
        assert w.lower() in message.lower(), (w, message)


def test_resume_of_a_run_left_running_by_a_dead_runtime(bench_store: Reopener) -> None:
    """After a crash a run is "running" in the store with no actor: resume()
    refuses it naming rt.recover(), changes nothing, and recover() still
    carries it on (the refused request must not leave an idle actor behind,
    which recover() would skip)."""
    gate = threading.Event()
    entered = threading.Event()

    def slow(state: Any, ctx: Any) -> Any:
        entered.set()
        gate.wait(T)
        return {"log": ["b"]}

    def wf(b: Any) -> Workflow:  # a two-step layer: its steps run on step actors
        return _wf("w", {"a": _log("a"), "b": b, "c": _log("c")}, [("a", "b"), ("a", "c")])

    old = Runtime(store=bench_store(map_size=8 << 20))
    try:
        old.register(wf(slow))
        old.start("w", {}, run_id="r")
        assert entered.wait(T)
    finally:
        old.close(timeout=2)  # the run stays "running" in the store
        gate.set()
    if bench_store.kind != "lmdb":  # a worker of a shared store takes such a run over as it registers
        with Runtime(store=bench_store()) as rt:
            rt.register(wf(_log("b")))
            out = rt.handle("w", "r").result(timeout=T)
            assert isinstance(out, Done) and out.state["log"] == ["a", "b", "c"], out
        return
    with Runtime(store=bench_store(map_size=8 << 20)) as rt:
        rt.register(wf(_log("b")))
        before = [(s, list(rt.store._journal_raw("w", "r", 1, None))) for s in rt.runs()]  # noqa: SLF001
        for command in (Command(), Command(resume="x"), Command(goto="a")):
            with pytest.raises(E.RunNotPaused) as info:
                rt.resume("w", "r", command)
            assert "rt.recover()" in str(info.value) and has_hint(str(info.value))
        with pytest.raises(E.RunExists):
            rt.start("w", {}, run_id="r")
        rt.flush()
        assert [(s, list(rt.store._journal_raw("w", "r", 1, None))) for s in rt.runs()] == before  # noqa: SLF001
        (h,) = rt.recover()
        out = h.result(timeout=T)
        assert isinstance(out, Done) and out.state["log"] == ["a", "b", "c"], out
