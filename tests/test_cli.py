"""The atomr command line, driven as a subprocess (python -m atomr ...)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = "examples.order_pipeline:workflow"
BIG_ORDER = json.dumps({"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45_000}]})


def atomr(cwd: Path, *args: str, pythonpath: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    parts = [*pythonpath, str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run([sys.executable, "-m", "atomr", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert proc.returncode == code, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def error_line(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The run ended with exactly one `atomr: error: ...` line on stderr."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("atomr: error: "), proc.stderr
    return lines[0]


def test_demo_runs_the_order_pipeline_end_to_end(tmp_path):
    out = ok(atomr(tmp_path, "demo"))
    assert "[2] started price" in out and "[2] started screen" in out
    assert "interrupted approve approve:3:0" in out
    assert "paused: orders/demo-" in out
    assert "[4] completed fulfil" in out
    assert "== history" in out and "interrupt:approve" in out
    assert '"TRK-A-1001"' in out
    assert (tmp_path / ".atomr" / "data.mdb").exists()
    runs = json.loads(ok(atomr(tmp_path, "runs", "--json")))
    assert [(r["workflow_id"], r["status"], r["meta"]["module"]) for r in runs] == [
        ("orders", "done", "atomr.demo:workflow")
    ]
    # the run it left is inspectable with only W and RUN
    shown = json.loads(ok(atomr(tmp_path, "show", "orders", runs[0]["run_id"], "--json")))
    assert shown["status"] == "done" and shown["values"]["approved"] is True


def test_paused_run_is_resumed_by_a_second_invocation(tmp_path):
    first = atomr(tmp_path, "run", ORDER, "--run-id", "o1", "--input", BIG_ORDER)
    out = ok(first, 3)
    assert out.splitlines()[0] == "run orders/o1"
    assert "[1] started validate" in out
    assert '[1] completed validate {"subtotal": 90000, "log": ["validated 1 line(s)"]}' in out
    assert "[2] committed" in out
    assert "paused: orders/o1 at super-step 2 (interrupt)" in out
    assert "resume with: atomr resume orders o1 --resume" in out

    shown = json.loads(ok(atomr(tmp_path, "show", "orders", "o1", "--json")))
    assert shown["status"] == "paused" and shown["pause_reason"] == "interrupt"
    assert shown["next"] == ["approve"]
    assert shown["meta"]["module"] == ORDER
    [intr] = shown["interrupts"]
    assert intr["id"] == "approve:3:0" and intr["step"] == "approve"
    assert intr["payload"]["total_cents"] == 97_200
    text = ok(atomr(tmp_path, "show", "orders", "o1"))
    assert "paused (interrupt)" in text and "approve:3:0" in text

    second = ok(atomr(tmp_path, "resume", "orders", "o1", "--resume", '"yes"'))
    assert "[3] started approve" in second
    assert "[4] completed fulfil" in second
    assert "done: orders/o1" in second and '"TRK-A-7"' in second

    history = json.loads(ok(atomr(tmp_path, "history", "orders", "o1", "--json")))
    labels = [h["label"] for h in history]
    assert labels[0] == "input" and labels[-1] == "done" and "interrupt:approve" in labels
    assert [h["super_step"] for h in history] == sorted(h["super_step"] for h in history)
    assert history[-1]["values"]["tracking"] == "TRK-A-7"
    lines = ok(atomr(tmp_path, "history", "orders", "o1")).splitlines()
    assert len(lines) == len(history) and lines[0].startswith("[0] input")
    changes = ok(atomr(tmp_path, "history", "orders", "o1", "--changes")).splitlines()
    assert changes[-1].endswith("{}")  # "done" changes nothing


def test_runs_table_filters_and_json(tmp_path):
    ok(atomr(tmp_path, "run", ORDER, "--run-id", "big", "--input", BIG_ORDER), 3)
    small = json.dumps({"order_id": "S", "items": [{"sku": "pen", "qty": 1, "cents": 100}]})
    ok(atomr(tmp_path, "run", ORDER, "--run-id", "small", "--input", small, "--durability", "async"))
    table = ok(atomr(tmp_path, "runs")).splitlines()
    assert table[0].split() == ["WORKFLOW", "RUN", "STATUS", "STEP", "UPDATED", "VERSION", "MODULE"]
    assert {ln.split()[1] for ln in table[1:]} == {"big", "small"}
    paused = json.loads(ok(atomr(tmp_path, "runs", "--status", "paused", "--json")))
    assert [r["run_id"] for r in paused] == ["big"]
    assert json.loads(ok(atomr(tmp_path, "runs", "--workflow", "nope", "--json"))) == []
    page = ok(atomr(tmp_path, "runs", "--limit", "1")).splitlines()  # newest first, then the next page
    assert page[1].split()[1] == "small" and page[-1].startswith("more: atomr runs --limit 1 --before ")
    rest = json.loads(ok(atomr(tmp_path, "runs", "--limit", "1", "--before", page[-1].split()[-1], "--json")))
    assert [r["run_id"] for r in rest] == ["big"] and rest[0]["cursor"]


def test_failed_run_exits_1_and_is_retried_with_an_update(tmp_path):
    proc = atomr(tmp_path, "run", ORDER, "--run-id", "bad", "--input", '{"order_id": "E", "items": []}')
    out = ok(proc, 1)
    assert "[1] failed validate (attempt 1): ValueError: order 'E' has no items" in out
    assert "failed: orders/bad at step validate" in out
    assert "retry the step with: atomr resume orders bad" in out
    shown = json.loads(ok(atomr(tmp_path, "show", "orders", "bad", "--json")))
    assert shown["status"] == "failed" and shown["error"]["type"] == "ValueError"
    assert shown["error"]["step"] == "validate"
    fixed = json.dumps({"items": [{"sku": "pen", "qty": 1, "cents": 100}]})
    out = ok(atomr(tmp_path, "resume", "orders", "bad", "--update", fixed))
    assert '"TRK-E"' in out


@pytest.fixture(scope="module")
def paused_store(tmp_path_factory):
    """A directory whose store holds run orders/o1, paused at the approval."""
    where = tmp_path_factory.mktemp("paused")
    ok(atomr(where, "run", ORDER, "--run-id", "o1", "--input", BIG_ORDER), 3)
    return where


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["show", "orders", "nope"], "no run orders/nope"),
        (["history", "orders", "nope"], "no run orders/nope"),
        (["resume", "orders", "nope"], "no run orders/nope"),
        (["resume", "orders", "o1", "--resume", "{bad"], "--resume is not valid JSON"),
        (["run", ORDER, "--input", "[1, 2"], "--input is not valid JSON"),
        (["run", ORDER, "--input", "[1, 2]"], "--input must be a JSON object"),
        (["run", ORDER, "--input", '{"nope": 1}'], "nope"),
        (["run", "no_such_module:workflow"], "cannot import module 'no_such_module'"),
        (["run", "examples.order_pipeline:missing"], "workflows defined there: workflow"),
        (["run", "examples.order_pipeline"], "expected MODULE:WORKFLOW"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run"], "required"),
        (["runs", "--status", "snoozing"], "invalid choice"),
        (["fork", "orders", "o1"], "--at"),
        (["resume", "orders", "o1", "--goto", "nowhere"], "nowhere"),
        (["fork", "orders", "o1", "--at", "99"], "99"),
    ],
)
def test_errors_are_one_line_with_exit_2(paused_store, tmp_path, args, needle):
    shutil.copytree(paused_store / ".atomr", tmp_path / ".atomr")
    proc = atomr(tmp_path, *args)
    line = error_line(proc, 2)
    assert needle in line
    assert "Traceback" not in proc.stderr


def test_read_commands_on_a_missing_store(tmp_path):
    assert "no runs" in ok(atomr(tmp_path, "runs"))
    line = error_line(atomr(tmp_path, "show", "orders", "x"))
    assert "no atomr store at '.atomr'" in line
    assert not (tmp_path / ".atomr").exists()  # reading does not create a store
    line = error_line(atomr(tmp_path, "--store", "elsewhere", "history", "w", "r"))
    assert "'elsewhere'" in line


def test_debug_shows_the_traceback(tmp_path):
    ok(atomr(tmp_path, "run", ORDER, "--run-id", "o1", "--input", BIG_ORDER), 3)
    proc = atomr(tmp_path, "show", "orders", "nope", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "RunNotFound" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("atomr: error: no run orders/nope")


def test_store_option_before_or_after_the_command(tmp_path):
    ok(atomr(tmp_path, "--store", "s1", "run", ORDER, "--run-id", "a", "--input", BIG_ORDER), 3)
    ok(atomr(tmp_path, "run", ORDER, "--store", "s2", "--run-id", "b", "--input", BIG_ORDER), 3)
    assert [r["run_id"] for r in json.loads(ok(atomr(tmp_path, "runs", "--json", "--store", "s1")))] == ["a"]
    assert [r["run_id"] for r in json.loads(ok(atomr(tmp_path, "--store", "s2", "runs", "--json")))] == ["b"]
    out = ok(atomr(tmp_path, "--store", "s1", "resume", "orders", "a", "--resume", '"no"'))
    assert "cancelled, stock released" in out


def test_resume_with_update_and_a_pause_hint_for_a_custom_store(tmp_path):
    out = ok(atomr(tmp_path, "--store", "data", "run", ORDER, "--run-id", "o1", "--input", BIG_ORDER), 3)
    assert "atomr resume --store data orders o1 --resume" in out
    out = ok(atomr(tmp_path, "--store", "data", "resume", "orders", "o1", "--resume", "true",
                   "--update", '{"order_id": "B-2"}'))
    assert '"TRK-B-2"' in out


def test_fork_prune_delete_and_purge(tmp_path):
    ok(atomr(tmp_path, "run", ORDER, "--run-id", "o1", "--input", BIG_ORDER), 3)
    ok(atomr(tmp_path, "resume", "orders", "o1", "--resume", '"yes"'))
    out = ok(atomr(tmp_path, "fork", "orders", "o1", "--at", "2", "--update", '{"order_id": "F-1"}',
                   "--run-id", "o1-retry"))
    assert "forked orders/o1@2 -> orders/o1-retry (paused)" in out
    shown = json.loads(ok(atomr(tmp_path, "show", "orders", "o1-retry", "--json")))
    assert shown["status"] == "paused" and shown["values"]["order_id"] == "F-1"
    assert shown["meta"]["forked_from"] == "o1@2"
    out = ok(atomr(tmp_path, "resume", "orders", "o1-retry"), 3)  # approve asks again
    out = ok(atomr(tmp_path, "resume", "orders", "o1-retry", "--resume", '"yes"'))
    assert '"TRK-F-1"' in out

    before = json.loads(ok(atomr(tmp_path, "history", "orders", "o1", "--json")))
    out = ok(atomr(tmp_path, "prune", "orders", "o1", "--keep-last", "2"))
    assert out.startswith("pruned ")
    after = json.loads(ok(atomr(tmp_path, "history", "orders", "o1", "--json")))
    assert len(after) < len(before) and after[-1]["values"] == before[-1]["values"]

    assert "deleted orders/o1-retry" in ok(atomr(tmp_path, "prune", "orders", "o1-retry", "--delete"))
    assert "no run orders/o1-retry" in error_line(atomr(tmp_path, "prune", "orders", "o1-retry", "--delete"))

    ok(atomr(tmp_path, "run", ORDER, "--run-id", "p", "--input", BIG_ORDER), 3)
    assert "purged 0 " in ok(atomr(tmp_path, "purge", "--older-than", "3600"))
    assert "purged 1 " in ok(atomr(tmp_path, "purge", "--older-than", "0"))  # the paused run stays
    assert [r["run_id"] for r in json.loads(ok(atomr(tmp_path, "runs", "--json")))] == ["p"]


def test_graph_prints_or_writes_mermaid(tmp_path):
    out = ok(atomr(tmp_path, "graph", ORDER))
    assert out.startswith("flowchart TD\n")
    assert "    validate --> price" in out and "    approve --> fulfil" in out
    ok(atomr(tmp_path, "graph", "examples.doc_fanout:workflow", "--out", "g.md"))
    text = (tmp_path / "g.md").read_text(encoding="utf-8")
    assert text.startswith("```mermaid\nflowchart TD\n") and text.endswith("```\n")
    ok(atomr(tmp_path, "graph", "atomr.demo:workflow", "--out", "g.mmd"))
    assert (tmp_path / "g.mmd").read_text(encoding="utf-8").startswith("flowchart TD\n")
    assert not (tmp_path / ".atomr").exists()  # graph needs no store


WORKFLOW_MODULES = {
    "crashy.py": """
        import os
        from atomr import Dag, LastWriteWins, StateSchema, Workflow

        def first(state, ctx):
            return {"n": state["n"] + 1}

        def crash_once(state, ctx):
            if not os.path.exists("crashed.flag"):   # the first attempt kills the process
                open("crashed.flag", "w").close()
                os._exit(17)
            return {"n": state["n"] * 10}

        workflow = Workflow("crashy", Dag.builder("first").step("first", first)
                            .step("second", crash_once).edge("first", "second").build(),
                            StateSchema({"n": (LastWriteWins(), 0)}))
    """,
    "factory.py": """
        from atomr import Dag, LastWriteWins, StateSchema, Workflow

        def make():
            def double(state, ctx):
                return {"n": state["n"] * 2}
            return Workflow("factory", Dag.builder("double").step("double", double).build(),
                            StateSchema({"n": (LastWriteWins(), 0)}))

        not_a_workflow = 42
    """,
}


@pytest.fixture
def modules(tmp_path):
    for name, body in WORKFLOW_MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(body), encoding="utf-8")
    return tmp_path


def test_recover_finishes_a_run_left_running_by_a_crash(modules):
    proc = atomr(modules, "run", "crashy:workflow", "--run-id", "c1", "--input", '{"n": 1}')
    assert proc.returncode == 17  # the process died inside step "second"
    assert "[1] committed" in proc.stdout
    [row] = json.loads(ok(atomr(modules, "runs", "--json")))
    assert row["status"] == "running" and row["super_step"] == 1
    out = ok(atomr(modules, "recover", "crashy:workflow"))
    assert "recovering 1 run(s)" in out and "done: crashy/c1" in out and "n  20" in out
    assert "nothing to recover" in ok(atomr(modules, "recover", "crashy:workflow"))


def test_workflow_factory_and_module_override(modules):
    out = ok(atomr(modules, "run", "factory:make", "--run-id", "f1", "--input", '{"n": 21}'))
    assert "n  42" in out
    assert "not a Workflow" in error_line(atomr(modules, "run", "factory:not_a_workflow"))
    # a run started from Python (no module in its meta) needs --module
    script = textwrap.dedent("""
        from atomr import LmdbStore, Runtime
        from factory import make
        with Runtime(store=LmdbStore("py-store")) as rt:
            rt.register(make())
            rt.start("factory", {"n": 5}, run_id="p1").result(timeout=60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(modules), str(ROOT)])}
    subprocess.run([sys.executable, "-c", script], cwd=modules, env=env, check=True, timeout=120)
    line = error_line(atomr(modules, "--store", "py-store", "show", "factory", "p1"))
    assert "--module" in line
    shown = json.loads(ok(atomr(modules, "--store", "py-store", "show", "factory", "p1", "--json",
                                "--module", "factory:make")))
    assert shown["values"] == {"n": 10}
    line = error_line(atomr(modules, "--store", "py-store", "show", "factory", "p1",
                            "--module", ORDER))
    assert "defines workflow 'orders', not 'factory'" in line


