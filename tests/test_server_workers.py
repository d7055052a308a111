"""Workers over HTTP: ``GET /api/workers``, a run's ``owner``, the Workers page, and
``atomr serve --workers N`` (a real process: N worker processes, one killed and
restarted, all stopped with the server); the pool's restart loop as a unit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from atomr import MemoryStore, Runtime, open_store
from atomr.cli import main
from atomr.cli.pool import MAX_BACKOFF_S, WorkerPool

httpx = pytest.importorskip("httpx")
from test_server_support import GATE, T, TOKEN, WORKFLOWS, free_port, runtime, serve  # noqa: E402

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
ORDER = "examples.order_pipeline:workflow"
SMALL = {"order_id": "A-8", "items": [{"sku": "pen", "qty": 3, "cents": 300}]}
WORKER_KEYS = {"worker_id", "host", "pid", "started_ms", "heartbeat_ms", "lease_s", "runs", "alive"}


def on(store: Any, **kwargs: Any) -> Runtime:
    """A Runtime on ``store`` with the test workflows registered."""
    rt = Runtime(store, **kwargs)
    for wf in WORKFLOWS:
        rt.register(wf)
    return rt


def until(fn: Any, what: str, timeout: float = T) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- the route, in-process ------------------------------------------------------------------


def test_api_workers_lists_the_worker_and_a_run_names_its_owner(tmp_path):
    GATE.clear()
    rt = on(f"sqlite:///{tmp_path / 'runs.db'}", worker_id="w-api")
    try:
        with serve(rt, token=TOKEN) as (srv, _):
            with httpx.Client(base_url=srv.url, timeout=T, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
                assert c.get("/api/workers", headers={"Authorization": ""}).status_code == 401
                [w] = c.get("/api/workers").json()["workers"]
                assert set(w) == WORKER_KEYS
                assert w["worker_id"] == "w-api" and w["pid"] == os.getpid() and w["alive"] is True
                assert w["heartbeat_ms"] >= w["started_ms"] > 0 and w["lease_s"] == 10.0
                assert c.post("/api/workflows/gated/runs", json={"run_id": "g1"}).status_code == 201
                assert c.get("/api/runs/gated/g1").json()["owner"] == "w-api"
                until(lambda: c.get("/api/workers").json()["workers"][0]["runs"] == 1, "runs owned = 1")
                GATE.set()
                assert c.get("/api/runs/gated/g1/wait", params={"timeout": T}).json()["outcome"] == "done"
                assert c.get("/api/runs/gated/g1").json()["owner"] is None  # a settled run is nobody's
                page = c.get("/workers")
                assert page.status_code == 200 and 'data-page="workers"' in page.text
                assert '<a href="/workers" aria-current="page">Workers</a>' in page.text
    finally:
        GATE.set()


def test_a_store_one_process_opens_has_no_workers_and_no_owners():
    GATE.set()
    with serve(runtime(MemoryStore())) as (srv, _):
        with httpx.Client(base_url=srv.url, timeout=T) as c:
            assert c.get("/api/workers").json() == {"workers": []}
            c.post("/api/workflows/gated/runs", json={"run_id": "m1"})
            assert c.get("/api/runs/gated/m1/wait", params={"timeout": T}).json()["outcome"] == "done"
            assert c.get("/api/runs/gated/m1").json()["owner"] is None


def test_a_client_server_lists_the_workers_of_its_store(tmp_path):
    """A serving client (execute=False) shows the workers of other runtimes on the store."""
    GATE.set()
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    worker = on(url, worker_id="w-other")
    try:
        client = on(open_store(url), execute=False)
        assert client.execute is False
        with serve(client) as (srv, _):
            with httpx.Client(base_url=srv.url, timeout=T) as c:
                assert [w["worker_id"] for w in c.get("/api/workers").json()["workers"]] == ["w-other"]
                c.post("/api/workflows/gated/runs", json={"run_id": "c1"})
                assert c.get("/api/runs/gated/c1/wait", params={"timeout": T}).json()["outcome"] == "done"
    finally:
        worker.close()


# -- atomr serve --workers N, a real process ----------------------------------------------------


def test_serve_with_workers_restarts_a_killed_one_and_stops_them_all(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("ATOMR_TOKEN", "ATOMR_STORE", "ATOMR_WORKER_PARENT")}
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.Popen([sys.executable, "-m", "atomr", "--store", url, "serve", ORDER, "--workers", "2",
                          "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    pids: list[int] = []
    try:
        def workers() -> list[dict[str, Any]]:
            assert p.poll() is None, p.communicate()
            try:
                return list(httpx.get(f"{base}/api/workers", timeout=2).json()["workers"])
            except httpx.TransportError:
                return []

        first = until(lambda: [w for w in workers() if w["alive"]] if len(workers()) == 2 else [], "2 workers")
        pids = [w["pid"] for w in first]
        assert os.getpid() not in pids and p.pid not in pids  # the serving process is a client
        r = httpx.post(f"{base}/api/workflows/orders/runs", json={"input": SMALL, "run_id": "s1"}, timeout=T)
        assert r.status_code == 201, r.text
        out = httpx.get(f"{base}/api/runs/orders/s1/wait", params={"timeout": T}, timeout=T + 5).json()
        assert out["outcome"] == "done" and out["state"]["tracking"] == "TRK-A-8"
        os.kill(pids[0], signal.SIGKILL)
        again = until(lambda: (lambda ws: ws if len(ws) == 2 and pids[0] not in [w["pid"] for w in ws] else [])(
            workers()), "the killed worker restarted and the dead one reaped")
        pids += [w["pid"] for w in again]
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = p.communicate(timeout=T + 15)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
    assert p.returncode == 0, stdout + stderr
    assert "2 worker process(es)" in stdout and "stopped (SIGTERM); the store is closed" in stdout
    assert f"(pid {pids[0]}) exited with code -9" in stderr
    assert stdout.count("stopped (SIGTERM)") == 3  # the two workers, then the server
    store = open_store(url, readonly=True)
    try:
        assert store.workers() == []
    finally:
        store.close()
    for pid in set(pids):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_serve_workers_needs_a_shared_store_and_shards_is_gone(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "lm"), "serve", ORDER, "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "atomr serve --workers needs a store that several processes share" in err
    assert not (tmp_path / "lm").exists()
    assert main(["--store", f"sqlite:///{tmp_path / 'x.db'}", "serve", ORDER, "--workers", "-1"]) == 2
    assert "--workers must be 0..256" in capsys.readouterr().err
    assert main(["--store", f"sqlite:///{tmp_path / 'x.db'}", "serve", ORDER, "--shards", "2"]) == 2
    assert "unrecognized arguments: --shards" in capsys.readouterr().err


# -- the restart loop, as a unit ------------------------------------------------------------------


class FakeProc:
    pids = iter(range(1000, 2000))

    def __init__(self) -> None:
        self.pid = next(self.pids)
        self.code: int | None = None
        self.signals: list[str] = []

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.signals.append("TERM")
        self.code = 0

    def kill(self) -> None:
        self.signals.append("KILL")
        self.code = -9

    def wait(self, timeout: float | None = None) -> int | None:
        if self.code is None:
            raise subprocess.TimeoutExpired("fake", timeout or 0)
        return self.code


def test_the_pool_restarts_a_dead_worker_backs_off_and_stops_them(monkeypatch):
    spawned: list[tuple[list[str], dict[str, str], FakeProc]] = []

    def spawn(argv: list[str], env: dict[str, str]) -> FakeProc:
        proc = FakeProc()
        spawned.append((argv, env, proc))
        return proc

    logs: list[str] = []
    pool = WorkerPool(2, "postgresql://me:pw@db/app", ["m:a", "m:b"], extra=["--durability", "sync"],
                      log=logs.append, spawn=spawn, poll_s=3600)
    pool.start()
    try:
        argv, env, _ = spawned[0]
        assert argv[1:] == ["-m", "atomr", "worker", "m:a", "m:b", "--durability", "sync"]
        assert "pw" not in " ".join(argv)  # the DSN goes in the environment, not on a command line
        assert env["ATOMR_STORE"] == "postgresql://me:pw@db/app" and env["ATOMR_WORKER_PARENT"] == str(os.getpid())
        assert len(spawned) == 2 and pool.restarts == 0
        pool.check()
        assert len(spawned) == 2  # all alive: nothing to do
        spawned[0][2].code = 1  # died young: restarted after a pause
        pool.check()
        assert "worker 1 (pid 1000) exited with code 1" in logs[-1] and "in 0.5s" in logs[-1]
        assert len(spawned) == 2
        slot = pool.slots[0]
        slot.restart_at = 0.0  # the pause is over
        pool.check()
        assert len(spawned) == 3 and pool.restarts == 1 and pool.pids() == [spawned[2][2].pid, 1001]
        spawned[2][2].code = 1  # dies young again: a longer pause, never over the cap
        pool.check()
        assert slot.backoff == 1.0
        slot.backoff = MAX_BACKOFF_S
        slot.proc, slot.started = spawned[2][2], time.monotonic()
        pool.check()
        assert slot.backoff == MAX_BACKOFF_S
        slot.restart_at = 0.0
        pool.check()
        old = spawned[-1][2]
        slot.started -= 60  # lived long: restarted at once
        old.code = -9
        pool.check()
        assert spawned[-1][2] is not old and slot.backoff == 0.0 and "exited with code -9" in logs[-1]
    finally:
        stuck = spawned[-1][2]
        stuck.terminate = lambda: stuck.signals.append("TERM")  # type: ignore[method-assign]
        codes = pool.stop(grace_s=0.1)
    assert stuck.signals == ["TERM", "KILL"] and sorted(codes) == [-9, 0]
    assert "did not stop within 0.1s; killing it" in logs[-1]
    assert pool._thread is not None and not pool._thread.is_alive()  # nothing restarts a stopped pool


def test_the_pool_runs_a_real_worker_on_sqlite(tmp_path):
    """WorkerPool with real processes: started, ready, SIGTERM'd (exit 0)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with Runtime(url, execute=False) as rt:  # creates the store
        pass
    pool = WorkerPool(1, url, [ORDER], log=lambda text: None)
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        pool.start()
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = env_before
    try:
        store = open_store(url, readonly=True)
        try:
            until(lambda: store.workers(), "the worker joined")
            assert [w.pid for w in store.workers()] == pool.pids()
        finally:
            store.close()
    finally:
        codes = pool.stop(grace_s=T)
    assert codes == [0]


