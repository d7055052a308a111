"""A read-only LmdbStore: no lock, reads while another process writes, refuses writes."""

import subprocess
import sys
import textwrap

import pytest

from atomr import Dag, LastWriteWins, LmdbStore, Runtime, StateSchema, Workflow
from atomr.errors import StoreError


def _wf():
    return Workflow("w", Dag.builder("a").step("a", lambda s, c: {"n": 1}).build(),
                    StateSchema({"n": LastWriteWins()}))


def test_read_only_open_while_another_process_holds_the_store(tmp_path):
    path = tmp_path / "s"
    with Runtime(store=LmdbStore(path)) as rt:
        rt.register(_wf())
        rt.start("w", {}, run_id="r1").result(timeout=30)
        code = textwrap.dedent(f"""
            from atomr import LmdbStore
            s = LmdbStore({str(path)!r}, readonly=True)
            print([r.run_id + ":" + r.status for r in s.runs()])
            s.close()
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "r1:done" in out.stdout


def test_read_only_store_refuses_writes_and_missing_paths(tmp_path):
    with pytest.raises(StoreError, match="check the path"):
        LmdbStore(tmp_path / "nothing", readonly=True)
    LmdbStore(tmp_path / "s").close()
    ro = LmdbStore(tmp_path / "s", readonly=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            ro.delete_run("w", "r")
        (err,) = ro.write([__import__("atomr").store.AppendBatch("w", "r", 1, [])])
        assert isinstance(err, StoreError)
    finally:
        ro.close()


def test_cli_show_works_while_the_store_is_in_use(tmp_path):
    path = tmp_path / "s"
    with Runtime(store=LmdbStore(path)) as rt:
        rt.register(_wf())
        rt.start("w", {}, run_id="r1").result(timeout=30)
        out = subprocess.run([sys.executable, "-m", "atomr", "--store", str(path), "runs", "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert '"r1"' in out.stdout
