"""Definitions and numeric options are checked where they are given, with named
errors; the shared timer thread survives anything; no import cycle between
atomr.kinds and atomr.workflow; atomr.errors stays small."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from atomr import (
    Dag,
    Human,
    LastWriteWins,
    Loop,
    Map,
    MemoryStore,
    RetryPolicy,
    StateSchema,
    Subgraph,
    Workflow,
    dispatch_fan_out,
)
from atomr.actors.scheduler import Scheduler
from atomr.errors import GraphError, RunError, StoreError

ROOT = Path(__file__).resolve().parents[1]
INF, NAN = float("inf"), float("nan")


def step(state: Any, ctx: Any) -> Any:
    return {"x": 1}


def schema() -> StateSchema:
    return StateSchema({"x": LastWriteWins(), "items": LastWriteWins(), "out": LastWriteWins()})


def wf_with(kind: Any, **kw: Any) -> Workflow:
    dag = Dag.builder("a").step("a", step).step("k", kind).edge("a", "k").build()
    return Workflow("w", dag, schema(), **kw)


def plain(**kw: Any) -> Workflow:
    return Workflow("w", Dag.builder("a").step("a", step).build(), schema(), **kw)


# --- numeric options ----------------------------------------------------------------------


@pytest.mark.parametrize("make,words", [
    (lambda: plain(step_timeout_s=INF), "step_timeout_s must be a finite number > 0"),
    (lambda: plain(step_timeout_s=NAN), "step_timeout_s"),
    (lambda: plain(step_timeout_s=0), "step_timeout_s"),
    (lambda: plain(step_timeout_s=-1), "step_timeout_s"),
    (lambda: plain(step_timeout_s=True), "got bool True"),
    (lambda: plain(step_timeout_s="5"), "got str '5'"),
    (lambda: RetryPolicy(max_attempts=0), "max_attempts"),
    (lambda: RetryPolicy(max_attempts=True), "max_attempts"),
    (lambda: RetryPolicy(max_attempts=2.5), "max_attempts"),
    (lambda: RetryPolicy(max_attempts=INF), "max_attempts"),
    (lambda: RetryPolicy(backoff_s=INF), "backoff_s"),
    (lambda: RetryPolicy(backoff_s=NAN), "backoff_s"),
    (lambda: RetryPolicy(backoff_s=-0.5), "backoff_s"),
    (lambda: RetryPolicy(multiplier=NAN), "multiplier"),
    (lambda: RetryPolicy(multiplier=0.5), "multiplier"),
    (lambda: RetryPolicy(max_backoff_s=INF), "max_backoff_s"),
    (lambda: RetryPolicy(max_backoff_s=False), "max_backoff_s"),
    (lambda: Map(step, "items", "out", max_concurrency=0), "max_concurrency"),
    (lambda: Map(step, "items", "out", max_concurrency=True), "max_concurrency"),
    (lambda: Map(step, "items", "out", max_concurrency=INF), "max_concurrency"),
    (lambda: Loop(step, lambda s: False, max_iterations=INF), "max_iterations"),
    (lambda: Loop(step, lambda s: False, max_iterations=0), "max_iterations"),
    (lambda: Loop(step, lambda s: False, max_iterations=True), "max_iterations"),
    (lambda: dispatch_fan_out([1], str, max_concurrency=0), "max_concurrency"),
    (lambda: dispatch_fan_out([1], str, max_concurrency=1.0), "max_concurrency"),
])
def test_numeric_options_are_checked_where_given(make: Any, words: str) -> None:
    with pytest.raises(GraphError, match=words) as info:
        make()
    assert "pass" in str(info.value) or "use" in str(info.value)


def test_good_numbers_still_pass_and_backoff_never_overflows() -> None:
    p = RetryPolicy(max_attempts=5, backoff_s=1, multiplier=10.0, max_backoff_s=30)
    assert isinstance(p.backoff_s, float) and p.delay(1) == 1.0 and p.delay(3) == 30.0
    assert p.delay(100_000) == 30.0  # 10.0 ** 99_999 overflows: capped, not OverflowError
    assert plain(step_timeout_s=2).step_timeout_s == 2.0
    with pytest.raises(StoreError, match="snapshot_every"):
        MemoryStore(snapshot_every=True)  # type: ignore[arg-type]


# --- definitions ---------------------------------------------------------------------------


def test_retry_on_takes_exception_classes_only() -> None:
    for bad in (("ValueError",), "ValueError", (), (ValueError, 3), (int,), [ValueError]):
        with pytest.raises(GraphError, match="retry_on") as info:
            RetryPolicy(retry_on=bad)  # type: ignore[arg-type]
        assert "not their names" in str(info.value)
    assert RetryPolicy(retry_on=KeyError).retry_on == (KeyError,)
    assert RetryPolicy(retry_on=(KeyError, OSError)).retry_on == (KeyError, OSError)


@pytest.mark.parametrize("kind,words", [
    (Map(step, items="items", into="nope"), "Map step 'k': into='nope' is not a channel"),
    (Map(step, items="nope", into="out"), "items='nope'"),
    (Human("ok?", into="nope"), "Human step 'k': into='nope'"),
    (Subgraph("child", inputs=["nope"]), "Subgraph step 'k': inputs='nope'"),
    (Subgraph("child", outputs=["x", "nope"]), "outputs='nope'"),
])
def test_kinds_naming_no_channel_are_refused_when_the_workflow_is_built(kind: Any, words: str) -> None:
    with pytest.raises(GraphError, match=words) as info:
        wf_with(kind)
    assert "declare it in the StateSchema" in str(info.value)


@pytest.mark.parametrize("make,words", [
    (lambda: Map(step, items="", into="out"), "Map items must be a channel name"),
    (lambda: Map(step, items="items", into=3), "Map into must be a channel name"),
    (lambda: Human("ok?", into=None), "Human into"),
    (lambda: Human(42, into="x"), "Human prompt must be a str"),
    (lambda: Human("ok?", into="x", on_reject=["fail"]), "on_reject"),
    (lambda: Subgraph("child", inputs="abc"), "must be a list of channel names"),
    (lambda: Subgraph("child", outputs=[1]), "Subgraph outputs must be a channel name"),
    (lambda: Subgraph(""), "Subgraph takes a Workflow"),
    (lambda: plain(interrupt_before="a"), "interrupt_before must be a list of step ids"),
    (lambda: plain(retry=3), "retry must be a RetryPolicy"),
    (lambda: dispatch_fan_out([1], "f"), "fn must be callable"),
])
def test_kind_arguments_are_checked(make: Any, words: str) -> None:
    with pytest.raises(GraphError, match=words):
        make()


# --- the timer thread ------------------------------------------------------------------------


class Ref:
    def __init__(self, got: list[Any], exc: BaseException | None = None) -> None:
        self.got, self.exc = got, exc

    def tell(self, message: Any) -> None:
        if self.exc is not None:
            raise self.exc
        self.got.append(message)


def test_the_timer_thread_survives_anything() -> None:
    s = Scheduler()
    got: list[Any] = []
    done = threading.Event()

    class Last(Ref):
        def tell(self, message: Any) -> None:
            super().tell(message)
            done.set()

    try:
        s.tell_later(INF, Ref(got), "never")
        s.tell_later(1e300, Ref(got), "not in this life")
        for exc in (ValueError("boom"), SystemExit(1), KeyboardInterrupt(), RecursionError()):
            s.tell_later(0, Ref(got, exc), "raises")
        h = s.tell_later(0.01, Ref(got), "cancelled")
        s.cancel(h)
        s.tell_later(-3, Ref(got), "negative: at once")
        for bad in (NAN, "1", None, True):
            with pytest.raises(RunError, match="timer delay"):
                s.tell_later(bad, Ref(got), "bad")  # type: ignore[arg-type]
        s.tell_later(0.05, Last(got), "after")
        assert done.wait(10), "the timer thread stopped firing"
        assert got == ["negative: at once", "after"]
        assert s._thread is not None and s._thread.is_alive()  # noqa: SLF001
        assert len(s._pending) == 1  # only the 1e300 one is kept  # noqa: SLF001
    finally:
        s.close()
    assert s._thread is not None and not s._thread.is_alive()  # noqa: SLF001


def test_a_dead_timer_thread_is_replaced() -> None:
    s = Scheduler()
    got: list[Any] = []
    try:
        s.tell_later(0, Ref(got), 1)
        deadline = time.monotonic() + 5
        while got != [1] and time.monotonic() < deadline:
            time.sleep(0.01)
        old = s._thread  # noqa: SLF001
        assert old is not None
        s._fire_next = lambda: False  # type: ignore[method-assign]  # noqa: SLF001 - ends the loop
        s.tell_later(0, Ref(got), 2)
        old.join(5)
        del s._fire_next  # noqa: SLF001
        s.tell_later(0, Ref(got), 3)
        deadline = time.monotonic() + 5
        while 3 not in got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 3 in got and s._thread is not old  # noqa: SLF001
    finally:
        s.close()


# --- structure ------------------------------------------------------------------------------


def _module_imports(path: Path) -> set[str]:
    """Modules imported at module level (TYPE_CHECKING blocks excluded)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node):
            if isinstance(n, ast.ImportFrom) and n.module:
                out.add(n.module)
            elif isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
    return out


