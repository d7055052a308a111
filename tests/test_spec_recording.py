"""Every run knows how to load its workflow: a run started from Python records
``module:attr`` (found at register(), or ``Workflow(spec=...)``) in its meta, so
``atomr show / history / resume`` need no ``--module``, and the resume command
``atomr fork`` prints works as printed."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atomr import Dag, MemoryStore, Runtime, StateSchema, Workflow
from atomr.errors import WorkflowSpecError
from test_cli import atomr, ok
from workflows import T, schema

FLOWS = textwrap.dedent('''
    from atomr import AppendList, Dag, StateSchema, Workflow

    def ask(state, ctx):
        return {"log": [f"asked: {ctx.interrupt('ok?')}"]}

    def done(state, ctx):
        return {"log": ["done"]}

    def make(wid="specflow", **kw):
        dag = Dag.builder("ask").step("ask", ask).step("done", done).edge("ask", "done").build()
        return Workflow(wid, dag, StateSchema({"log": AppendList()}), **kw)

    workflow = make()

    def make_explicit():
        return make("explicit", spec="flows:make_explicit")
''')


def _write(tmp: Path, name: str, text: str) -> None:
    (tmp / name).write_text(textwrap.dedent(text), encoding="utf-8")


def _python(tmp: Path, script: str) -> str:
    proc = subprocess.run([sys.executable, script], cwd=tmp, capture_output=True, text=True, timeout=120,
                          env={**_env(tmp)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _env(tmp: Path) -> dict[str, str]:
    import os

    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, str(tmp)])}


def _run_printed(tmp: Path, line: str) -> subprocess.CompletedProcess[str]:
    """Run an ``atomr ...`` command line exactly as the CLI printed it (cwd: ``tmp``)."""
    words = shlex.split(line)
    assert words[0] == "atomr", line
    return subprocess.run([sys.executable, "-m", "atomr", *words[1:]], cwd=tmp, capture_output=True,
                          text=True, timeout=120, env=_env(tmp))


def test_a_run_started_from_python_is_shown_resumed_and_forked_without_module(tmp_path):
    _write(tmp_path, "flows.py", FLOWS)
    _write(tmp_path, "app.py", '''
        from atomr import LmdbStore, Runtime
        from flows import workflow

        with Runtime(store=LmdbStore(".atomr")) as rt:
            rt.register(workflow)
            print(type(rt.start("specflow", {}, run_id="r1").result(timeout=30)).__name__)
    ''')
    assert _python(tmp_path, "app.py").strip() == "Paused"
    runs = json.loads(ok(atomr(tmp_path, "runs", "--json", pythonpath=(str(tmp_path),))))
    assert [(r["run_id"], r["meta"]["module"]) for r in runs] == [("r1", "flows:workflow")]
    shown = ok(atomr(tmp_path, "show", "specflow", "r1", pythonpath=(str(tmp_path),)))
    assert "flows:workflow" in shown and "paused (interrupt)" in shown
    ok(atomr(tmp_path, "history", "specflow", "r1", pythonpath=(str(tmp_path),)))
    out = ok(atomr(tmp_path, "fork", "specflow", "r1", "--at", "0", "--run-id", "f1", pythonpath=(str(tmp_path),)))
    [line] = [ln for ln in out.splitlines() if ln.startswith("resume with: ")]
    printed = line.removeprefix("resume with: ")
    assert printed == "atomr resume specflow f1"
    resumed = _run_printed(tmp_path, printed)  # as printed: pauses again at the interrupt
    assert resumed.returncode == 3, resumed.stdout + resumed.stderr
    done = ok(atomr(tmp_path, "resume", "specflow", "r1", "--resume", '"yes"', pythonpath=(str(tmp_path),)))
    assert "done: specflow/r1" in done and "asked: yes" in done


def test_a_fork_of_a_run_without_a_spec_records_the_module_given(tmp_path):
    _write(tmp_path, "flows.py", FLOWS)
    _write(tmp_path, "app.py", '''
        from atomr import LmdbStore, Runtime
        import flows

        def main():
            wf = flows.make()          # bound to no module-level name: no spec to record
            with Runtime(store=LmdbStore(".atomr")) as rt:
                rt.register(wf)
                rt.start("specflow", {}, run_id="r1").result(timeout=30)
                print(repr(rt.get_state("specflow", "r1").meta.get("module")))

        main()
    ''')
    assert _python(tmp_path, "app.py").strip() == "None"
    err = atomr(tmp_path, "show", "specflow", "r1", pythonpath=(str(tmp_path),))
    assert err.returncode != 0 and "--module" in err.stderr
    out = ok(atomr(tmp_path, "fork", "specflow", "r1", "--at", "0", "--run-id", "f1", "--module", "flows:make",
                   pythonpath=(str(tmp_path),)))
    printed = [ln for ln in out.splitlines() if ln.startswith("resume with: ")][0].removeprefix("resume with: ")
    resumed = _run_printed(tmp_path, printed)
    assert resumed.returncode == 3 and "paused: specflow/f1" in resumed.stdout, resumed.stdout + resumed.stderr


def test_explicit_spec_and_a_scripts_own_workflow(tmp_path):
    _write(tmp_path, "flows.py", FLOWS)
    _write(tmp_path, "explicit.py", '''
        from atomr import LmdbStore, Runtime
        import flows

        if __name__ == "__main__":
            with Runtime(store=LmdbStore(".atomr")) as rt:
                rt.register(flows.make_explicit())
                rt.start("explicit", {}, run_id="e1").result(timeout=30)
    ''')
    _write(tmp_path, "script.py", '''
        from atomr import LmdbStore, Runtime
        from flows import make

        workflow = make("scripted")

        if __name__ == "__main__":
            with Runtime(store=LmdbStore(".atomr")) as rt:
                rt.register(workflow)
                rt.start("scripted", {}, run_id="s1").result(timeout=30)
    ''')
    _python(tmp_path, "explicit.py")
    _python(tmp_path, "script.py")
    runs = json.loads(ok(atomr(tmp_path, "runs", "--json", pythonpath=(str(tmp_path),))))
    assert sorted((r["run_id"], r["meta"]["module"]) for r in runs) == [("e1", "flows:make_explicit"),
                                                                                ("s1", "script:workflow")]
    for wid, rid in (("explicit", "e1"), ("scripted", "s1")):
        done = ok(atomr(tmp_path, "resume", wid, rid, "--resume", '"ok"', pythonpath=(str(tmp_path),)))
        assert f"done: {wid}/{rid}" in done


def test_spec_in_process():
    here = __name__
    global module_level_wf
    module_level_wf = Workflow("mlw", Dag.builder("a").step("a", lambda s, c: None).build(), schema())
    with Runtime(store=MemoryStore()) as rt:
        rt.register(module_level_wf)
        assert module_level_wf.spec == f"{here}:module_level_wf"
        assert rt.start("mlw", {}).result(timeout=T).status == "done"
        assert rt.runs()[0].meta["module"] == f"{here}:module_level_wf"
        rt.start("mlw", {}, run_id="own", meta={"module": "mine:wf"}).result(timeout=T)
        assert rt.get_state("mlw", "own").meta["module"] == "mine:wf"  # a given module wins
    local = Workflow("local", Dag.builder("a").step("a", lambda s, c: None).build(), StateSchema())
    with Runtime(store=MemoryStore()) as rt:
        rt.register(local)
        assert local.spec is None
        rt.start("local", {}, run_id="x").result(timeout=T)
        assert "module" not in rt.get_state("local", "x").meta


@pytest.mark.parametrize("bad", ["nocolon", ":attr", "mod:", "a:b:c", 3])
def test_a_bad_spec_is_refused(bad):
    with pytest.raises(WorkflowSpecError, match="MODULE:ATTR"):
        Workflow("w", Dag.builder("a").step("a", lambda s, c: None).build(), StateSchema(), spec=bad)