# -- the Workers page and a run's worker, in a real Chromium (skipped without one) -----------------


def test_workers_page_and_the_run_page_name_the_worker(tmp_path):
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium: install Debian's chromium package to run the UI tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    GATE.clear()
    rt = on(f"sqlite:///{tmp_path / 'runs.db'}", worker_id="w-page")
    try:
        with serve(rt) as (srv, _), sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page()
                page.set_default_timeout(T * 1000)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                httpx.post(f"{srv.url}/api/workflows/gated/runs", json={"run_id": "g1"}, timeout=T)
                page.goto(f"{srv.url}/workers")
                row = page.locator("#workers-body tr[data-worker=w-page]")
                row.wait_for()
                cells = row.locator("td").all_inner_texts()
                assert cells[0] == "w-page" and cells[2] == str(os.getpid()) and cells[6] == "alive"
                expect = sync_api.expect
                expect(row.locator("td").nth(5)).to_have_text("1", timeout=T * 1000)  # runs owned
                page.goto(f"{srv.url}/runs/gated/g1")
                expect(page.locator("#run-facts")).to_contain_text("executing in worker w-page", timeout=T * 1000)
                GATE.set()
                expect(page.locator("#run-status")).to_have_text("done", timeout=T * 1000)
                expect(page.locator("#run-facts")).not_to_contain_text("executing in worker", timeout=T * 1000)
                assert errors == [], errors
            finally:
                browser.close()
    finally:
        GATE.set()