def _function_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(fn):
                if isinstance(n, ast.ImportFrom) and n.module:
                    out.add(n.module)
    return out


def test_no_import_cycle_between_kinds_and_workflow() -> None:
    kinds, workflow = ROOT / "atomr" / "kinds.py", ROOT / "atomr" / "workflow.py"
    assert "atomr.kinds" not in _module_imports(workflow) | _function_imports(workflow)
    assert "atomr.workflow" in _module_imports(kinds)
    assert "atomr.workflow" not in _function_imports(kinds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for mod in ("atomr.kinds", "atomr.workflow", "atomr.graph.dag"):
        res = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True, env=env,
                             timeout=60)
        assert res.returncode == 0, (mod, res.stderr[-2000:])


def test_errors_module_is_under_400_lines() -> None:
    lines = (ROOT / "atomr" / "errors.py").read_text().count("\n")
    assert lines < 400, lines


def test_commands_are_checked_when_built() -> None:
    from atomr import Command
    from atomr.errors import StateError

    for update in ([("x",)], 5, "ab", {1: 2}, [("x", 1, 2)], [(3, 1)]):
        with pytest.raises(StateError, match="Command.update") as info:
            Command(update=update)  # type: ignore[arg-type]
        assert "pass" in str(info.value)
    for goto in (5, "", ["a"]):
        with pytest.raises(RunError, match="Command.goto"):
            Command(goto=goto)  # type: ignore[arg-type]
    assert Command(update=[["x", 1]]).update == [("x", 1)]
    assert Command(update={"x": 1}, goto="a").goto == "a"


def test_a_channel_default_must_be_storable() -> None:
    from atomr.errors import CodecError

    with pytest.raises(CodecError, match="default of channel 'x'"):
        StateSchema({"x": (LastWriteWins(), threading.Lock())})
    deep: Any = None
    for i in range(150):
        deep = [i, deep]
    with pytest.raises(CodecError, match="default of channel 'x'.*100 levels"):
        StateSchema({"x": (LastWriteWins(), deep)})