def _copy_package(where: Path) -> None:
    shutil.copytree(ROOT / "atomr", where / "atomr", ignore=shutil.ignore_patterns("__pycache__"))


def _checkout(where: Path, harness: str) -> Path:
    """A source checkout at ``where``: the atomr package, setup.cfg and a benchmarks/ harness."""
    _copy_package(where)
    (where / "setup.cfg").write_text("[metadata]\nname = atomr\n", encoding="utf-8")
    (where / "benchmarks").mkdir()
    (where / "benchmarks" / "__init__.py").write_text(harness, encoding="utf-8")
    (where / "benchmarks" / "__main__.py").write_text("", encoding="utf-8")
    return where


FAKE_HARNESS = "def main(argv):\n    print('bench', argv)\n    return 4\n"


def test_bench_runs_the_harness_of_the_checkout_in_the_current_directory(tmp_path):
    checkout = _checkout(tmp_path / "checkout", FAKE_HARNESS)
    proc = atomr(checkout, "bench", "--quick", "--runs", "3")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "bench ['--quick', '--runs', '3']" in proc.stdout


def test_bench_finds_the_checkout_atomr_was_imported_from(tmp_path):
    checkout = _checkout(tmp_path / "checkout", FAKE_HARNESS)
    (tmp_path / "elsewhere").mkdir()
    proc = atomr(tmp_path / "elsewhere", "--store", "s", "bench", "--list", pythonpath=(str(checkout),))
    assert proc.returncode == 4 and "bench ['--list']" in proc.stdout, proc.stdout + proc.stderr


