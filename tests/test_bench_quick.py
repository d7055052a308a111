"""The benchmark harness's quick mode runs end to end and writes complete results."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ("chain", "concurrent", "fanout", "recovery", "agents", "store_size", "latency",
             "sql_chain", "sql_concurrent", "pg_size", "loop_gap")


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
            assert row["atomr"]["samples"] or row["atomr"]["samples_dropped"], (name, row["id"])
            if lg:
                assert row["langgraph"] is not None and row["langgraph"]["value"] > 0, (name, row["id"])
                if row["limit"] is None:
                    assert row["advantage"] > 0, (name, row["id"])
                else:  # a bound on atomr's own figure (e.g. its peak thread count)
                    assert row["advantage"] is None and row["meets_target"] is not None, (name, row["id"])
            else:
                assert row["langgraph"] is None
    rows = [r for wl in data["workloads"].values() for r in wl["rows"]]
    headline = [r for r in rows if r["headline"]]
    assert [r["id"] for r in headline] == ["chain.durable-sync-fsync-full"]
    assert headline[0]["target"] == 2.5
    agents = {r["id"]: r for r in data["workloads"]["agents"]["rows"]}
    assert agents["agents"]["target"] == 20
    assert agents["agents.peak_threads"]["limit"] == 32 and agents["agents.peak_threads"]["atomr"]["value"] >= 1
    assert {"concurrent.one_by_one", "concurrent.start_many"} <= {r["id"] for r in rows}
    gap = {r["id"]: r for r in data["workloads"]["loop_gap"]["rows"]}
    assert gap["loop_gap"]["limit"] == 20 and gap["loop_gap"]["unit"] == "ms"
    if _importable("matplotlib"):
        png = out.with_suffix(".png")
        assert png.exists() and png.stat().st_size > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out.with_suffix(".md").read_text()
    assert "| workload |" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert table[1].startswith("| chain.durable-sync-fsync-full |"), table[:3]
    assert "Headline:" in md and "Headline:" in proc.stdout
