"""The README's quick start is real code: run it."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python block"
    script = tmp_path / "quick_start.py"
    script.write_text(blocks[0])
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "shipped (yes)" in out.stdout
    assert (tmp_path / "data" / "data.mdb").exists()


def test_readme_names_the_ci_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    text = README.read_text()
    assert 'pip install -e ".[dev,bench]" && python -m pytest -q' in text
    assert 'pip install -e ".[dev,bench]"' in ci and "python -m pytest -q" in ci
