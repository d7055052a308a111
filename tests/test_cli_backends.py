"""Every CLI command on each backend: an LMDB directory, a sqlite:/// URL and a
postgresql:// URL given to --store (or ATOMR_STORE); store URL errors are one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from atomr.cli import main
from conftest import PG_DSN

ROOT = Path(__file__).resolve().parents[1]
ORDER = "examples.order_pipeline:workflow"
BIG_ORDER = json.dumps({"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45_000}]})

pytestmark = pytest.mark.timeout(300)


def schema_exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as c:
        return c.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() is not None


@pytest.fixture(params=["lmdb", "sqlite", "postgres"])
def store(request: Any, tmp_path: Path) -> dict[str, Any]:
    """``{"kind", "url", "exists": () -> bool}`` for a store that does not exist yet."""
    kind = request.param
    if kind == "lmdb":
        path = tmp_path / "s"
        return {"kind": kind, "url": str(path), "exists": lambda: (path / "data.mdb").exists()}
    if kind == "sqlite":
        path = tmp_path / "s.db"
        return {"kind": kind, "url": f"sqlite:///{path}", "exists": path.exists}
    schema = request.getfixturevalue("pg_schema")
    return {"kind": kind, "url": f"{PG_DSN}?schema={schema}", "exists": lambda: schema_exists(schema)}


def cli(capsys: Any, *args: str, code: int = 0) -> str:
    rc = main(list(args))
    out, err = capsys.readouterr()
    assert rc == code, f"rc={rc}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def cli_error(capsys: Any, *args: str) -> str:
    rc = main(list(args))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("atomr: error: "), (rc, out, err)
    return lines[0]


def test_every_command_on_each_backend(store, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ATOMR_STORE", raising=False)
    url = store["url"]
    s = ["--store", url]
    # reading commands neither need nor create a store
    assert "no runs in" in cli(capsys, *s, "runs")
    assert "no schedules in" in cli(capsys, *s, "schedule", "ls")
    assert "purged 0 run(s): no store" in cli(capsys, *s, "purge", "--older-than", "0")
    assert "no atomr store" in cli_error(capsys, *s, "show", "orders", "o1")
    assert "no atomr store" in cli_error(capsys, *s, "verify")
    assert not store["exists"]()

    out = cli(capsys, *s, "run", ORDER, "--run-id", "o1", "--input", BIG_ORDER, code=3)
    assert "paused: orders/o1" in out and f"atomr resume --store {url} orders o1" in out.replace("'", "")
    assert store["exists"]()
    assert [(r["run_id"], r["status"]) for r in json.loads(cli(capsys, *s, "runs", "--json"))] == [("o1", "paused")]
    assert "o1" in cli(capsys, *s, "runs", "--status", "paused")
    shown = json.loads(cli(capsys, *s, "show", "orders", "o1", "--json"))
    assert shown["status"] == "paused" and shown["interrupts"][0]["id"] == "approve:3:0"
    points = json.loads(cli(capsys, *s, "history", "orders", "o1", "--json"))
    assert [p["label"] for p in points][:2] == ["input", "layer:1"]

    assert "-> orders/f1 (paused)" in cli(capsys, *s, "fork", "orders", "o1", "--at", "1", "--run-id", "f1")
    assert "pruned" in cli(capsys, *s, "prune", "orders", "f1", "--keep-last", "1")
    assert "cancelled orders/f1" in cli(capsys, *s, "cancel", "orders", "f1", "--reason", "test")
    assert "deleted orders/f1" in cli(capsys, *s, "prune", "orders", "f1", "--delete")
    assert "done: orders/o1" in cli(capsys, *s, "resume", "orders", "o1", "--resume", '"yes"')
    assert "nothing to recover" in cli(capsys, *s, "recover", ORDER)

    assert "schedule nightly" in cli(capsys, *s, "schedule", "add", "nightly", ORDER, "--every", "86400",
                                     "--input", BIG_ORDER)
    [sched] = json.loads(cli(capsys, *s, "schedule", "ls", "--json"))
    assert sched["schedule_id"] == "nightly" and sched["every_s"] == 86400
    assert "removed schedule nightly" in cli(capsys, *s, "schedule", "rm", "nightly")
    assert "no schedule 'nightly'" in cli_error(capsys, *s, "schedule", "rm", "nightly")

    out = cli(capsys, *s, "verify")
    assert "ok: no damage found" in out
    assert json.loads(cli(capsys, *s, "verify", "--json"))["ok"] is True
    assert "ok: no damage found (structure only)" in cli(capsys, *s, "verify", "--quick")
    if store["kind"] == "postgres":
        assert "pg_amcheck" in out and "physical checks" in out
        line = cli_error(capsys, *s, "backup", str(tmp_path / "b"))
        assert "pg_dump" in line and f"--schema={url.rsplit('=', 1)[1]}" in line
    elif store["kind"] == "sqlite":
        assert "integrity_check: ok" in out
        assert "SQLite's online backup" in cli(capsys, *s, "backup", str(tmp_path / "b.db"))
        copy = json.loads(cli(capsys, "--store", f"sqlite:///{tmp_path / 'b.db'}", "runs", "--json"))
        assert [(r["run_id"], r["status"]) for r in copy] == [("o1", "done")]
    else:
        assert "LMDB's compacting copy" in cli(capsys, *s, "backup", str(tmp_path / "b"))
        assert [r["run_id"] for r in json.loads(cli(capsys, "--store", str(tmp_path / "b"), "runs", "--json"))] == ["o1"]

    assert "purged 1 finished run(s)" in cli(capsys, *s, "purge", "--older-than", "0")
    assert "no runs in" in cli(capsys, *s, "runs")
    out = cli(capsys, *s, "demo")
    assert "atomr demo: an order pipeline on the" in out and "== final state" in out
    assert [r["status"] for r in json.loads(cli(capsys, *s, "runs", "--json"))] == ["done"]


def test_sqlite_file_without_atomr_tables_is_no_store(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (x)")
    line = cli_error(capsys, "--store", f"sqlite:///{path}", "show", "w", "r")
    assert "without atomr's tables" in line
    assert "no runs in" in cli(capsys, "--store", f"sqlite:///{path}", "runs")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file, nor anything else" * 100)
    for command in (["runs"], ["show", "w", "r"], ["verify"]):  # an error, never "no runs"
        assert "not an SQLite database" in cli_error(capsys, "--store", f"sqlite:///{junk}", *command)


@pytest.mark.parametrize(("url", "needle"), [
    ("foo://user:pw@host/db", "unknown store URL scheme 'foo'"),
    ("sqlite://runs.db", "malformed SQLite URL"),
    ("sqlite:///", "SQLite URL"),
    ("postgresql:relative", "malformed Postgres URL"),
    ("postgresql://postgres@127.0.0.1:5432/test?schema=Bad-Name", "schema name"),
    ("postgresql://postgres@127.0.0.1:1/test", "cannot connect to Postgres"),
    ("lmdb:", "lmdb: needs a directory"),
])
@pytest.mark.parametrize("command", [["runs"], ["show", "w", "r"], ["run", ORDER], ["verify"], ["schedule", "ls"]])
def test_bad_store_urls_are_one_line_with_exit_2(url, needle, command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "127.0.0.1" in url:
        pytest.importorskip("psycopg")
    line = cli_error(capsys, "--store", url, *command)
    assert needle in line
    assert os.listdir(tmp_path) == []  # nothing was created


def test_copy_refusals(tmp_path, capsys):
    assert "same store" in cli_error(capsys, "copy", str(tmp_path / "a"), f"lmdb:{tmp_path / 'a'}")
    assert "memory:" in cli_error(capsys, "copy", "memory:", str(tmp_path / "a"))
    assert "no atomr store" in cli_error(capsys, "copy", str(tmp_path / "nothing"), str(tmp_path / "b"))


def atomr(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "ATOMR_STORE"}
    full.update(PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8", **(env or {}))
    return subprocess.run([sys.executable, "-m", "atomr", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, encoding="utf-8", timeout=120)


def test_atomr_store_is_the_default_and_store_overrides_it(tmp_path):
    db = tmp_path / "env.db"
    env = {"ATOMR_STORE": f"sqlite:///{db}"}
    p = atomr(tmp_path, "run", ORDER, "--run-id", "e1", "--input", BIG_ORDER, env=env)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "atomr resume orders e1" in p.stdout  # the default store needs no --store
    assert db.exists() and not (tmp_path / ".atomr").exists()
    p = atomr(tmp_path, "runs", "--json", env=env)
    assert [r["run_id"] for r in json.loads(p.stdout)] == ["e1"]
    p = atomr(tmp_path, "--store", str(tmp_path / "lm"), "runs", env=env)
    assert p.returncode == 0 and "no runs in" in p.stdout and str(tmp_path / "lm") in p.stdout
    p = atomr(tmp_path, "resume", "orders", "e1", "--resume", '"yes"', env=env)
    assert p.returncode == 0 and "done: orders/e1" in p.stdout, p.stderr
    p = atomr(tmp_path, "--help", env=env)
    assert "ATOMR_STORE" in p.stdout and str(db) not in p.stdout


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_serve_on_a_store_url(kind, tmp_path, request, capsys):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    import signal
    import time

    from test_server_support import free_port

    url = (f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite"
           else f"{PG_DSN}?schema={request.getfixturevalue('pg_schema')}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ATOMR_TOKEN", "ATOMR_STORE")}
    env.update(PYTHONPATH=str(ROOT), ATOMR_STORE=url)  # the store comes from the environment
    p = subprocess.Popen([sys.executable, "-m", "atomr", "serve", ORDER, "--port", str(port)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert p.poll() is None, p.communicate()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "atomr serve did not come up"
            time.sleep(0.05)
        r = httpx.post(f"{base}/api/workflows/orders/runs", json={"input": json.loads(BIG_ORDER), "run_id": "w1"},
                       timeout=30)
        assert r.status_code == 201, r.text
        assert httpx.get(f"{base}/api/runs/orders/w1/wait", params={"timeout": 20}, timeout=30).json()[
            "outcome"] == "paused"
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    assert f"(store {url!r}, no auth)" in out
    assert [(r["run_id"], r["status"]) for r in json.loads(cli(capsys, "--store", url, "runs", "--json"))] == [
        ("w1", "paused")]
    assert "done: orders/w1" in cli(capsys, "--store", url, "resume", "orders", "w1", "--resume", '"yes"')
