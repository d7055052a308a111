"""The README's quick start is real code, and CI runs the README's test command."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_quick_start_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python block"
    script = tmp_path / "quick_start.py"
    script.write_text(blocks[0])
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "shipped (yes)" in out.stdout
    assert (tmp_path / ".atomr" / "data.mdb").exists()  # the store the CLI opens by default
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "atomr", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert [(r["workflow_id"], r["run_id"], r["status"], r["meta"]["module"])
            for r in json.loads(cli("runs", "--json"))] == [("orders", "r1", "done", "quick_start:wf")]
    shown = cli("show", "orders", "r1")  # no --module: the run says where its workflow is
    assert "done" in shown and "shipped (yes)" in shown
    assert "layer:2" in cli("history", "orders", "r1")


def test_ci_runs_the_readme_test_command():
    lines = [ln for ln in README.read_text().splitlines() if ln.startswith('pip install -e ".[dev')]
    assert lines and lines[0].endswith("python -m pytest -q")
    assert "grep -m1 -E '^pip install -e \"\\.\\[dev' README.md" in (ROOT / ".ci" / "run").read_text()


def test_the_react_agent_in_the_readme_is_the_example_file():
    text = README.read_text()
    section = text[text.index("**The agent loop"):]
    atomr_side = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    example = (ROOT / "examples" / "react_agent.py").read_text()
    assert atomr_side.strip() in example, "README's atomr ReAct code differs from examples/react_agent.py"
