"""``atomr worker``: a real worker process on an SQLite file executes what clients start,
stops on SIGTERM (exit 0, its worker row gone); the CLI's short commands are clients
on a shared store; LMDB and memory stores are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from atomr import Runtime, open_store
from atomr.cli import main
from atomr.cli.stores import EXECUTING

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
T = 20.0
ORDER = "examples.order_pipeline:workflow"
SMALL = {"order_id": "A-8", "items": [{"sku": "pen", "qty": 3, "cents": 300}]}
SLOW = textwrap.dedent("""
    import os, time
    from atomr import Dag, LastWriteWins, StateSchema, Workflow

    def step(state, ctx):
        time.sleep(float(os.environ.get("SLOW_S", "0")))
        return {"n": state["n"] + 1}

    workflow = Workflow("slow", Dag.builder("step").step("step", step).build(),
                        StateSchema({"n": (LastWriteWins(), 0)}))
""")


class Worker:
    """``python -m atomr worker`` in a child process; ready once it printed its line."""

    def __init__(self, url: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
        full = {k: v for k, v in os.environ.items() if k not in ("ATOMR_STORE", "ATOMR_WORKER_PARENT")}
        full.update(PYTHONPATH=os.pathsep.join([str(cwd), str(ROOT)]), **(env or {}))
        self.p = subprocess.Popen([sys.executable, "-m", "atomr", "--store", url, "worker", *args], cwd=cwd,
                                  env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.p.stdout is not None
        self.ready = self.p.stdout.readline()  # bounded by the test's timeout
        assert self.ready.startswith("atomr worker: "), (self.ready, self.stop())
        self.worker_id = self.ready.split()[2]

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            out, err = self.p.communicate(timeout=T)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
        return self.p.returncode, out, err


def worker_ids(url: str) -> list[str]:
    store = open_store(url, readonly=True)
    try:
        return [w.worker_id for w in store.workers()]
    finally:
        store.close()


def test_a_worker_executes_what_a_client_starts_and_stops_on_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    w = Worker(url, ORDER, "--id", "w-one", "--lease-s", "5", "--concurrency", "8")
    try:
        assert w.worker_id == "w-one"
        assert "executing orders" in w.ready and "'sqlite:///" in w.ready
        assert worker_ids(url) == ["w-one"]
        from atomr.cli.base import load_workflow

        with Runtime(url, execute=False) as client:
            client.register(load_workflow(ORDER))
            assert [x.worker_id for x in client.workers()] == ["w-one"]
            out = client.start("orders", SMALL, run_id="c1").result(timeout=T)
            assert out.status == "done" and out.state["tracking"] == "TRK-A-8"
    finally:
        code, out, err = w.stop()
    assert code == 0, err
    assert "atomr worker: w-one stopped (SIGTERM)" in out
    assert worker_ids(url) == []  # its row is gone: it left the store


def test_sigterm_hands_a_run_in_flight_to_another_worker(tmp_path):
    (tmp_path / "slowmod.py").write_text(SLOW)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first = Worker(url, "slowmod:workflow", "--id", "first", cwd=tmp_path, env={"SLOW_S": "60"})
    second = None
    try:
        store = open_store(url)
        rt = Runtime(store, execute=False)
        try:
            from atomr.cli.base import load_workflow

            sys.path.insert(0, str(tmp_path))
            try:
                rt.register(load_workflow("slowmod:workflow"))
            finally:
                sys.path.remove(str(tmp_path))
                sys.modules.pop("slowmod", None)
            h = rt.start("slow", {"n": 1}, run_id="s1")
            deadline = time.monotonic() + T
            while store.owner_of("slow", "s1")[0] != "first":
                assert time.monotonic() < deadline, store.owner_of("slow", "s1")
                time.sleep(0.05)
            second = Worker(url, "slowmod:workflow", "--id", "second", cwd=tmp_path, env={"SLOW_S": "0"})
            code, out, err = first.stop()  # drains 5 s, then hands the run over at once
            assert code == 0, err
            assert "1 run(s) in flight handed to the other workers" in out
            assert h.result(timeout=T).state == {"n": 2}
        finally:
            rt.close()
    finally:
        first.stop()
        if second is not None:
            code, _, err = second.stop()
            assert code == 0, err


@pytest.mark.parametrize("store", ["lmdb", "memory"])
def test_a_store_one_process_opens_is_refused(tmp_path, capsys, store):
    url = str(tmp_path / "lm") if store == "lmdb" else "memory:"
    assert main(["--store", url, "worker", ORDER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atomr: error: atomr worker needs a store that several processes "
                                               "share: SQLite"), err
    assert not (tmp_path / "lm").exists()  # refused before the store is opened


def test_the_store_error_is_named(tmp_path):
    from atomr.cli.stores import refuse_unshared
    from atomr.errors import StoreError, StoreNotShared

    with pytest.raises(StoreNotShared, match="Postgres"):
        refuse_unshared(str(tmp_path / "lm"), "atomr worker")
    assert issubclass(StoreNotShared, StoreError)
    refuse_unshared(f"sqlite:///{tmp_path / 'x.db'}", "atomr worker")
    refuse_unshared("postgresql://u@h/db", "atomr worker")


@pytest.mark.parametrize("args, needle", [
    (["--lease-s", "0"], "lease_s must be"),
    (["--concurrency", "0"], "concurrency must be"),
    (["--id", " "], "--id must not be empty"),
])
def test_bad_arguments_are_refused_before_the_store_is_created(tmp_path, capsys, args, needle):
    db = tmp_path / "x.db"
    assert main(["--store", f"sqlite:///{db}", "worker", ORDER, *args]) == 2
    assert needle in capsys.readouterr().err
    assert not db.exists()


def test_only_run_recover_worker_serve_and_demo_execute():
    assert set(EXECUTING) == {"run", "recover", "worker", "serve", "demo"}


def test_short_commands_are_clients_on_a_shared_store(tmp_path, capsys, monkeypatch):
    """A cancel, show, fork... on SQLite never joins the store as a worker (it would take runs over)."""
    import atomr.cli.stores as stores

    made: list[dict[str, Any]] = []
    real = stores.Runtime

    def spy(*a: Any, **kw: Any) -> Any:
        rt = real(*a, **kw)
        made.append({"execute": rt.execute, "worker_id": rt.worker_id})
        return rt

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    big = '{"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45000}]}'
    assert main(["--store", url, "run", ORDER, "--run-id", "p1", "--input", big]) == 3
    monkeypatch.setattr(stores, "Runtime", spy)
    for argv in (["show", "orders", "p1"], ["history", "orders", "p1"],
                 ["fork", "orders", "p1", "--at", "1", "--run-id", "f1"],
                 ["prune", "orders", "f1"], ["cancel", "orders", "f1"], ["prune", "orders", "f1", "--delete"],
                 ["purge", "--older-than", "9999"]):
        assert main(["--store", url, *argv]) == 0, (argv, capsys.readouterr())
        assert made[-1] == {"execute": False, "worker_id": None}, argv
    assert worker_ids(url) == []
    capsys.readouterr()
    # resume streams the run to its outcome: with no live worker it executes it itself
    assert main(["--store", url, "resume", "orders", "p1", "--resume", '"yes"']) == 0
    assert made[-1]["execute"] is True and "done: orders/p1" in capsys.readouterr().out


def test_resume_is_a_client_while_a_worker_is_alive(tmp_path, capsys, monkeypatch):
    import atomr.cli.stores as stores

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    big = '{"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45000}]}'
    assert main(["--store", url, "run", ORDER, "--run-id", "p1", "--input", big]) == 3
    made: list[bool] = []
    real = stores.Runtime
    monkeypatch.setattr(stores, "Runtime", lambda *a, **kw: made.append(kw.get("execute")) or real(*a, **kw))
    w = Worker(url, ORDER, "--id", "resumer")
    try:
        capsys.readouterr()
        assert main(["--store", url, "resume", "orders", "p1", "--resume", '"yes"']) == 0
        assert made == [False] and "done: orders/p1" in capsys.readouterr().out
    finally:
        code, _, err = w.stop()
    assert code == 0, err
