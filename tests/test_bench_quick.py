"""The benchmark harness's quick mode runs end to end and writes complete results."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ("chain", "fanout", "concurrent", "store_size", "recovery", "latency")


def _importable(*names: str) -> bool:
    try:
        return all(importlib.util.find_spec(n) is not None for n in names)
    except (ImportError, ValueError):
        return False


@pytest.mark.timeout(330)
def test_quick_mode_writes_every_workload(tmp_path):
    out = tmp_path / "q.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())

    lg = _importable("langgraph", "langgraph.checkpoint.sqlite")
    assert data["mode"] == "quick"
    assert data["langgraph"]["available"] is lg
    for key in ("platform", "cpu_count", "python"):
        assert data["machine"][key]
    for key in ("atomr", "lmdb", "pykka", "langgraph"):
        assert key in data["versions"]
    assert set(data["workloads"]) == set(WORKLOADS)
    for name in WORKLOADS:
        wl = data["workloads"][name]
        assert "error" not in wl, wl.get("error")
        assert wl["rows"], name
        for row in wl["rows"]:
            assert row["atomr"]["value"] > 0, (name, row["id"])
            assert row["atomr"]["samples"], (name, row["id"])
            if lg:
                assert row["langgraph"] is not None and row["langgraph"]["value"] > 0, (name, row["id"])
                assert row["advantage"] > 0, (name, row["id"])
            else:
                assert row["langgraph"] is None
    if _importable("matplotlib"):
        png = out.with_suffix(".png")
        assert png.exists() and png.stat().st_size > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| workload |" in out.with_suffix(".md").read_text()
