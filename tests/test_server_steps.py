"""The run page's step colours (``GET /api/runs/{wf}/{run}/steps``) are folded
incrementally: a refresh reads only the journal entries committed since the last."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from atomr import Dag, LastWriteWins, Map, MemoryStore, Runtime, StateSchema, Workflow
from atomr.server import progress
from test_server_support import GATE, T, runtime, serve
from workflows import reopeners

pytestmark = pytest.mark.timeout(120)

any_store = reopeners("memory", "lmdb", "sqlite", "postgres")


@pytest.fixture
def counted(monkeypatch):
    """How many journal entries the step folds read (all requests together)."""
    seen: list[Any] = []
    real = progress.fold_event

    def counting(statuses: dict[str, str], e: Any) -> None:
        seen.append(e)
        real(statuses, e)

    monkeypatch.setattr(progress, "fold_event", counting)
    return seen


def test_a_refresh_folds_only_the_entries_since_the_last(any_store, counted):
    GATE.set()
    with serve(runtime(any_store(fsync="none"))) as (srv, rt):
        folds = srv.server.config.app.state.atomr.folds
        with httpx.Client(base_url=srv.url, timeout=T) as c:
            assert c.post("/api/workflows/approval/runs", json={"input": {"topic": "t"}, "run_id": "r"}).status_code == 201
            assert c.get("/api/runs/approval/r/wait", params={"timeout": T}).json()["outcome"] == "paused"
            steps = "/api/runs/approval/r/steps"
            assert c.get(steps).json()["steps"] == {"check": "done", "draft": "done", "review": "waiting"}
            first = rt.store.summary("approval", "r").last_seq
            assert folds.cursor("approval", "r") == first and len(counted) == first  # the whole journal, once
            for _ in range(3):  # refreshes of a run that did not move read nothing
                assert c.get(steps).json()["steps"]["review"] == "waiting"
            assert len(counted) == first
            assert c.post("/api/runs/approval/r/resume", json={"resume": "yes"}).status_code == 202
            assert c.get("/api/runs/approval/r/wait", params={"timeout": T}).json()["outcome"] == "done"
            assert c.get(steps).json()["steps"] == {"check": "done", "draft": "done", "review": "done"}
            last = rt.store.summary("approval", "r").last_seq
            assert last > first and folds.cursor("approval", "r") == last
            assert len(counted) == last  # only the entries after the first fold were read
            # a run deleted and made again under its id is folded from its start
            rt.delete("approval", "r")
            assert c.post("/api/workflows/approval/runs", json={"input": {"topic": "u"}, "run_id": "r"}).status_code == 201
            assert c.get("/api/runs/approval/r/wait", params={"timeout": T}).json()["outcome"] == "paused"
            assert c.get(steps).json()["steps"] == {"check": "done", "draft": "done", "review": "waiting"}
            assert folds.cursor("approval", "r") == rt.store.summary("approval", "r").last_seq


def test_map_elements_colour_their_step_and_folds_are_bounded():
    def double(x: Any, ctx: Any) -> int:
        return x * 2

    wf = Workflow("m", Dag.builder("m").step("m", Map(double, "xs", "ys")).build(),
                  StateSchema({"xs": (LastWriteWins(), []), "ys": (LastWriteWins(), [])}))
    seen: dict[str, str] = {}
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        rt.start("m", {"xs": [1, 2, 3]}, run_id="a").result(timeout=T)
        events = [e for _, e in rt.store.journal("m", "a")]
        assert [type(e).__name__ for e in events].count("ItemCompleted") == 3
        for e in events:
            progress.fold_event(seen, e)
            if type(e).__name__ == "ItemCompleted":
                assert seen["m"] == "running"  # an element done: its Map step is still running
        assert seen == {"m": "done"}
        folds = progress.Folds(max_runs=2)
        for run in ("b", "c", "d"):
            rt.start("m", {"xs": [1]}, run_id=run).result(timeout=T)
            assert folds.fold(rt.store, "m", run) == {"m": "done"}
        assert folds.cursor("m", "b") is None and folds.cursor("m", "d") is not None  # least recently asked went
        assert folds.fold(rt.store, "m", "nope") == {}
