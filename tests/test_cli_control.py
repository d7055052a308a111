"""atomr cancel / verify / backup from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from atomr.demo import SAMPLE_ORDER

ROOT = Path(__file__).resolve().parents[1]


def atomr(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atomr", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_cancel_a_paused_run_then_verify_and_back_up_the_store(tmp_path):
    store = tmp_path / "s"
    p = atomr(store, "run", "examples.order_pipeline:workflow", "--run-id", "o1",
              "--input", json.dumps(SAMPLE_ORDER))
    assert p.returncode == 3, p.stdout + p.stderr  # paused for approval
    p = atomr(store, "cancel", "orders", "o1", "--reason", "customer called")
    assert p.returncode == 0, p.stderr
    assert "cancelled orders/o1" in p.stdout and "customer called" in p.stdout
    p = atomr(store, "runs", "--status", "cancelled", "--json")
    assert [r["run_id"] for r in json.loads(p.stdout)] == ["o1"]
    p = atomr(store, "cancel", "orders", "nope")
    assert p.returncode == 2 and "nope" in p.stderr
    p = atomr(store, "verify")
    assert p.returncode == 0 and "no damage" in p.stdout, p.stdout + p.stderr
    p = atomr(store, "verify", "--json")
    assert json.loads(p.stdout)["ok"] is True
    p = atomr(store, "backup", str(tmp_path / "copy"))
    assert p.returncode == 0, p.stderr
    p = atomr(tmp_path / "copy", "runs", "--json")
    assert {r["run_id"]: r["status"] for r in json.loads(p.stdout)}["o1"] == "cancelled"
    p = atomr(tmp_path / "nowhere", "verify")
    assert p.returncode == 2 and "no atomr store" in p.stderr
