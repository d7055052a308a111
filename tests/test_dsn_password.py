"""A password in a DSN is never printed: not by the CLI (output, hints, errors,
--debug tracebacks), not in repr() or errors, not by the server (/api, /metrics,
the UI) nor by atomr serve. (Trust auth ignores the password, so these DSNs connect.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from atomr import LmdbStore, PostgresStore, Runtime
from atomr.cli import main
from atomr.errors import StoreLocked, StoreUnavailable
from atomr.store.url import open_store
from conftest import PG_DSN

pytestmark = pytest.mark.timeout(300)

SECRET = "s3cr3t"
ROOT = Path(__file__).resolve().parents[1]
ORDER = "examples.order_pipeline:workflow"
BIG_ORDER = json.dumps({"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45_000}]})
T = 30.0


def with_password(dsn: str) -> str:
    assert "postgres@" in dsn, "the test DSN names user postgres without a password"
    return dsn.replace("postgres@", f"postgres:{SECRET}@", 1)


@pytest.fixture
def url(pg_schema: str) -> str:
    return f"{with_password(PG_DSN)}?schema={pg_schema}"


class Cli:
    """``main`` in this process; every word it prints is kept and checked."""

    def __init__(self, capsys: Any) -> None:
        self.capsys = capsys
        self.seen: list[str] = []

    def __call__(self, *args: str, code: int | None = 0) -> tuple[str, str]:
        rc = main(list(args))
        out, err = self.capsys.readouterr()
        self.seen += [out, err]
        assert SECRET not in out + err, (args, out, err)
        if code is not None:
            assert rc == code, (args, rc, out, err)
        return out, err


def test_the_cli_never_prints_the_password(url, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ATOMR_STORE", raising=False)
    cli = Cli(capsys)
    s = ["--store", url]
    assert "postgres:***@" in cli(*s, "runs")[0]
    assert "no atomr store" in cli(*s, "show", "orders", "o1", code=2)[1]
    out, _ = cli(*s, "run", ORDER, "--run-id", "o1", "--input", BIG_ORDER, code=3)
    assert "resume with: atomr resume --store 'postgresql://postgres:***@" in out
    cli(*s, "runs")
    cli(*s, "runs", "--json")
    cli(*s, "show", "orders", "o1")
    cli(*s, "history", "orders", "o1")
    assert "postgres:***@" in cli(*s, "fork", "orders", "o1", "--at", "1", "--run-id", "f1")[0]
    cli(*s, "prune", "orders", "f1")
    cli(*s, "cancel", "orders", "f1")
    cli(*s, "resume", "orders", "o1", "--resume", '"yes"')
    cli(*s, "recover", ORDER)
    assert "postgres:***@" in cli(*s, "schedule", "add", "n", ORDER, "--every", "86400", "--input", BIG_ORDER)[0]
    cli(*s, "schedule", "ls")
    cli(*s, "schedule", "rm", "n")
    cli(*s, "verify")
    cli(*s, "verify", "--json")
    cli(*s, "backup", str(tmp_path / "b"), code=2)
    cli("copy", url, str(tmp_path / "copy"))
    cli("copy", str(tmp_path / "copy"), url, code=2)  # not empty
    cli("copy", url, url, code=2)
    cli(*s, "purge", "--older-than", "0")
    cli(*s, "demo")
    # errors: an unreachable server, an unknown scheme, a misplaced DSN, with and without --debug
    down = with_password("postgresql://postgres@127.0.0.1:1/test")
    for args in (["--store", down, "runs"], ["--store", down, "run", ORDER], ["--store", down, "--debug", "runs"],
                 ["--store", "foo" + down[len("postgresql"):], "runs"], ["runs", down], ["copy", down, url],
                 ["--store", down + "?schema=Bad-Name", "runs"]):
        _, err = cli(*args, code=2)
        assert err.strip()
    assert any("Traceback" in text for text in cli.seen)  # --debug showed one, masked


def test_atomr_store_from_the_environment_is_masked_too(url, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ATOMR_STORE=with_password("postgresql://postgres@127.0.0.1:1/test"))
    for args in (["runs"], ["--debug", "show", "w", "r"]):
        p = subprocess.run([sys.executable, "-m", "atomr", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 2 and "cannot connect to Postgres" in p.stderr, p.stderr
        assert SECRET not in p.stdout + p.stderr
    env["ATOMR_STORE"] = url
    p = subprocess.run([sys.executable, "-m", "atomr", "run", ORDER, "--input", BIG_ORDER], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3 and "resume with: atomr resume orders" in p.stdout, p.stderr
    assert SECRET not in p.stdout + p.stderr


def test_repr_paths_and_errors_of_the_store(url, pg_schema):
    store = open_store(url)
    try:
        for text in (repr(store), str(store.path), str(store)):
            assert SECRET not in text and "***" in text
        store.join("w", 5.0)
        other = PostgresStore(url)  # a second process (worker) is welcome, not with the same worker id
        try:
            with pytest.raises(StoreLocked) as locked:
                other.join("w", 5.0)
        finally:
            other.close()
        assert SECRET not in str(locked.value) and pg_schema in str(locked.value)
    finally:
        store.close()
    with pytest.raises(StoreUnavailable) as down:
        open_store(with_password("postgresql://postgres@127.0.0.1:1/test"))
    assert SECRET not in str(down.value) and "***" in str(down.value)


def test_the_server_never_serves_the_password(url):
    httpx = pytest.importorskip("httpx")
    from test_server_support import T as TS, approval, serve

    rt = Runtime(store=url)
    rt.register(approval)
    with serve(rt) as (srv, _):
        with httpx.Client(base_url=srv.url, timeout=TS) as c:
            r = c.post("/api/workflows/approval/runs", json={"input": {"topic": "t"}, "run_id": "r1"})
            assert r.status_code == 201, r.text
            assert c.get("/api/runs/approval/r1/wait", params={"timeout": 20}).json()["outcome"] == "paused"
            bodies = []
            for path in ("/api/workflows", "/api/runs", "/api/runs/approval/r1", "/api/runs/approval/r1/history",
                         "/api/runs/approval/r1/steps", "/api/runs/approval/nope", "/api/runs?status=bogus",
                         "/metrics", "/healthz", "/", "/workflows", "/runs/approval/r1", "/static/app.js"):
                resp = c.get(path)
                bodies.append(resp.text + json.dumps(dict(resp.headers)))
            with c.stream("GET", "/api/runs/approval/r1/events", params={"after": "0"}) as events:
                for line in events.iter_lines():
                    bodies.append(line)
                    if len(bodies) > 40:
                        break
            metrics = c.get("/metrics").text
    assert 'atomr_store_info{backend="PostgresStore",location="postgresql://postgres:***@' in metrics
    for body in bodies:
        assert SECRET not in body


def test_atomr_serve_banner_and_logs_never_show_the_password(url, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from test_server_support import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ATOMR_TOKEN", None)
    p = subprocess.Popen([sys.executable, "-m", "atomr", "--store", url, "--debug", "serve", ORDER, "--port",
                          str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + T
        while True:
            assert p.poll() is None, p.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "atomr serve did not come up"
            time.sleep(0.05)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=T).text
        assert "atomr_store_info" in metrics and SECRET not in metrics
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=T)
    assert "store 'postgresql://postgres:***@" in out
    assert SECRET not in out + err


def test_an_lmdb_path_is_shown_as_it_is(tmp_path, capsys):
    LmdbStore(tmp_path / "s").close()
    rc = main(["--store", str(tmp_path / "s"), "runs"])
    assert rc == 0 and f"no runs in '{tmp_path / 's'}'" in capsys.readouterr().out
