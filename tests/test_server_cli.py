"""``atomr serve``: its refusals, and a real server process on a real store (SIGTERM, kill -9)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atomr.cli import main
from atomr.cli.serve import is_loopback

pytest.importorskip("uvicorn", reason="atomr serve needs the server extra (uvicorn)")
httpx = pytest.importorskip("httpx")

from test_server_support import T, free_port  # noqa: E402

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
ORDER = "examples.order_pipeline:workflow"
BIG_ORDER = {"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45_000}]}
SLOW = textwrap.dedent("""
    import os, time
    from atomr import Dag, LastWriteWins, StateSchema, Workflow

    def step(state, ctx):
        time.sleep(float(os.environ.get("SLOW_S", "0")))
        return {"n": state["n"] + 1}

    workflow = Workflow("slow", Dag.builder("step").step("step", step).build(),
                        StateSchema({"n": (LastWriteWins(), 0)}))
""")


def one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atomr: error: "), err
    return err[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.7", "::", "example.com"])
def test_a_non_loopback_host_needs_a_token(tmp_path, capsys, monkeypatch, host):
    monkeypatch.delenv("ATOMR_TOKEN", raising=False)
    code = main(["--store", str(tmp_path / "s"), "serve", ORDER, "--host", host])
    assert code == 2
    assert "without a token" in one_error_line(capsys, 2)
    assert not (tmp_path / "s").exists()  # refused before the store is opened


def test_loopback_hosts():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))


@pytest.mark.parametrize("args, needle", [
    (["--shards", "2"], "unrecognized arguments: --shards"),
    (["--workers", "2"], "--workers needs a store that several processes share"),
    (["--port", "70000"], "--port must be"),
    (["--max-body", "0"], "--max-body must be"),
])
def test_refusals_are_one_line_with_exit_2(tmp_path, capsys, args, needle):
    assert main(["--store", str(tmp_path / "s"), "serve", ORDER, *args]) == 2
    assert needle in one_error_line(capsys, 2)


def test_an_unknown_workflow_spec_is_one_line(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "s"), "serve", "no_such_module_here:wf"]) == 2
    assert "no_such_module_here" in one_error_line(capsys, 2)


class Proc:
    """``python -m atomr serve`` in a child process."""

    def __init__(self, store: Path, *specs: str, env: dict[str, str] | None = None,
                 pythonpath: tuple[str, ...] = (), token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = dict(os.environ, **(env or {}))
        full["PYTHONPATH"] = os.pathsep.join([*pythonpath, str(ROOT)])
        full.pop("ATOMR_TOKEN", None)
        if token:
            full["ATOMR_TOKEN"] = token
        self.p = subprocess.Popen([sys.executable, "-m", "atomr", "--store", str(store), "serve", *specs,
                                   "--port", str(self.port)], cwd=ROOT, env=full, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + T
        while True:
            assert self.p.poll() is None, self.p.communicate()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "atomr serve did not come up"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            out, err = self.p.communicate(timeout=T)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
        return self.p.returncode, out, err


def test_serve_runs_the_same_runs_the_cli_sees_and_stops_on_sigterm(tmp_path):
    store = tmp_path / "store"
    srv = Proc(store, ORDER, token="s3cret")
    try:
        auth = {"Authorization": "Bearer s3cret"}
        with httpx.Client(base_url=srv.url, timeout=T, headers=auth) as c:
            assert httpx.get(f"{srv.url}/api/runs", timeout=T).status_code == 401
            r = c.post("/api/workflows/orders/runs", json={"input": BIG_ORDER, "run_id": "web-1"})
            assert r.status_code == 201, r.text
            out = c.get("/api/runs/orders/web-1/wait", params={"timeout": T}).json()
            assert out["outcome"] == "paused"
            assert c.get("/api/workflows").json()["workflows"][0]["module"] == ORDER
            assert c.get("/").status_code == 200
    finally:
        code, out, err = srv.stop()
    assert code == 0, err
    assert "atomr serve: orders on http://127.0.0.1" in out
    for name in ("data.mdb", "lock.mdb"):
        mode = stat.S_IMODE((store / name).stat().st_mode)
        assert mode & 0o077 == 0, oct(mode)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = subprocess.run([sys.executable, "-m", "atomr", "--store", str(store), "runs", "--json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert [(r["run_id"], r["status"]) for r in json.loads(runs.stdout)] == [("web-1", "paused")]
    shown = subprocess.run([sys.executable, "-m", "atomr", "--store", str(store), "show", "orders", "web-1",
                            "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(shown.stdout)["meta"]["module"] == ORDER, shown.stderr


def test_a_run_left_running_by_a_kill_is_carried_on_at_the_next_start(tmp_path):
    (tmp_path / "slowmod.py").write_text(SLOW)
    store = tmp_path / "store"
    srv = Proc(store, "slowmod:workflow", env={"SLOW_S": "60"}, pythonpath=(str(tmp_path),))
    try:
        r = httpx.post(f"{srv.url}/api/workflows/slow/runs", json={"input": {"n": 1}, "run_id": "r"}, timeout=T)
        assert r.status_code == 201 and r.json()["status"] == "running"
    finally:
        code, _, _ = srv.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    srv = Proc(store, "slowmod:workflow", env={"SLOW_S": "0"}, pythonpath=(str(tmp_path),))
    try:
        out = httpx.get(f"{srv.url}/api/runs/slow/r/wait", params={"timeout": T}, timeout=T + 5).json()
        assert out == {"outcome": "done", "workflow_id": "slow", "run_id": "r", "state": {"n": 2}}
    finally:
        code, out, err = srv.stop()
    assert code == 0, err
    assert "carrying on 1 run(s)" in out and "stopped (SIGTERM); the store is closed" in out