def test_bench_of_the_repository(tmp_path):
    out = ok(atomr(ROOT, "bench", "--list"))
    assert out.startswith("chain: ")


def test_bench_without_the_harness_is_a_clear_error(tmp_path):
    site = tmp_path / "site"  # as installed from a wheel: the package alone
    _copy_package(site)
    project = tmp_path / "project"  # another project's benchmarks/ is not atomr's harness
    (project / "benchmarks").mkdir(parents=True)
    (project / "benchmarks" / "__init__.py").write_text(FAKE_HARNESS, encoding="utf-8")
    (project / "benchmarks" / "__main__.py").write_text("", encoding="utf-8")
    proc = atomr(project, "bench", "--quick", pythonpath=(str(site),))
    line = error_line(proc, 2)
    assert "benchmark harness is not available" in line and "python -m benchmarks" in line
    assert "bench [" not in proc.stdout


COMMANDS = ["demo", "run", "runs", "show", "history", "resume", "fork", "prune", "purge", "graph",
            "recover"]


def test_help_on_every_command(capsys):
    from atomr.cli import main

    with pytest.raises(SystemExit) as top:
        main(["--help"])
    assert top.value.code == 0
    listing = capsys.readouterr().out
    for cmd in COMMANDS + ["bench"]:
        assert cmd in listing
    for cmd in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: atomr {cmd}") and "--store" in out


def test_python_dash_m_and_no_command(tmp_path):
    proc = atomr(tmp_path)
    assert proc.returncode == 2 and "usage: atomr" in proc.stdout
